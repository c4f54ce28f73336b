"""Broker mode end to end with the real whisperx worker (issue 13): `klipnote worker` with a broker is a Celery
worker on a real redis-server, running the offline Whisper base model on the CPU."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .support.e2ekit import WHISPERX_WORKER, cli, job, submit, worker_env
from .support.rediskit import redis_server

__all__ = ["redis_server"]  # the fixture

pytestmark = pytest.mark.slow


def test_the_real_whisperx_worker_transcribes_a_job_dispatched_through_redis(redis_server, model_cache, corpus,
                                                                            tmp_path: Path):
    env = worker_env(model_cache, tmp_path / "home", KLIPNOTE_BROKER=redis_server.url)
    spool = tmp_path / "spool"
    refused = cli(spool, *WHISPERX_WORKER, "--drain", env=env)
    assert refused.returncode == 2 and "--drain: not with a broker" in refused.stderr
    worker = subprocess.Popen([sys.executable, "-m", "klipnote", "--spool", str(spool), *WHISPERX_WORKER,
                               "--name", "wx-e2e"], env=env, stdout=subprocess.PIPE,
                              stderr=open(tmp_path / "worker.log", "wb"), text=True)  # noqa: SIM115
    try:
        assert worker.stdout is not None
        ready = worker.stdout.readline()
        assert "klipnote worker wx-e2e ready" in ready, (tmp_path / "worker.log").read_text()
        job_id = submit(spool, corpus / "jfk.flac", env=env)
        waited = cli(spool, "wait", "--timeout", "600", job_id, env=env)
        assert waited.returncode == 0, waited.stdout + waited.stderr
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(120) == 0
    found = job(spool, job_id)
    assert found["status"]["worker"]["id"] == "wx-e2e"
    assert found["status"]["routing"]["decided"] == "whisperx"
    assert "ask not what your country can do for you" in found["outputs"]["srt"].lower()
    assert (spool / "jobs" / job_id / ".committed").exists()
    log = (tmp_path / "worker.log").read_text()
    assert "Task klipnote.transcribe[" in log and "succeeded" in log  # Celery ran it, and acknowledged it
