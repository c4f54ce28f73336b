"""Engines turn 16 kHz mono audio into a :class:`~klipnote.transcript.Transcript`.

Each engine lives in its own module and imports its heavy libraries (torch, whisperx,
transformers) only there, so the CLI never pays for them. :func:`create` picks one by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from klipnote.errors import KlipnoteError
from klipnote.job import Lane, Model, Stage

if TYPE_CHECKING:
    import numpy as np

    from klipnote.config import Settings
    from klipnote.transcript import Transcript

#: ``progress(stage, percent)``: engines call it often; it raises to stop a job that must end.
Progress = Callable[[Stage, float], None]


@dataclass(frozen=True)
class JobOptions:
    """What a job asks of an engine beyond the audio."""

    language: str | None = None
    diarize: bool = False
    zh_script: str | None = None  # belle2: simplified, traditional or original; None: the worker's default


class Engine(Protocol):
    name: str
    lanes: tuple[Lane, ...]
    batch_size: int

    def load(self) -> None:
        """Load the model once; called before the worker announces it is ready."""

    def describe(self) -> dict[str, Any]:
        """Model, path, device, compute type and library versions, for status and the result JSON."""

    def transcribe(self, audio: np.ndarray, options: JobOptions, progress: Progress) -> Transcript:
        """Transcribe one file's samples; raise :class:`~klipnote.errors.KlipnoteError` for the user."""

    def detect_language(self, audio: np.ndarray) -> tuple[str, float | None]:
        """Language code and probability; needed by engines that serve the ``auto`` lane."""

    def is_out_of_memory(self, exc: BaseException) -> bool:
        """Whether ``exc`` means the accelerator ran out of memory (the worker retries smaller)."""


def create(model: Model, settings: Settings, *, device: str, batch_size: int | None = None) -> Engine:
    """The engine for ``model``, configured but not loaded."""
    if model is Model.WHISPERX:
        from klipnote.engines.whisperx_engine import WhisperXEngine

        return WhisperXEngine(settings, device=device, batch_size=batch_size or settings.batch_size)
    if model is Model.BELLE2:
        from klipnote.engines.belle2_engine import Belle2Engine

        return Belle2Engine(settings, device=device, batch_size=batch_size or settings.batch_size)
    raise KlipnoteError(f"no engine called {model.value}: use whisperx or belle2")
