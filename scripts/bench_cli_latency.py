#!/usr/bin/env python3
"""How long the ``klipnote`` command takes to start, next to bare Python, in one run.

Times, round-robin so that drift hits every row alike: ``python -c pass``, ``import klipnote.cli``,
``klipnote --version``, ``status ID --json``, ``list --json`` and ``submit -q FILE``, against a
throw-away spool filled with ``--jobs`` jobs through the library. Prints a markdown table.

It also checks that ``import klipnote.cli`` pulls in no engine (torch, transformers, whisperx,
faster_whisper, ctranslate2): the CLI must stay instant on machines without a GPU stack. Exit
status 1 if one was imported, 2 if a command failed.

Usage: ``.venv/bin/python scripts/bench_cli_latency.py [--repeat 20] [--jobs 200] [--out DIR]``. Stdlib only
(and ``scripts/benchkit.py``); ``--out`` also writes ``cli_latency.json`` and ``cli_latency.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchkit import clean_env, klipnote_argv, machine, machine_line, make_tone, table, write_json, write_markdown

HEAVY_MODULES = ("torch", "transformers", "whisperx", "faster_whisper", "ctranslate2")
EXIT_HEAVY_IMPORT = 1
EXIT_COMMAND_FAILED = 2


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=20, help="timed runs of each command (default 20)")
    parser.add_argument("--jobs", type=int, default=200, help="jobs in the spool the commands read (default 200)")
    parser.add_argument("--python", default=sys.executable, help="interpreter with klipnote installed")
    parser.add_argument("--out", type=Path, help="also write cli_latency.json and cli_latency.md here")
    args = parser.parse_args()
    if args.repeat < 2 or args.jobs < 1:
        parser.error("--repeat must be at least 2 and --jobs at least 1")
    return args


FILL_SPOOL = """
import sys
from pathlib import Path
from klipnote.job import JobRequest, Model
from klipnote import intake
from klipnote.spool import Spool
from klipnote.submit import Limits, validate

spool_dir, wav, count = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
spool = Spool(spool_dir).open()
info = validate(wav, Limits(2**40, 100.0))
models = list(Model)
ids = [intake.submit(spool, info, wav, JobRequest(model=models[i % len(models)])).id for i in range(count)]
print(ids[len(ids) // 2])
"""


def fill_spool(python: str, spool_dir: Path, wav: Path, count: int, env: dict[str, str]) -> str:
    """Submit ``count`` jobs through the library (in the benchmarked interpreter); return one id."""
    proc = subprocess.run(
        [python, "-c", FILL_SPOOL, str(spool_dir), str(wav), str(count)],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    return proc.stdout.strip()


HEAVY_CHECK = f"""
import json, sys
import klipnote.cli
heavy = {HEAVY_MODULES!r}
print(json.dumps({{"heavy": sorted(m for m in sys.modules if m.split(".")[0] in heavy), "modules": len(sys.modules)}}))
"""


def heavy_imports(python: str, env: dict[str, str]) -> dict[str, object]:
    proc = subprocess.run([python, "-c", HEAVY_CHECK], capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout)


def time_once(argv: list[str], env: dict[str, str]) -> float:
    """Wall time of one run in ms; exits when the command fails (a broken command is not fast)."""
    started = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, check=False)
    elapsed = (time.perf_counter() - started) * 1000
    if proc.returncode != 0:
        sys.stderr.write(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stderr.decode(errors='replace')}")
        sys.exit(EXIT_COMMAND_FAILED)
    return elapsed


def measure(commands: dict[str, list[str]], repeat: int, env: dict[str, str]) -> dict[str, list[float]]:
    """Round-robin: one warm-up round (page cache, .pyc files), then ``repeat`` timed rounds."""
    for argv in commands.values():
        time_once(argv, env)
    times: dict[str, list[float]] = {label: [] for label in commands}
    for _ in range(repeat):
        for label, argv in commands.items():
            times[label].append(time_once(argv, env))
    return times


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10, method="inclusive")[-1]


def rows(times: dict[str, list[float]], baseline: str) -> list[dict[str, object]]:
    base = statistics.median(times[baseline])
    return [{"command": label, "median_ms": statistics.median(values), "p90_ms": p90(values),
             "x_bare_python": statistics.median(values) / base, "runs_ms": values} for label, values in times.items()]


def report(results: list[dict[str, object]]) -> str:
    return table(["command", "median ms", "p90 ms", "× bare python"],
                 [[f"`{r['command']}`", f"{r['median_ms']:.1f}", f"{r['p90_ms']:.1f}", f"{r['x_bare_python']:.2f}"]
                  for r in results], [False, True, True, True])


def main() -> int:
    args = parse_args()
    before = machine()
    scratch = Path(tempfile.mkdtemp(prefix="klipnote-bench-"))
    try:
        env = clean_env(scratch)
        spool = scratch / "spool"
        wav = make_tone(scratch / "tone.wav")
        job_id = fill_spool(args.python, spool, wav, args.jobs, env)
        cli = [*klipnote_argv(args.python), "--spool", str(spool)]
        bare = "python -c pass"
        commands = {
            bare: [args.python, "-c", "pass"],
            'python -c "import klipnote.cli"': [args.python, "-c", "import klipnote.cli"],
            "klipnote --version": [*cli, "--version"],
            "klipnote status ID --json": [*cli, "status", job_id, "--json"],
            "klipnote list --json": [*cli, "list", "--json"],
            "klipnote submit -q FILE": [*cli, "submit", "-q", str(wav)],
        }
        times = measure(commands, args.repeat, env)
        imported = heavy_imports(args.python, env)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    heavy = imported["heavy"]
    results = rows(times, bare)
    text = "\n".join([
        f"klipnote CLI latency: {args.repeat} runs each, spool of {args.jobs} jobs, {' '.join(cli[:-2])}",
        machine_line(machine(), before), "", report(results), "",
        f"`import klipnote.cli` loads {imported['modules']} modules; engine modules among them: "
        + (", ".join(heavy) if heavy else "none"),
    ])
    print(text)
    write_markdown(args.out, "cli_latency", text)
    write_json(args.out, "cli_latency", {"benchmark": "cli_latency", "machine": machine(), "started": before,
                                         "repeat": args.repeat, "jobs": args.jobs, "results": results,
                                         "heavy_imports": heavy, "modules": imported["modules"]})
    return EXIT_HEAVY_IMPORT if heavy else 0


if __name__ == "__main__":
    sys.exit(main())
