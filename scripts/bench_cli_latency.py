#!/usr/bin/env python3
"""How long the ``klipnote`` command takes to start, next to bare Python, in one run.

Times, round-robin so that drift hits every row alike: ``python -c pass``, ``import klipnote.cli``,
``klipnote --version``, ``status ID --json``, ``list --json`` and ``submit -q FILE``, against a
throw-away spool filled with ``--jobs`` jobs through the library. Prints a markdown table.

It also checks that ``import klipnote.cli`` pulls in no engine (torch, transformers, whisperx,
faster_whisper, ctranslate2): the CLI must stay instant on machines without a GPU stack. Exit
status 1 if one was imported, 2 if a command failed.

Usage: ``.venv/bin/python scripts/bench_cli_latency.py [--repeat 20] [--jobs 200]``. Stdlib only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY_MODULES = ("torch", "transformers", "whisperx", "faster_whisper", "ctranslate2")
LEAKY_ENV = (
    "KLIPNOTE_SPOOL", "KLIPNOTE_SPOOL_GROUP", "KLIPNOTE_CONFIG", "DEFAULT_TRANSCRIPTION_MODEL", "MAX_FILE_SIZE",
    "MAX_DURATION_HOURS", "KLIPNOTE_LEASE_TTL", "KLIPNOTE_HEARTBEAT_INTERVAL", "KLIPNOTE_MAX_ATTEMPTS",
)  # fmt: skip
EXIT_HEAVY_IMPORT = 1
EXIT_COMMAND_FAILED = 2


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=20, help="timed runs of each command (default 20)")
    parser.add_argument("--jobs", type=int, default=200, help="jobs in the spool the commands read (default 200)")
    parser.add_argument("--python", default=sys.executable, help="interpreter with klipnote installed")
    args = parser.parse_args()
    if args.repeat < 2 or args.jobs < 1:
        parser.error("--repeat must be at least 2 and --jobs at least 1")
    return args


def clean_env(scratch: Path) -> dict[str, str]:
    """The caller's environment without klipnote settings, and with no config file to find."""
    env = {k: v for k, v in os.environ.items() if k not in LEAKY_ENV}
    env["XDG_CONFIG_HOME"] = str(scratch / "config")
    env["XDG_DATA_HOME"] = str(scratch / "data")
    return env


def klipnote_argv(python: str) -> list[str]:
    """The console script beside the interpreter (what users run), else ``python -m klipnote``."""
    script = Path(python).parent / "klipnote"
    return [str(script)] if script.is_file() and os.access(script, os.X_OK) else [python, "-m", "klipnote"]


def make_wav(target: Path) -> Path:
    if shutil.which("ffmpeg") is None:
        sys.exit("ffmpeg is not installed; it is needed to make the input file")
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=440:duration=1",
         "-ar", "16000", "-ac", "1", str(target)],
        check=True,
    )  # fmt: skip
    return target


FILL_SPOOL = """
import sys
from pathlib import Path
from klipnote.job import JobRequest, Model
from klipnote.spool import Spool
from klipnote.submit import Limits, validate

spool_dir, wav, count = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
spool = Spool(spool_dir).open()
info = validate(wav, Limits(2**40, 100.0))
models = list(Model)
ids = [spool.submit(info, wav, JobRequest(model=models[i % len(models)])).id for i in range(count)]
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


def table(times: dict[str, list[float]], baseline: str) -> str:
    base = statistics.median(times[baseline])
    rows = ["| command | median ms | p90 ms | × bare python |", "|---|---:|---:|---:|"]
    for label, values in times.items():
        median = statistics.median(values)
        rows.append(f"| `{label}` | {median:.1f} | {p90(values):.1f} | {median / base:.2f} |")
    return "\n".join(rows)


def main() -> int:
    args = parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="klipnote-bench-"))
    try:
        env = clean_env(scratch)
        spool = scratch / "spool"
        wav = make_wav(scratch / "tone.wav")
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

    print(f"klipnote CLI latency: {args.repeat} runs each, spool of {args.jobs} jobs, {' '.join(cli[:-2])}\n")
    print(table(times, bare))
    heavy = imported["heavy"]
    print(f"\n`import klipnote.cli` loads {imported['modules']} modules; engine modules among them: ", end="")
    print(", ".join(heavy) if heavy else "none")
    return EXIT_HEAVY_IMPORT if heavy else 0


if __name__ == "__main__":
    sys.exit(main())
