"""Real processes against real files: exactly-once claims, kill -9, SIGSTOP, full and read-only disks,
damaged manifests and status files, a spool on its own mount. (Chaos with many kills: test_chaos.py.)"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from klipnote.claim import WorkerRef, claim_next
from klipnote.errors import ClaimLost, SpoolError
from klipnote.fsio import atomic_write_bytes
from klipnote.job import JobState, Lane, Stage
from klipnote.spool import Spool

from .spoolkit import (
    add_jobs,
    count,
    events,
    leftovers,
    start_engine_worker,
    start_worker,
    wait_for_event,
)
from .test_cli import one_error

pytestmark = pytest.mark.fault


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
    # What a kill in the middle of writing leaves: a half output in its staging, a half status beside it.
    (staging,) = spool.staging_dirs(job_id, 1)
    (staging / f".transcript.txt.{victim.pid}.0bad.tmp").write_text(f"{job_id} 1 vi")
    (spool.job_dir(job_id) / f".status.json.{victim.pid}.0bad.tmp").write_text('{"id": "')

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
    assert spool.staging_dirs(job_id, 1) == [], "the stale worker's outputs were not discarded"


# ---------------------------------------------------------------------- damaged files

#: Ways a job file goes bad: cut short (a crash of something that did not write atomically), bytes
#: that are not text, nothing at all, JSON that is not an object, an object with fields of wrong types.
DAMAGE: dict[str, Callable[[bytes, dict], bytes]] = {
    "truncated": lambda raw, _: raw[:40],
    "garbage": lambda raw, _: b"\x00\xff" + os.urandom(64),
    "empty": lambda raw, _: b"",
    "not-an-object": lambda raw, _: b'["queued"]\n',
    "wrong-types": lambda raw, change: json.dumps({**json.loads(raw), **change}).encode(),
}


def damage_jobs(spool: Spool, source: Path, name: str, change: dict, healthy: int) -> tuple[dict[str, str], str]:
    """One job per kind of DAMAGE to its file ``name``, then ``healthy`` whole ones: ({id: kind}, last id).

    ``change`` is what the "wrong-types" damage merges into the file's JSON.
    """
    ids = add_jobs(spool, source, len(DAMAGE) + healthy)
    damaged = dict(zip(ids[:len(DAMAGE)], DAMAGE, strict=True))
    for job_id, kind in damaged.items():
        path = spool.job_dir(job_id) / name
        path.write_bytes(DAMAGE[kind](path.read_bytes(), change))
    return damaged, ids[-1]


def test_a_damaged_status_file_gets_one_line_from_every_command_and_the_worker_rebuilds_it(
        spool, spool_dir, media, klipnote, tmp_path):
    damaged, healthy = damage_jobs(spool, media["wav"], "status.json", {"input": 5, "attempt_limit": "three"}, 1)
    for job_id, kind in damaged.items():
        for args in (("status", job_id), ("wait", "--timeout", "5", job_id), ("cancel", job_id)):
            proc = klipnote(*args)
            assert proc.returncode == 1, (kind, args, proc.stderr)
            one_error(proc, job_id, "unreadable", "status.json")
    listing = klipnote("list", "--json")
    assert listing.returncode == 0 and [job["id"] for job in json.loads(listing.stdout)] == [healthy]
    said = [line for line in listing.stderr.splitlines() if "unreadable" in line]
    assert sorted(line.split()[5] for line in said) == sorted(damaged), listing.stderr

    worker = start_engine_worker(spool_dir, "w", tmp_path / "logs", "--drain")
    assert worker.wait(timeout=60) == 0
    for job_id in [*damaged, healthy]:
        status = spool.load_status(job_id)  # rewritten whole by the worker that ran it
        assert (status.state, status.outputs) == (JobState.DONE, ["transcript.json", "transcript.srt"]), job_id
    assert leftovers(spool) == []


def test_a_damaged_manifest_is_quarantined_by_the_worker_and_the_other_jobs_keep_flowing(
        spool, spool_dir, media, klipnote, tmp_path):
    damaged, healthy = damage_jobs(spool, media["wav"], "manifest.json", {"priority": "high"}, 2)
    for job_id in damaged:  # the status is whole: commands that need only it still work
        proc = klipnote("status", "--json", job_id)
        assert proc.returncode == 0 and json.loads(proc.stdout)["state"] == "queued", proc.stderr

    worker = start_engine_worker(spool_dir, "w", tmp_path / "logs", "--drain")
    assert worker.wait(timeout=60) == 0
    for job_id, kind in damaged.items():
        assert not spool.job_dir(job_id).exists() and spool.find_tickets(job_id) == []
        assert "manifest unreadable" in (spool.quarantine / job_id / "REASON").read_text(), kind
        for args in (("status", job_id), ("wait", job_id), ("cancel", job_id), ("result", job_id)):
            proc = klipnote(*args)
            assert proc.returncode == 1, (kind, args, proc.stderr)
            one_error(proc, job_id, "quarantined", str(spool.quarantine / job_id))
    survivors = [job_id for job_id in spool.job_ids()]
    assert len(survivors) == 2 and healthy in survivors
    assert all(spool.load_status(job_id).state is JobState.DONE for job_id in survivors)
    listing = klipnote("list", "--json")
    assert listing.returncode == 0 and sorted(job["id"] for job in json.loads(listing.stdout)) == survivors


def test_reaping_a_dead_claim_rebuilds_a_damaged_status_and_quarantines_a_damaged_manifest(spool_dir, media):
    spool = Spool(spool_dir, lease_ttl=0.2, heartbeat_interval=0.05).open()
    bad_status, bad_manifest = add_jobs(spool, media["wav"], 2)
    for _ in range(2):
        claim = claim_next(spool, [Lane.WHISPERX], WorkerRef.here("w"))
        assert claim is not None
        claim.close()  # without finishing: its ticket stays claimed, as a dead worker's would
    (spool.job_dir(bad_status) / "status.json").write_bytes(b"\x00garbage")
    manifest = spool.job_dir(bad_manifest) / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "priority": "high"}))
    time.sleep(0.3)  # past the lease: with its status unreadable, no one can tell who held the first job

    outcomes = {o.job_id: o.action for o in spool.reap()}
    assert outcomes == {bad_status: "requeued", bad_manifest: "quarantined"}
    status = spool.load_status(bad_status)
    assert (status.state, [t.name for t in spool.find_tickets(bad_status)]) == (JobState.QUEUED,
                                                                                  [f"09.{bad_status}.2"])
    assert "priority" in (spool.quarantine / bad_manifest / "REASON").read_text()
    assert os.listdir(spool.claimed) == []


def test_a_claim_handed_back_stages_apart_from_the_next_claim_of_the_same_number(spool, media):
    """The thread of a handed-back job may still write: it must not write into the next holder's staging."""
    (job_id,) = add_jobs(spool, media["wav"], 1)
    first = claim_next(spool, [Lane.WHISPERX], WorkerRef.here("first"))
    assert first is not None
    first.release("stopping")
    second = claim_next(spool, [Lane.WHISPERX], WorkerRef.here("second"))
    assert second is not None and second.attempt == first.attempt == 1
    with pytest.raises(FileNotFoundError):
        (first.output_dir / "transcript.srt").write_text("the first holder's late write")
    (second.output_dir / "transcript.srt").write_text("the second holder's\n")
    with pytest.raises(ClaimLost):
        first.finish()
    second.finish()
    assert (spool.job_dir(job_id) / "transcript.srt").read_text() == "the second holder's\n"
    assert leftovers(spool) == []


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
