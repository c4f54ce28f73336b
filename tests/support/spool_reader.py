"""A reader process for fault tests: polls a spool (and output folders) as a user's script would.

It reads the raw files with nothing but ``json`` and string checks, so it vouches for what any
reader sees, not for what klipnote's own loaders tolerate. It runs until ``--stop`` exists, then
writes ``--report``: the number of polls and files checked, and every violation seen:

- a ``status.json`` that is not a whole JSON object;
- a job whose status says done but one of whose listed outputs is missing or incomplete;
- any visible output (``transcript.*`` in a job folder, any file in a ``--watch`` folder) that is
  incomplete: JSON that does not parse, an SRT whose cues do not parse.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

CUE_TIMING = re.compile(r"^\d\d:\d\d:\d\d,\d\d\d --> \d\d:\d\d:\d\d,\d\d\d$")


def incomplete(path: Path) -> str | None:
    """Why the output at ``path`` is not whole, or None. A file that vanished is not a violation here."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        return f"unreadable: {exc}"
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            return f"JSON does not parse: {exc}"
        return None if isinstance(data, dict) and "segments" in data and "metadata" in data else "JSON lacks fields"
    if path.suffix == ".srt":
        if not text.endswith("\n"):
            return "SRT does not end with a newline"
        for block in text.strip("\n").split("\n\n"):
            lines = block.split("\n")
            if len(lines) < 3 or not lines[0].isdigit() or not CUE_TIMING.match(lines[1]):
                return f"SRT cue does not parse: {block[:80]!r}"
        return None
    return None if text else "empty"


def poll(spool: Path, watch: list[Path], seen: dict[str, Any]) -> None:
    jobs = spool / "jobs"
    for job in sorted(jobs.iterdir()) if jobs.is_dir() else []:
        try:
            raw = (job / "status.json").read_bytes()
        except FileNotFoundError:
            continue
        try:
            status = json.loads(raw.decode("utf-8"))
            state, outputs = status["state"], status["outputs"]
        except (ValueError, KeyError, TypeError) as exc:
            seen["violations"].append(f"{job.name}: status.json is not whole: {exc}: {raw[:60]!r}")
            continue
        if state == "done":
            seen["done_checked"] += 1
            for name in outputs:
                if not (job / name).exists():
                    seen["violations"].append(f"{job.name}: done, but its output {name} is missing")
                elif why := incomplete(job / name):
                    seen["violations"].append(f"{job.name}: done, but {name} is incomplete: {why}")
        for output in job.glob("transcript.*"):
            seen["outputs_read"] += 1
            if why := incomplete(output):
                seen["violations"].append(f"{job.name}: visible {output.name} is incomplete: {why}")
    for folder in watch:
        for output in folder.glob("*") if folder.is_dir() else []:
            if output.name.startswith("."):
                continue  # a writer's temp file, not yet a file anyone is meant to read
            seen["outputs_read"] += 1
            if why := incomplete(output):
                seen["violations"].append(f"{output}: incomplete: {why}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spool", type=Path, required=True)
    parser.add_argument("--stop", type=Path, required=True, help="exit once this file exists")
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--watch", type=Path, action="append", default=[], help="an output folder to check too")
    args = parser.parse_args()
    seen: dict[str, Any] = {"polls": 0, "done_checked": 0, "outputs_read": 0, "violations": []}
    print("ready", flush=True)
    while not args.stop.exists():
        poll(args.spool, args.watch, seen)
        seen["polls"] += 1
        time.sleep(0.01)
    poll(args.spool, args.watch, seen)  # and once more at rest
    args.report.write_text(json.dumps(seen, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
