"""Subtitle cues: the timed pieces of text that SRT and VTT show, and the rules they keep.

A cue never overlaps the one before it and never runs backwards, whatever the engine produced.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from klipnote.transcript import Transcript


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str
    speaker: str | None = None

    @property
    def display_text(self) -> str:
        return f"[{self.speaker}] {self.text}" if self.speaker else self.text


def cues_from_segments(transcript: Transcript) -> list[Cue]:
    """One cue per segment: the engine's own segmentation."""
    return ordered(Cue(s.start, s.end, " ".join(s.text.split()), s.speaker or None) for s in transcript.segments)


def ordered(cues: Iterable[Cue]) -> list[Cue]:
    """Drop empty cues, sort by start, and clip each so it starts no earlier than the last ended."""
    result: list[Cue] = []
    for cue in sorted((c for c in cues if c.text.strip()), key=lambda c: (c.start, c.end)):
        start = max(cue.start, result[-1].end if result else 0.0, 0.0)
        end = max(cue.end, start)
        result.append(Cue(start, end, cue.text, cue.speaker))
    return result
