"""The worker's side of the spool: claim a job, prove you are alive, report, commit or hand back.

Usage::

    claim = claim_next(spool, [Lane.WHISPERX, Lane.AUTO], WorkerRef.here("w1", "whisperx"))
    if claim:
        with claim:
            audio = claim.input_path()
            claim.progress(Stage.TRANSCRIBING, 40.0)
            (claim.output_dir / "transcript.srt").write_text(...)
            claim.finish()

Outputs are written into a private staging folder and moved into the job folder only by
:meth:`Claim.finish`, under the job's state lock, after checking that this claim still owns
the job. A worker that was frozen past its lease, or whose job was canceled, gets
:class:`~klipnote.errors.ClaimLost` there and its outputs are discarded.
"""

from __future__ import annotations

import os
import secrets
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from klipnote import defaults, recovery
from klipnote.errors import ClaimLost, KlipnoteError
from klipnote.fsio import fsync_dir
from klipnote.job import JobState, Lane, Manifest, Stage, Status, now
from klipnote.spool import HOSTNAME, Spool, Ticket

FINISH_MESSAGE = "done"


@dataclass(frozen=True)
class WorkerRef:
    """Who holds a claim: enough for another process to tell whether it is still alive."""

    id: str
    host: str
    pid: int
    model: str = ""

    @classmethod
    def here(cls, worker_id: str, model: str = "") -> WorkerRef:
        return cls(worker_id, HOSTNAME, os.getpid(), model)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def claim_next(spool: Spool, lanes: Sequence[Lane], worker: WorkerRef) -> Claim | None:
    """Claim the most urgent, oldest waiting job of ``lanes``; None when there is none."""
    candidates: list[tuple[str, Lane, Ticket]] = []
    for lane in lanes:
        try:
            names = os.listdir(spool.queue / lane.value)
        except FileNotFoundError:
            continue
        for name in names:
            ticket = Ticket.parse_queued(name)
            if ticket is not None:
                candidates.append((name, lane, ticket))
    candidates.sort(key=lambda c: c[0])  # priority key, then id (= submit time)
    with spool.io("claiming a job"):  # a read-only or full spool: one line, not a traceback from filelock
        for name, lane, ticket in candidates:
            claim = _try_claim(spool, spool.queue / lane.value / name, ticket, worker)
            if claim is not None:
                return claim
    return None


def _try_claim(spool: Spool, source: Path, ticket: Ticket, worker: WorkerRef) -> Claim | None:
    from filelock import Timeout

    if (spool.tmp / ticket.job_id).exists():
        return None  # its submit has not committed yet
    if not (spool.jobs / ticket.job_id).is_dir():
        source.unlink(missing_ok=True)  # the job was rolled back, removed or quarantined
        return None
    lock = spool.attempt_lock(ticket.job_id, ticket.attempt)
    try:
        lock.acquire()
    except (Timeout, FileNotFoundError):
        return None
    target = spool.claimed_path(ticket.job_id, ticket.attempt)
    try:
        os.rename(source, target)
    except FileNotFoundError:
        lock.release()
        return None  # another worker won the race
    try:
        os.utime(target)  # the lease starts now, not when the ticket was queued
        with spool.state_lock(ticket.job_id):
            try:
                manifest = spool.manifest(ticket.job_id)
            except (OSError, ValueError) as exc:
                recovery.quarantine_job(spool, ticket.job_id, f"manifest unreadable: {type(exc).__name__}: {exc}")
                lock.release()
                return None
            status = spool.status_or_rebuilt(manifest)
            if status.state.terminal:
                target.unlink(missing_ok=True)
                lock.release()
                return None
            status.state = JobState.RUNNING
            status.attempt = ticket.attempt
            status.worker = worker.to_dict()
            status.started_at = now()
            status.stage, status.progress, status.error = None, 0.0, None
            status.message = f"claimed by worker {worker.id} (attempt {ticket.attempt} of {status.attempt_limit})"
            spool.write_status(status)
    except BaseException:
        if target.exists():  # hand the ticket back untouched: this claim never started
            os.rename(target, source)
        lock.release()
        raise
    return Claim(spool, manifest, status, ticket, lock)


