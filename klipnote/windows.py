"""From speech regions (a VAD's output) to the windows a Whisper model decodes, 30 s at most each.

Whisper sees 30 s at a time. Cutting the file blindly every 30 s splits words and, as the
transformers pipeline's ``chunk_length_s`` does, merges timestamps badly; cutting at pauses that
a VAD found keeps every window's speech whole, and each window's timestamps map back to file
time by adding the window's start.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The longest audio Whisper decodes in one pass (seconds).
MAX_WINDOW = 30.0


@dataclass(frozen=True)
class Span:
    """A stretch of the file in seconds."""

    start: float
    end: float

    @property
    def length(self) -> float:
        return self.end - self.start


def pack(speech: list[Span], max_window: float = MAX_WINDOW) -> list[Span]:
    """Group consecutive speech regions into windows of at most ``max_window`` seconds.

    A window runs from its first region's start to its last region's end (the pauses inside it
    are kept, so times inside map back by one offset). A region longer than ``max_window`` on its
    own is split into equal pieces. Windows come out in order and never overlap.
    """
    windows: list[Span] = []
    for region in _union(speech):
        for piece in _split(region, max_window):
            if windows and piece.end - windows[-1].start <= max_window:
                windows[-1] = Span(windows[-1].start, piece.end)
            else:
                windows.append(piece)
    return windows


def _union(regions: list[Span]) -> list[Span]:
    """Sorted, non-overlapping, non-empty regions covering the same time as ``regions``."""
    merged: list[Span] = []
    for region in sorted((r for r in regions if r.length > 0), key=lambda r: r.start):
        if merged and region.start <= merged[-1].end:
            merged[-1] = Span(merged[-1].start, max(merged[-1].end, region.end))
        else:
            merged.append(region)
    return merged


def _split(region: Span, max_window: float) -> list[Span]:
    pieces = max(1, -int(-region.length // max_window))  # ceil
    step = region.length / pieces
    return [Span(region.start + i * step, region.start + (i + 1) * step if i < pieces - 1 else region.end)
            for i in range(pieces)]
