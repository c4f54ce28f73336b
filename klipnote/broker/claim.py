"""A worker's claim on a job in broker mode: fenced by a token in Redis, committed by renames in the spool.

It is a :class:`klipnote.claim.Claim` to the rest of the worker (the attempt, the outputs, routing), with
the spool's file locks and ticket mtimes replaced by Redis (:mod:`klipnote.broker.ledger`):

- Claiming asks Redis for the job with a fresh random token; the token is the fence.
- A heartbeat thread renews the lease while the token holds; every status write checks it first.
- Committing writes the final status into the private staging folder, asks Redis to end the job with
  this token (atomic: refused once the lease ran out, the job was canceled, or another claim holds it),
  creates the write-once marker ``jobs/<id>/.committed`` (``O_EXCL``: a second commit of the same job
  fails there even if Redis lost its memory), then renames the staged files into the job folder,
  ``status.json`` last. A worker that dies between the decision and the renames leaves a complete staging
  folder that the marker names; any reconciler finishes the renames (:func:`roll_forward`).

From the shared storage it needs no lock and no mtime: files written whole, ``O_EXCL`` creates, renames.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from klipnote import recovery
from klipnote.claim import FINISH_MESSAGE, Claim, WorkerRef
from klipnote.errors import BrokerUnavailable, ClaimLost, KlipnoteError
from klipnote.fsio import atomic_write_json, fsync_dir, read_json
from klipnote.job import JobState, Lane, Manifest, Status, now
from klipnote.spool import STATUS, Spool, Ticket

if TYPE_CHECKING:
    from klipnote.broker.dispatch import Dispatcher
    from klipnote.broker.ledger import Ledger

log = logging.getLogger("klipnote.broker")

#: The write-once marker of a job's one commit: it names the staging folder being promoted.
COMMITTED = ".committed"


def claim_job(spool: Spool, ledger: Ledger, dispatcher: Dispatcher, job_id: str, worker: WorkerRef,
              lanes: Sequence[Lane]) -> BrokerClaim | None:
    """Claim the job a task names, or None: gone, ended, a duplicate task (a live claim holds it, or the job
    moved to a lane this worker does not serve: routing sent it a task there), or out of attempts (then the
    job fails here, with the reason)."""
    try:
        manifest = spool.manifest(job_id)
    except FileNotFoundError:
        return None  # removed by gc, or quarantined
    except (OSError, ValueError) as exc:
        with contextlib.suppress(OSError):
            recovery.quarantine_job(spool, job_id, f"manifest unreadable: {type(exc).__name__}: {exc}")
        return None
    status = spool.status_or_rebuilt(manifest)
    if status.state.terminal or status.lane not in lanes:
        return None
    from klipnote.broker.ledger import ClaimOutcome

    token = secrets.token_hex(8)
    answer = ledger.claim(job_id, token, worker.id, spool.lease_ttl, floor=status.attempt, limit=status.attempt_limit)
    if answer.outcome is ClaimOutcome.CLAIMED:
        status.state = JobState.RUNNING
        status.attempt = int(answer.detail)
        status.worker = worker.to_dict()
        status.started_at = now()
        status.stage, status.progress, status.error = None, 0.0, None
        status.message = f"claimed by worker {worker.id} (attempt {status.attempt} of {status.attempt_limit})"
        with spool.io(f"claiming job {job_id}"):
            spool.write_status(status)
        return BrokerClaim(spool, manifest, status, ledger, dispatcher, token)
    if answer.outcome is ClaimOutcome.EXHAUSTED:
        status.state, status.finished_at = JobState.FAILED, now()
        status.error = status.message = (f"gave up after {answer.detail} attempts: each one's worker died, froze or "
                                         "lost the network before finishing (see the workers' logs)")
        status.stage = status.worker = None
        with spool.io(f"failing job {job_id}"):
            spool.write_status(status)
        clear_staging(spool.job_dir(job_id))  # every attempt's holder is dead: none of them can commit
    elif answer.outcome is ClaimOutcome.ENDED and answer.detail == JobState.CANCELED.value:
        _write_canceled(spool, job_id)  # the canceler stopped before recording it in the spool
    return None


def _write_canceled(spool: Spool, job_id: str) -> None:
    """Redis holds the job as canceled: the spool says so too. The staging of attempts is left to their holders
    and to ``gc``: a live holder that has not noticed yet would find its folder gone under it."""
    with contextlib.suppress(KlipnoteError, OSError):
        status = spool.load_status(job_id)
        if status.state is not JobState.CANCELED:
            _write_ended(spool, status, JobState.CANCELED, "canceled")


def record_ended(spool: Spool, job_id: str, state: JobState) -> None:
    """The reconciler found the job ended in Redis (canceled, or failed) while the spool says it runs: a claim's
    write landed after a cancel, or its writer died before recording the end. A job the spool holds as queued is
    left alone: a retry writes queued before its ticket revives the job in Redis."""
    with contextlib.suppress(KlipnoteError, OSError):
        status = spool.load_status(job_id)
        if status.state is JobState.RUNNING:
            _write_ended(spool, status, state, "canceled" if state is JobState.CANCELED else
                         "failed: its worker ended it in the broker but did not record why (see the workers' logs)")


def _write_ended(spool: Spool, status: Status, state: JobState, message: str) -> None:
    status.state, status.finished_at, status.stage, status.worker = state, now(), None, None
    status.message = message
    if state is JobState.FAILED:
        status.error = message
    spool.write_status(status)


def _mark_committed(job_dir: Path, staging: Path, token: str, mode: int) -> None:
    """Create the write-once marker whole: written and synced under a temporary name, then linked into place
    (``link`` is atomic and fails if the name exists, on NFS too), so no crash leaves an empty marker."""
    temporary = job_dir / f"{COMMITTED}.{token}.tmp"
    atomic_write_json(temporary, {"staging": staging.name, "token": token}, mode)
    try:
        os.link(temporary, job_dir / COMMITTED)
    finally:
        temporary.unlink(missing_ok=True)
    fsync_dir(job_dir)


def roll_forward(spool: Spool, job_id: str) -> bool:
    """Finish a commit whose worker died after Redis decided it: rename what the marked staging folder holds."""
    marker = spool.job_dir(job_id) / COMMITTED
    try:
        staging = spool.job_dir(job_id) / read_json(marker)["staging"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if not staging.is_dir():
        return False
    with spool.io(f"committing job {job_id}"):
        _promote(staging, spool.job_dir(job_id))
    log.warning("job %s: finished the commit its worker left half done", job_id)
    return True


def _promote(staging: Path, job_dir: Path) -> None:
    """Rename every staged file into the job folder, ``status.json`` last: readers see done only with outputs."""
    names = sorted(os.listdir(staging), key=lambda name: name == STATUS)
    for name in names:
        os.replace(staging / name, job_dir / name)
    fsync_dir(job_dir)
    clear_staging(job_dir)


def clear_staging(job_dir: Path) -> None:
    """Remove what earlier attempts staged: once a job has ended, none of them can commit (a worker killed with
    ``kill -9`` cannot clean up after itself; one frozen past its lease fails on its next write)."""
    for staging in job_dir.glob(".attempt-*"):
        shutil.rmtree(staging, ignore_errors=True)


class BrokerClaim(Claim):
    """A job this worker holds through Redis. Heartbeats run in a thread until the claim is closed."""

    def __init__(self, spool: Spool, manifest: Manifest, status: Status, ledger: Ledger, dispatcher: Dispatcher,
                 token: str) -> None:  # no super().__init__: that one holds file locks and touches a ticket
        self.spool = spool
        self.manifest = manifest
        self.status = status
        self.ticket = Ticket(manifest.id, status.attempt)
        self.ledger = ledger
        self.dispatcher = dispatcher
        self.token = token
        self.holder = (status.worker or {}).get("id", "")
        self.job_dir = spool.job_dir(manifest.id)
        self.output_dir = spool.staging_dir(manifest.id, status.attempt, token)
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._committing = False  # the marker names output_dir: it must outlive this claim
        self._ending = threading.RLock()  # finish, release and close: one at a time (the supervisor's release)
        self._renewed = time.monotonic()  # the claim set the lease just now
        self._last_progress = 0.0
        self.output_dir.mkdir(mode=spool.dir_mode)
        self._beat = threading.Thread(target=self._heartbeat, name=f"lease-{manifest.id}", daemon=True)
        self._beat.start()

    # ------------------------------------------------------------------ liveness

    def _renew(self) -> bool:
        started = time.monotonic()
        held = self.ledger.renew(self.job_id, self.token, self.spool.lease_ttl, self.holder, self.attempt)
        if held:
            self._renewed = started
        return held

    def _lease_lapsed(self) -> bool:
        """No renewal for longer than a lease: another host may hold the job now, and this one cannot know."""
        return time.monotonic() - self._renewed > self.spool.lease_ttl

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.spool.heartbeat_interval):
            try:
                if not self._renew():
                    self._lost.set()
                    return
            except BrokerUnavailable as exc:  # the lease has slack; Redis may be restarting
                log.info("job %s: lease not renewed: %s", self.job_id, exc)

    @property
    def lost(self) -> bool:
        return self._closed or self._lost.is_set()

    def _lost_reason(self) -> str:
        try:
            state = self.ledger.entries([self.job_id])[self.job_id].state
        except BrokerUnavailable:
            state = None
        if state == JobState.CANCELED.value:
            return f"job {self.job_id} was canceled"
        return f"job {self.job_id} was taken back after this worker's lease ran out; its result is discarded"

    def _may_write(self) -> bool:
        """Before each write: the token still holds the job (asked of Redis now, not only at the last heartbeat),
        or Redis cannot be asked and the lease has not run out since the last renewal; and the spool agrees (no
        commit marker, the status still running with this attempt), so that a holder cut off from Redis never
        writes over the job's next holder. False: Redis cannot be asked and the lease ran out, so another host
        may hold the job; the write waits (the work goes on: after an outage of Redis itself the token still
        holds, and the next renewal says so), and the commit asks Redis, which must answer."""
        if not self.lost:
            try:
                held = self._renew()
            except BrokerUnavailable:
                if self._lease_lapsed():
                    return False
                held = True  # cannot ask: carry on within the lease
            if held and self._spool_says_ours():
                return True
            self._lost.set()
        if self._is_canceled():
            _write_canceled(self.spool, self.job_id)  # a claim's first write may have landed over the cancel
        raise ClaimLost(self._lost_reason())

    def _spool_says_ours(self) -> bool:
        if (self.job_dir / COMMITTED).exists():
            return False
        current = self.spool.load_status(self.job_id)
        return current.state is JobState.RUNNING and current.attempt == self.attempt

    # ------------------------------------------------------------------ reporting

    def update(self, **fields: Any) -> None:
        with self.spool.io(f"updating job {self.job_id}"):
            owned = self._may_write()
            for key, value in fields.items():
                setattr(self.status, key, value)
            if not owned:
                return  # written with the next write that may be made
            self.spool.write_status(self.status)
        if self._is_canceled():  # canceled between the check and the write: put the canceled status back
            _write_canceled(self.spool, self.job_id)

    def _is_canceled(self) -> bool:
        try:
            return self.ledger.entries([self.job_id])[self.job_id].state == JobState.CANCELED.value
        except BrokerUnavailable:
            return False

    # ------------------------------------------------------------------ ending the claim

    def _decide(self, state: JobState) -> None:
        """Ask Redis to end the job with this claim's token; waits out a Redis restart for one lease."""
        deadline = time.monotonic() + self.spool.lease_ttl
        while True:
            try:
                if self.ledger.end(self.job_id, self.token, state.value, self.holder, self.attempt):
                    return
                self._lost.set()
                raise ClaimLost(self._lost_reason())
            except BrokerUnavailable as exc:
                if time.monotonic() > deadline:
                    raise ClaimLost(f"job {self.job_id} cannot be committed: {exc}; it will run again") from None
                time.sleep(min(1.0, self.spool.heartbeat_interval))

    def finish(self, message: str = FINISH_MESSAGE, **fields: Any) -> Status:
        """Commit: the final status goes into the staging folder, Redis decides, the marker is created, the
        staged files are renamed into the job folder."""
        with self._ending, contextlib.ExitStack() as ending:
            ending.callback(self.close)
            with self.spool.io(f"finishing job {self.job_id}"):
                self._may_write()  # a write that must wait goes ahead to the decision: Redis must answer it
                outputs = sorted(p.name for p in self.output_dir.iterdir())
                for key, value in {**fields, "outputs": outputs}.items():
                    setattr(self.status, key, value)
                self.status.state, self.status.message, self.status.finished_at = JobState.DONE, message, now()
                self.status.stage, self.status.progress = None, 100.0
                self.status.updated_at = now()
                atomic_write_json(self.output_dir / STATUS, self.status.to_dict(), self.spool.file_mode)
                self._decide(JobState.DONE)
                try:
                    _mark_committed(self.job_dir, self.output_dir, self.token, self.spool.file_mode)
                except FileExistsError:
                    raise ClaimLost(f"job {self.job_id} was already committed by another attempt; "
                                    "this result is discarded") from None
                self._committing = True  # from here the staging is the job's: a failed rename leaves it to roll_forward
                _promote(self.output_dir, self.job_dir)
                return self.status

    def fail(self, error: str, **fields: Any) -> Status:
        with self._ending, contextlib.ExitStack() as ending:
            ending.callback(self.close)
            with self.spool.io(f"failing job {self.job_id}"):
                self._decide(JobState.FAILED)
                for key, value in fields.items():
                    setattr(self.status, key, value)
                self.status.state, self.status.message, self.status.error = JobState.FAILED, error, error
                self.status.finished_at = now()
                self.spool.write_status(self.status)
                clear_staging(self.job_dir)
                return self.status

    def release(self, reason: str, lane: Lane | None = None, **fields: Any) -> Status:
        """Hand the job back without using up an attempt, to its lane or to ``lane`` (routing), and dispatch it.
        Called from the supervisor's thread at the end of the grace, it waits for a commit under way."""
        with self._ending, contextlib.ExitStack() as ending:
            ending.callback(self.close)
            with self.spool.io(f"handing back job {self.job_id}"):
                if self.lost or not self.ledger.release(self.job_id, self.token):
                    self._lost.set()
                    raise ClaimLost(self._lost_reason())
                target = lane or self.status.lane
                for key, value in fields.items():
                    setattr(self.status, key, value)
                self.status.lane, self.status.state, self.status.attempt = target, JobState.QUEUED, self.attempt - 1
                self.status.worker, self.status.stage, self.status.progress = None, None, 0.0
                self.status.started_at = None
                self.status.message = f"handed back: {reason}"
                self.spool.write_status(self.status)
                self.spool.create_empty(self.spool.queued_path(target, self.manifest.priority, self.job_id,
                                                               self.attempt))
            self.dispatcher.dispatch_pending()  # the ticket waits if Redis is down now
            return self.status

    def close(self) -> None:
        """Stop heartbeats and drop uncommitted outputs. Idempotent. A claim closed without finish, fail or
        release keeps its lease until it runs out; then a reconciler sends the job again (an attempt used)."""
        with self._ending:
            if self._closed:
                return
            self._closed = True
            self._stop.set()
            if self._beat is not threading.current_thread():
                self._beat.join()
            if not self._committing:  # a commit Redis decided keeps its staging for roll_forward
                shutil.rmtree(self.output_dir, ignore_errors=True)
