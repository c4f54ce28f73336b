"""Helpers shared by the spool tests: jobs made through the library, worker processes, their logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from klipnote import intake
from klipnote.job import InputInfo, JobRequest, Model
from klipnote.spool import Spool

FAKE_WORKER = Path(__file__).with_name("fake_worker.py")
ENGINE_WORKER = Path(__file__).with_name("fake_engine_worker.py")
READER = Path(__file__).with_name("spool_reader.py")


def add_jobs(spool: Spool, source: Path, count: int, request: JobRequest | None = None) -> list[str]:
    """Submit ``count`` jobs of ``source`` through the library (the spool mechanics, without ffprobe)."""
    st = source.stat()
    info = InputInfo(path=str(source), name=source.name, size=st.st_size, mtime=st.st_mtime, sha256="0" * 64,
                     duration=1.0, has_video=False, snapshot=None)
    request = request or JobRequest(model=Model.WHISPERX)
    return [intake.submit(spool, info, source, request).id for _ in range(count)]


def start_worker(spool_dir: Path, worker_id: str, log: Path, *extra: str) -> subprocess.Popen:
    """Start ``fake_worker.py`` and return once it has opened the spool."""
    proc = subprocess.Popen([sys.executable, str(FAKE_WORKER), "--spool", str(spool_dir), "--id", worker_id,
                             "--log", str(log), *extra], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def events(log: Path) -> list[list[str]]:
    """The log's lines split into fields: event, job, attempt, worker[, detail...]."""
    if not log.exists():
        return []
    return [line.split(" ") for line in log.read_text().splitlines()]


def count(log: Path, event: str) -> Counter:
    return Counter(fields[1] for fields in events(log) if fields[0] == event)


def wait_for_event(log: Path, event: str, timeout: float = 30.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for fields in events(log):
            if fields[0] == event:
                return fields
        time.sleep(0.02)
    raise AssertionError(f"no {event!r} in {log} after {timeout} s: {events(log)}")


def damage(path: Path) -> None:
    """Bit rot: same size and mtime, garbage content (so only decoding can notice)."""
    st = path.stat()
    fresh = path.with_name(path.name + ".rot")
    fresh.write_bytes(b"RIFF" + os.urandom(st.st_size - 4))
    os.replace(fresh, path)  # a new inode: the original the snapshot was linked from stays intact
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def leftovers(spool: Spool) -> list[Path]:
    """Temp files, staging folders and uncommitted outputs of jobs: there must never be any at rest.

    Worker heartbeat records (``workers/``) are the registry's and not looked at here.
    """
    areas = (spool.jobs, spool.claimed, spool.queue, spool.quarantine, spool.tmp)
    found = [p for area in areas for p in area.rglob(".*.tmp")]
    found += list(spool.tmp.iterdir())
    found += [p for p in spool.jobs.glob("*/.attempt-*") if p.is_dir()]
    return found


def start_engine_worker(spool_dir: Path, worker_id: str, logs: Path, *extra: str,
                        env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start the real worker daemon around the fake engine; its log goes to ``logs/<worker_id>.log``."""
    logs.mkdir(exist_ok=True)
    with open(logs / f"{worker_id}.log", "ab") as log:
        return subprocess.Popen([sys.executable, str(ENGINE_WORKER), "--spool", str(spool_dir), "--id", worker_id,
                                 *extra], stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, **(env or {})})


def job_log(spool: Spool, job_id: str) -> list[str]:
    """The worker's per-job log lines (``<date> <time> <worker> attempt <n>: <event>``)."""
    path = spool.job_dir(job_id) / "worker.log"
    return path.read_text(errors="replace").splitlines() if path.exists() else []


class Reader:
    """``spool_reader.py`` in its own process, polling the spool until :meth:`finish`."""

    def __init__(self, spool_dir: Path, folder: Path, *watch: Path) -> None:
        self.stop = folder / "reader.stop"
        self.report = folder / "reader.json"
        args = [arg for w in watch for arg in ("--watch", str(w))]
        self.proc = subprocess.Popen([sys.executable, str(READER), "--spool", str(spool_dir), "--stop", str(self.stop),
                                      "--report", str(self.report), *args], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def finish(self) -> dict[str, Any]:
        """Stop the reader and return what it saw: polls, done_checked, outputs_read, violations."""
        self.stop.touch()
        assert self.proc.wait(timeout=60) == 0
        return json.loads(self.report.read_text())
