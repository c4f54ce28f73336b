"""The spool's rules, exercised in one process: ordering, cancel, retry, hand-back, reaping, quarantine, gc."""

from __future__ import annotations

import os
import time

import pytest

from klipnote import actions, defaults, intake, recovery, retention
from klipnote.claim import WorkerRef, claim_next
from klipnote.errors import ClaimLost, KlipnoteError, SpoolError, UsageError
from klipnote.fsio import atomic_write_json, temp_name
from klipnote.job import JobRequest, JobState, Lane, Model, Stage
from klipnote.spool import Spool

from .support.spoolkit import add_jobs

ALL_LANES = list(Lane)
ME = WorkerRef.here("tester", "fake")


def claim_one(spool: Spool, lanes=ALL_LANES):
    claim = claim_next(spool, lanes, ME)
    assert claim is not None, "expected a job to claim"
    return claim


def finish_with(claim, text: str = "hello") -> None:
    (claim.output_dir / "transcript.srt").write_text(text)
    claim.finish()


# ---------------------------------------------------------------------- creating and opening


def test_a_new_spool_is_private_and_records_its_format(spool_dir):
    Spool(spool_dir).open()
    assert oct(spool_dir.stat().st_mode & 0o777) == "0o700"
    for sub in ("jobs", "queue", "queue/auto", "claimed", "index", "index/sha256", "tmp", "workers"):
        assert oct((spool_dir / sub).stat().st_mode & 0o777) == "0o700", sub
    assert oct((spool_dir / "spool.json").stat().st_mode & 0o777) == "0o600"


def test_a_spool_shared_with_a_group_is_group_writable_and_setgid(spool_dir):
    import grp

    group = grp.getgrgid(os.getgid()).gr_name
    spool = Spool(spool_dir).open(group=group)
    assert spool_dir.stat().st_mode & 0o7777 == 0o2770
    assert (spool_dir / "jobs").stat().st_gid == os.getgid()
    reopened = Spool(spool_dir).open()
    assert reopened.file_mode == 0o660 and spool.group == reopened.group == group


def test_a_group_spool_keeps_its_files_group_readable_under_a_strict_umask(spool_dir, media):
    import grp

    old = os.umask(0o077)  # what systemd gives services by default
    try:
        spool = Spool(spool_dir).open(group=grp.getgrgid(os.getgid()).gr_name)
        job_id = add_jobs(spool, media["wav"], 1)[0]
    finally:
        os.umask(old)
    for name in ("spool.json", f"jobs/{job_id}/manifest.json", f"jobs/{job_id}/status.json"):
        assert oct((spool_dir / name).stat().st_mode & 0o777) == "0o660", name


def test_a_spool_being_created_by_another_process_is_not_mistaken_for_a_foreign_folder(spool_dir):
    spool_dir.mkdir()
    (spool_dir / "jobs").mkdir()
    temp_name(spool_dir / "spool.json").write_text("{")  # the other process's marker, not yet renamed
    assert Spool(spool_dir).open().root == spool_dir
    assert (spool_dir / "spool.json").is_file()


def test_a_spool_of_another_format_is_refused(spool_dir):
    Spool(spool_dir).open()
    atomic_write_json(spool_dir / "spool.json", {"format": defaults.SPOOL_FORMAT + 1})
    with pytest.raises(SpoolError, match=f"format {defaults.SPOOL_FORMAT + 1}"):
        Spool(spool_dir).open()


def test_a_folder_with_other_files_is_not_turned_into_a_spool(tmp_path):
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(SpoolError, match="not a klipnote spool"):
        Spool(tmp_path).open()
    assert sorted(os.listdir(tmp_path)) == ["thesis.tex"]


def test_reading_a_spool_that_does_not_exist_does_not_create_it(spool_dir):
    with pytest.raises(SpoolError, match="no spool"):
        Spool(spool_dir).open(create=False)
    assert not spool_dir.exists()


# ---------------------------------------------------------------------- submitting


def test_a_submit_that_fails_before_its_commit_leaves_nothing(spool, media, monkeypatch):
    real_rename = os.rename

    def failing_rename(src, dst):
        if str(dst).startswith(str(spool.jobs)):
            raise OSError(5, "I/O error")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(OSError):
        add_jobs(spool, media["wav"], 1)
    assert spool.job_ids() == [] and os.listdir(spool.tmp) == []
    assert sum(spool.queue_lengths().values()) == 0


def test_the_snapshot_survives_the_original_being_deleted(spool, media, tmp_path):
    original = tmp_path / "talk.wav"
    original.write_bytes(media["wav"].read_bytes())
    (job_id,) = add_jobs(spool, original, 1)
    original.unlink()
    claim = claim_one(spool)
    assert claim.input_path().read_bytes() == media["wav"].read_bytes()
    assert claim.job_id == job_id


