"""What users ask of jobs in broker mode: dispatch after submit, cancel, retry.

The same changes as :mod:`klipnote.actions`, without the spool's file locks (they do not hold across
hosts): Redis decides (a cancel ends the claim's token, so the running worker stops at its next
heartbeat and cannot commit), then the spool's status is rewritten whole to say so.
"""

from __future__ import annotations

from collections.abc import Callable

from klipnote.actions import mark_canceled, mark_retried
from klipnote.broker.dispatch import Dispatcher, Report, pending_warning
from klipnote.config import Settings
from klipnote.errors import BrokerUnavailable, KlipnoteError
from klipnote.job import JobState, Status
from klipnote.spool import Spool


def dispatch(spool: Spool, settings: Settings, *, reconcile: bool = False) -> Report:
    """Send the tasks of the jobs waiting in the spool (and, reconciling, of those Redis lost)."""
    dispatcher = Dispatcher(spool, settings)
    return dispatcher.reconcile() if reconcile else dispatcher.dispatch_pending()


def dispatch_after_submit(spool: Spool, settings: Settings) -> Report:
    """Dispatch what submit just recorded; with Redis down, one warning line: the jobs wait in the spool."""
    from klipnote import render

    report = dispatch(spool, settings)
    if report.error:
        render.error(pending_warning(report))
    return report


def cancel(spool: Spool, settings: Settings, job_id: str) -> Status:
    """Cancel in Redis, then in the spool. With Redis down a queued job is canceled in the spool alone (a task
    that reaches a worker later finds it canceled); a running one cannot be reached, and that is an error."""
    from klipnote.broker.ledger import Ledger

    assert settings.broker is not None
    status = spool.load_status(job_id)
    if not mark_canceled(status):
        return status
    try:
        former = Ledger.connect(settings.broker).cancel(job_id)
    except BrokerUnavailable:
        if spool.load_status(job_id).state is JobState.RUNNING:
            raise
        former = None
    if former == JobState.DONE.value:
        raise KlipnoteError(f"job {job_id} is being committed; nothing to cancel")
    with spool.io(f"canceling {job_id}"):
        for ticket in spool.find_tickets(job_id):
            ticket.unlink(missing_ok=True)
        status = spool.load_status(job_id)
        if mark_canceled(status):
            spool.write_status(status)
    return status  # the running worker drops its own staging when it notices; gc removes what dead ones left


def retry(spool: Spool, settings: Settings, job_id: str) -> Status:
    """Queue a failed or canceled job again, with a fresh allowance of attempts, and dispatch it (its ticket
    revives the job in Redis)."""
    status = spool.load_status(job_id)
    mark_retried(status, spool.max_attempts)
    with spool.io(f"retrying {job_id}"):
        manifest = spool.manifest(job_id)
        spool.write_status(status)
        spool.create_empty(spool.queued_path(status.lane, manifest.priority, job_id, status.attempt + 1))
    dispatch(spool, settings)  # the ticket waits for a later dispatch if Redis is down
    return status


def for_action(settings: Settings, action: str) -> Callable[[Spool, str], Status]:
    """``cancel`` or ``retry`` in broker mode, shaped as :mod:`klipnote.actions`' functions are."""
    change = cancel if action == "cancel" else retry
    return lambda spool, job_id: change(spool, settings, job_id)
