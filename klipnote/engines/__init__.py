"""Engines turn 16 kHz mono audio into a :class:`~klipnote.transcript.Transcript`.

An engine decodes windows (VAD cuts of at most 30 s) of one or several jobs in shared batches;
:mod:`klipnote.engines.batching` drives it, and its ``transcribe`` runs one file alone.

Each engine lives in its own module and imports its heavy libraries (torch, whisperx,
transformers) only there, so the CLI never pays for them. :func:`create` picks one by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from klipnote import defaults
from klipnote.decoding import Decoding
from klipnote.errors import KlipnoteError
from klipnote.job import Lane, Model, Stage, ZhScript

if TYPE_CHECKING:
    from klipnote.config import Settings
    from klipnote.engines.batching import Job, Window
    from klipnote.transcript import Transcript
    from klipnote.windows import Span

#: ``progress(stage, percent)``: engines call it often; it raises to stop a job that must end.
Progress = Callable[[Stage, float], None]


@dataclass(frozen=True)
class JobOptions:
    """What a job asks of an engine beyond the audio."""

    language: str | None = None
    diarize: bool = False
    zh_script: ZhScript | None = None  # of Chinese output, either engine (klipnote.zhscript); None: not asked
    decoding: Decoding = field(default_factory=Decoding)  # prompt, hotwords, task, speaker-count hints


class Engine(Protocol):
    """A loaded model that decodes windows of several jobs' audio together (:mod:`klipnote.engines.batching`)."""

    name: str
    batch_size: int

    @property
    def lanes(self) -> tuple[Lane, ...]:
        """The queues it serves (read-only here, so that an engine may declare a fixed-length tuple)."""

    def load(self) -> None:
        """Load the model once; called before the worker announces it is ready."""

    def describe(self) -> dict[str, Any]:
        """Model, path, device, compute type and library versions, for status and the result JSON."""

    def plan(self, job: Job) -> list[Span]:
        """The windows to decode for one job (VAD cuts of at most 30 s); raise for a job that cannot run here."""

    def decode_batch(self, batch: list[Window]) -> list[Any]:
        """Decode one batch of windows from any jobs; one result per window."""

    def assemble(self, job: Job) -> Transcript:
        """A job's transcript from its decoded windows; raise :class:`~klipnote.errors.KlipnoteError` for the user."""

    def is_out_of_memory(self, exc: BaseException) -> bool:
        """Whether ``exc`` means the accelerator ran out of memory (the batch is retried at half the size)."""


def _belle2_batch_size(settings: Settings, device: str) -> int:
    """batch_size where it was set; else, on a GPU, the batch that fits BELLE-2 in 24 GB, larger than the
    shared default (sized for the whisperx engine's CTranslate2 model)."""
    if device == "cuda" and settings.sources.get("batch_size") == "default":
        return defaults.BELLE2_GPU_BATCH_SIZE
    return settings.batch_size


def create(model: Model, settings: Settings, *, device: str, batch_size: int | None = None) -> Engine:
    """The engine for ``model``, configured but not loaded."""
    if model is Model.WHISPERX:
        from klipnote.engines.whisperx_engine import WhisperXEngine

        return WhisperXEngine(settings, device=device, batch_size=batch_size or settings.batch_size)
    if model is Model.BELLE2:
        from klipnote.engines.belle2_engine import Belle2Engine

        return Belle2Engine(settings, device=device, batch_size=batch_size or _belle2_batch_size(settings, device))
    raise KlipnoteError(f"no engine called {model.value}: use whisperx or belle2")
