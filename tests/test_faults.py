"""Real processes racing for real files: exactly-once claims, kill -9, SIGSTOP, full disk, corrupt manifests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from klipnote.claim import WorkerRef, claim_next
from klipnote.errors import JobNotFound, SpoolError
from klipnote.fsio import atomic_write_bytes
from klipnote.job import JobState, Lane, Stage
from klipnote.spool import Spool

from .spoolkit import add_jobs, count, events, start_worker, wait_for_event

pytestmark = pytest.mark.fault


def leftovers(spool: Spool) -> list[Path]:
    """Temp files and staging folders anywhere in the spool: there must never be any at rest."""
    found = [p for p in spool.root.rglob(".*.tmp")]
    found += list(spool.tmp.iterdir())
    return found


@pytest.mark.slow
def test_eight_processes_racing_for_500_jobs_claim_each_exactly_once(spool, spool_dir, media, tmp_path):
    ids = add_jobs(spool, media["wav"], 500)
    log = tmp_path / "events.log"
    workers = [start_worker(spool_dir, f"w{i}", log, "--lease-ttl", "30", "--idle-exit", "2") for i in range(8)]
    for proc in workers:
        assert proc.wait(timeout=600) == 0

    claimed, done = count(log, "claimed"), count(log, "done")
    assert set(claimed) == set(ids) and set(claimed.values()) == {1}, "a job was claimed twice or not at all"
    assert done == claimed
    assert count(log, "lost") == {}
    assert len({fields[3] for fields in events(log)}) > 1, "only one worker ever won: the race was not raced"
    for job_id in ids:
        status = spool.load_status(job_id)
        assert (status.state, status.attempt) == (JobState.DONE, 1)
        assert (spool.job_dir(job_id) / "transcript.txt").read_text().startswith(f"{job_id} 1 ")
    assert os.listdir(spool.claimed) == [] and sum(spool.queue_lengths().values()) == 0
    assert leftovers(spool) == []


@pytest.mark.slow
def test_a_worker_killed_with_sigkill_has_its_job_reclaimed_at_once_on_the_same_host(spool, spool_dir, media,
                                                                                       tmp_path):
    (job_id,) = add_jobs(spool, media["wav"], 1)
    log = tmp_path / "events.log"
    victim = start_worker(spool_dir, "victim", log, "--work", "60", "--lease-ttl", "600")
    wait_for_event(log, "claimed")
    victim.send_signal(signal.SIGKILL)
    victim.wait()

    # The lease is 10 minutes: only the freed attempt lock can tell the rescuer the holder is gone.
    rescuer = start_worker(spool_dir, "rescuer", log, "--lease-ttl", "600", "--idle-exit", "5")
    assert rescuer.wait(timeout=60) == 0
    status = spool.load_status(job_id)
    assert (status.state, status.attempt) == (JobState.DONE, 2)
    assert (spool.job_dir(job_id) / "transcript.txt").read_text() == f"{job_id} 2 rescuer\n"
    assert [f[:4] for f in events(log)] == [["claimed", job_id, "1", "victim"], ["claimed", job_id, "2", "rescuer"],
                                            ["done", job_id, "2", "rescuer"]]
    assert leftovers(spool) == []


@pytest.mark.slow
def test_a_worker_frozen_past_its_lease_cannot_commit_after_it_wakes(spool, spool_dir, media, tmp_path):
    (job_id,) = add_jobs(spool, media["wav"], 1)
    log = tmp_path / "events.log"
    sleeper = start_worker(spool_dir, "sleeper", log, "--work", "1", "--silent-work", "--lease-ttl", "1")
    wait_for_event(log, "claimed")
    sleeper.send_signal(signal.SIGSTOP)
    try:
        rescuer = start_worker(spool_dir, "rescuer", log, "--lease-ttl", "1", "--idle-exit", "4")
        assert rescuer.wait(timeout=60) == 0
        assert spool.load_status(job_id).state is JobState.DONE
    finally:
        sleeper.send_signal(signal.SIGCONT)
    assert sleeper.wait(timeout=60) == 0

    lost = wait_for_event(log, "lost")
    assert lost[1:4] == [job_id, "1", "sleeper"]
    status = spool.load_status(job_id)
    assert (status.state, status.attempt, status.worker["id"]) == (JobState.DONE, 2, "rescuer")
    assert (spool.job_dir(job_id) / "transcript.txt").read_text() == f"{job_id} 2 rescuer\n"
    assert not (spool.job_dir(job_id) / ".attempt-1").exists(), "the stale worker's outputs were not discarded"


def test_a_truncated_manifest_is_quarantined_and_the_other_jobs_keep_flowing(spool, spool_dir, media, tmp_path):
    ids = add_jobs(spool, media["wav"], 5)
    broken = ids[2]
    manifest = spool.job_dir(broken) / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:40])
    log = tmp_path / "events.log"
    worker = start_worker(spool_dir, "w", log, "--idle-exit", "1")
    assert worker.wait(timeout=60) == 0

    assert set(count(log, "done")) == set(ids) - {broken}
    assert not spool.job_dir(broken).exists()
    reason = (spool.quarantine / broken / "REASON").read_text()
    assert "manifest unreadable" in reason
    with pytest.raises(JobNotFound, match="quarantined"):
        spool.resolve(broken)
    assert spool.find_tickets(broken) == []


# ---------------------------------------------------------------------- a full disk


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs, so that ENOSPC comes from the kernel, not from a mock."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True,
                          check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _big_file(folder: Path, size: int) -> Path:
    path = folder / "big.wav"
    path.write_bytes(os.urandom(size))
    return path


def test_submit_on_a_full_disk_fails_cleanly_and_leaves_nothing_behind(small_disk, media, tmp_path):
    spool = Spool(small_disk / "spool").open()
    (kept,) = add_jobs(spool, media["wav"], 1)
    big = _big_file(tmp_path, 2 * 1024 * 1024)  # another filesystem: the snapshot must be copied

    with pytest.raises(SpoolError, match="no space left"):
        add_jobs(spool, big, 1)

    assert spool.job_ids() == [kept]
    assert [p.name for p in (spool.queue / "whisperx").iterdir()] == [f"09.{kept}.1"]
    assert leftovers(spool) == []


def test_an_output_write_that_hits_enospc_leaves_the_old_file_and_no_partial_one(small_disk):
    target = small_disk / "transcript.srt"
    atomic_write_bytes(target, b"old and complete\n")
    with pytest.raises(OSError) as excinfo:
        atomic_write_bytes(target, os.urandom(2 * 1024 * 1024))
    assert excinfo.value.errno == 28  # ENOSPC, from the kernel
    assert target.read_bytes() == b"old and complete\n"
    assert sorted(p.name for p in small_disk.iterdir()) == ["transcript.srt"]


def test_a_worker_whose_disk_fills_mid_job_keeps_the_status_whole(small_disk, media):
    spool = Spool(small_disk / "spool", heartbeat_interval=0.2).open()
    (job_id,) = add_jobs(spool, media["wav"], 1)
    claim = claim_next(spool, [Lane.WHISPERX], WorkerRef.here("w"))
    assert claim is not None
    filler = small_disk / "filler"
    with contextlib.suppress(OSError), open(filler, "wb") as fh:
        fh.write(os.urandom(2 * 1024 * 1024))
    with pytest.raises(SpoolError, match="no space left"):
        claim.progress(Stage.TRANSCRIBING, 50.0, "a long message " * 400)
    status = spool.load_status(job_id)  # still the last complete version
    assert (status.state, status.stage) == (JobState.RUNNING, None)
    filler.unlink()
    claim.finish()
    assert spool.load_status(job_id).state is JobState.DONE
    assert leftovers(spool) == []
