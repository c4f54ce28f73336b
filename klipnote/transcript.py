"""The engine-neutral result of a transcription: segments of timed words, plus the language.

Both engines produce a :class:`Transcript`; the writers and the subtitle rules only ever see this.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from klipnote import cjk


class WordTiming(str, Enum):
    """Where the word times in a transcript came from; recorded in the JSON."""

    ALIGNMENT = "wav2vec2-alignment"  # whisperx.align with a phoneme model
    CROSS_ATTENTION = "whisper-cross-attention"  # Whisper's own alignment heads (faster-whisper, transformers)
    NONE = "none"  # no words could be timed (an empty transcript)


@dataclass
class Word:
    word: str
    start: float
    end: float
    score: float | None = None
    speaker: str | None = None


@dataclass
class Segment:
    start: float
    end: float
    text: str
    words: list[Word] = field(default_factory=list)
    speaker: str | None = None


@dataclass
class Transcript:
    segments: list[Segment]
    language: str | None
    language_probability: float | None = None
    word_timing: WordTiming = WordTiming.NONE
    word_timing_note: str | None = None  # why the preferred method was not used

    @property
    def text(self) -> str:
        return cjk.join(" ".join(s.text.split()) for s in self.segments)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of the result, less ``metadata`` (added by the worker)."""
        segments = []
        for segment in self.segments:
            data = asdict(segment)
            if not segment.speaker:
                del data["speaker"]
            for word in data["words"]:
                if not word["speaker"]:
                    del word["speaker"]
            segments.append(data)
        return {
            "language": self.language,
            "language_probability": self.language_probability,
            "text": self.text,
            "segments": segments,
        }
