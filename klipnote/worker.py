"""The worker daemon: load a model once, then claim waiting jobs and conduct their attempts.

When several jobs wait on its lanes, a worker claims up to ``batch_jobs`` of them (and about
``batch_audio`` seconds of audio) and its engine runs all their windows through shared batches:
a cron folder of short files keeps the device busy instead of running one 11 s window per batch.
Each job keeps its own claim, lock, heartbeat, progress, attempt count and commit
(:mod:`klipnote.attempt`).

The batch runs in a thread while the main thread supervises: it keeps the worker's registry
heartbeat, handles SIGTERM/SIGINT (let the jobs finish within ``grace`` seconds, else hand them
back to the queue), and never blocks inside the engine, so a stop request is always honoured even
while a GPU kernel runs.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from klipnote import defaults, recovery
from klipnote.attempt import Attempt, Context, Ending
from klipnote.claim import Claim, WorkerRef, claim_next
from klipnote.engines import Engine, batching
from klipnote.enhance import ALL_STEPS, Step
from klipnote.errors import KlipnoteError, SpoolFull, summary
from klipnote.job import Lane, SplitBy, ZhScript
from klipnote.registry import Registry, WorkerRecord, WorkerState
from klipnote.spool import HOSTNAME, Spool

log = logging.getLogger("klipnote.worker")

#: How long a handed-back job's thread gets to unwind before the worker exits without it.
UNWIND_TIMEOUT = 5.0


def setup_logging() -> None:
    """Worker progress goes to stderr, one line an event (journald and cron mail read it as is)."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")


@dataclass
class WorkerOptions:
    lanes: tuple[Lane, ...]
    once: bool = False
    drain: bool = False
    max_jobs: int | None = None
    idle_exit: float | None = None
    grace: float = defaults.STOP_GRACE
    poll_interval: float = defaults.WORKER_POLL_INTERVAL
    device: str = "cpu"
    details: dict[str, Any] = field(default_factory=dict)
    enhance: tuple[Step, ...] = ALL_STEPS  # steps for jobs that do not choose (ENABLE_OPTIMIZATION)
    split_by: SplitBy = SplitBy.AUTO  # OPTIMIZER_ENGINE
    zh_script: ZhScript = ZhScript.SIMPLIFIED  # KLIPNOTE_ZH_SCRIPT (defaults.ZH_SCRIPT)
    batch_jobs: int = defaults.BATCH_JOBS  # jobs claimed together into shared batches (1: one at a time)
    batch_audio: float = defaults.BATCH_AUDIO  # stop claiming more once the claimed jobs hold this much audio


