"""A real ``redis-server`` for the broker tests, and broker-mode workers as separate processes.

The server listens on a free loopback port with its own folder and no persistence, so that killing and
restarting it loses everything, as the worst Redis restart would. Each worker runs in its own scratch
folder (its cwd and TMPDIR), as it would on its own host; only the spool is shared.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..conftest import REPO

BROKER_WORKER = Path(__file__).with_name("fake_broker_worker.py")
#: Short leases so that fault tests run in seconds: a frozen or dead worker's job moves on within ~3 s.
FAST = {"KLIPNOTE_LEASE_TTL": "2", "KLIPNOTE_HEARTBEAT_INTERVAL": "0.2"}


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        pytest.skip("redis-server is not installed (scripts/bootstrap installs it: apt-get install redis-server)")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """One redis-server process; :meth:`kill` and :meth:`start` again keep its port (and lose its data)."""

    def __init__(self, folder: Path, password: str | None = None) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.password = password
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
                "--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"]
        if self.password:
            args += ["--requirepass", self.password]
        with open(self.folder / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        log = (self.folder / "redis.log").read_text()
        raise AssertionError(f"redis-server did not listen on port {self.port}: {log}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None


def broker_env(server: RedisServer, home: Path, **extra: str) -> dict[str, str]:
    """The environment of klipnote commands and workers in broker mode (offline, their own config)."""
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": pythonpath, "KLIPNOTE_BROKER": server.url, "XDG_CONFIG_HOME": str(home),
            "XDG_DATA_HOME": str(home), "KLIPNOTE_CONFIG": str(home / "none.toml"), **FAST, **extra}


def start_broker_worker(spool_dir: Path, worker_id: str, scratch: Path, env: dict[str, str],
                        *extra: str) -> subprocess.Popen:
    """The real broker-mode worker (a Celery worker) around the fake engine, in its own scratch folder; its log is
    ``scratch/<worker_id>.log``. Returns once it printed its ready line."""
    folder = scratch / worker_id
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "worker.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, str(BROKER_WORKER), "--spool", str(spool_dir), "--id", worker_id,
                                 *extra], stdout=subprocess.PIPE, stderr=log, text=True, cwd=folder,
                                env={**env, "TMPDIR": str(folder)})
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "ready" in line, (folder / "worker.log").read_text()
    return proc


def stop(*procs: subprocess.Popen) -> None:
    """SIGTERM (Celery's warm shutdown), then SIGKILL whatever is still there after 20 s."""
    for proc in procs:
        if proc.poll() is None:
            with_signal(proc, signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def with_signal(proc: subprocess.Popen, sig: int) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
