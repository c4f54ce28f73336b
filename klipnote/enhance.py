"""The enhancement pipeline: steps that run on a transcript after the model, before the writers.

- ``vad``: drop segments that lie over non-speech (Whisper hallucinates over silence and music).
- ``refine``: move each segment's edges to the quietest point nearby, within a bounded window,
  never past a neighbour and never reordering.
- ``split``: build the subtitle cues from timed words under the style rules (:mod:`subtitles`).

Each step is switchable per job and records what it did (segments in and out, seconds taken) in
the result's metadata. ``OPTIMIZER_ENGINE`` says how ``split`` works: ``words`` (from word times),
``segments`` (from segment times, text spread evenly), or ``auto`` (words when the engine timed
them); the choice and its reason are recorded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from klipnote import subtitles
from klipnote.job import SplitBy
from klipnote.transcript import Segment, Transcript, WordTiming

if TYPE_CHECKING:  # numpy is imported where the audio is looked at: the CLI parses steps without it
    import numpy as np

FRAME_SECONDS = 0.02
#: A frame is speech when its energy is this far (dB) above the file's quiet floor, or louder than
#: ``LOUD_DB`` (dBFS) in any case: a file with no quiet stretch (one long sentence, music) is all kept.
SPEECH_OVER_FLOOR_DB = 12.0
LOUD_DB = -45.0
#: A segment survives ``vad`` when at least this share of it is speech.
MIN_SPEECH_SHARE = 0.1
#: ``refine`` looks this far (seconds) either side of an edge for a quieter point.
REFINE_WINDOW = 0.25


class Step(str, Enum):
    VAD = "vad"
    REFINE = "refine"
    SPLIT = "split"


ALL_STEPS = (Step.VAD, Step.REFINE, Step.SPLIT)


@dataclass
class StepLog:
    """What the pipeline did, for the result JSON's metadata."""

    steps: list[dict[str, Any]] = field(default_factory=list)

    def record(self, step: Step, count_in: int, count_out: int, started: float, **extra: Any) -> None:
        self.steps.append({"step": step.value, "in": count_in, "out": count_out,
                           "seconds": round(time.monotonic() - started, 4), **extra})


def enhance(transcript: Transcript, audio: np.ndarray, steps: tuple[Step, ...], split_by: SplitBy,
            rules: subtitles.StyleRules) -> tuple[list[subtitles.Cue], StepLog]:
    """Run ``steps`` in order on ``transcript`` (segments changed in place); return the cues."""
    report = StepLog()
    energy = frame_energy_db(audio)
    if Step.VAD in steps:
        started, before = time.monotonic(), len(transcript.segments)
        transcript.segments = drop_non_speech(transcript.segments, energy)
        report.record(Step.VAD, before, len(transcript.segments), started)
    if Step.REFINE in steps:
        started = time.monotonic()
        moved = refine_edges(transcript.segments, energy)
        report.record(Step.REFINE, len(transcript.segments), len(transcript.segments), started, edges_moved=moved)
    if Step.SPLIT not in steps:
        return subtitles.cues_per_segment(transcript), report
    started = time.monotonic()
    by, reason = choose_split(transcript, split_by)
    source = transcript if by is SplitBy.WORDS else _without_words(transcript)
    cues = subtitles.build_cues(source, rules)
    report.record(Step.SPLIT, len(transcript.segments), len(cues), started, by=by.value, reason=reason)
    return cues, report


def for_job(transcript: Transcript, audio: np.ndarray, options: dict[str, Any], default_steps: tuple[Step, ...],
            split_by: SplitBy) -> tuple[list[subtitles.Cue], StepLog]:
    """The steps a job chose at submit (``options["enhance"]``), else the worker's default, under the job's
    style rules."""
    steps = parse_steps(options["enhance"]) if "enhance" in options else default_steps
    return enhance(transcript, audio, steps, split_by, subtitles.StyleRules(**options.get("style", {})))


