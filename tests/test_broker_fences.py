"""Broker mode's fences under the faults a review found (issue 13): a holder cut off from Redis, a cancel that a
claim's write landed over, a commit whose renames failed or whose worker died right after Redis decided it, a lost
reply, an outage longer than a lease. Real parts as in test_broker_faults.py: a real redis-server, real Celery
workers as separate processes (a fault injected at one named point of the real code, FAKE_BROKER_FAULT), the real
CLI, a relay process standing for one host's network path to Redis."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from klipnote.broker.ledger import LEASED, Ledger
from klipnote.job import JobState
from klipnote.spool import Spool

from .support.rediskit import (
    broker_env,
    cli,
    commits,
    redis_server,
    running_on,
    start_broker_worker,
    start_relay,
    stop,
    submit,
    wait_until,
)
from .support.spoolkit import job_log

__all__ = ["redis_server"]  # the fixture

pytestmark = [pytest.mark.fault]


def stopped_lines(spool: Spool, job_id: str, worker: str, *endings: str) -> list[str]:
    """The job log's lines where ``worker``'s attempt ended so (``stopped`` unless told)."""
    return [line for line in job_log(spool, job_id) if f"{worker} attempt " in line
            and any(f": {ending}:" in line for ending in endings or ("stopped",))]


def test_a_worker_cut_off_from_redis_stops_writing_once_its_lease_ran_out(redis_server, spool_dir, media, tmp_path):
    """Host A loses Redis but keeps the spool; B takes the job over and commits it. A's progress must not write
    running over B's done (it did: the spool said running for ever and `wait` hung)."""
    env = broker_env(redis_server, tmp_path / "home", FAKE_WORK="0.1")
    spool = Spool(spool_dir).open()
    relay, through_relay = start_relay(redis_server)
    cut_off = rescuer = None
    try:
        cut_off = start_broker_worker(spool_dir, "A", tmp_path / "hosts", {**env, "KLIPNOTE_BROKER": through_relay,
                                                                            "FAKE_WORK": "8"})
        (job_id,) = submit(spool_dir, env, media["wav"], 1)
        wait_until(lambda: running_on(spool, [job_id]).get("A"), "the job running on A")
        relay.send_signal(signal.SIGKILL)  # A's network path to Redis is gone; the spool is still shared
        relay.wait()
        rescuer = start_broker_worker(spool_dir, "B", tmp_path / "hosts", env)
        wait_until(lambda: spool.load_status(job_id).state is JobState.DONE, "the job done by B", 60)
        # A stops, or fails when B's commit cleared A's staging under it; either way it must not write the spool
        wait_until(lambda: stopped_lines(spool, job_id, "A", "stopped", "failed"), "A's attempt ending", 60)
        time.sleep(1.0)  # what A would still write lands now
    finally:
        stop(*[proc for proc in (cut_off, rescuer) if proc is not None])
        if relay.poll() is None:
            relay.kill()
    status = spool.load_status(job_id)
    assert (status.state, status.attempt, (status.worker or {}).get("id")) == (JobState.DONE, 2, "B")
    assert commits(spool, job_id) == 1
    assert not list(spool.job_dir(job_id).glob(".attempt-*"))


