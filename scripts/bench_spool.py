#!/usr/bin/env python3
"""How the spool scales: submit rate, claim latency and ``list``/``status`` time at 1,000 and 10,000 queued jobs.

One throw-away spool per size (``--sizes``, default 1000,10000), filled first through the library
(``Spool.submit`` of one already validated file: the ``fill`` column, jobs/s), then measured side by side:
``--rounds`` rounds, each visiting every spool (the order rotates each round), so that load from
other work on the machine hits every size alike. Per visit:

* ``submit (library)``: ``--sample`` jobs through ``klipnote.submit.submit_paths`` in one call (what
  ``klipnote submit FILE...`` runs: ffprobe, hash, snapshot copy, manifest, status, ticket): jobs/s;
* ``submit (CLI)``: one ``klipnote submit -q FILE`` process (start-up included);
* ``claim_next``: ``--claims`` calls of ``klipnote.claim.claim_next`` over the whisperx worker's lanes
  (auto, whisperx); each claimed job is handed back (``Claim.release``, not timed) so the queue keeps
  its size;
* ``list --json`` (the default 50 newest), ``list --json --limit 0`` (all), ``status ID --json``: once each.

Figures are medians over the rounds (claims: over all calls). The spools grow by ``sample + 1`` jobs
a round while measured; their final sizes are printed. The last table gives each figure at the
largest size over the smallest: for times, a ratio near the size ratio means the cost grows
linearly with the queue; near 1, that it does not grow.

Usage: ``.venv/bin/python scripts/bench_spool.py [--sizes 1000,10000] [--rounds 5] [--out DIR]``;
``--sizes 20,60 --rounds 2 --claims 3 --sample 5`` is the smoke size. Stdlib plus klipnote; ffmpeg on PATH.
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
from dataclasses import dataclass, field
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
LANES = ("auto", "whisperx")  # what a whisperx worker serves


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000", help="queue sizes, ascending, comma-separated")
    parser.add_argument("--rounds", type=int, default=5, help="measuring rounds over all sizes (default 5)")
    parser.add_argument("--sample", type=int, default=20, help="jobs per timed submit_paths call (default 20)")
    parser.add_argument("--claims", type=int, default=10, help="claim_next calls per size and round (default 10)")
    parser.add_argument("--python", default=sys.executable, help="interpreter with klipnote installed")
    parser.add_argument("--tmp", type=Path, help="where the throw-away spools go (default: the system's temp)")
    parser.add_argument("--out", type=Path, help="also write spool.json and spool.md here")
    args = parser.parse_args()
    try:
        args.sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        parser.error("--sizes: comma-separated whole numbers")
    if args.sizes != sorted(args.sizes) or min(args.sizes) < 1:
        parser.error("--sizes must be positive and ascend")
    if min(args.rounds, args.sample, args.claims) < 1:
        parser.error("--rounds, --sample and --claims must be at least 1")
    return args


def fill(spool: Any, wav: Path, count: int) -> float:
    """Queue ``count`` jobs of one validated file through ``Spool.submit``; the seconds it took."""
    from klipnote.intake import submit
    from klipnote.job import JobRequest
    from klipnote.submit import Limits, validate

    info = validate(wav, Limits(2**40, 100.0))
    started = time.perf_counter()
    for _ in range(count):
        submit(spool, info, wav, JobRequest())
    return time.perf_counter() - started


def submit_sample(spool: Any, wav: Path, count: int) -> float:
    """Jobs per second of one ``submit_paths`` call with ``count`` files, the CLI's library path."""
    from klipnote.job import JobRequest
    from klipnote.submit import Candidate, Limits, submit_paths

    started = time.perf_counter()
    outcomes = submit_paths(spool, [Candidate(str(wav), wav)] * count, JobRequest(), Limits(2**40, 100.0))
    elapsed = time.perf_counter() - started
    failed = [o.error for o in outcomes if o.error]
    if failed:
        sys.exit(f"submit failed: {failed[0]}")
    return count / elapsed