def test_jobs_are_claimed_by_priority_then_oldest_first(spool, media):
    low = add_jobs(spool, media["wav"], 1, JobRequest(model=Model.WHISPERX, priority=-3))
    old, new = add_jobs(spool, media["wav"], 2)
    urgent = add_jobs(spool, media["wav"], 1, JobRequest(model=Model.WHISPERX, priority=5))
    order = []
    while (claim := claim_next(spool, ALL_LANES, ME)) is not None:
        order.append(claim.job_id)
        finish_with(claim)
    assert order == [*urgent, old, new, *low]


def test_a_worker_only_claims_from_its_lanes(spool, media):
    (mandarin,) = add_jobs(spool, media["wav"], 1, JobRequest(model=Model.AUTO, language="zh-CN"))
    (unknown,) = add_jobs(spool, media["wav"], 1, JobRequest(model=Model.AUTO))
    whisperx = claim_one(spool, [Lane.WHISPERX, Lane.AUTO])
    assert whisperx.job_id == unknown
    assert claim_next(spool, [Lane.WHISPERX, Lane.AUTO], ME) is None
    assert claim_one(spool, [Lane.BELLE2]).job_id == mandarin


# ---------------------------------------------------------------------- running and ending


def test_progress_and_finish_are_visible_in_status(spool, media):
    (job_id,) = add_jobs(spool, media["wav"], 1)
    claim = claim_one(spool)
    running = spool.load_status(job_id)
    assert (running.state, running.attempt, running.worker["id"]) == (JobState.RUNNING, 1, "tester")
    claim.progress(Stage.TRANSCRIBING, 42.0)
    status = spool.load_status(job_id)
    assert (status.stage, status.progress) == (Stage.TRANSCRIBING, 42.0)
    finish_with(claim, "subtitles")
    done = spool.load_status(job_id)
    assert (done.state, done.progress, done.outputs) == (JobState.DONE, 100.0, ["transcript.srt"])
    assert (spool.job_dir(job_id) / "transcript.srt").read_text() == "subtitles"
    assert not claim.output_dir.exists() and os.listdir(spool.claimed) == []


def test_a_failed_job_keeps_its_error_and_leaves_the_queue(spool, media):
    (job_id,) = add_jobs(spool, media["wav"], 1)
    claim_one(spool).fail("audio is corrupt: ffmpeg could not decode it")
    status = spool.load_status(job_id)
    assert (status.state, status.error) == (JobState.FAILED, "audio is corrupt: ffmpeg could not decode it")
    assert spool.find_tickets(job_id) == []


def test_canceling_a_queued_job_takes_it_off_the_queue(spool, media):
    (job_id,) = add_jobs(spool, media["wav"], 1)
    assert actions.cancel(spool, job_id).state is JobState.CANCELED
    assert claim_next(spool, ALL_LANES, ME) is None
    assert actions.cancel(spool, job_id).state is JobState.CANCELED  # idempotent


def test_canceling_a_running_job_makes_its_worker_lose_the_claim_and_its_outputs(spool, media):
    (job_id,) = add_jobs(spool, media["wav"], 1)
    claim = claim_one(spool)
    (claim.output_dir / "transcript.srt").write_text("never seen")
    actions.cancel(spool, job_id)
    with pytest.raises(ClaimLost, match="canceled"):
        claim.progress(Stage.TRANSCRIBING, 10.0)
    with pytest.raises(ClaimLost, match="canceled"):
        claim.finish()
    status = spool.load_status(job_id)
    assert (status.state, status.outputs) == (JobState.CANCELED, [])
    assert not (spool.job_dir(job_id) / "transcript.srt").exists()


def test_a_canceled_claim_is_noticed_by_the_heartbeat(spool, media):
    add_jobs(spool, media["wav"], 1)
    claim = claim_one(spool)
    actions.cancel(spool, claim.job_id)
    deadline = time.monotonic() + 5
    while not claim._lost.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert claim._lost.is_set(), "the heartbeat thread did not notice its ticket was gone"
    claim.close()


def test_done_jobs_cannot_be_canceled_or_retried(spool, media):
    (job_id,) = add_jobs(spool, media["wav"], 1)
    finish_with(claim_one(spool))
    with pytest.raises(KlipnoteError, match="already done"):
        actions.cancel(spool, job_id)
    with pytest.raises(KlipnoteError, match="only failed or canceled"):
        actions.retry(spool, job_id)


def test_retry_queues_a_failed_job_with_a_fresh_allowance_of_attempts(spool, media):
    (job_id,) = add_jobs(spool, media["wav"], 1)
    claim_one(spool).fail("model error")
    queued = actions.retry(spool, job_id)
    assert (queued.state, queued.error, queued.attempt_limit) == (JobState.QUEUED, None, 1 + spool.max_attempts)
    claim = claim_one(spool)
    assert claim.attempt == 2
    finish_with(claim)
    assert spool.load_status(job_id).state is JobState.DONE


def test_a_handed_back_job_keeps_its_attempt(spool, media):
    (job_id,) = add_jobs(spool, media["wav"], 1)
    released = claim_one(spool).release("worker stopping")
    assert (released.state, released.attempt, released.worker) == (JobState.QUEUED, 0, None)
    assert "worker stopping" in released.message
    again = claim_one(spool)
    assert (again.job_id, again.attempt) == (job_id, 1)
    again.close()