def test_the_reconciler_does_not_undo_a_cancel_that_a_claims_write_landed_over(redis_server, spool_dir, media,
                                                                              tmp_path):
    """The state a claim leaves when its RUNNING write lands just after a cancel: Redis canceled, no lease, the spool
    running. A reconciler used to queue it again and send it (the cancel undone); now it records the cancel."""
    env = broker_env(redis_server, tmp_path / "home")
    spool = Spool(spool_dir).open()
    (job_id,) = submit(spool_dir, env, media["wav"], 1)
    ledger = Ledger.connect(redis_server.url)
    assert ledger.claim(job_id, "0123456789abcdef", "gone", 30.0, floor=0, limit=3).outcome.value == "claimed"
    assert ledger.cancel(job_id) == "running"
    status = spool.load_status(job_id)
    status.state, status.attempt, status.worker = JobState.RUNNING, 1, {"id": "gone"}
    spool.write_status(status)
    done = cli(spool_dir, env, "dispatch", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["resent"] == []
    assert spool.load_status(job_id).state is JobState.CANCELED
    assert ledger.entries([job_id])[job_id].state == "canceled"


def test_a_job_canceled_in_redis_while_it_runs_stays_canceled_when_the_canceler_died_before_the_spool(
        redis_server, spool_dir, media, tmp_path):
    """Cancel reached Redis but not the spool (its process died, or a claim's write landed over it): the worker that
    notices records the cancel, and no reconciler sends the job again."""
    env = broker_env(redis_server, tmp_path / "home", FAKE_WORK="30")
    spool = Spool(spool_dir).open()
    (job_id,) = submit(spool_dir, env, media["wav"], 1)
    worker = start_broker_worker(spool_dir, "w0", tmp_path / "hosts", env)
    try:
        wait_until(lambda: running_on(spool, [job_id]), "the job running")
        Ledger.connect(redis_server.url).cancel(job_id)  # Redis only: the spool still says running
        stopped = wait_until(lambda: stopped_lines(spool, job_id, "w0"), "the worker stopping the job", 30)
        again = cli(spool_dir, env, "dispatch", "--json")
        time.sleep(1.5)  # the worker's own reconciler passes (every half lease)
    finally:
        stop(worker)
    assert f"job {job_id} was canceled" in stopped[0]
    assert again.returncode == 0 and json.loads(again.stdout)["resent"] == []
    assert spool.load_status(job_id).state is JobState.CANCELED
    assert commits(spool, job_id) == 0


def test_a_commit_whose_first_rename_fails_is_finished_from_the_staging_it_keeps(redis_server, spool_dir, media,
                                                                                tmp_path):
    """The first rename of a decided commit fails (a stale NFS handle): the claim's close used to delete the staging
    that the commit marker names, and the job stayed running for ever. The staging stays; a reconciler finishes."""
    env = broker_env(redis_server, tmp_path / "home", FAKE_WORK="0.1", FAKE_BROKER_FAULT="commit-rename-fails-once")
    spool = Spool(spool_dir).open()
    (job_id,) = submit(spool_dir, env, media["wav"], 1)
    worker = start_broker_worker(spool_dir, "w0", tmp_path / "hosts", env)
    try:
        wait_until(lambda: spool.load_status(job_id).state is JobState.DONE, "the commit finished", 60)
    finally:
        stop(worker)
    status = spool.load_status(job_id)
    assert (status.attempt, status.outputs) == (1, sorted(status.outputs)) and "transcript.srt" in status.outputs
    assert (spool.job_dir(job_id) / "transcript.srt").exists()
    assert not list(spool.job_dir(job_id).glob(".attempt-*"))


def test_a_worker_killed_right_after_redis_decided_its_commit_does_not_leave_the_job_stuck(redis_server, spool_dir,
                                                                                          media, tmp_path):
    """SIGKILL between Redis's commit decision and the spool's marker: Redis says done, the spool running, no marker.
    A reconciler treats the commit as lost and sends the job again (it used to be skipped for ever)."""
    env = broker_env(redis_server, tmp_path / "home", FAKE_WORK="0.1")
    spool = Spool(spool_dir).open()
    (job_id,) = submit(spool_dir, env, media["wav"], 1)
    faulty = {**env, "FAKE_BROKER_FAULT": "die-after-commit-decision"}
    dying = start_broker_worker(spool_dir, "dies", tmp_path / "hosts", faulty)
    assert dying.wait(60) == -signal.SIGKILL
    assert not (spool.job_dir(job_id) / ".committed").exists()
    assert Ledger.connect(redis_server.url).entries([job_id])[job_id].state == "done"
    worker = start_broker_worker(spool_dir, "w1", tmp_path / "hosts", env)
    try:
        wait_until(lambda: spool.load_status(job_id).state is JobState.DONE, "the job done again", 60)
    finally:
        stop(worker)
    status = spool.load_status(job_id)
    assert (status.attempt, (status.worker or {}).get("id")) == (2, "w1")
    assert commits(spool, job_id) == 1
    assert not list(spool.job_dir(job_id).glob(".attempt-*"))


def test_the_ledger_answers_a_repeated_commit_decision_and_outlives_a_lease_that_ran_out(redis_server):
    """A reply lost after Redis ran the decision: asked again, it says yes again. A lease that ran out while Redis
    was unreachable (the hash still names the holder's token) is set again by the holder's next renewal, and its
    commit is accepted; another claim's token is refused as before."""
    ledger = Ledger.connect(redis_server.url)
    assert ledger.claim("job1", "tok1", "w", 30.0, floor=0, limit=3).outcome.value == "claimed"
    assert ledger.end("job1", "tok1", "done", "w", 1)
    assert ledger.end("job1", "tok1", "done", "w", 1)  # the retry after a lost reply
    assert not ledger.end("job1", "tok1", "failed", "w", 1)
    assert not ledger.end("job1", "other", "done", "w", 1)

    assert ledger.claim("job2", "tok2", "w", 30.0, floor=0, limit=3).outcome.value == "claimed"
    ledger.client.delete(f"{ledger.prefix}:lease:job2")  # it ran out during an outage
    assert ledger.renew("job2", "tok2", 30.0, "w", 1)
    assert ledger.entries(["job2"])["job2"].leased
    ledger.client.delete(f"{ledger.prefix}:lease:job2")
    assert ledger.end("job2", "tok2", "done", "w", 1)

    assert ledger.claim("job3", "tok3", "w", 30.0, floor=0, limit=3).outcome.value == "claimed"
    assert ledger.may_dispatch("job3", 0.0, revive=True) == LEASED
    ledger.cancel("job3")
    assert ledger.may_dispatch("job3", 0.0) == ""  # a reconciler does not revive a cancel
    assert ledger.may_dispatch("job3", 0.0, revive=True) == "canceled"  # a retry's ticket does
    assert not ledger.renew("job3", "tok3", 30.0, "w", 1)


def test_a_retry_just_after_a_failure_keeps_its_ticket_until_the_lease_ran_out(redis_server, spool_dir, media,
                                                                              tmp_path):
    """A retry while the failed attempt's lease still lives: the ticket used to be removed without a task sent."""
    env = broker_env(redis_server, tmp_path / "home")
    spool = Spool(spool_dir).open()
    (job_id,) = submit(spool_dir, env, media["wav"], 1)
    ledger = Ledger.connect(redis_server.url)
    assert ledger.claim(job_id, "0123456789abcdef", "w", 30.0, floor=0, limit=3).outcome.value == "claimed"
    assert ledger.end(job_id, "0123456789abcdef", "failed", "w", 1)
    status = spool.load_status(job_id)
    status.state, status.attempt, status.error = JobState.FAILED, 1, "engine error"
    spool.write_status(status)
    again = cli(spool_dir, env, "retry", job_id)
    assert again.returncode == 0, again.stderr
    assert sum(spool.queue_lengths().values()) == 1  # it waits for a later pass, once the lease ran out
    ledger.client.delete(f"{ledger.prefix}:lease:{job_id}")
    sent = cli(spool_dir, env, "dispatch", "--json")
    assert json.loads(sent.stdout)["sent"] == [job_id]
    assert sum(spool.queue_lengths().values()) == 0


def test_without_the_broker_extra_a_command_says_how_to_install_it(redis_server, spool_dir, media, tmp_path):
    """Celery and redis-py made unimportable (as on a host without the extra): one line naming the install, no
    traceback."""
    blocked = tmp_path / "blocked"
    for name in ("redis", "celery", "kombu"):
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text(f'raise ImportError("No module named {name}")\n')
    env = broker_env(redis_server, tmp_path / "home")
    env["PYTHONPATH"] = os.pathsep.join([str(blocked), env["PYTHONPATH"]])
    submitted = cli(spool_dir, env, "submit", str(media["wav"]))
    assert "Traceback" not in submitted.stderr and "pip install -e '.[broker]'" in submitted.stderr
    done = cli(spool_dir, env, "dispatch")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 1 and "pip install -e '.[broker]'" in done.stderr