def claim_latency(spool: Any, claims: int) -> list[float]:
    from klipnote.claim import WorkerRef, claim_next
    from klipnote.job import Lane

    worker = WorkerRef.here("bench-spool", "whisperx")
    times = []
    for _ in range(claims):
        started = time.perf_counter()
        claim = claim_next(spool, [Lane(lane) for lane in LANES], worker)
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


@dataclass
class Sized:
    """One spool of a given size and what was measured on it."""

    size: int
    spool: Any
    cli: list[str]
    fill_s: float
    job_id: str
    figures: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, *values: float) -> None:
        self.figures.setdefault(name, []).extend(values)


def visit(item: Sized, args: argparse.Namespace, wav: Path, env: dict[str, str]) -> None:
    """One round's measurements on one spool."""
    item.add("submit, library (jobs/s)", submit_sample(item.spool, wav, args.sample))
    item.add("submit, CLI one file (ms)", run_ok([*item.cli, "submit", "-q", str(wav)], env) * 1000)
    item.add("claim_next (ms)", *(t * 1000 for t in claim_latency(item.spool, args.claims)))
    for label in CLI_COMMANDS:
        argv = [*item.cli, *label.replace("ID", item.job_id).split()]
        item.add(f"`klipnote {label}` (ms)", run_ok(argv, env) * 1000)


def row(item: Sized) -> dict[str, Any]:
    return {"size": item.size, "final_size": sum(item.spool.queue_lengths().values()), "fill_s": item.fill_s,
            "fill_jobs_per_s": item.size / item.fill_s, "figures": item.figures,
            "medians": {name: statistics.median(values) for name, values in item.figures.items()}}


def report(rows: list[dict[str, Any]]) -> str:
    names = list(rows[0]["medians"])
    first = table(["queued jobs", "after", "fill, Spool.submit (jobs/s)", *names],
                  [[r["size"], r["final_size"], f"{r['fill_jobs_per_s']:.0f}",
                    *(f"{r['medians'][n]:.1f}" for n in names)] for r in rows], [True] * (len(names) + 3))
    if len(rows) < 2:
        return first
    low, high = rows[0], rows[-1]
    growth = table(
        ["figure", f"at {low['size']}", f"at {high['size']}", f"{high['size']} / {low['size']}", "queue grew"],
        [[n, f"{low['medians'][n]:.1f}", f"{high['medians'][n]:.1f}", f"{high['medians'][n] / low['medians'][n]:.2f}",
          f"{high['size'] / low['size']:.0f}x"] for n in names],
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
        spools = []
        for size in args.sizes:
            folder = scratch / f"spool-{size}"
            spool = Spool(folder).open()
            fill_s = fill(spool, wav, size)
            print(f"  filled {size} jobs in {fill_s:.1f} s", file=sys.stderr, flush=True)
            ids = spool.job_ids()
            spools.append(Sized(size, spool, [*klipnote_argv(args.python), "--spool", str(folder)], fill_s,
                                ids[len(ids) // 2]))
        for round_no in range(args.rounds):
            shift = round_no % len(spools)
            for item in spools[shift:] + spools[:shift]:
                visit(item, args, wav, env)
            print(f"  round {round_no + 1} done", file=sys.stderr, flush=True)
        rows = [row(item) for item in spools]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    text = "\n".join([
        f"klipnote spool scale: sizes {', '.join(map(str, args.sizes))}; {args.rounds} rounds over the sizes, "
        f"order rotated; per visit {args.sample} jobs through submit_paths, one CLI submit, {args.claims} "
        "claim_next calls, each list/status command once; medians",
        machine_line(machine(), before), "", report(rows)])
    print(text)
    write_markdown(args.out, "spool", text)
    write_json(args.out, "spool", {"benchmark": "spool", "machine": machine(), "started": before,
                                   "args": {k: v for k, v in vars(args).items() if k not in ("out", "tmp")},
                                   "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
