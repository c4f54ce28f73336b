"""Real processes against real files: exactly-once claims, kill -9, SIGSTOP, full and read-only disks,
damaged manifests and status files, a spool on its own mount. (Chaos with many kills: test_chaos.py.)"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from klipnote import actions, recovery
from klipnote.claim import WorkerRef, claim_next
from klipnote.errors import ClaimLost, SpoolError
from klipnote.fsio import atomic_write_bytes
from klipnote.job import JobRequest, JobState, Lane, Model, Stage
from klipnote.spool import Spool

from .support.e2ekit import WHISPERX_WORKER, worker_env
from .support.mounts import remount_read_only, tmpfs
from .support.spoolkit import (
    Reader,
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


def killed_mid_job(spool: Spool, spool_dir: Path, media: dict[str, Path],
                   tmp_path: Path) -> tuple[str, Path, subprocess.Popen]:
    """One job, claimed by a worker (lease 10 min) that is then SIGKILLed mid-work: its id, event log, process."""
    (job_id,) = add_jobs(spool, media["wav"], 1)
    log = tmp_path / "events.log"
    victim = start_worker(spool_dir, "victim", log, "--work", "60", "--lease-ttl", "600")
    wait_for_event(log, "claimed")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    return job_id, log, victim


@pytest.mark.slow
def test_a_worker_killed_with_sigkill_has_its_job_reclaimed_at_once_on_the_same_host(spool, spool_dir, media,
                                                                                       tmp_path):
    job_id, log, victim = killed_mid_job(spool, spool_dir, media, tmp_path)
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


#: A reaper in its own process that dies (SIGKILL) the moment it has put a dead claim's job back.
REAPER_KILLED_AFTER_REQUEUE = """
import os, signal, sys
from klipnote import recovery
from klipnote.spool import Spool
requeue = recovery._requeue_or_fail
def requeue_then_die(*args):
    requeue(*args)
    os.kill(os.getpid(), signal.SIGKILL)
recovery._requeue_or_fail = requeue_then_die
recovery.reap(Spool(sys.argv[1]).open())
"""


@pytest.mark.slow
def test_a_reaper_killed_once_it_put_a_dead_claims_job_back_leaves_no_staging_behind(spool, spool_dir, media,
                                                                                       tmp_path):
    """Nothing reaps that claim again, so its staging must be gone before its ticket moves."""
    job_id, _, _ = killed_mid_job(spool, spool_dir, media, tmp_path)
    assert len(spool.staging_dirs(job_id, 1)) == 1

    reaper = subprocess.run([sys.executable, "-c", REAPER_KILLED_AFTER_REQUEUE, str(spool_dir)], check=False,
                            timeout=60)
    assert reaper.returncode == -signal.SIGKILL
    (ticket,) = spool.find_tickets(job_id)
    assert ticket.parent.parent == spool.queue and ticket.name.endswith(f"{job_id}.2"), "the job was not put back"
    assert spool.staging_dirs(job_id, 1) == []
    assert leftovers(spool) == []


@pytest.mark.slow
@pytest.mark.parametrize("frozen", ["mid-work", "outputs-staged"])
def test_a_worker_frozen_past_its_lease_cannot_commit_after_it_wakes(spool, spool_dir, media, tmp_path, frozen):
    (job_id,) = add_jobs(spool, media["wav"], 1)
    log = tmp_path / "events.log"
    if frozen == "mid-work":
        sleeper = start_worker(spool_dir, "sleeper", log, "--work", "1", "--silent-work", "--lease-ttl", "1")
        wait_for_event(log, "claimed")
        sleeper.send_signal(signal.SIGSTOP)
    else:  # it stops itself with its transcript written, one call away from committing it
        sleeper = start_worker(spool_dir, "sleeper", log, "--freeze-before-commit", "--lease-ttl", "1")
        wait_for_event(log, "staged")
    try:
        rescuer = start_worker(spool_dir, "rescuer", log, "--lease-ttl", "1", "--idle-exit", "4")
        assert rescuer.wait(timeout=60) == 0
        assert spool.load_status(job_id).state is JobState.DONE
    finally:
        sleeper.send_signal(signal.SIGCONT)
    assert sleeper.wait(timeout=60) == 0

    lost = wait_for_event(log, "lost")
    assert lost[1:4] == [job_id, "1", "sleeper"]
    assert "taken back after this worker's lease expired" in " ".join(lost[4:])
    status = spool.load_status(job_id)
    assert (status.state, status.attempt, status.worker["id"]) == (JobState.DONE, 2, "rescuer")
    assert (spool.job_dir(job_id) / "transcript.txt").read_text() == f"{job_id} 2 rescuer\n"
    assert spool.staging_dirs(job_id, 1) == [], "the stale worker's outputs were not discarded"
    assert leftovers(spool) == []


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

    outcomes = {o.job_id: o.action for o in recovery.reap(spool)}
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
    with tmpfs(tmp_path / "small", "size=1m") as mount:
        yield mount


def fill(disk: Path) -> Path:
    """Write to ``disk`` until the kernel says it is full; the filler file, to delete when space should return."""
    filler = disk / "filler"
    with contextlib.suppress(OSError), open(filler, "wb") as fh:
        while True:
            fh.write(b"\0" * 65536)
    return filler


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
    filler = fill(small_disk)
    with pytest.raises(SpoolError, match="no space left"):
        claim.progress(Stage.TRANSCRIBING, 50.0, "a long message " * 400)
    status = spool.load_status(job_id)  # still the last complete version
    assert (status.state, status.stage) == (JobState.RUNNING, None)
    filler.unlink()
    claim.finish()
    assert spool.load_status(job_id).state is JobState.DONE
    assert leftovers(spool) == []


def test_a_delivery_to_a_full_disk_leaves_no_partial_copy_and_the_job_still_done(spool, spool_dir, small_disk,
                                                                                 media, tmp_path):
    out = small_disk / "out"
    out.mkdir()
    (job_id,) = add_jobs(spool, media["wav"], 1, JobRequest(model=Model.WHISPERX, output_dir=str(out)))
    fill(small_disk)
    worker = start_engine_worker(spool_dir, "w", tmp_path / "logs", "--drain")
    assert worker.wait(timeout=60) == 0

    status = spool.load_status(job_id)
    assert status.state is JobState.DONE, status.message
    assert f"could not copy outputs to {out}: No space left on device" in status.message
    assert os.listdir(out) == []  # neither a partial tone.srt nor a temp file
    assert (spool.job_dir(job_id) / "transcript.srt").read_text().startswith("1\n00:00:00,000 --> ")


def _fill_while_running(spool: Spool, job_id: str, worker: subprocess.Popen, disk: Path) -> Path:
    """Fill ``disk`` while ``worker`` runs ``job_id``: the worker's next write there meets ENOSPC."""
    while spool.load_status(job_id).state is not JobState.RUNNING:
        assert worker.poll() is None, "the worker exited before it ran the job"
        time.sleep(0.02)
    worker.send_signal(signal.SIGSTOP)  # so that the job cannot finish while the disk fills
    try:
        return fill(disk)
    finally:
        worker.send_signal(signal.SIGCONT)


