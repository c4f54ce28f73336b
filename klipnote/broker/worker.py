"""``klipnote worker`` in broker mode: the usual worker, fed by a Celery worker on its lanes' queues.

The model is loaded once, by :class:`klipnote.worker.Worker`, before Celery starts; Celery's solo pool
then runs each task in this same process, one at a time (concurrency 1, prefetch 1), so the model stays
loaded and one GPU runs one job. A task names a job of the spool; the worker claims it in Redis
(:func:`klipnote.broker.claim.claim_job`) and conducts its attempt exactly as on one machine (decode,
transcribe, enhance, write, commit), supervised by the same code, so a stop request (SIGTERM: Celery's
warm shutdown) lets the job finish within ``--grace`` or hands it back.

Beside Celery, two threads: the registry heartbeat (``klipnote workers`` and ``top`` read it; Redis
holds the worker's liveness for routing) and the reconciler, which dispatches what waits in the spool
and sends again what Redis lost (:mod:`klipnote.broker.dispatch`), at start and every half lease.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from typing import TYPE_CHECKING, TextIO

from klipnote.broker import app as celery_app
from klipnote.broker.claim import claim_job
from klipnote.broker.dispatch import Dispatcher
from klipnote.broker.ledger import Ledger
from klipnote.config import mask_url
from klipnote.errors import BrokerUnavailable, UsageError
from klipnote.ids import is_job_id
from klipnote.job import Lane
from klipnote.registry import WorkerState
from klipnote.spool import HOSTNAME, Spool
from klipnote.worker import Worker, WorkerOptions

if TYPE_CHECKING:
    from klipnote.attempt import Context
    from klipnote.config import Settings
    from klipnote.engines import Engine

log = logging.getLogger("klipnote.broker")


class BrokerWorker(Worker):
    def __init__(self, spool: Spool, engine: Engine, options: WorkerOptions, worker_id: str, settings: Settings,
                 out: TextIO | None = None) -> None:
        import sys

        unsupported = [flag for flag, given in (("--once", options.once), ("--drain", options.drain),
                       ("--max-jobs", options.max_jobs), ("--idle-exit", options.idle_exit is not None)) if given]
        if unsupported:
            raise UsageError(f"{', '.join(unsupported)}: not with a broker, where Celery feeds the worker; "
                             "stop it with SIGTERM, or unset the broker setting to drain the spool alone")
        super().__init__(spool, engine, dataclasses.replace(options, batch_jobs=1), worker_id, out or sys.stdout)
        assert settings.broker is not None
        self.settings = settings
        self.ledger = Ledger.connect(settings.broker)
        self.app = celery_app.create(settings)
        self.dispatcher = Dispatcher(spool, settings, self.ledger, self.app)
        self.record.details["broker"] = mask_url(settings.broker)
        self.app.task(name=celery_app.TASK, acks_late=True, reject_on_worker_lost=True)(self.run_job)
        self._reconcile_stop = threading.Event()

    # ------------------------------------------------------------------ Celery

    def _serve(self) -> None:
        from celery import signals

        signals.worker_shutting_down.connect(lambda **_: self.request_stop(), weak=False)
        self._reconcile()
        reconciler = threading.Thread(target=self._reconcile_loop, name="reconciler", daemon=True)
        reconciler.start()
        try:
            if self._stop_requested is None:
                celery = self.app.Worker(hostname=f"{self.record.id}@{HOSTNAME}",
                                         queues=celery_app.queues(self.options.lanes), pool="solo", concurrency=1,
                                         loglevel="INFO", without_gossip=True, without_mingle=True, task_events=True)
                celery.start()
        finally:
            self._reconcile_stop.set()
            reconciler.join()
            with contextlib.suppress(BrokerUnavailable):
                self.ledger.forget(self.record.id)

    def _announce(self) -> None:
        super()._announce()
        log.info("serving queues %s of the broker %s", ", ".join(celery_app.queues(self.options.lanes)),
                 mask_url(self.ledger.url))

    def run_job(self, job_id: str) -> str:
        """The task: claim the job in Redis and run its attempt; a duplicate or ended job is skipped."""
        if not is_job_id(job_id):
            log.warning("a task named %r, which is not a job id; dropped", job_id)
            return "refused"
        try:
            claim = claim_job(self.spool, self.ledger, self.dispatcher, job_id, self.ref, self.options.lanes)
        except BrokerUnavailable as exc:  # the spool keeps the job: a ticket waits for the next dispatch
            log.warning("job %s not claimed: %s; it waits in the spool", job_id, exc)
            self._ticket_again(job_id)
            return "pending"
        if claim is None:
            return "skipped"
        self._supervise([claim])
        return "ran"

    def _ticket_again(self, job_id: str) -> None:
        with contextlib.suppress(OSError, ValueError, UsageError):
            manifest = self.spool.manifest(job_id)
            lane = self.spool.load_status(job_id).lane
            path = self.spool.queued_path(lane, manifest.priority, job_id, 0)
            if not path.exists():
                self.spool.create_empty(path)

    # ------------------------------------------------------------------ reconciling

    def _reconcile_loop(self) -> None:
        interval = max(self.spool.heartbeat_interval, self.spool.lease_ttl / 2)
        while not self._reconcile_stop.wait(interval):
            self._reconcile()

    def _reconcile(self) -> None:
        try:
            report = self.dispatcher.reconcile()
        except Exception as exc:  # the reconciler must outlive a bad pass
            log.warning("reconciling failed: %s", exc)
            return
        if report.error:
            log.info("reconciling stopped: %s", report.error)

    # ------------------------------------------------------------------ liveness and routing

    def _set_state(self, state: WorkerState) -> None:
        super()._set_state(state)
        try:
            if state.live:
                self.ledger.beat(self.record.id, self.record.lanes, self.spool.lease_ttl)
        except BrokerUnavailable:
            pass  # Redis is down: nobody can route to anyone; the spool's record still says we live

    def _context(self, handed_back: threading.Event) -> Context:
        return dataclasses.replace(super()._context(handed_back), belle2_alive=self._belle2_alive)

    def _belle2_alive(self) -> bool:
        try:
            return Lane.BELLE2.value in self.ledger.live_lanes()
        except BrokerUnavailable:
            return Lane.BELLE2.value in self.registry.live_lanes()
