"""The rule of the stand-in diarization pipeline, and what it implies for a transcript's labels.

Two speech turns: ``SPEAKER_00`` over the first half of the file, ``SPEAKER_01`` over the second.
Plain Python (no pyannote import), so that tests can use it without loading pyannote.audio.
"""

from __future__ import annotations

from pathlib import Path

#: A local pyannote pipeline folder (its ``config.yaml``) for ``KLIPNOTE_DIARIZATION_MODEL``.
PIPELINE_FOLDER = Path(__file__).resolve().parent / "halves-pipeline"
SPEAKERS = ("SPEAKER_00", "SPEAKER_01")
#: The environment variable naming the file where the stand-in logs the speaker-count hints it got.
HINTS_LOG = "HALVES_HINTS_LOG"


def turns(duration: float) -> list[tuple[float, float, str]]:
    """The speech turns the stand-in reports for a file of ``duration`` seconds."""
    middle = duration / 2
    return [(0.0, middle, SPEAKERS[0]), (middle, duration, SPEAKERS[1])]


def expected_speaker(start: float, end: float, duration: float) -> str:
    """The label whisperx's ``assign_word_speakers`` gives a span: the turn it overlaps most.

    On a tie whisperx keeps the earlier turn (the first maximum in start order).
    """
    overlaps = [(max(0.0, min(end, b) - max(start, a)), speaker) for a, b, speaker in turns(duration)]
    return max(overlaps, key=lambda item: item[0])[1]
