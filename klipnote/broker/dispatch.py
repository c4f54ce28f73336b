"""Dispatch: turn the spool's waiting tickets into Celery tasks, and reconcile what Redis lost.

In broker mode a ticket in ``queue/<lane>/`` means "recorded, not yet dispatched". Submit writes it as
on one machine (atomically, with the job); dispatching marks the job queued in Redis, sends one task to
the lane's queue, then removes the ticket. Redis down at submit: the ticket stays and the job waits.
A crash between sending and removing sends the task twice at worst, and the claim in Redis lets only one
of the two run the job (:mod:`klipnote.broker.ledger`).

Reconciling (every worker at start and every half lease, and ``klipnote dispatch``) also sends again the
jobs the spool says are waiting or running but Redis does not hold: Redis restarted without
persistence (it forgot the job), or the job's worker died or froze (its lease ran out). Each such job is
sent once however many reconcilers look at the same moment: the decision is one Lua script.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from klipnote import defaults
from klipnote.broker.claim import COMMITTED, record_ended, roll_forward
from klipnote.broker.ledger import LEASED
from klipnote.errors import BrokerUnavailable, KlipnoteError
from klipnote.job import JobState, Lane, now
from klipnote.spool import Spool, Ticket

if TYPE_CHECKING:
    from celery import Celery

    from klipnote.broker.ledger import Ledger
    from klipnote.config import Settings

log = logging.getLogger("klipnote.broker")


@dataclass
class Report:
    """What one pass did: jobs sent (new ones, and again), and the jobs still waiting for dispatch."""

    sent: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    promoted: list[str] = field(default_factory=list)
    pending: int = 0
    error: str | None = None  # why dispatch stopped (the broker cannot be reached)


class Dispatcher:
    def __init__(self, spool: Spool, settings: Settings, ledger: Ledger | None = None,
                 app: Celery | None = None) -> None:
        from klipnote.broker import app as celery_app
        from klipnote.broker.ledger import Ledger

        assert settings.broker is not None
        self.spool = spool
        self.ledger = ledger or Ledger.connect(settings.broker)
        self.app = app or celery_app.create(settings)

    def send(self, job_id: str, lane: Lane, priority: int) -> None:
        """One task for the job on the lane's queue, at its priority (no retries here: a failure leaves the ticket
        to a later pass)."""
        from kombu.exceptions import OperationalError

        from klipnote.broker.app import TASK, celery_priority

        try:
            self.app.send_task(TASK, args=[job_id], queue=lane.value, priority=celery_priority(priority), retry=False)
        except (OperationalError, OSError) as exc:
            raise BrokerUnavailable(f"sending job {job_id}: the broker cannot be reached ({exc})") from None

    # ------------------------------------------------------------------ tickets

    def tickets(self) -> list[tuple[Path, Lane, Ticket]]:
        """Tickets waiting for dispatch, most urgent and oldest first."""
        found = []
        for lane in Lane:
            folder = self.spool.queue / lane.value
            try:
                names = os.listdir(folder)
            except FileNotFoundError:
                continue
            for name in names:
                ticket = Ticket.parse_queued(name)
                if ticket is not None:
                    found.append((folder / name, lane, ticket))
        return sorted(found, key=lambda item: item[0].name)

    def dispatch_pending(self, report: Report | None = None) -> Report:
        """Send a task for every ticket; stop at the first sign that Redis is down (the rest stay pending)."""
        report = report or Report()
        waiting = self.tickets()
        for index, (path, lane, ticket) in enumerate(waiting):
            try:
                self._dispatch_ticket(path, lane, ticket, report)
            except BrokerUnavailable as exc:
                report.error = str(exc)
                report.pending = len(waiting) - index
                return report
        return report

    def _dispatch_ticket(self, path: Path, lane: Lane, ticket: Ticket, report: Report) -> None:
        if (self.spool.tmp / ticket.job_id).exists():
            return  # its submit has not committed yet
        try:
            status = self.spool.load_status(ticket.job_id)
        except KlipnoteError:
            status = None
        if status is not None and not status.state.terminal:
            former = self.ledger.may_dispatch(ticket.job_id, 0.0, revive=True)
            if former == LEASED:
                return  # a retry just after a failure, whose holder's lease has not run out yet: a later pass
            if former:
                self.send(ticket.job_id, lane, defaults.PRIORITY_MAX - ticket.priority_key)
                report.sent.append(ticket.job_id)
        path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ what Redis lost

    def reconcile(self) -> Report:
        """Dispatch the tickets, finish commits cut short, and send again the jobs that Redis lost or whose
        lease ran out."""
        report = self.dispatch_pending()
        if report.error:
            return report
        waiting = []
        for job_id in self.spool.job_ids():
            try:
                status = self.spool.load_status(job_id)
            except KlipnoteError:
                continue
            if not status.state.terminal:
                waiting.append(status)
        try:
            entries = self.ledger.entries([s.id for s in waiting])
            for status in waiting:
                entry = entries[status.id]
                if entry.leased or self.spool.find_tickets(status.id):
                    continue
                if self._rolled_forward(status.id):
                    report.promoted.append(status.id)
                    continue
                if entry.state in (JobState.CANCELED.value, JobState.FAILED.value):
                    self._record_ended(status.id, JobState(entry.state))
                    continue
                marked = (self.spool.job_dir(status.id) / COMMITTED).exists()
                former = self.ledger.may_dispatch(status.id, defaults.BROKER_REDISPATCH_AFTER, commit_lost=not marked)
                if former in ("", LEASED):
                    continue
                if former in (JobState.RUNNING.value, JobState.DONE.value):
                    self._note_lost_lease(status.id)
                self.send(status.id, status.lane, self._priority(status.id))
                report.resent.append(status.id)
                log.warning("job %s dispatched again: %s", status.id, _why_again(former))
        except BrokerUnavailable as exc:
            report.error = str(exc)
        return report

    def _record_ended(self, job_id: str, state: JobState) -> None:
        """Redis ended the job (a cancel, or its holder failed it or used up its attempts) but the spool does not
        say so: a claim's write landed after the cancel, or the writer died before recording it. The spool is
        told; the job is not dispatched again (only a retry's ticket may revive it)."""
        with self.spool.io(f"recording job {job_id} as {state.value}"):
            record_ended(self.spool, job_id, state)

    def _priority(self, job_id: str) -> int:
        try:
            return self.spool.manifest(job_id).priority
        except (OSError, ValueError):
            return defaults.PRIORITY_DEFAULT

    def _rolled_forward(self, job_id: str) -> bool:
        try:
            return roll_forward(self.spool, job_id)
        except (KlipnoteError, OSError) as exc:
            log.warning("job %s: cannot finish its commit: %s", job_id, exc)
            return False

    def _note_lost_lease(self, job_id: str) -> None:
        """The spool's status says who lost the job, so that ``status`` does not show a dead worker running it."""
        try:
            status = self.spool.load_status(job_id)
        except KlipnoteError:
            return
        if status.state is not JobState.RUNNING:
            return
        holder = (status.worker or {}).get("id", "?")
        status.state, status.stage, status.progress, status.worker = JobState.QUEUED, None, 0.0, None
        status.message = (f"worker {holder} lost its lease (died, froze or lost the network) in attempt "
                          f"{status.attempt}; dispatched again at {now():.0f}")
        with self.spool.io(f"requeuing job {job_id}"):
            self.spool.write_status(status)


def _why_again(former: str) -> str:
    if former == JobState.RUNNING.value:
        return "its worker's lease ran out"
    if former == JobState.DONE.value:
        return "its worker died after the broker decided its commit, before marking it in the spool"
    return f"the broker held it as {former}"


def pending_warning(report: Report) -> str:
    """The line submit prints when its jobs are recorded but not dispatched."""
    return (f"warning: {report.pending} job(s) recorded in the spool but not dispatched: {report.error}; "
            "a worker or `klipnote dispatch` sends them once the broker is back")
