"""Chaos with real worker daemons: kill -9 again and again mid-job, and cancel racing claims.

The workers are the production daemon (:class:`klipnote.worker.Worker`, real ffmpeg decoding,
real outputs and commits) around the fast fake engine of ``fake_engine_worker.py``; a separate
reader process polls the spool the whole time, as a user's script would.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import threading
import time

import pytest

from klipnote import actions, recovery
from klipnote.claim import WorkerRef, claim_next
from klipnote.errors import ClaimLost, KlipnoteError
from klipnote.job import JobState, Lane
from klipnote.spool import Spool

from .support.spoolkit import Reader, add_jobs, job_log, leftovers, start_engine_worker

pytestmark = [pytest.mark.fault, pytest.mark.slow]

#: Kills must never use up a job's attempts: the test is about losing and duplicating, not giving up.
ATTEMPTS = 1000
JOBS = 100
WORKERS = 3
KILLS = 15
#: What the test allows the whole run, so that a hang fails with a diagnosis instead of a CI timeout.
PATIENCE = 240.0
#: A successful finish in a job's own log (klipnote.attempt.JobLog): which worker, which attempt.
FINISH = re.compile(r" (\S+) attempt (\d+): done in ")


def victims(spool: Spool, ids: list[str], pids: set[int]) -> list[int]:
    """Pids among ``pids`` running a job right now (by the jobs' own status), those on a job's earliest
    attempt only: a killed job goes back to the head of the queue, and kills should spread over jobs."""
    busy = {}
    for job_id in ids:
        status = spool.load_status(job_id)
        if status.state is JobState.RUNNING and status.worker and status.worker.get("pid") in pids:
            busy[status.worker["pid"]] = status.attempt
    return [pid for pid, attempt in busy.items() if attempt == min(busy.values())]


@pytest.mark.parametrize("batch_jobs", ["1", "4"])
def test_workers_killed_mid_job_again_and_again_lose_nothing_and_commit_each_job_once(spool_dir, media, tmp_path,
                                                                                    batch_jobs):
    """With ``batch_jobs`` 4 each kill lands on a worker holding up to four claims in one shared batch."""
    seed = int.from_bytes(os.urandom(4), "big")
    chance = random.Random(seed)
    spool = Spool(spool_dir, lease_ttl=5.0, heartbeat_interval=0.2, max_attempts=ATTEMPTS).open()
    ids = add_jobs(spool, media["wav"], JOBS)
    logs = tmp_path / "logs"
    reader = Reader(spool_dir, tmp_path)
    env = {"FAKE_WORK": "0.2"}
    workers: dict[int, tuple[str, subprocess.Popen]] = {}
    killed: set[str] = set()

    def start(n: int) -> None:
        proc = start_engine_worker(spool_dir, f"w{n}", logs, "--batch-jobs", batch_jobs, env=env)
        workers[proc.pid] = (f"w{n}", proc)

    for n in range(WORKERS):
        start(n)
    started = time.monotonic()
    next_kill = chance.randint(1, 5)  # paced by jobs done, not by the clock: the same chaos on any machine
    try:
        while True:
            states = [spool.load_status(job_id).state for job_id in ids]
            if all(state.terminal for state in states):
                break
            assert time.monotonic() - started < PATIENCE, f"jobs still open after {PATIENCE} s (seed {seed})"
            done = states.count(JobState.DONE)
            busy = victims(spool, ids, set(workers)) if len(killed) < KILLS and done >= next_kill else []
            if busy:
                name, victim = workers.pop(chance.choice(busy))
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                killed.add(name)
                start(WORKERS + len(killed))
                next_kill = done + chance.randint(1, 5)
            time.sleep(0.05)
    finally:
        for _, proc in workers.values():
            proc.send_signal(signal.SIGTERM)
        for _, proc in workers.values():
            proc.wait(timeout=60)
    seen = reader.finish()
    assert recovery.reap(spool) == []

    context = f"(seed {seed}, {len(killed)} kills)"
    assert len(killed) == KILLS, f"the workers finished before the chaos did {context}"
    assert spool.job_ids() == ids, f"a job was lost or invented {context}"
    retries = 0
    for job_id in ids:
        status = spool.load_status(job_id)
        assert status.state is JobState.DONE, f"{job_id}: {status.state.value}: {status.message} {context}"
        retries += status.attempt - 1
        # The committed outputs are the committing attempt's, whole, and nothing else was committed.
        assert sorted(status.outputs) == ["transcript.json", "transcript.srt"]
        result = json.loads((spool.job_dir(job_id) / "transcript.json").read_text())
        assert (result["metadata"]["attempt"], result["metadata"]["worker"]) == (status.attempt,
                                                                                 status.worker["id"])
        # One successful finish: the per-job log has at most one "done", and exactly one naming the
        # committing attempt unless its worker was killed between committing and writing the line.
        finishes = [found.groups() for line in job_log(spool, job_id) if (found := FINISH.search(line))]
        committed = [(status.worker["id"], str(status.attempt))]
        allowed = ([], committed) if status.worker["id"] in killed else (committed,)
        assert finishes in allowed, f"{job_id}: finished by {finishes}, committed by {committed} {context}"
    # Each kill hit a running job, which came back for another attempt (unless it committed just before).
    assert retries >= KILLS // 2, f"only {retries} attempts were retried after a kill {context}"
    assert os.listdir(spool.claimed) == [] and sum(spool.queue_lengths().values()) == 0
    assert leftovers(spool) == [], context
    assert seen["violations"] == [], context
    assert seen["done_checked"] > 0 and seen["outputs_read"] > 0, "the reader never looked at a finished job"


# ---------------------------------------------------------------------- cancel racing claims


def test_cancel_racing_real_workers_never_lets_a_canceled_job_end_done(spool_dir, media, tmp_path):
    """Cancel returns success only if the job will never be done; else it says the job is already done.

    One job at a time is queued and canceled a random moment later, while two idle workers poll:
    the cancel lands before the claim, between claim and commit, or after the commit. The moments
    adapt to how fast jobs end on the machine of the day.
    """
    seed = int.from_bytes(os.urandom(4), "big")
    chance = random.Random(seed)
    spool = Spool(spool_dir, lease_ttl=5.0, heartbeat_interval=0.2).open()
    logs = tmp_path / "logs"
    workers = [start_engine_worker(spool_dir, f"w{n}", logs, env={"FAKE_WORK": "0.05"}) for n in range(2)]
    canceled: dict[str, bool] = {}  # job -> whether a worker held it when the cancel took effect
    refused: list[str] = []
    try:
        window = 0.4  # seconds; widened while cancels find jobs unfinished, narrowed when they find them done
        for _ in range(60):
            (job_id,) = add_jobs(spool, media["wav"], 1)
            time.sleep(chance.uniform(0.0, window))
            try:
                status = actions.cancel(spool, job_id)
            except KlipnoteError as exc:
                assert "already done" in str(exc), exc
                refused.append(job_id)
                window *= 0.9
            else:
                canceled[job_id] = status.worker is not None
                window *= 1.1
    finally:
        for proc in workers:
            proc.send_signal(signal.SIGTERM)
        for proc in workers:
            assert proc.wait(timeout=60) == 0

    context = f"(seed {seed})"
    for job_id in canceled:
        status = spool.load_status(job_id)
        assert status.state is JobState.CANCELED, f"{job_id} ended {status.state.value} after cancel {context}"
        assert not list(spool.job_dir(job_id).glob("transcript.*")), f"{job_id} committed outputs {context}"
        assert not [line for line in job_log(spool, job_id) if FINISH.search(line)], context
    for job_id in refused:
        assert spool.load_status(job_id).state is JobState.DONE
    assert os.listdir(spool.claimed) == [] and sum(spool.queue_lengths().values()) == 0
    assert leftovers(spool) == []
    # The race was raced: some jobs were canceled while a worker ran them, some had ended first.
    running = sum(canceled.values())
    assert running and refused, f"{running} canceled running, {len(refused)} already done {context}"


def claim_and_commit(spool: Spool, start: threading.Barrier, outcome: dict[str, str]) -> None:
    """Claim the one queued job and commit it at once, recording how that went and how long it took."""
    start.wait()
    began = time.monotonic()
    claim = claim_next(spool, [Lane.WHISPERX], WorkerRef.here("racer"))
    if claim is None:
        outcome["finish"] = "nothing to claim"
        return
    (claim.output_dir / "transcript.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nhi\n")
    try:
        claim.finish()
        outcome["finish"] = "done"
    except ClaimLost:
        outcome["finish"] = "lost"
    outcome["took"] = str(time.monotonic() - began)


def test_cancel_and_a_committing_claim_race_and_exactly_one_wins(spool, media):
    """Many times over: one thread claims and commits at once, another cancels, released together.

    The cancel waits a random part of what the last claim and commit took, so that it lands before
    the claim, between claim and commit, and after the commit, however fast this machine is today.
    """
    seed = int.from_bytes(os.urandom(4), "big")
    chance = random.Random(seed)
    wins = {"cancel": 0, "finish": 0}
    window = 0.02  # seconds; then what the last full claim and commit took
    for _ in range(120):
        (job_id,) = add_jobs(spool, media["wav"], 1)  # the only job waiting: the racer claims this one or none
        start = threading.Barrier(2)
        outcome: dict[str, str] = {}
        racer = threading.Thread(target=claim_and_commit, args=(spool, start, outcome))
        racer.start()
        start.wait()
        time.sleep(chance.uniform(0.0, window))
        try:
            actions.cancel(spool, job_id)
            outcome["cancel"] = "canceled"
        except KlipnoteError as exc:
            outcome["cancel"] = str(exc)
        racer.join()
        if outcome["finish"] == "done":
            window = float(outcome["took"])

        state = spool.load_status(job_id).state
        if outcome["cancel"] == "canceled":
            assert state is JobState.CANCELED and outcome["finish"] in ("lost", "nothing to claim"), outcome
            assert not (spool.job_dir(job_id) / "transcript.srt").exists()
            wins["cancel"] += 1
        else:
            assert "already done" in outcome["cancel"] and (state, outcome["finish"]) == (JobState.DONE, "done")
            wins["finish"] += 1
        assert spool.find_tickets(job_id) == [] and spool.staging_dirs(job_id, 1) == []
    assert wins["cancel"] and wins["finish"], f"{wins} (seed {seed})"
