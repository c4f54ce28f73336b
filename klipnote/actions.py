"""What a user asks of jobs already in the spool: cancel them, retry them, wait for them to end.

Each change of state happens under the job's state lock; a running worker sees a cancel at its
next heartbeat. Waiting reaps dead claims as it polls, so a job whose worker died does not keep
its waiter waiting for ever.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from klipnote import defaults
from klipnote.errors import KlipnoteError
from klipnote.job import JobState, Status, now
from klipnote.recovery import reap
from klipnote.spool import Spool, user_at_host


def cancel(spool: Spool, job_id: str) -> Status:
    """Cancel a queued or running job; a running worker notices at its next heartbeat."""
    with spool.io(f"canceling {job_id}"), spool.state_lock(job_id):
        status = spool.load_status(job_id)
        if not mark_canceled(status):
            return status
        spool.write_status(status)
        for ticket in spool.find_tickets(job_id):
            ticket.unlink(missing_ok=True)
        return status


def retry(spool: Spool, job_id: str) -> Status:
    """Queue a failed or canceled job again, with a fresh allowance of attempts."""
    with spool.io(f"retrying {job_id}"), spool.state_lock(job_id):
        status = spool.load_status(job_id)
        mark_retried(status, spool.max_attempts)
        manifest = spool.manifest(job_id)
        spool.create_empty(spool.queued_path(status.lane, manifest.priority, job_id, status.attempt + 1))
        spool.write_status(status)
        return status


def mark_canceled(status: Status) -> bool:
    """The status change of a cancel, in memory (spool and broker mode write it each their way); False when the
    job was canceled already. A job that ended otherwise cannot be canceled."""
    if status.state is JobState.CANCELED:
        return False
    if status.state.terminal:
        raise KlipnoteError(f"job {status.id} is already {status.state.value}; nothing to cancel")
    status.state, status.finished_at, status.stage = JobState.CANCELED, now(), None
    status.message = f"canceled by {user_at_host()}"
    return True


def mark_retried(status: Status, max_attempts: int) -> None:
    """The status change of a retry, in memory: queued again with ``max_attempts`` more attempts. Only a failed
    or canceled job can be retried."""
    if not status.state.terminal or status.state is JobState.DONE:
        raise KlipnoteError(f"job {status.id} is {status.state.value}; only failed or canceled jobs can be retried")
    status.state = JobState.QUEUED
    status.attempt_limit = status.attempt + max_attempts
    status.stage, status.progress, status.error, status.worker = None, 0.0, None, None
    status.started_at = status.finished_at = None
    status.message = "queued again by retry"


def wait_for(
    spool: Spool,
    job_ids: Sequence[str],
    *,
    timeout: float | None = None,
    on_poll: Callable[[dict[str, Status]], None] | None = None,
) -> dict[str, Status]:
    """Poll until every job has ended or ``timeout`` passes; reap dead claims meanwhile.

    Returns the last statuses seen; the caller tells a timeout from ``state.terminal``.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    started = time.monotonic()
    while True:
        reap(spool)
        statuses = {job_id: spool.load_status(job_id) for job_id in job_ids}
        if on_poll is not None:
            on_poll(statuses)
        if all(s.state.terminal for s in statuses.values()):
            return statuses
        interval = min(2.0, defaults.WAIT_POLL_INTERVAL + (time.monotonic() - started) / 60.0)
        if deadline is not None:
            if time.monotonic() >= deadline:
                return statuses
            interval = min(interval, max(0.0, deadline - time.monotonic()))
        time.sleep(interval)
