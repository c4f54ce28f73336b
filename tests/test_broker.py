"""Broker mode (issue 13) with its real parts: a real redis-server, real Celery workers as separate processes
each in its own scratch folder (as hosts would be), the real CLI; only the model is the fast fake engine."""

from __future__ import annotations

import json
import os

import pytest

from klipnote.spool import Spool

from .support.rediskit import (
    RedisServer,
    broker_env,
    cli,
    commits,
    redis_server,
    running_on,
    start_broker_worker,
    stop,
    submit,
    wait_all,
    wait_until,
)

__all__ = ["redis_server"]  # the fixture


def test_jobs_submitted_with_a_broker_run_once_each_on_celery_workers(redis_server, spool_dir, media, tmp_path):
    env = broker_env(redis_server, tmp_path / "home", KLIPNOTE_LEASE_TTL="10", FAKE_WORK="0.2")
    ids = submit(spool_dir, env, media["wav"], 6)
    workers = [start_broker_worker(spool_dir, f"w{n}", tmp_path / "hosts", env) for n in range(2)]
    try:
        wait_all(spool_dir, env, ids, timeout=90)
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
    assert os.listdir(spool.claimed) == []


def test_auto_routing_hands_a_mandarin_job_to_the_belle2_queue(redis_server, spool_dir, media, tmp_path):
    env = broker_env(redis_server, tmp_path / "home", KLIPNOTE_LEASE_TTL="10", FAKE_WORK="0.1", FAKE_LANGUAGE="zh")
    workers = [start_broker_worker(spool_dir, "wx", tmp_path / "hosts", env),
               start_broker_worker(spool_dir, "b2", tmp_path / "hosts", env, "--lanes", "belle2")]
    try:
        ids = submit(spool_dir, env, media["wav"], 2)  # no language hint: auto, heard by the whisperx worker
        wait_all(spool_dir, env, ids, timeout=90)
    finally:
        stop(*workers)
    spool = Spool(spool_dir).open()
    for job_id in ids:
        status = spool.load_status(job_id)
        assert (status.lane.value, status.routing["decided"]) == ("belle2", "belle2")
        assert status.worker is not None and status.worker["id"] == "b2"
        assert status.attempt == 1  # routing uses no attempt
        assert commits(spool, job_id) == 1
    celery_log = (tmp_path / "hosts" / "b2" / "worker.log").read_text()
    assert celery_log.count("Task klipnote.transcribe[") >= 2


def test_an_urgent_job_overtakes_the_tasks_already_waiting_in_its_queue(redis_server, spool_dir, media, tmp_path):
    env = broker_env(redis_server, tmp_path / "home", KLIPNOTE_LEASE_TTL="10", FAKE_WORK="0.1")
    waiting = submit(spool_dir, env, media["wav"], 3, "--priority", "-5")  # sent first, into the queue
    (urgent,) = submit(spool_dir, env, media["wav"], 1, "--priority", "5")
    worker = start_broker_worker(spool_dir, "w0", tmp_path / "hosts", env)
    try:
        wait_all(spool_dir, env, [urgent, *waiting], timeout=60)
    finally:
        stop(worker)
    spool = Spool(spool_dir).open()
    started = {job_id: spool.load_status(job_id).started_at for job_id in (urgent, *waiting)}
    assert min(started, key=lambda job_id: started[job_id]) == urgent, started


def test_retry_in_broker_mode_queues_a_canceled_job_again_and_it_runs(redis_server, spool_dir, media, tmp_path):
    env = broker_env(redis_server, tmp_path / "home", FAKE_WORK="0.1")
    (job_id,) = submit(spool_dir, env, media["wav"], 1)
    assert cli(spool_dir, env, "cancel", job_id).returncode == 0  # before any worker: canceled while queued
    spool = Spool(spool_dir).open()
    assert spool.load_status(job_id).state.value == "canceled"
    worker = start_broker_worker(spool_dir, "w0", tmp_path / "hosts", env)
    try:
        again = cli(spool_dir, env, "retry", job_id)
        assert again.returncode == 0, again.stderr
        wait_all(spool_dir, env, [job_id], timeout=60)
    finally:
        stop(worker)
    assert commits(spool, job_id) == 1


