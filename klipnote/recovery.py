"""Recovery: jobs of dead claimants go back to their queue, or fail after their last attempt.

A claimant holds ``jobs/<id>/.attempt-<n>.lock`` and touches its ticket every heartbeat. A free lock
beside a claimed ticket proves, on the same host, that its holder died; a ticket untouched for the
lease TTL proves it on any host. Reaping then renames the ticket back to the queue with the next
claim number (or fails the job after the last attempt), so a frozen holder that wakes finds its
ticket gone. Anything may reap at any time: workers between jobs, and every command that reads jobs.
A job whose manifest cannot be read is quarantined, never fatal.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from klipnote.errors import KlipnoteError
from klipnote.fsio import atomic_write_text
from klipnote.job import JobState, Status, now
from klipnote.spool import HOSTNAME, STATUS, Spool, Ticket

if TYPE_CHECKING:
    from filelock import FileLock


@dataclass(frozen=True)
class ReapOutcome:
    job_id: str
    action: str  # "requeued", "failed", "dropped" or "quarantined"
    reason: str


def reap(spool: Spool) -> list[ReapOutcome]:
    """Put back the jobs of dead claimants. Safe to call from any process at any time."""
    outcomes: list[ReapOutcome] = []
    try:
        names = os.listdir(spool.claimed)
    except FileNotFoundError:
        return outcomes
    for name in names:
        ticket = Ticket.parse_claimed(name)
        if ticket is None or not (spool.jobs / ticket.job_id).is_dir():
            continue
        try:
            outcome = _reap_one(spool, ticket)
        except (OSError, KlipnoteError):
            continue  # a read-only view of the spool, or a job busy elsewhere: next pass
        if outcome:
            outcomes.append(outcome)
    return outcomes


def _reap_one(spool: Spool, ticket: Ticket) -> ReapOutcome | None:
    from filelock import Timeout

    path = spool.claimed_path(ticket.job_id, ticket.attempt)
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    try:
        status: Status | None = spool.load_status(ticket.job_id)
    except KlipnoteError:
        status = None
    holder = status.worker if status and status.attempt == ticket.attempt else None
    reason = None
    # Free means no live process on this host holds it (on another host it proves nothing).
    attempt_lock = spool.attempt_lock(ticket.job_id, ticket.attempt)
    lock: FileLock | None = None
    try:
        attempt_lock.acquire()
        lock = attempt_lock
    except Timeout:
        pass
    try:
        if lock is not None and holder and holder.get("host") == HOSTNAME:
            reason = f"worker {holder.get('id')} (pid {holder.get('pid')}) exited without finishing"
        age = now() - max(st.st_mtime, st.st_ctime)
        if reason is None and age > spool.lease_ttl:
            who = f"worker {holder.get('id')} on {holder.get('host')}" if holder else "its worker"
            reason = f"{who} sent no heartbeat for {age:.0f} s (lease {spool.lease_ttl:.0f} s)"
        if reason is None:
            return None
        with spool.state_lock(ticket.job_id):
            if not path.exists():
                return None
            if lock is not None:
                # The dead claim's half-written outputs go before its ticket moves: a reaper killed after
                # the move would leave them for good, as nothing reaps that claim again. A frozen holder
                # still owns its lock and clears its own.
                for staging in spool.staging_dirs(ticket.job_id, ticket.attempt):
                    shutil.rmtree(staging, ignore_errors=True)
            return _requeue_or_fail(spool, ticket, path, reason)
    finally:
        if lock is not None:
            lock.release()


def restore_tickets(spool: Spool) -> list[ReapOutcome]:
    """Make a restored backup runnable: requeue every claim in it, and give a ticket to every queued or
    running job that has none. Run it before any worker uses the spool.

    A backup copies job folders and tickets one file at a time while workers run, so it can catch a
    job between two states (its status read before it was claimed, its ticket after). No claim in a
    restored spool has a live holder, but reaping could not tell: a claim whose status predates it
    names no holder, and its ticket keeps the fresh mtime of the moment it was copied, so it would
    wait out a whole lease while a draining worker finds nothing to do and exits.
    """
    outcomes = []
    for name in sorted(os.listdir(spool.claimed)) if spool.claimed.is_dir() else []:
        ticket = Ticket.parse_claimed(name)
        if ticket is None or not (spool.jobs / ticket.job_id).is_dir():
            continue
        with spool.state_lock(ticket.job_id):
            path = spool.claimed_path(ticket.job_id, ticket.attempt)
            if path.exists():
                outcomes.append(_requeue_or_fail(spool, ticket, path, "restored from a backup taken while it ran"))
    for job_id in spool.job_ids():
        with spool.state_lock(job_id):
            try:
                status = spool.load_status(job_id)
            except KlipnoteError:
                continue  # reap and the commands report it
            if status.state.terminal or spool.find_tickets(job_id):
                continue
            ticket = Ticket(job_id, status.attempt)
            outcomes.append(_requeue_or_fail(spool, ticket, None, "restored from a backup without its ticket"))
    return outcomes


def _requeue_or_fail(spool: Spool, ticket: Ticket, path: Path | None, reason: str) -> ReapOutcome:
    """Called under the state lock with the dead claim's ticket at ``path`` (None: the ticket is lost)."""
    job_dir = spool.job_dir(ticket.job_id)
    for orphan in job_dir.glob(f".{STATUS}.*.tmp"):
        orphan.unlink(missing_ok=True)  # every status write holds the state lock: this one's writer died
    try:
        manifest = spool.manifest(ticket.job_id)
    except ValueError as exc:
        quarantine_job(spool, ticket.job_id, f"manifest unreadable: {exc}")
        return ReapOutcome(ticket.job_id, "quarantined", str(exc))
    status = spool.status_or_rebuilt(manifest)
    if status.state.terminal:
        if path is not None:
            path.unlink()
        return ReapOutcome(ticket.job_id, "dropped", f"job already {status.state.value}")
    status.worker, status.stage, status.progress = None, None, 0.0
    if ticket.attempt >= status.attempt_limit:
        status.state = JobState.FAILED
        status.finished_at = now()
        status.error = f"gave up after {ticket.attempt} attempts: {reason}"
        status.message = status.error
        spool.write_status(status)
        if path is not None:
            path.unlink()
        return ReapOutcome(ticket.job_id, "failed", reason)
    queued = spool.queued_path(status.lane, manifest.priority, ticket.job_id, ticket.attempt + 1)
    if path is None:
        spool.create_empty(queued)
    else:
        os.rename(path, queued)
    status.state = JobState.QUEUED
    status.message = f"requeued for attempt {ticket.attempt + 1} of {status.attempt_limit}: {reason}"
    spool.write_status(status)
    return ReapOutcome(ticket.job_id, "requeued", reason)


def quarantine_job(spool: Spool, job_id: str, reason: str) -> Path:
    """Move a job whose files cannot be read out of the way, with the reason beside it."""
    target = spool.quarantine / job_id
    os.rename(spool.job_dir(job_id), target)
    atomic_write_text(target / "REASON", reason + "\n", spool.file_mode)
    for ticket in spool.find_tickets(job_id):
        ticket.unlink(missing_ok=True)
    return target
