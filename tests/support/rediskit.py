"""A real ``redis-server`` for the broker tests, and broker-mode workers as separate processes.

The server listens on a free loopback port with its own folder and no persistence, so that killing and
restarting it loses everything, as the worst Redis restart would. Each worker runs in its own scratch
folder (its cwd and TMPDIR), as it would on its own host; only the spool is shared.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from klipnote.errors import KlipnoteError
from klipnote.job import JobState
from klipnote.spool import Spool

from ..conftest import REPO

T = TypeVar("T")

BROKER_WORKER = Path(__file__).with_name("fake_broker_worker.py")
#: Short leases so that fault tests run in seconds: a frozen or dead worker's job moves on within ~3 s. Tests
#: that inject no fault but count attempts take a longer lease, so that a heartbeat delayed on a loaded machine
#: does not cost an attempt.
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

    def __init__(self, folder: Path, password: str | None = None, *, tls: bool = False) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.password = password
        self.tls = tls
        self.proc: subprocess.Popen | None = None
        if tls:
            make_certificates(folder)

    @property
    def url(self) -> str:
        """The URL a client uses; with TLS it trusts the test's own CA (``ssl_ca_certs``)."""
        auth = f":{self.password}@" if self.password else ""
        if self.tls:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.folder / 'ca.crt'}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
                "--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"]
        if self.password:
            args += ["--requirepass", self.password]
        if self.tls:
            args[args.index("--port") + 1] = "0"
            args += ["--tls-port", str(self.port), "--tls-cert-file", str(self.folder / "redis.crt"),
                     "--tls-key-file", str(self.folder / "redis.key"), "--tls-ca-cert-file",
                     str(self.folder / "ca.crt"), "--tls-auth-clients", "no"]
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


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh redis-server for one test, killed after it."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.kill()


def cli(spool_dir: Path, env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``klipnote --spool SPOOL ARGS...`` in its own process, output captured."""
    return subprocess.run([sys.executable, "-m", "klipnote", "--spool", str(spool_dir), *args], capture_output=True,
                          text=True, env=env, timeout=timeout, check=False)


def wait_all(spool_dir: Path, env: dict[str, str], ids: list[str], timeout: int = 240) -> float:
    """``klipnote wait`` on ``ids`` until every job ended, which must be done; the seconds it took."""
    began = time.monotonic()
    done = cli(spool_dir, env, "wait", "--timeout", str(timeout), *ids, timeout=timeout + 30)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return time.monotonic() - began


def submit(spool_dir: Path, env: dict[str, str], source: Path, count: int, *extra: str) -> list[str]:
    """Submit ``source`` ``count`` times with the real CLI; the job ids."""
    done = cli(spool_dir, env, "submit", "--json", *extra, *[str(source)] * count)
    assert done.returncode == 0, done.stderr
    return [item["id"] for item in json.loads(done.stdout)]


def make_certificates(folder: Path) -> None:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it, made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=klipnote test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "redis.key", "-out", "redis.csr", "-subj",
            "/CN=127.0.0.1")
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "redis.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out",
            "redis.crt", "-days", "2", "-extfile", "san.cnf")


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


def wait_until(check: Callable[[], T], what: str, timeout: float = 60.0) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"{what}: not after {timeout:.0f} s")


def running_on(spool: Spool, job_ids: Iterable[str]) -> dict[str, str]:
    """The jobs now running, by the id of the worker running them."""
    found = {}
    for job_id in job_ids:
        with contextlib.suppress(KlipnoteError):
            status = spool.load_status(job_id)
            if status.state is JobState.RUNNING and status.worker:
                found[status.worker["id"]] = job_id
    return found


def commits(spool: Spool, job_id: str) -> int:
    """How many attempts of the job committed (each commit logs ``done in`` in the job's own log)."""
    path = spool.job_dir(job_id) / "worker.log"
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    return sum(1 for line in lines if ": done in " in line)


def listed_workers(url: str, auth: str) -> dict | None:
    """Flower's answer to ``url`` (``/api/workers``, ``/api/tasks``), or None while it is not 200 and non-empty."""
    status, body = get(url, auth)
    return json.loads(body) if status == 200 and body else None


def get(url: str, auth: str | None = None) -> tuple[int, bytes]:
    """HTTP status and body of a GET (basic ``auth`` as USER:PASSWORD); status 0 when nothing answers."""
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except OSError:
        return 0, b""


def start_relay(server: RedisServer) -> tuple[subprocess.Popen, str]:
    """A relay process to ``server`` (:mod:`tests.support.tcp_relay`) and the broker URL through it: SIGKILL the
    relay to cut one worker off from Redis while the others still reach it."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("tcp_relay.py")), str(port),
                             str(server.port)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and "ready" in proc.stdout.readline()
    return proc, server.url.replace(f":{server.port}/", f":{port}/")
