"""Numbers as people read them: sizes, durations, times of day.

Used by the presentation (:mod:`klipnote.render`) and by the messages that reject a file at submit,
which must not import the presentation layer.
"""

from __future__ import annotations

import time


def when(ts: float | None) -> str:
    """``2026-12-04 05:06:12 (3 min 20 s ago)``; ``-`` for a time not reached yet."""
    if not ts:
        return "-"
    ago = time.time() - ts
    return f"{timestamp(ts)} ({duration(ago)} ago)" if ago >= 0 else timestamp(ts)


def timestamp(ts: float) -> str:
    """Local date and time, to the second: where ``when``'s "ago" would make a table row too wide."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def size(n: float, decimals: int = 1) -> str:
    """``1.5 GiB``, ``12.0 MiB``, ``844 bytes``; ``decimals=2`` to compare a file with a limit."""
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.{decimals}f} {unit}"
    return f"{int(n)} bytes"


def duration(seconds: float, *, precise: bool = False) -> str:
    """``2 h 5 min``, ``3 min 20 s``, ``42 s``; ``precise`` keeps hundredths under a minute (``0.36 s``),
    for comparing a file with a limit."""
    if precise and seconds < 60:
        return f"{max(0.0, seconds):.2f} s"
    seconds = int(max(0, seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"