def test_a_rediss_url_with_a_password_runs_jobs_over_tls_and_checks_the_servers_certificate(spool_dir, media,
                                                                                              tmp_path):
    server = RedisServer(tmp_path / "redis", password="tls-Pa55", tls=True).start()
    try:
        env = broker_env(server, tmp_path / "home", FAKE_WORK="0.1")
        untrusted = {**env, "KLIPNOTE_BROKER": server.url.partition("?")[0]}  # the system's CAs do not know ours
        ids = submit(spool_dir, untrusted, media["wav"], 1)  # recorded, dispatch pending
        refused = cli(spool_dir, untrusted, "dispatch")
        assert refused.returncode == 1 and "certificate verify failed" in refused.stderr
        assert "tls-Pa55" not in refused.stderr
        worker = start_broker_worker(spool_dir, "w0", tmp_path / "hosts", env)
        try:
            ids += submit(spool_dir, env, media["wav"], 1)
            wait_all(spool_dir, env, ids, timeout=60)
        finally:
            stop(worker)
    finally:
        server.kill()
    spool = Spool(spool_dir).open()
    assert all(commits(spool, job_id) == 1 for job_id in ids)


def test_top_metrics_and_workers_see_broker_jobs_waiting_and_running(redis_server, spool_dir, media, tmp_path):
    env = broker_env(redis_server, tmp_path / "home", FAKE_WORK="30")
    spool = Spool(spool_dir).open()
    ids = submit(spool_dir, env, media["wav"], 3)
    worker = start_broker_worker(spool_dir, "w0", tmp_path / "hosts", env, "--grace", "0")
    try:
        wait_until(lambda: running_on(spool, ids), "a job running")
        metrics = cli(spool_dir, env, "metrics").stdout
        shown = json.loads(cli(spool_dir, env, "workers", "--json").stdout)["workers"]
        frame = cli(spool_dir, env, "top", "--once").stdout
    finally:
        stop(worker)
    lane = spool.load_status(ids[0]).lane.value  # auto: no language hint
    assert f'klipnote_queue_length{{lane="{lane}"}} 2' in metrics
    assert 'klipnote_jobs{state="running"} 1' in metrics
    (view,) = shown
    assert view["id"] == "w0" and view["current_job"]["id"] in ids
    assert f"{lane} 2" in " ".join(frame.split()) and "w0" in frame


def test_doctor_checks_the_broker(redis_server, spool_dir, tmp_path):
    env = broker_env(redis_server, tmp_path / "home")
    up = cli(spool_dir, env, "doctor")
    (line,) = [line for line in up.stdout.splitlines() if " broker " in line]
    assert line.startswith("ok") and f"redis://127.0.0.1:{redis_server.port}/0 answers (Redis " in line
    redis_server.kill()
    down = cli(spool_dir, env, "doctor")
    (line,) = [line for line in down.stdout.splitlines() if " broker " in line]
    assert line.startswith("FAIL") and "cannot be reached" in line and down.returncode == 1


@pytest.mark.belle2
def test_the_belle2_environment_runs_a_celery_worker_on_the_belle2_queue(redis_server, spool_dir, media, tmp_path):
    """In .venv-belle2 (torch < 2.6): the belle2 worker's environment has Celery and serves the belle2 queue."""
    env = broker_env(redis_server, tmp_path / "home", FAKE_WORK="0.1")
    worker = start_broker_worker(spool_dir, "b2", tmp_path / "hosts", env, "--lanes", "belle2")
    try:
        ids = submit(spool_dir, env, media["wav"], 2, "--model", "belle2")
        wait_all(spool_dir, env, ids, timeout=60)
    finally:
        stop(worker)
    spool = Spool(spool_dir).open()
    assert {spool.load_status(i).worker["id"] for i in ids} == {"b2"}