class Claim:
    """A job this worker holds. Heartbeats run in a thread until the claim is closed."""

    def __init__(self, spool: Spool, manifest: Manifest, status: Status, ticket: Ticket, lock: Any) -> None:
        self.spool = spool
        self.manifest = manifest
        self.status = status
        self.ticket = ticket
        self._lock = lock
        self._ticket_path = spool.claimed_path(ticket.job_id, ticket.attempt)
        self.job_dir = spool.job_dir(ticket.job_id)
        self.output_dir = spool.staging_dir(ticket.job_id, ticket.attempt, f"{os.getpid()}-{secrets.token_hex(4)}")
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._last_progress = 0.0
        self.output_dir.mkdir(mode=spool.dir_mode)
        self._beat = threading.Thread(target=self._heartbeat, name=f"heartbeat-{ticket.job_id}", daemon=True)
        self._beat.start()

    @property
    def job_id(self) -> str:
        return self.ticket.job_id

    @property
    def attempt(self) -> int:
        return self.ticket.attempt

    # ------------------------------------------------------------------ liveness

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.spool.heartbeat_interval):
            try:
                os.utime(self._ticket_path)
            except FileNotFoundError:
                self._lost.set()
                return
            except OSError:
                continue  # a transient error; the lease has slack for a few missed beats

    @property
    def lost(self) -> bool:
        # Once closed (handed back, finished) this object speaks for no claim, even if a new one of
        # the same attempt number now holds the same ticket name.
        return self._closed or self._lost.is_set() or not self._ticket_path.exists()

    def check(self) -> None:
        """Raise :class:`ClaimLost` if the job is no longer ours; cheap enough to call often."""
        if self.lost:
            self._lost.set()
            raise ClaimLost(self._lost_reason())

    def _lost_reason(self) -> str:
        try:
            current = self.spool.load_status(self.job_id)
        except KlipnoteError:
            return f"job {self.job_id} is no longer claimed by this worker"
        if current.state is JobState.CANCELED:
            return f"job {self.job_id} was canceled"
        return f"job {self.job_id} was taken back after this worker's lease expired; its result is discarded"

    # ------------------------------------------------------------------ inputs and reporting

    def input_path(self) -> Path:
        """The file to decode, if it is still the file that was submitted (same size and mtime).

        A snapshot is usually a hard link, so a program that rewrites the original in place
        (``ffmpeg -y``) rewrites the snapshot too; with ``--no-copy`` the original is all there is.
        """
        info = self.manifest.input
        path = self.job_dir / info.snapshot if info.snapshot else Path(info.path)
        how = "its snapshot is a hard link to the original" if info.snapshot else "it was submitted with --no-copy"
        try:
            st = path.stat()
        except OSError as exc:
            raise KlipnoteError(f"input {info.name} is gone ({exc.strerror}); {how}") from None
        if st.st_size != info.size or abs(st.st_mtime - info.mtime) > 1e-3:
            raise KlipnoteError(f"input {info.name} was changed after it was submitted ({how}); submit it again")
        return path

    def progress(self, stage: Stage, percent: float, message: str | None = None) -> None:
        """Report what the job is doing; writes are spaced out, stage changes always written."""
        self.check()
        moment = time.monotonic()
        if (
            stage is self.status.stage
            and percent < 100.0
            and moment - self._last_progress < defaults.PROGRESS_MIN_INTERVAL
        ):
            return
        self._last_progress = moment
        self.update(
            stage=stage,
            progress=round(max(0.0, min(100.0, percent)), 1),
            message=message or f"{stage.value} {percent:.0f}%",
        )

    def update(self, **fields: Any) -> None:
        """Set status fields (engine, routing, timings, ...) while running."""
        with self.spool.io(f"updating job {self.job_id}"), self.spool.state_lock(self.job_id):
            self._verify_owned()
            for key, value in fields.items():
                setattr(self.status, key, value)
            self.spool.write_status(self.status)

    def _verify_owned(self) -> None:
        """Under the state lock: this claim's ticket is still in claimed/ and the job runs as ours."""
        if self.lost:
            self._lost.set()
            raise ClaimLost(self._lost_reason())
        current = self.spool.load_status(self.job_id)
        if current.state is not JobState.RUNNING or current.attempt != self.attempt:
            self._lost.set()
            raise ClaimLost(self._lost_reason())

    # ------------------------------------------------------------------ ending the claim

    def finish(self, message: str = FINISH_MESSAGE, **fields: Any) -> Status:
        """Commit: move staged outputs into the job folder and mark the job done."""
        try:
            with self.spool.io(f"finishing job {self.job_id}"), self.spool.state_lock(self.job_id):
                self._verify_owned()
                outputs = []
                if self.output_dir.is_dir():
                    for staged in sorted(self.output_dir.iterdir()):
                        os.replace(staged, self.job_dir / staged.name)
                        outputs.append(staged.name)
                    fsync_dir(self.job_dir)
                self._end(JobState.DONE, message, outputs=outputs, **fields)
                return self.status
        finally:
            self.close()

    def fail(self, error: str, **fields: Any) -> Status:
        """The job cannot succeed (bad audio, model error): it fails alone, with ``error`` for the user."""
        try:
            with self.spool.io(f"failing job {self.job_id}"), self.spool.state_lock(self.job_id):
                self._verify_owned()
                self._end(JobState.FAILED, error, error=error, **fields)
                return self.status
        finally:
            self.close()

    def _end(self, state: JobState, message: str, **fields: Any) -> None:
        shutil.rmtree(self.output_dir, ignore_errors=True)  # before the ticket goes: no reaper would clear it
        for key, value in fields.items():
            setattr(self.status, key, value)
        self.status.state = state
        self.status.message = message
        self.status.finished_at = now()
        if state is JobState.DONE:
            self.status.stage, self.status.progress = None, 100.0
        self.spool.write_status(self.status)
        self._ticket_path.unlink()

    def release(self, reason: str, lane: Lane | None = None, **fields: Any) -> Status:
        """Hand the job back without using up an attempt: to its queue (the worker is stopping), or to
        another ``lane`` (routing found it belongs to another engine). ``fields`` update the status."""
        try:
            with self.spool.io(f"handing back job {self.job_id}"), self.spool.state_lock(self.job_id):
                self._verify_owned()
                shutil.rmtree(self.output_dir, ignore_errors=True)
                target = lane or self.status.lane
                os.rename(
                    self._ticket_path,
                    self.spool.queued_path(target, self.manifest.priority, self.job_id, self.attempt),
                )
                for key, value in fields.items():
                    setattr(self.status, key, value)
                self.status.lane = target
                self.status.state = JobState.QUEUED
                self.status.attempt = self.attempt - 1
                self.status.worker, self.status.stage, self.status.progress = None, None, 0.0
                self.status.started_at = None
                self.status.message = f"handed back: {reason}"
                self.spool.write_status(self.status)
                return self.status
        finally:
            self.close()

    def close(self) -> None:
        """Stop heartbeats, drop uncommitted outputs, let go of the attempt lock. Idempotent.

        A claim closed without finish, fail or release looks like a dead worker: the next reap
        puts the job back with its attempt used up.
        """
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._beat.join()
        shutil.rmtree(self.output_dir, ignore_errors=True)
        self._lock.release()

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
