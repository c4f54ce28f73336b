"""One attempt at one job, as a worker lives it: decode, transcribe (in a batch shared with other jobs),
enhance, write, commit; or fail, or hand the job back or over.

An :class:`Attempt` owns its job's claim and everything that happens to that job alone: a file that
will not decode fails alone, a canceled job stops alone, and each job commits as soon as its own
transcript is ready, whatever the others in its batch are doing.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from klipnote import enhance, outputs, routing, zhscript
from klipnote.decoding import Decoding
from klipnote.engines import JobOptions
from klipnote.engines.batching import Finished, Request
from klipnote.errors import ClaimLost, KlipnoteError, SpoolError, SpoolFull
from klipnote.job import Lane, SplitBy, Stage, ZhScript

if TYPE_CHECKING:
    import numpy as np

    from klipnote.claim import Claim
    from klipnote.engines import Engine
    from klipnote.transcript import Transcript

log = logging.getLogger("klipnote.worker")

JOB_LOG = "worker.log"


class HandBack(Exception):
    """Raised inside a job's callbacks once its worker has given the job back to the queue."""


class Ending(str, enum.Enum):
    """How an attempt ended, for the worker's counters."""

    DONE = "done"
    FAILED = "failed"
    ROUTED = "routed"  # handed over to another lane
    STOPPED = "stopped"  # handed back, canceled, lost, or put down on a full disk