def test_a_job_whose_spool_disk_fills_mid_run_is_not_lost_and_ends_done_once_space_returns(small_disk, media,
                                                                                           tmp_path):
    spool = Spool(small_disk / "spool", lease_ttl=5.0, heartbeat_interval=0.2).open()
    (job_id,) = add_jobs(spool, media["wav"], 1)
    reader = Reader(spool.root, tmp_path)
    first = start_engine_worker(spool.root, "first", tmp_path / "logs", env={"FAKE_WORK": "2"})
    filler = _fill_while_running(spool, job_id, first, small_disk)
    with contextlib.suppress(subprocess.TimeoutExpired):
        first.wait(timeout=3)  # long enough for the job to meet the full disk (the worker may exit, see below)
    assert spool.load_status(job_id).state is JobState.RUNNING  # the last whole status: nothing half-written

    filler.unlink()
    rescuer = start_engine_worker(spool.root, "rescuer", tmp_path / "logs", "--idle-exit", "2")
    assert rescuer.wait(timeout=60) == 0
    if first.poll() is None:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=60)
    status = spool.load_status(job_id)
    assert (status.state, status.attempt) == (JobState.DONE, 2), status.message
    assert reader.finish()["violations"] == []
    assert os.listdir(spool.claimed) == [] and leftovers(spool) == []


def test_a_worker_keeps_serving_through_a_full_spool_disk(small_disk, media, tmp_path):
    spool = Spool(small_disk / "spool", lease_ttl=5.0, heartbeat_interval=0.2).open()
    (job_id,) = add_jobs(spool, media["wav"], 1)
    worker = start_engine_worker(spool.root, "w", tmp_path / "logs", env={"FAKE_WORK": "2"})
    filler = _fill_while_running(spool, job_id, worker, small_disk)
    with contextlib.suppress(subprocess.TimeoutExpired):
        worker.wait(timeout=3)
    filler.unlink()
    (later,) = add_jobs(spool, media["wav"], 1)
    try:
        actions.wait_for(spool, [job_id, later], timeout=10)
    finally:
        alive = worker.poll() is None
        if alive:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=60)
    assert alive, "the worker exited on a full disk instead of waiting for space"
    assert [spool.load_status(j).state for j in (job_id, later)] == [JobState.DONE] * 2
    assert "Traceback" not in (tmp_path / "logs" / "w.log").read_text()


# ---------------------------------------------------------------------- a read-only spool


