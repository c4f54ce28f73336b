"""Broker mode under faults (issue 13), with its real parts: a real redis-server (no persistence: killing it
loses everything), real Celery workers as separate processes each in its own scratch folder, the real CLI.
Only the model is the fast fake engine. The numbers these runs showed are in docs/faults.md."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from klipnote.job import JobState
from klipnote.spool import HOSTNAME, Spool

from .support.rediskit import (
    RedisServer,
    broker_env,
    cli,
    commits,
    free_port,
    get,
    listed_workers,
    redis_server,
    running_on,
    start_broker_worker,
    stop,
    submit,
    wait_all,
    wait_until,
)
from .support.spoolkit import job_log

__all__ = ["redis_server"]  # the fixture

pytestmark = [pytest.mark.fault]


def all_done_once(spool: Spool, ids: list[str]) -> dict[str, int]:
    """Assert that every job is done, committed exactly once, with its outputs and no staging left; attempts."""
    attempts = {}
    for job_id in ids:
        status = spool.load_status(job_id)
        assert status.state is JobState.DONE, (job_id, status.message)
        assert commits(spool, job_id) == 1, job_log(spool, job_id)
        assert (spool.job_dir(job_id) / "transcript.srt").exists()
        assert not list(spool.job_dir(job_id).glob(".attempt-*")), job_id
        attempts[job_id] = status.attempt
    return attempts


def test_submit_while_redis_is_down_records_the_job_and_dispatch_catches_up(spool_dir, media, tmp_path):
    server = RedisServer(tmp_path / "redis")  # its port is chosen, nothing listens there yet
    env = broker_env(server, tmp_path / "home", FAKE_WORK="0.1")
    done = cli(spool_dir, env, "submit", "--json", str(media["wav"]), str(media["mp3"]))
    assert done.returncode == 0, done.stderr
    ids = [item["id"] for item in json.loads(done.stdout)]
    assert [line for line in done.stderr.splitlines() if line] == [
        line for line in done.stderr.splitlines() if line.startswith("klipnote: warning: 2 job(s) recorded in the "
                                                                     "spool but not dispatched")]
    spool = Spool(spool_dir).open()
    assert {spool.load_status(i).state for i in ids} == {JobState.QUEUED}
    assert sum(spool.queue_lengths().values()) == 2  # the tickets wait for dispatch
    down = cli(spool_dir, env, "dispatch")
    assert down.returncode == 1 and "cannot be reached" in down.stderr and len(down.stderr.splitlines()) == 1

    server.start()
    try:
        up = cli(spool_dir, env, "dispatch", "--json")
        assert up.returncode == 0, up.stderr
        assert sorted(json.loads(up.stdout)["sent"]) == sorted(ids)
        assert sum(spool.queue_lengths().values()) == 0
        worker = start_broker_worker(spool_dir, "w0", tmp_path / "hosts", env)
        try:
            wait_all(spool_dir, env, ids, timeout=60)
        finally:
            stop(worker)
        all_done_once(spool, ids)
    finally:
        server.kill()


@pytest.mark.slow
def test_redis_killed_and_restarted_empty_mid_batch_loses_no_job(redis_server, spool_dir, media, tmp_path):
    env = broker_env(redis_server, tmp_path / "home", FAKE_WORK="0.3")
    spool = Spool(spool_dir).open()
    ids = submit(spool_dir, env, media["wav"], 24)
    workers = [start_broker_worker(spool_dir, f"w{n}", tmp_path / "hosts", env) for n in range(2)]
    try:
        wait_until(lambda: sum(spool.load_status(i).state is JobState.DONE for i in ids) >= 4, "4 jobs done")
        redis_server.kill()  # the queues, the claims and the leases are gone
        done_at_kill = sum(spool.load_status(i).state is JobState.DONE for i in ids)
        time.sleep(1.5)
        redis_server.start()
        seconds = wait_all(spool_dir, env, ids)
    finally:
        stop(*workers)
    attempts = all_done_once(spool, ids)
    print(f"Redis restarted empty with {done_at_kill} of 24 jobs done: the rest done {seconds:.1f} s after the "
          f"restart; attempts {sorted(attempts.values())}")


@pytest.mark.slow
def test_busy_workers_killed_with_sigkill_again_and_again_lose_no_job_and_commit_none_twice(
        redis_server, spool_dir, media, tmp_path):
    env = broker_env(redis_server, tmp_path / "home", FAKE_WORK="0.5")
    spool = Spool(spool_dir).open()
    ids = submit(spool_dir, env, media["wav"], 30)
    workers = {f"w{n}": start_broker_worker(spool_dir, f"w{n}", tmp_path / "hosts", env) for n in range(3)}
    killed_jobs = []
    try:
        for round_ in range(4):
            busy = wait_until(lambda: {w: j for w, j in running_on(spool, ids).items() if w in workers},
                              "a busy worker")
            victim, job_id = next(iter(busy.items()))
            workers.pop(victim).send_signal(signal.SIGKILL)
            killed_jobs.append(job_id)
            fresh = f"r{round_}"
            workers[fresh] = start_broker_worker(spool_dir, fresh, tmp_path / "hosts", env)
        wait_all(spool_dir, env, ids)
    finally:
        stop(*workers.values())
    attempts = all_done_once(spool, ids)
    assert all(attempts[job_id] >= 2 for job_id in killed_jobs), attempts
    print(f"30 jobs, 4 busy workers killed: attempts of the killed jobs {[attempts[j] for j in killed_jobs]}, "
          f"of all {sorted(attempts.values())}")


@pytest.mark.slow
def test_a_worker_frozen_past_its_lease_has_its_result_discarded(redis_server, spool_dir, media, tmp_path):
    env = broker_env(redis_server, tmp_path / "home", FAKE_WORK="6")
    spool = Spool(spool_dir).open()
    (job_id,) = submit(spool_dir, env, media["wav"], 1)
    frozen = start_broker_worker(spool_dir, "frozen", tmp_path / "hosts", env)
    rescuer = None
    try:
        wait_until(lambda: running_on(spool, [job_id]).get("frozen"), "the job running on the first worker")
        frozen.send_signal(signal.SIGSTOP)
        rescuer = start_broker_worker(spool_dir, "rescuer", tmp_path / "hosts", env)
        wait_until(lambda: spool.load_status(job_id).state is JobState.DONE, "the job done by the second", 60)
        frozen.send_signal(signal.SIGCONT)
        discarded = wait_until(lambda: [line for line in job_log(spool, job_id)
                                        if "frozen attempt 1: stopped:" in line], "the frozen worker giving up")
    finally:
        stop(frozen, *([rescuer] if rescuer else []))
    assert "lease ran out; its result is discarded" in discarded[0]
    status = spool.load_status(job_id)
    assert status.worker is not None and status.worker["id"] == "rescuer" and status.attempt == 2
    all_done_once(spool, [job_id])


def test_cancel_reaches_a_running_job_on_another_worker(redis_server, spool_dir, media, tmp_path):
    env = broker_env(redis_server, tmp_path / "home", FAKE_WORK="30")
    spool = Spool(spool_dir).open()
    (job_id,) = submit(spool_dir, env, media["wav"], 1)
    worker = start_broker_worker(spool_dir, "w0", tmp_path / "hosts", env)
    try:
        wait_until(lambda: running_on(spool, [job_id]), "the job running")
        canceled = cli(spool_dir, env, "cancel", job_id)
        assert canceled.returncode == 0, canceled.stderr
        stopped = wait_until(lambda: [line for line in job_log(spool, job_id) if ": stopped:" in line],
                             "the worker stopping the job", 30)
    finally:
        stop(worker)
    assert f"job {job_id} was canceled" in stopped[0]
    assert spool.load_status(job_id).state is JobState.CANCELED
    assert not (spool.job_dir(job_id) / "transcript.srt").exists()
    assert not list(spool.job_dir(job_id).glob(".attempt-*"))


@pytest.mark.slow
def test_flower_lists_the_live_workers_and_their_tasks_and_no_command_shows_the_redis_password(spool_dir, media,
                                                                                              tmp_path):
    password = "flower-test-Pa55"
    server = RedisServer(tmp_path / "redis", password=password).start()
    env = broker_env(server, tmp_path / "home", FAKE_WORK="0.1")
    port = free_port()
    workers, flower = [], None
    try:
        workers = [start_broker_worker(spool_dir, name, tmp_path / "hosts", env, *lanes)
                   for name, lanes in (("wx", ()), ("b2", ("--lanes", "belle2")))]
        with open(tmp_path / "flower.log", "wb") as log:  # the replaced service's way: celery --broker URL flower
            flower = subprocess.Popen([sys.executable, "-m", "celery", "--broker", server.url, "flower",
                                       f"--port={port}", "--address=127.0.0.1", "--basic_auth=klip:note"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=log)
        api = f"http://127.0.0.1:{port}/api/workers?refresh=1"
        listed = wait_until(lambda: listed_workers(api, "klip:note"), "Flower listing workers", 90)
        assert {f"wx@{HOSTNAME}", f"b2@{HOSTNAME}"} <= set(listed)
        queues = {q["name"] for q in listed[f"wx@{HOSTNAME}"]["active_queues"]}
        assert queues == {"whisperx", "auto"}
        assert get(api)[0] == 401  # no login, no answer
        ids = submit(spool_dir, env, media["wav"], 2)
        wait_all(spool_dir, env, ids, timeout=60)
        tasks = wait_until(lambda: listed_workers(f"http://127.0.0.1:{port}/api/tasks", "klip:note"),
                           "Flower's tasks", 30)
        ran = [t for t in tasks.values() if t["name"] == "klipnote.transcribe" and t["state"] == "SUCCESS"]
        # every job's task, once or more: a task may be sent twice (submit and a worker's reconciler raced for its
        # ticket), and the second finds the job done and is skipped
        assert {job_id for t in ran for job_id in ids if job_id in t["args"]} == set(ids)
        shown = cli(spool_dir, env, "workers", "--json")
        assert shown.returncode == 0 and "redis://:********@127.0.0.1" in shown.stdout
        outputs = [shown.stdout + shown.stderr, cli(spool_dir, env, "config", "show").stdout,
                   (tmp_path / "flower.log").read_text(errors="replace")]
    finally:
        if flower is not None:
            flower.terminate()
            flower.wait(20)
        stop(*workers)
        server.kill()
    outputs += [(tmp_path / "hosts" / name / "worker.log").read_text() for name in ("wx", "b2")]
    assert all(password not in text for text in outputs)


@pytest.mark.slow
def test_two_hundred_jobs_over_three_workers_each_done_exactly_once(redis_server, spool_dir, media, tmp_path):
    env = broker_env(redis_server, tmp_path / "home", KLIPNOTE_LEASE_TTL="10", FAKE_WORK="0")
    spool = Spool(spool_dir).open()
    ids = submit(spool_dir, env, media["wav"], 200)
    workers = [start_broker_worker(spool_dir, f"w{n}", tmp_path / "hosts", env) for n in range(3)]
    try:
        seconds = wait_all(spool_dir, env, ids, timeout=600)
    finally:
        stop(*workers)
    attempts = all_done_once(spool, ids)
    assert set(attempts.values()) == {1}
    by_worker = {}
    for job_id in ids:
        holder = spool.load_status(job_id).worker or {}
        by_worker[holder.get("id")] = by_worker.get(holder.get("id"), 0) + 1
    print(f"200 jobs over 3 broker workers: {seconds:.1f} s, by worker {by_worker}")
    assert len(by_worker) == 3


@pytest.mark.slow
def test_attempts_are_counted_across_hosts_and_capped(redis_server, spool_dir, media, tmp_path):
    env = broker_env(redis_server, tmp_path / "home", FAKE_WORK="60", KLIPNOTE_MAX_ATTEMPTS="2")
    spool = Spool(spool_dir).open()
    (job_id,) = submit(spool_dir, env, media["wav"], 1)
    worker = None
    try:
        for attempt in (1, 2):
            worker = start_broker_worker(spool_dir, f"w{attempt}", tmp_path / "hosts", env)
            wait_until(lambda: running_on(spool, [job_id]).get(f"w{attempt}"), f"attempt {attempt} running")  # noqa: B023
            worker.send_signal(signal.SIGKILL)
            worker.wait()
        worker = start_broker_worker(spool_dir, "w3", tmp_path / "hosts", env)
        wait_until(lambda: spool.load_status(job_id).state is JobState.FAILED, "the job failed after its last attempt",
                   30)
    finally:
        if worker is not None:
            stop(worker)
    failed = spool.load_status(job_id)
    assert failed.attempt == 2
    assert failed.error is not None and failed.error.startswith("gave up after 2 attempts")
    assert commits(spool, job_id) == 0
    assert not list(spool.job_dir(job_id).glob(".attempt-*"))  # the dead attempts' staging is cleared


def test_sigterm_past_the_grace_hands_the_running_job_back_without_using_an_attempt(redis_server, spool_dir, media,
                                                                                     tmp_path):
    env = broker_env(redis_server, tmp_path / "home", FAKE_WORK="30")
    spool = Spool(spool_dir).open()
    (job_id,) = submit(spool_dir, env, media["wav"], 1)
    first = start_broker_worker(spool_dir, "first", tmp_path / "hosts", env, "--grace", "0.5")
    wait_until(lambda: running_on(spool, [job_id]).get("first"), "the job running")
    first.send_signal(signal.SIGTERM)  # Celery's warm shutdown; the job does not end within the grace
    assert first.wait(30) == 0
    status = spool.load_status(job_id)
    assert (status.state, status.attempt, status.worker) == (JobState.QUEUED, 0, None)
    assert "stopped before the job finished" in status.message
    second = start_broker_worker(spool_dir, "second", tmp_path / "hosts", {**env, "FAKE_WORK": "0.1"})
    try:
        wait_until(lambda: spool.load_status(job_id).state is JobState.DONE, "the job done by the second", 30)
    finally:
        stop(second)
    assert spool.load_status(job_id).attempt == 1
    all_done_once(spool, [job_id])


def test_a_worker_started_while_redis_is_down_dispatches_the_waiting_jobs_once_it_is_up(spool_dir, media, tmp_path):
    server = RedisServer(tmp_path / "redis")
    env = broker_env(server, tmp_path / "home", FAKE_WORK="0.1")
    done = cli(spool_dir, env, "submit", "--json", str(media["wav"]))
    assert done.returncode == 0 and "not dispatched" in done.stderr
    (job_id,) = [item["id"] for item in json.loads(done.stdout)]
    worker = start_broker_worker(spool_dir, "w0", tmp_path / "hosts", env)  # Celery keeps trying to connect
    spool = Spool(spool_dir).open()
    try:
        time.sleep(1.0)
        assert spool.load_status(job_id).state is JobState.QUEUED
        server.start()
        wait_until(lambda: spool.load_status(job_id).state is JobState.DONE, "the job done once Redis is up", 60)
    finally:
        stop(worker)
        server.kill()
    all_done_once(spool, [job_id])


def test_a_commit_cut_short_after_redis_decided_is_finished_by_the_reconciler(redis_server, spool_dir, media,
                                                                             tmp_path):
    """The state a worker leaves when it dies between Redis's commit decision and the renames: its complete staging
    folder, named by the write-once marker. `klipnote dispatch` (as every worker's reconciler) finishes the renames."""
    env = broker_env(redis_server, tmp_path / "home")
    spool = Spool(spool_dir).open()
    (job_id,) = submit(spool_dir, env, media["wav"], 1)
    status = spool.load_status(job_id)
    status.state, status.attempt = JobState.RUNNING, 1
    spool.write_status(status)
    staging = spool.job_dir(job_id) / ".attempt-1-0123456789abcdef"
    staging.mkdir()
    (staging / "transcript.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n")
    status.state, status.outputs = JobState.DONE, ["transcript.srt"]
    (staging / "status.json").write_text(json.dumps(status.to_dict()))
    (spool.job_dir(job_id) / ".committed").write_text(json.dumps({"staging": staging.name, "token": "0123"}))
    done = cli(spool_dir, env, "dispatch", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["promoted"] == [job_id]
    finished = spool.load_status(job_id)
    assert (finished.state, finished.outputs) == (JobState.DONE, ["transcript.srt"])
    assert (spool.job_dir(job_id) / "transcript.srt").read_text().endswith("hello\n")
    assert not staging.exists()