class JobLog:
    """A job's own log, ``jobs/<id>/worker.log``: what each attempt did, with tracebacks."""

    def __init__(self, path: Path, worker_id: str, attempt: int) -> None:
        self.path = path
        self.prefix = f"{worker_id} attempt {attempt}"

    def write(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        try:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(f"{stamp} {self.prefix}: {message}\n")
        except OSError:
            log.warning("cannot write %s", self.path)


@dataclass(frozen=True)
class Context:
    """What every attempt of one worker shares."""

    engine: Engine
    worker_id: str
    pid: int
    host: str
    default_steps: tuple[enhance.Step, ...]
    split_by: SplitBy
    zh_script: ZhScript  # for Chinese output of jobs that neither ask for a script nor hint at one
    file_mode: int
    belle2_alive: Callable[[], bool]
    handed_back: threading.Event  # set when the worker gives its jobs back (stopped past its grace period)


class Attempt:
    def __init__(self, claim: Claim, context: Context) -> None:
        self.claim = claim
        self.context = context
        self.log = JobLog(claim.job_dir / JOB_LOG, context.worker_id, claim.attempt)
        self.started = time.monotonic()
        self.timings: dict[str, float] = {}
        self.samples: np.ndarray | None = None
        self.outcome: Ending | None = None
        self.request: Request | None = None
        self.options: JobOptions | None = None
        self.notes: list[str] = []  # what the engine said about this job (a prompt cut short, ...)
        self.transcribing_since: float | None = None  # when its (shared) batch went to the engine
        self.log.write(f"claimed on {context.host}, pid {context.pid}")
        log.info("job %s: %s", claim.job_id, claim.manifest.input.name)

    @property
    def job_id(self) -> str:
        return self.claim.job_id

    @property
    def seconds(self) -> float:
        """Seconds of decoded audio (0 before decoding)."""
        from klipnote import audio

        return audio.seconds(self.samples) if self.samples is not None else 0.0

    # ------------------------------------------------------------------ before the engine

    def prepare(self) -> Request | None:
        """Decode the input and build the engine's request; None when the attempt already ended (bad audio)."""
        began = time.monotonic()
        try:
            self.claim.update(engine=self.context.engine.name)
            self.progress(Stage.DECODING, 0.0)
            from klipnote import audio

            self.options = options = self._options()
            self.samples = audio.decode(self.claim.input_path())
        except BaseException as exc:
            self.end(exc)
            return None
        self.timings["decode"] = time.monotonic() - began
        self.log.write(f"decoded {self.seconds:.1f} s of audio")
        auto = self.claim.status.lane is Lane.AUTO
        self.request = Request(self.samples, options, self.progress, self.on_language if auto else None, self.note)
        return self.request

    def _options(self) -> JobOptions:
        """What the job asks of the engine; a manifest edited into an unknown Chinese script, task or speaker
        count fails the job."""
        manifest = self.claim.manifest
        zh_script = manifest.options.get("zh_script")
        try:
            script = ZhScript(zh_script) if zh_script else None
        except ValueError:
            raise KlipnoteError(f"job option zh_script {zh_script!r} is not one of "
                                f"{', '.join(z.value for z in ZhScript)}: submit the file again") from None
        try:
            decoding = Decoding.from_options(manifest.options)
        except ValueError as exc:
            raise KlipnoteError(f"job options: {exc}: submit the file again") from None
        return JobOptions(manifest.language, bool(manifest.options.get("diarize")), script, decoding)

    def note(self, message: str) -> None:
        """A line from the engine about this job: in its log, and in its result's metadata (``notes``)."""
        self.log.write(message)
        self.notes.append(message)

    def start_transcribing(self) -> None:
        """The engine starts on this job's batch: its ``transcribe`` time counts from here (the files of a
        shared batch are all decoded first, so the time between is spent waiting, counted in ``total``)."""
        self.transcribing_since = time.monotonic()

    def progress(self, stage: Stage, percent: float) -> None:
        if self.context.handed_back.is_set():
            raise HandBack
        self.claim.progress(stage, percent)

    def on_language(self, language: str | None, probability: float | None, error: str | None) -> bool:
        """An ``auto`` job's language was heard: record the route; False when the job left for another lane."""
        self.progress(Stage.ROUTING, 0.0)
        engine = self.context.engine
        route = routing.settle(self.claim, language, probability, error, self.context.belle2_alive(), engine.lanes)
        self.log.write(f"routing: {route.reason}")
        if route.lane in engine.lanes:
            return True
        log.info("job %s routed to %s: %s", self.job_id, route.lane.value, route.reason)
        self.outcome = Ending.ROUTED
        return False

    # ------------------------------------------------------------------ after the engine

    def conclude(self, finished: Finished, batch: dict[str, Any]) -> Ending:
        """Commit the transcript, or end the attempt on the error that stopped it."""
        if finished.error is not None:
            self.end(finished.error)
        elif finished.transcript is not None:
            try:
                self.commit(finished.transcript, batch)
            except BaseException as exc:
                self.end(exc)
        elif self.outcome is None:  # handed off by a callback that did not say so: nothing to commit here
            self.outcome = Ending.ROUTED
        assert self.outcome is not None
        return self.outcome

    def commit(self, transcript: Transcript, batch: dict[str, Any]) -> None:
        assert self.samples is not None and self.options is not None
        self.timings["transcribe"] = time.monotonic() - (self.transcribing_since or self.started)
        script = zhscript.choose(self.options.zh_script, self.claim.manifest.language, self.context.zh_script,
                                 transcript.language)
        zhscript.convert(transcript, script)
        self.progress(Stage.ENHANCING, 0.0)
        mark = time.monotonic()
        cues, report = enhance.for_job(transcript, self.samples, self.claim.manifest.options,
                                       self.context.default_steps, self.context.split_by)
        self.timings["enhance"] = time.monotonic() - mark
        self.progress(Stage.WRITING, 0.0)
        self.timings["total"] = time.monotonic() - self.started
        engine = self.context.engine
        meta = outputs.metadata(self.claim, transcript, report, engine.describe(), worker=self.context.worker_id,
                                batch={"batch_size": engine.batch_size, **batch}, timings=self.timings,
                                duration=self.seconds, decoding=self.options.decoding,
                                notes=self.notes, zh_script=script)
        files = outputs.write(self.claim, transcript, cues, meta, self.context.file_mode)
        problems = outputs.deliver(files, self.claim.manifest)
        for problem in problems:
            self.log.write(problem)
        message = "done" + (f"; {'; '.join(problems)}" if problems else "")
        self.claim.finish(message, timings={k: round(v, 3) for k, v in self.timings.items()})
        self.outcome = Ending.DONE
        self.log.write(f"done in {self.timings['total']:.1f} s")
        log.info("job %s done in %.1f s", self.job_id, self.timings["total"])

    def end(self, exc: BaseException) -> None:
        """End the attempt on ``exc``: let go of the claim when it is not the job's fault, else fail the job."""
        if isinstance(exc, (HandBack, ClaimLost)):
            self.log.write(f"stopped: {exc or 'handed back'}")
            log.info("job %s: %s", self.job_id, exc or "handed back")
            self._let_go()
        elif isinstance(exc, SpoolFull):  # not the job's fault: let go of it, to be reaped once there is space
            self.log.write(f"stopped: {exc}")
            log.warning("job %s put down: %s", self.job_id, exc)
            self._let_go()
        elif isinstance(exc, KlipnoteError):
            self.fail(str(exc))
        elif isinstance(exc, Exception):  # an engine bug must fail one job, not the worker
            self.log.write("".join(traceback.format_exception(exc)))
            self.fail(f"{self.context.engine.name} engine error: {type(exc).__name__}: {exc}")
        else:
            self._let_go()
            raise exc

    def fail(self, error: str) -> None:
        self.log.write(f"failed: {error}")
        log.warning("job %s failed: %s", self.job_id, error)
        self.outcome = Ending.FAILED
        try:
            self.claim.fail(error)
        except ClaimLost as exc:
            log.info("job %s: %s", self.job_id, exc)
            self.outcome = Ending.STOPPED
        except SpoolError as exc:  # the failure cannot be recorded; the reaper puts the job back
            log.warning("job %s: cannot record its failure: %s", self.job_id, exc)
            self.claim.close()
            self.outcome = Ending.STOPPED

    def _let_go(self) -> None:
        self.claim.close()
        self.outcome = Ending.STOPPED