@pytest.fixture
def readonly_spool(tmp_path: Path, media: dict[str, Path]) -> Iterator[tuple[Spool, str, str]]:
    """A spool on a tmpfs remounted read-only, holding a done job and a queued one: (spool, done, queued)."""
    with tmpfs(tmp_path / "ro", "size=16m") as mount:
        spool = Spool(mount / "spool", lease_ttl=5.0, heartbeat_interval=0.2).open()
        (done,) = add_jobs(spool, media["wav"], 1)
        worker = start_engine_worker(spool.root, "w", tmp_path / "logs", "--drain")
        assert worker.wait(timeout=60) == 0
        (queued,) = add_jobs(spool, media["wav"], 1)
        remount_read_only(mount)
        yield spool, done, queued


def test_a_readonly_spool_refuses_changes_in_one_line_and_still_reads(readonly_spool, klipnote):
    spool, done, queued = readonly_spool
    for args in (("cancel", queued), ("submit", "--model", "whisperx", str(spool.job_dir(done) / "input.wav")),
                 ("gc", "--older-than", "0s")):
        proc = klipnote(*args, spool=spool.root)
        assert proc.returncode == 1, (args, proc.stderr)
        assert "read-only filesystem" in proc.stderr.splitlines()[-1] and "Traceback" not in proc.stderr, args

    result = klipnote("result", done, spool=spool.root)
    assert result.returncode == 0 and result.stdout == (spool.job_dir(done) / "transcript.srt").read_text()
    assert klipnote("wait", done, spool=spool.root).returncode == 0
    listing = klipnote("list", "--json", spool=spool.root)
    assert sorted(job["id"] for job in json.loads(listing.stdout)) == sorted([done, queued])
    assert spool.load_status(queued).state is JobState.QUEUED


@pytest.mark.slow
def test_a_worker_on_a_readonly_spool_exits_with_one_line(readonly_spool, model_cache, tmp_path):
    spool, _, queued = readonly_spool
    proc = subprocess.run([sys.executable, "-m", "klipnote", "--spool", str(spool.root), *WHISPERX_WORKER, "--once"],
                          capture_output=True, text=True, timeout=300, env=worker_env(model_cache, tmp_path / "home"),
                          check=False)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.splitlines()[-1]
    assert last.startswith("klipnote: writing to the spool failed") and "read-only filesystem" in last, last
    assert proc.stdout == ""  # no ready line: it gave up before loading the model, not after
    assert spool.load_status(queued).state is JobState.QUEUED


# ---------------------------------------------------------------------- the spool on its own mount


def test_a_spool_on_its_own_mount_copies_inputs_and_delivers_to_a_third_fs_atomically(tmp_path, media, klipnote):
    """Inputs on the test's disk, the spool on one tmpfs, --output-dir on another: no hard link is possible
    (EXDEV), every rename that must be atomic stays within one filesystem, readers see only whole files."""
    with tmpfs(tmp_path / "spoolfs", "size=64m") as spoolfs, tmpfs(tmp_path / "outfs", "size=16m") as outfs:
        spool = Spool(spoolfs / "spool", lease_ttl=5.0, heartbeat_interval=0.2).open()
        inputs = tmp_path / "inputs"
        inputs.mkdir()
        originals = [Path(shutil.copy(media["wav"], inputs / f"take{n}.wav")) for n in range(4)]
        stats = {p.name: p.stat() for p in originals}
        out = outfs / "out"
        proc = klipnote("submit", "--json", "--model", "whisperx", "--output-dir", str(out), *map(str, originals),
                        *map(str, originals), spool=spool.root)  # each twice: two jobs race for one target name
        assert proc.returncode == 0, proc.stderr
        ids = [job["id"] for job in json.loads(proc.stdout)]
        for job_id in ids:
            manifest = spool.manifest(job_id)
            snapshot = spool.job_dir(job_id) / manifest.input.snapshot
            st, original = snapshot.stat(), stats[manifest.input.name]
            assert st.st_dev != original.st_dev and st.st_nlink == 1  # a copy, not a link
            assert (st.st_size, st.st_mtime_ns) == (original.st_size, original.st_mtime_ns)
        shutil.rmtree(inputs)  # the jobs must not need the originals any more

        reader = Reader(spool.root, tmp_path, out)
        workers = [start_engine_worker(spool.root, f"w{n}", tmp_path / "logs", "--drain") for n in range(2)]
        for worker in workers:
            assert worker.wait(timeout=120) == 0
        seen = reader.finish()

        assert seen["violations"] == [] and seen["outputs_read"] > 0
        for job_id in ids:
            status = spool.load_status(job_id)
            assert status.state is JobState.DONE and status.message == "done", status.message
        assert sorted(os.listdir(out)) == sorted(f"take{n}.{ext}" for n in range(4) for ext in ("json", "srt"))
        for job_id in ids:
            stem = Path(spool.manifest(job_id).input.name).stem
            assert (out / f"{stem}.srt").read_text() == (spool.job_dir(job_id) / "transcript.srt").read_text()
        assert leftovers(spool) == []