# ---------------------------------------------------------------------- dead workers


def test_a_claim_abandoned_on_this_host_is_requeued_at_once(spool, media):
    (job_id,) = add_jobs(spool, media["wav"], 1)
    claim_one(spool).close()  # as if the process died: lock released, no commit
    (outcome,) = recovery.reap(spool)
    assert (outcome.job_id, outcome.action) == (job_id, "requeued")
    status = spool.load_status(job_id)
    assert status.state is JobState.QUEUED and "exited without finishing" in status.message
    assert claim_one(spool).attempt == 2


def test_a_live_claim_is_left_alone(spool, media):
    add_jobs(spool, media["wav"], 1)
    claim = claim_one(spool)
    assert recovery.reap(spool) == []
    claim.close()


def test_a_claim_from_another_host_is_reaped_only_after_its_lease(spool_dir, media):
    spool = Spool(spool_dir, lease_ttl=0.5, heartbeat_interval=60).open()
    (job_id,) = add_jobs(spool, media["wav"], 1)
    claim = claim_next(spool, ALL_LANES, WorkerRef("far", "other-host", 1))
    assert claim is not None
    assert recovery.reap(spool) == [], "a lock on this host says nothing about a worker on another host"
    time.sleep(0.8)  # no heartbeat arrives: the interval is 60 s
    (outcome,) = recovery.reap(spool)
    assert outcome.action == "requeued" and "no heartbeat" in outcome.reason
    with pytest.raises(ClaimLost, match="lease expired"):
        claim.finish()
    assert spool.load_status(job_id).state is JobState.QUEUED


def test_a_job_whose_workers_keep_dying_fails_after_max_attempts(spool, media):
    (job_id,) = add_jobs(spool, media["wav"], 1)
    for _ in range(spool.max_attempts):
        claim_one(spool).close()
        recovery.reap(spool)
    status = spool.load_status(job_id)
    assert status.state is JobState.FAILED
    assert f"gave up after {spool.max_attempts} attempts" in status.error
    assert claim_next(spool, ALL_LANES, ME) is None


# ---------------------------------------------------------------------- damaged files


def test_a_damaged_status_file_is_rebuilt_when_the_job_is_claimed(spool, media):
    (job_id,) = add_jobs(spool, media["wav"], 1)
    (spool.job_dir(job_id) / "status.json").write_text("{ not json")
    with pytest.raises(KlipnoteError, match="unreadable"):
        spool.load_status(job_id)
    finish_with(claim_one(spool))
    assert spool.load_status(job_id).state is JobState.DONE


def test_a_ticket_whose_job_vanished_is_dropped_and_a_staged_one_skipped(spool, media):
    (job_id,) = add_jobs(spool, media["wav"], 1)
    (spool.tmp / job_id).mkdir()  # as if its submit had not committed yet
    os.rename(spool.job_dir(job_id), spool.root / "elsewhere")
    assert claim_next(spool, ALL_LANES, ME) is None
    assert spool.find_tickets(job_id) != [], "a ticket of a job still being staged was dropped"
    (spool.tmp / job_id).rmdir()
    assert claim_next(spool, ALL_LANES, ME) is None
    assert spool.find_tickets(job_id) == []


# ---------------------------------------------------------------------- ids, waiting, retention


def test_ids_resolve_from_unique_prefixes_only(spool, media):
    first, second = add_jobs(spool, media["wav"], 2)
    assert spool.resolve(first) == first and spool.resolve(second.upper()) == second
    common = next(first[:i] for i in range(len(first)) if first[: i + 1] != second[: i + 1])
    with pytest.raises(UsageError, match="matches 2 jobs"):
        spool.resolve(common)
    for bad in ("../../etc/passwd", "", "01/abc", "il0u"):
        with pytest.raises(UsageError, match="not a job id"):
            spool.resolve(bad)


def test_wait_for_returns_at_the_timeout_with_jobs_still_queued(spool, media):
    (job_id,) = add_jobs(spool, media["wav"], 1)
    statuses = actions.wait_for(spool, [job_id], timeout=0.3)
    assert statuses[job_id].state is JobState.QUEUED


def test_gc_removes_old_finished_jobs_and_never_queued_or_running_ones(spool, media):
    done, failed, running, queued = add_jobs(spool, media["wav"], 4)
    finish_with(claim_one(spool))
    claim_one(spool).fail("boom")
    live = claim_one(spool)
    assert live.job_id == running
    assert intake.jobs_with_content(spool, "0" * 64) == sorted([done, failed, running, queued])

    assert retention.gc(spool, older_than=3600) == []
    assert sorted(retention.gc(spool, older_than=0, dry_run=True)) == sorted([done, failed])
    assert len(spool.job_ids()) == 4
    assert sorted(retention.gc(spool, older_than=0)) == sorted([done, failed])
    assert spool.job_ids() == sorted([running, queued])
    assert intake.jobs_with_content(spool, "0" * 64) == sorted([running, queued])
    live.close()
