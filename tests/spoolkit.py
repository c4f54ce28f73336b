"""Helpers shared by the spool tests: jobs made through the library, worker processes, their logs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from klipnote.job import InputInfo, JobRequest, Model
from klipnote.spool import Spool

FAKE_WORKER = Path(__file__).with_name("fake_worker.py")


def add_jobs(spool: Spool, source: Path, count: int, request: JobRequest | None = None) -> list[str]:
    """Submit ``count`` jobs of ``source`` through the library (the spool mechanics, without ffprobe)."""
    st = source.stat()
    info = InputInfo(path=str(source), name=source.name, size=st.st_size, mtime=st.st_mtime, sha256="0" * 64,
                     duration=1.0, has_video=False, snapshot=None)
    request = request or JobRequest(model=Model.WHISPERX)
    return [spool.submit(info, source, request).id for _ in range(count)]


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
