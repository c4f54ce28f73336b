"""Several files through shared batches: the part of transcription that is the same for every engine.

A model is fastest when its batches are full. A cron folder is mostly short files, and a batch of
16 holding one 11 s window leaves the device idle, so the worker hands an engine every job it has
claimed at once and the engine runs all their windows through the same batches. Each job keeps its
own fate: its callbacks (progress, the language hand-off) raise only for it, a job whose callback
raised or whose language sends it elsewhere is dropped from the next batches, and a job is
finished (yielded) as soon as its own windows are done, so it commits while the others go on.

An engine plugs in three steps (:class:`WindowedEngine`): ``plan`` cuts one file into windows,
``decode_batch`` runs one batch of windows from any jobs, ``assemble`` turns a job's decoded windows
into its transcript. :func:`run` does the ordering, batching, out-of-memory halving and bookkeeping.

An engine whose model takes one prompt for a whole batch (transformers' Whisper ``generate`` takes
one ``prompt_ids``) sets each job's ``group`` in ``plan``: windows of different groups never share a
batch. A batch takes the first waiting window's group and then that group's windows in order; the
others wait for a later batch, so a lone prompted job still fills its batches with its own windows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from klipnote.errors import KlipnoteError
from klipnote.job import Stage
from klipnote.windows import Span

if TYPE_CHECKING:
    import numpy as np

    from klipnote.engines import JobOptions, Progress
    from klipnote.transcript import Transcript

log = logging.getLogger("klipnote.batching")

#: ``on_language(language, probability, error)``: called once the engine has heard a job's language (or
#: failed to: ``language`` None and ``error`` why); returning False takes the job away from this engine
#: (routing handed it to another lane).
LanguageHandOff = Callable[["str | None", "float | None", "str | None"], bool]


@dataclass(eq=False)  # a request is itself, not its audio's values
class Request:
    """One job's audio and what it asks, as the worker hands it to an engine."""

    audio: np.ndarray
    options: JobOptions
    progress: Progress
    on_language: LanguageHandOff | None = None
    note: Callable[[str], None] | None = None  # a line for the job's own log (its batch shrank, ...)


@dataclass
class Finished:
    """How one request ended: a transcript, an error that ended it alone, or neither (handed off)."""

    request: Request
    transcript: Transcript | None = None
    error: BaseException | None = None

    @property
    def handed_off(self) -> bool:
        return self.transcript is None and self.error is None


@dataclass(eq=False)
class Job:
    """A request in flight: its windows, what has been decoded of them, and whether it still runs."""

    request: Request
    windows: list[Span] = field(default_factory=list)
    decoded: dict[int, Any] = field(default_factory=dict)  # window index -> the engine's result for it
    language: str | None = None
    probability: float | None = None
    error: BaseException | None = None
    handed_off: bool = False
    state: dict[str, Any] = field(default_factory=dict)  # whatever else an engine keeps per job
    group: Hashable = None  # windows of jobs whose groups differ never share a batch (set by ``plan``)

    @property
    def alive(self) -> bool:
        return self.error is None and not self.handed_off

    @property
    def complete(self) -> bool:
        return len(self.decoded) == len(self.windows)

    def report(self, stage: Stage, percent: float) -> bool:
        """Pass progress to the job; an exception from it (canceled, handed back) ends this job only."""
        return self._guard(self.request.progress, stage, percent)

    def decide_language(self, language: str | None, probability: float | None, error: str | None = None) -> bool:
        """Record the language heard (None: detection failed, ``error`` says why); False when the job has
        left (handed off, or its callback raised)."""
        self.language, self.probability = language, probability
        hand_off = self.request.on_language
        if hand_off is not None and self.alive:
            kept = self._guard(hand_off, language, probability, error)
            if kept is False:
                self.handed_off = True
        return self.alive

    def _guard(self, call: Callable[..., Any], *args: Any) -> Any:
        if not self.alive:
            return False
        try:
            result = call(*args)
        except Exception as exc:
            self.error = exc
            return False
        return True if result is None else result