def choose_split(transcript: Transcript, wanted: SplitBy) -> tuple[SplitBy, str]:
    has_words = transcript.word_timing is not WordTiming.NONE and any(s.words for s in transcript.segments)
    if wanted is SplitBy.AUTO:
        return (SplitBy.WORDS, f"words timed by {transcript.word_timing.value}") if has_words else (
            SplitBy.SEGMENTS, "no word times: segment text spread over segment time")
    if wanted is SplitBy.WORDS and not has_words:
        return SplitBy.SEGMENTS, "words requested but the engine timed none"
    return wanted, f"{wanted.value} requested"


def _without_words(transcript: Transcript) -> Transcript:
    return Transcript([Segment(s.start, s.end, s.text, [], s.speaker) for s in transcript.segments],
                      transcript.language, transcript.language_probability, WordTiming.NONE)


# ---------------------------------------------------------------------- energy


def frame_energy_db(audio: np.ndarray) -> np.ndarray:
    """Energy of each 20 ms frame in dB (relative to full scale)."""
    import numpy as np

    from klipnote.audio import SAMPLE_RATE  # with numpy: the CLI imports this module to parse steps

    size = int(FRAME_SECONDS * SAMPLE_RATE)
    frames = audio[: len(audio) // size * size].reshape(-1, size) if len(audio) >= size else audio.reshape(1, -1)
    power = np.mean(np.square(frames.astype(np.float64)), axis=1)
    return 10.0 * np.log10(power + 1e-12)


def speech_mask(energy: np.ndarray) -> np.ndarray:
    import numpy as np

    floor = np.percentile(energy, 10) if energy.size else -120.0
    return energy > min(floor + SPEECH_OVER_FLOOR_DB, LOUD_DB)


def _frames(start: float, end: float, count: int) -> slice:
    import numpy as np

    first = max(0, min(count, int(start / FRAME_SECONDS)))
    return slice(first, max(first + 1, min(count, int(np.ceil(end / FRAME_SECONDS)))))


def drop_non_speech(segments: list[Segment], energy: np.ndarray) -> list[Segment]:
    """Keep the segments of which at least ``MIN_SPEECH_SHARE`` is louder than the quiet floor."""
    mask = speech_mask(energy)
    return [s for s in segments if _share(mask[_frames(s.start, s.end, mask.size)]) >= MIN_SPEECH_SHARE]


def _share(frames: np.ndarray) -> float:
    return float(frames.mean()) if frames.size else 0.0


def refine_edges(segments: list[Segment], energy: np.ndarray) -> int:
    """Snap each edge to the quietest frame within ``REFINE_WINDOW``, bounded by the neighbours and
    by the segment's own first and last word. Returns how many edges moved."""
    moved = 0
    for index, segment in enumerate(segments):
        low = segments[index - 1].end if index else 0.0
        high = segments[index + 1].start if index + 1 < len(segments) else len(energy) * FRAME_SECONDS
        first_word = min((w.start for w in segment.words), default=segment.end)
        last_word = max((w.end for w in segment.words), default=segment.start)
        start = _quietest(energy, max(low, segment.start - REFINE_WINDOW),
                          min(first_word, segment.start + REFINE_WINDOW))
        end = _quietest(energy, max(last_word, segment.end - REFINE_WINDOW),
                        min(high, segment.end + REFINE_WINDOW))
        if start is not None and end is not None and start < end:
            moved += (start != segment.start) + (end != segment.end)
            segment.start, segment.end = start, end
    return moved


def _quietest(energy: np.ndarray, lo: float, hi: float) -> float | None:
    import numpy as np

    if hi <= lo:
        return None
    window = energy[_frames(lo, hi, energy.size)]
    if window.size == 0:
        return None
    best = int(np.argmin(window)) + _frames(lo, hi, energy.size).start
    return float(min(max(best * FRAME_SECONDS + FRAME_SECONDS / 2, lo), hi))


def parse_steps(text: str) -> tuple[Step, ...]:
    """``vad,refine,split`` -> steps in pipeline order; ``none`` -> no steps."""
    names = {part.strip().lower() for part in text.split(",") if part.strip()}
    if names in ({"none"}, set()):
        return ()
    unknown = names - {s.value for s in Step}
    if unknown:
        raise ValueError(f"unknown step {', '.join(sorted(unknown))}: use vad, refine, split or none")
    return tuple(s for s in ALL_STEPS if s.value in names)