class Worker:
    def __init__(self, spool: Spool, engine: Engine, options: WorkerOptions, worker_id: str,
                 out: TextIO = sys.stdout) -> None:
        self.spool = spool
        self.engine = engine
        self.options = options
        self.out = out
        self.ref = WorkerRef.here(worker_id, engine.name)
        self.registry = Registry(spool)
        self.record = WorkerRecord(id=worker_id, model=engine.name, lanes=[lane.value for lane in options.lanes],
                                   host=HOSTNAME, pid=self.ref.pid, device=options.device, started_at=time.time(),
                                   details=dict(options.details))
        if options.device == "cuda" and os.environ.get("CUDA_VISIBLE_DEVICES"):
            self.record.details["cuda_visible_devices"] = os.environ["CUDA_VISIBLE_DEVICES"]  # which GPU (--gpu)
        self._stop_requested: float | None = None
        self._stuck_job: str | None = None
        self._beat_stop = threading.Event()

    # ------------------------------------------------------------------ lifecycle

    def request_stop(self, signum: int | None = None, _frame: object = None) -> None:
        if self._stop_requested is None:
            self._stop_requested = time.monotonic()
            name = signal.Signals(signum).name if signum else "stop"
            log.info("%s received: finishing the current job within %.0f s, then exiting", name, self.options.grace)
            self._set_state(WorkerState.STOPPING)
        else:  # a second signal: do not wait out the grace period
            self.options.grace = 0.0

    def run(self) -> int:
        """Serve jobs until told to stop, drained, idle for too long, or done with max-jobs. Returns 0.

        Refuses (UsageError) an id that a live worker holds, before writing anything over its record.
        An error that ends the worker (a model that will not load) is recorded: state ``failed``, and
        the error as ``exit_reason``, so that it is not mistaken for a clean exit.
        """
        self.registry.check_name_free(self.record.id)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.request_stop)
        self._set_state(WorkerState.STARTING)
        beat = threading.Thread(target=self._heartbeat, name="registry-heartbeat", daemon=True)
        beat.start()
        final = WorkerState.STOPPED
        try:
            self.spool.check_writable()
            self.engine.load()
            self.record.details.update(self.engine.describe())
            self._set_state(WorkerState.IDLE)
            self._announce()
            self._serve()
        except Exception as exc:
            final = WorkerState.FAILED
            self.record.exit_reason = summary(exc)
            raise
        finally:
            self._beat_stop.set()
            beat.join()
            self._set_state(final)
        if self._stuck_job is not None:
            # The handed-back job's thread is still inside the engine (a GPU kernel, a C loop) and
            # interpreter shutdown would abort under it; its job is already back in the queue.
            log.info("leaving job %s's thread behind; exiting", self._stuck_job)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        return 0

    def _announce(self) -> None:
        info = self.engine.describe()
        versions = ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items())
        self.out.write(f"klipnote worker {self.record.id} ready: model {info.get('model')} on {info.get('device')}"
                       f" ({info.get('compute_type', '-')}), lanes {', '.join(self.record.lanes)}; {versions}\n")
        self.out.flush()

    def _serve(self) -> None:
        done = 0
        idle_since = time.monotonic()
        last_reap = 0.0
        full_since: float | None = None
        while self._stop_requested is None:
            try:
                if time.monotonic() - last_reap > self.spool.heartbeat_interval:
                    for outcome in recovery.reap(self.spool):
                        log.warning("job %s %s: %s", outcome.job_id, outcome.action, outcome.reason)
                    last_reap = time.monotonic()
                claims = self._claim_batch(done)
            except SpoolFull as exc:  # passes once space is freed: wait for it rather than exit
                if full_since is None:
                    full_since = time.monotonic()
                    log.warning("%s; retrying every %.0f s", exc, defaults.SPOOL_FULL_RETRY_INTERVAL)
                self._sleep(defaults.SPOOL_FULL_RETRY_INTERVAL)
                continue
            if full_since is not None:
                log.info("the spool has space again after %.0f s", time.monotonic() - full_since)
                full_since = None
            if not claims:
                if self.options.drain:
                    log.info("queue drained; exiting")
                    return
                if self.options.idle_exit is not None and time.monotonic() - idle_since >= self.options.idle_exit:
                    log.info("idle for %.0f s; exiting", self.options.idle_exit)
                    return
                self._sleep(self.options.poll_interval)
                continue
            self._supervise(claims)
            done += len(claims)
            idle_since = time.monotonic()
            if self.options.once or (self.options.max_jobs and done >= self.options.max_jobs):
                return

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self._stop_requested is None and time.monotonic() < deadline:
            time.sleep(min(0.1, seconds))

    # ------------------------------------------------------------------ a batch of jobs

    def _claim_batch(self, done: int) -> list[Claim]:
        """The most urgent waiting jobs, up to the batch limits (job count, seconds of audio) and what is
        left of --once/--max-jobs; empty when nothing waits. The first is claimed whatever its length."""
        limit = self.options.batch_jobs
        if self.options.once:
            limit = 1
        elif self.options.max_jobs:
            limit = min(limit, self.options.max_jobs - done)
        claims: list[Claim] = []
        audio = 0.0
        while len(claims) < limit and (not claims or audio < self.options.batch_audio):
            claim = claim_next(self.spool, self.options.lanes, self.ref)
            if claim is None:
                break
            claims.append(claim)
            audio += claim.manifest.input.duration or 0.0
        return claims

    def _supervise(self, claims: list[Claim]) -> None:
        """Run the batch in a thread; on a stop request past the grace period, hand every unfinished job back."""
        self.record.current_job = claims[0].job_id
        self.record.current_batch = [claim.job_id for claim in claims]
        self._set_state(WorkerState.BUSY)
        handed_back = threading.Event()
        attempts = [Attempt(claim, self._context(handed_back)) for claim in claims]
        thread = threading.Thread(target=self._run_batch, args=(attempts,), name=f"batch-{claims[0].job_id}",
                                  daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(0.1)
            unfinished = [a for a in attempts if a.outcome is None]
            if unfinished:  # written by the next heartbeat
                self.record.current_job = unfinished[0].job_id
                self.record.current_batch = [a.job_id for a in unfinished]
            if (thread.is_alive() and self._stop_requested is not None
                    and time.monotonic() - self._stop_requested >= self.options.grace):
                handed_back.set()
                for attempt in unfinished:
                    try:
                        attempt.claim.release(f"worker {self.record.id} was stopped before the job finished")
                        log.info("job %s handed back to the queue", attempt.job_id)
                    except KlipnoteError as exc:
                        log.info("job %s could not be handed back: %s", attempt.job_id, exc)
                thread.join(UNWIND_TIMEOUT)
                if thread.is_alive():
                    self._stuck_job = unfinished[0].job_id if unfinished else claims[0].job_id
                break
        self.record.current_job, self.record.current_batch = None, []
        self._set_state(WorkerState.STOPPING if self._stop_requested is not None else WorkerState.IDLE)

    def _context(self, handed_back: threading.Event) -> Context:
        return Context(engine=self.engine, worker_id=self.record.id, pid=self.ref.pid, host=HOSTNAME,
                       default_steps=self.options.enhance, split_by=self.options.split_by,
                       zh_script=self.options.zh_script,
                       file_mode=self.spool.file_mode,
                       belle2_alive=lambda: Lane.BELLE2.value in self.registry.live_lanes(), handed_back=handed_back)

    def _run_batch(self, attempts: list[Attempt]) -> None:
        """Decode every job, then run them through the engine's shared batches, each committed as it ends.

        An error of the model on a shared batch cannot be pinned on one job: the jobs it left unfinished
        run again one at a time, so that a job that breaks the engine fails alone.
        """
        ready = [a for a in attempts if a.prepare() is not None]
        batch = {"batch_jobs": len(ready)}
        try:
            self._transcribe(ready, batch)
        except Exception as exc:
            left = [a for a in ready if a.outcome is None]
            if len(left) == 1:
                left[0].end(exc)
            elif left:
                log.warning("a shared batch failed (%s); running its %d unfinished jobs one at a time",
                            summary(exc), len(left))
                for attempt in left:
                    try:
                        self._transcribe([attempt], {"batch_jobs": 1})
                    except Exception as alone:
                        attempt.end(alone)
        for attempt in attempts:
            self._count(attempt)

    def _transcribe(self, attempts: list[Attempt], batch: dict[str, Any]) -> None:
        by_request = {id(a.request): a for a in attempts}
        requests = [a.request for a in attempts if a.request is not None]
        for attempt in attempts:
            attempt.start_transcribing()
        for finished in batching.run(self.engine, requests):
            by_request[id(finished.request)].conclude(finished, batch)

    def _count(self, attempt: Attempt) -> None:
        if attempt.outcome is Ending.DONE:
            self.record.jobs_done += 1
            self.record.audio_seconds += attempt.seconds
            self.record.processing_seconds += attempt.timings.get("total", 0.0)
        elif attempt.outcome is Ending.FAILED:
            self.record.jobs_failed += 1

    # ------------------------------------------------------------------ registry

    def _set_state(self, state: WorkerState) -> None:
        self.record.state = state
        try:
            self.registry.write(self.record)
        except OSError as exc:
            log.warning("cannot update the worker registry: %s", exc)

    def _heartbeat(self) -> None:
        while not self._beat_stop.wait(self.spool.heartbeat_interval):
            self._set_state(self.record.state)