@dataclass(frozen=True)
class Window:
    """One batch item: window ``index`` of ``job``."""

    job: Job
    index: int

    @property
    def span(self) -> Span:
        return self.job.windows[self.index]


class WindowedEngine(Protocol):
    batch_size: int

    def plan(self, job: Job) -> list[Span]:
        """The windows (file seconds, at most 30 s each) to decode for one job; may set ``job.language``."""

    def decode_batch(self, batch: list[Window]) -> list[Any]:
        """Decode windows of any jobs together: one result per window, in order (ignored for a job that
        is no longer alive once the batch returns)."""

    def assemble(self, job: Job) -> Transcript:
        """The job's transcript from ``job.decoded`` (word timing, diarization and the like happen here)."""

    def is_out_of_memory(self, exc: BaseException) -> bool: ...


def run(engine: WindowedEngine, requests: Sequence[Request]) -> Iterator[Finished]:
    """Transcribe ``requests`` through shared batches, in their order (the worker sorts by priority).

    Yields each request once, as soon as it is done; an error that is one job's own (its audio, its
    callbacks, its assembly) ends only that job. An error of the model itself on a shared batch
    propagates: it cannot be pinned on one job (the worker then retries the jobs one by one).
    """
    jobs = [Job(request) for request in requests]
    for job in jobs:
        if job.report(Stage.TRANSCRIBING, 0.0):
            try:
                job.windows = engine.plan(job)
            except Exception as exc:
                job.error = exc
        if not job.alive or job.complete:
            yield _finish(engine, job)
    queue = [Window(job, index) for job in jobs if job.alive for index in range(len(job.windows))]
    while True:
        batch = _next_batch(queue, engine.batch_size)
        if not batch:
            return
        try:
            results = engine.decode_batch(batch)
        except Exception as exc:
            if not engine.is_out_of_memory(exc):
                raise
            _shrink(engine, exc, batch)
            continue
        decoded = {id(window) for window in batch}
        queue = [window for window in queue if id(window) not in decoded and window.job.alive]
        touched: dict[int, Job] = {}
        for window, result in zip(batch, results, strict=True):
            if window.job.alive:
                window.job.decoded[window.index] = result
            touched[id(window.job)] = window.job
        for job in touched.values():
            if job.alive and not job.complete:
                job.report(Stage.TRANSCRIBING, 100.0 * len(job.decoded) / len(job.windows))
            if not job.alive or job.complete:
                yield _finish(engine, job)


def transcribe(engine: WindowedEngine, audio: np.ndarray, options: JobOptions, progress: Progress) -> Transcript:
    """One file on its own: the whole of :func:`run` for a single request, its error raised."""
    (finished,) = run(engine, [Request(audio, options, progress)])
    if finished.error is not None:
        raise finished.error
    assert finished.transcript is not None  # a request without on_language is never handed off
    return finished.transcript


def _next_batch(queue: list[Window], size: int) -> list[Window]:
    """Up to ``size`` waiting windows of live jobs, in order, all of the first one's group."""
    batch: list[Window] = []
    for window in queue:
        if window.job.alive and (not batch or window.job.group == batch[0].job.group):
            batch.append(window)
            if len(batch) == size:
                break
    return batch


def _finish(engine: WindowedEngine, job: Job) -> Finished:
    if job.alive:
        try:
            return Finished(job.request, transcript=engine.assemble(job))
        except Exception as exc:
            if engine.is_out_of_memory(exc):
                raise
            job.error = exc
    return Finished(job.request, error=job.error)


def _shrink(engine: WindowedEngine, exc: BaseException, batch: list[Window]) -> None:
    """Halve the batch after an out-of-memory error, down to 1; past that the model cannot run here."""
    if engine.batch_size <= 1:
        raise KlipnoteError("out of GPU memory even with batch size 1: use a smaller model, a GPU with more "
                            "memory, or --device cpu") from exc
    engine.batch_size = max(1, engine.batch_size // 2)
    message = f"out of memory; retrying with batch size {engine.batch_size}"
    log.warning("%s", message)
    for job in {id(window.job): window.job for window in batch}.values():
        if job.request.note is not None:
            job.request.note(message)
