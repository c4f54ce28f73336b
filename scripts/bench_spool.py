#!/usr/bin/env python3
"""How the spool scales: submit rate, claim latency and ``list``/``status`` time at 1,000 and 10,000 queued jobs.

One throw-away spool grows through ``--sizes`` (default 1000,10000). At each size:

* ``submit (library)``: jobs per second while the spool grew to this size, through
  ``klipnote.submit.submit_paths`` (what ``klipnote submit FILE...`` runs: ffprobe, hash, snapshot
  copy, manifest, status, ticket), ``--chunk`` files per call;
* ``submit (CLI)``: ``--cli-sample`` runs of ``klipnote submit -q FILE``, one process per file
  (start-up included), each adding one job; the median per run;
* ``claim_next``: ``--claims`` times, the median time of ``klipnote.claim.claim_next`` over the
  whisperx worker's lanes (auto, whisperx) on the full queue; each claimed job is handed back
  (``Claim.release``, not timed) so the queue keeps its size;
* ``list --json`` (the default 50 newest), ``list --json --limit 0`` (all), ``status ID --json``:
  ``--repeat`` runs each, round-robin, median.

The last table gives each figure at the largest size over the smallest: for times, a ratio near
the size ratio means the cost grows linearly with the queue; near 1, that it does not grow.

Usage: ``.venv/bin/python scripts/bench_spool.py [--sizes 1000,10000] [--out DIR]``; ``--sizes 20,60
--claims 3 --cli-sample 2 --repeat 2`` is the smoke size. Stdlib plus klipnote; ffmpeg on PATH.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchkit import (
    clean_env,
    klipnote_argv,
    machine,
    machine_line,
    make_tone,
    table,
    write_json,
    write_markdown,
)

CLI_COMMANDS = ("list --json", "list --json --limit 0", "status ID --json")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000", help="queue sizes, ascending, comma-separated")
    parser.add_argument("--chunk", type=int, default=500, help="files per submit_paths call (default 500)")
    parser.add_argument("--claims", type=int, default=20, help="timed claim_next calls per size (default 20)")
    parser.add_argument("--cli-sample", type=int, default=10, help="klipnote submit processes per size (default 10)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each list/status command (default 5)")
    parser.add_argument("--python", default=sys.executable, help="interpreter with klipnote installed")
    parser.add_argument("--tmp", type=Path, help="where the throw-away spool goes (default: the system's temp)")
    parser.add_argument("--out", type=Path, help="also write spool.json and spool.md here")
    args = parser.parse_args()
    try:
        args.sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        parser.error("--sizes: comma-separated whole numbers")
    if args.sizes != sorted(args.sizes) or min(args.sizes) <= args.cli_sample:
        parser.error("--sizes must ascend, each larger than --cli-sample")
    if min(args.chunk, args.claims, args.cli_sample, args.repeat) < 1:
        parser.error("--chunk, --claims, --cli-sample and --repeat must be at least 1")
    return args


def grow(spool: Any, wav: Path, count: int, chunk: int) -> float:
    """Submit ``count`` jobs through the library; return the seconds it took."""
    from klipnote.job import JobRequest
    from klipnote.submit import Candidate, Limits, submit_paths

    limits = Limits(2**40, 100.0)
    started = time.perf_counter()
    done = 0
    while done < count:
        batch = min(chunk, count - done)
        outcomes = submit_paths(spool, [Candidate(str(wav), wav)] * batch, JobRequest(), limits)
        failed = [o.error for o in outcomes if o.error]
        if failed:
            sys.exit(f"submit failed: {failed[0]}")
        done += batch
    return time.perf_counter() - started


def claim_latency(spool: Any, claims: int) -> list[float]:
    from klipnote.claim import WorkerRef, claim_next
    from klipnote.job import Lane

    worker = WorkerRef.here("bench-spool", "whisperx")
    times = []
    for _ in range(claims):
        started = time.perf_counter()
        claim = claim_next(spool, (Lane.AUTO, Lane.WHISPERX), worker)
        times.append(time.perf_counter() - started)
        if claim is None:
            sys.exit("claim_next found no job in a full queue")
        claim.release("benchmark: hand it back so the queue keeps its size")
    return times


def run_ok(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode(errors='replace')}")
    return elapsed


def at_size(args: argparse.Namespace, spool: Any, wav: Path, cli: list[str], env: dict[str, str],
            size: int, have: int) -> dict[str, Any]:
    """Grow the spool from ``have`` to ``size`` jobs (the last ``--cli-sample`` by the CLI) and measure."""
    library_jobs = size - have - args.cli_sample
    library_s = grow(spool, wav, library_jobs, args.chunk)
    cli_submit = [run_ok([*cli, "submit", "-q", str(wav)], env) for _ in range(args.cli_sample)]
    queued = sum(spool.queue_lengths().values())
    if queued != size:
        sys.exit(f"expected {size} queued jobs, found {queued}")
    claims = claim_latency(spool, args.claims)
    job_id = spool.job_ids()[len(spool.job_ids()) // 2]
    commands = {
        "list --json": [*cli, "list", "--json"],
        "list --json --limit 0": [*cli, "list", "--json", "--limit", "0"],
        "status ID --json": [*cli, "status", job_id, "--json"],
    }
    times: dict[str, list[float]] = {label: [] for label in commands}
    for _ in range(args.repeat):
        for label, argv in commands.items():
            times[label].append(run_ok(argv, env))
    print(f"  {size} jobs: library {library_jobs / library_s:.0f} jobs/s, claim {statistics.median(claims) * 1000:.1f}"
          f" ms, list {statistics.median(times['list --json']) * 1000:.0f} ms", file=sys.stderr, flush=True)
    return {
        "size": size, "library_jobs": library_jobs, "library_s": library_s,
        "library_jobs_per_s": library_jobs / library_s,
        "cli_submit_s": cli_submit, "cli_submit_median_s": statistics.median(cli_submit),
        "claim_s": claims, "claim_median_s": statistics.median(claims),
        "commands_s": times, "commands_median_s": {k: statistics.median(v) for k, v in times.items()},
    }  # fmt: skip


def metrics(row: dict[str, Any]) -> dict[str, tuple[float, str]]:
    """The figures compared across sizes: value and unit."""
    out = {
        "submit, library (jobs/s)": (row["library_jobs_per_s"], "rate"),
        "submit, CLI one file (ms)": (row["cli_submit_median_s"] * 1000, "time"),
        "claim_next (ms)": (row["claim_median_s"] * 1000, "time"),
    }
    for label in CLI_COMMANDS:
        out[f"`klipnote {label}` (ms)"] = (row["commands_median_s"][label] * 1000, "time")
    return out


def report(rows: list[dict[str, Any]]) -> str:
    sizes = [r["size"] for r in rows]
    per_size = [metrics(r) for r in rows]
    names = list(per_size[0])
    first = table(["queued jobs", *names], [[r["size"], *(f"{m[n][0]:.1f}" for n in names)]
                                            for r, m in zip(rows, per_size, strict=True)],
                  [True] * (len(names) + 1))
    if len(rows) < 2:
        return first
    size_ratio = sizes[-1] / sizes[0]
    growth = table(
        ["figure", f"at {sizes[0]}", f"at {sizes[-1]}", f"{sizes[-1]} / {sizes[0]}", "queue grew"],
        [[n, f"{per_size[0][n][0]:.1f}", f"{per_size[-1][n][0]:.1f}",
          f"{per_size[-1][n][0] / per_size[0][n][0]:.2f}", f"{size_ratio:.0f}x"] for n in names],
        [False, True, True, True, True])
    return first + "\n\n" + growth


def main() -> int:
    args = parse_args()
    before = machine()
    scratch = Path(tempfile.mkdtemp(prefix="klipnote-bench-spool-", dir=args.tmp))
    try:
        from klipnote.spool import Spool

        env = clean_env(scratch)
        os.environ.update({k: env[k] for k in ("XDG_CONFIG_HOME", "XDG_DATA_HOME")})
        wav = make_tone(scratch / "tone.wav")
        spool_dir = scratch / "spool"
        spool = Spool(spool_dir).open()
        cli = [*klipnote_argv(args.python), "--spool", str(spool_dir)]
        rows, have = [], 0
        for size in args.sizes:
            rows.append(at_size(args, spool, wav, cli, env, size, have))
            have = size
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    text = "\n".join([
        f"klipnote spool scale: sizes {', '.join(map(str, args.sizes))}; claim_next median of {args.claims}, "
        f"CLI submit median of {args.cli_sample}, list/status median of {args.repeat} (round-robin)",
        machine_line(machine(), before), "", report(rows)])
    print(text)
    write_markdown(args.out, "spool", text)
    write_json(args.out, "spool", {"benchmark": "spool", "machine": machine(), "started": before,
                                   "args": {k: v for k, v in vars(args).items() if k not in ("out", "tmp")},
                                   "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
