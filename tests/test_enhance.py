"""The enhancement pipeline's steps on audio whose speech and silence are known to the sample."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klipnote.audio import SAMPLE_RATE
from klipnote.enhance import (
    FRAME_SECONDS,
    REFINE_WINDOW,
    Step,
    choose_split,
    drop_non_speech,
    enhance,
    frame_energy_db,
    parse_steps,
    refine_edges,
)
from klipnote.job import SplitBy
from klipnote.subtitles import StyleRules
from klipnote.transcript import Segment, Transcript, Word, WordTiming


def bursts(spans: list[tuple[float, float]], total: float) -> np.ndarray:
    """Low noise everywhere, a loud 220 Hz tone where ``spans`` say (a stand-in for speech energy)."""
    rng = np.random.default_rng(0)
    audio = rng.normal(0, 0.001, int(total * SAMPLE_RATE)).astype(np.float32)
    for start, end in spans:
        t = np.arange(int(start * SAMPLE_RATE), int(end * SAMPLE_RATE))
        audio[t] += 0.3 * np.sin(2 * np.pi * 220 * t / SAMPLE_RATE).astype(np.float32)
    return audio


def segment(start: float, end: float, text: str = "hello world") -> Segment:
    words = text.split()
    step = (end - start) / len(words)
    return Segment(start, end, text, [Word(w, start + i * step, start + (i + 1) * step) for i, w in enumerate(words)])


def test_segments_over_silence_are_dropped_and_speech_kept():
    audio = bursts([(1.0, 3.0), (6.0, 8.0)], 10.0)
    kept = drop_non_speech([segment(1.0, 3.0), segment(3.5, 5.5, "thank you"), segment(6.2, 7.8)],
                           frame_energy_db(audio))
    assert [(s.start, s.end) for s in kept] == [(1.0, 3.0), (6.2, 7.8)]


def test_refine_moves_an_edge_into_the_nearby_pause_but_not_past_a_word():
    audio = bursts([(1.0, 3.0)], 5.0)
    early = Segment(0.9, 3.2, "hi there", [Word("hi", 1.05, 2.0), Word("there", 2.0, 2.95)])
    moved = refine_edges([early], frame_energy_db(audio))
    assert moved == 2
    assert 0.9 - REFINE_WINDOW <= early.start <= 1.05 and 2.95 <= early.end <= 3.2 + REFINE_WINDOW
    energy = frame_energy_db(audio)
    assert energy[int(early.start / FRAME_SECONDS)] < -40 or early.start == pytest.approx(1.0, abs=0.05)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0.05, 2.0), st.floats(0.2, 3.0)), min_size=1, max_size=8))
def test_refine_never_reorders_or_overlaps_and_keeps_words_inside(layout):
    segments, t = [], 0.3
    for gap, length in layout:
        segments.append(segment(t + gap, t + gap + length))
        t += gap + length
    audio = bursts([(s.start + 0.1, s.end - 0.1) for s in segments], t + 1.0)
    refine_edges(segments, frame_energy_db(audio))
    assert all(a.end <= b.start for a, b in pairwise(segments))
    for s in segments:
        assert s.start < s.end
        assert all(s.start <= w.start and w.end <= s.end for w in s.words)


def test_split_is_chosen_by_what_the_engine_timed():
    timed = Transcript([segment(0, 2)], "en", 1.0, WordTiming.CROSS_ATTENTION)
    untimed = Transcript([Segment(0, 2, "hello world")], "en", 1.0, WordTiming.NONE)
    assert choose_split(timed, SplitBy.AUTO) == (SplitBy.WORDS, "words timed by whisper-cross-attention")
    assert choose_split(untimed, SplitBy.AUTO)[0] is SplitBy.SEGMENTS
    assert choose_split(untimed, SplitBy.WORDS) == (SplitBy.SEGMENTS, "words requested but the engine timed none")


def test_the_report_says_what_each_step_did():
    audio = bursts([(0.5, 9.5)], 12.0)
    long_words = " ".join(f"word{i}" for i in range(60))
    transcript = Transcript([segment(0.5, 9.5, long_words), segment(10.0, 11.5, "ghost words")], "en", 1.0,
                            WordTiming.CROSS_ATTENTION)
    cues, report = enhance(transcript, audio, (Step.VAD, Step.REFINE, Step.SPLIT), SplitBy.AUTO, StyleRules())
    steps = {s["step"]: s for s in report.steps}
    assert (steps["vad"]["in"], steps["vad"]["out"]) == (2, 1)
    assert steps["split"]["by"] == "words" and steps["split"]["out"] == len(cues) > 1
    assert all(s["seconds"] >= 0 for s in report.steps)


@pytest.mark.parametrize(("text", "steps"), [("vad,refine,split", (Step.VAD, Step.REFINE, Step.SPLIT)),
                                              ("split, vad", (Step.VAD, Step.SPLIT)), ("none", ()), ("", ())])
def test_steps_parse_into_pipeline_order(text, steps):
    assert parse_steps(text) == steps


def test_an_unknown_step_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="unknown step denoise: use vad, refine, split or none"):
        parse_steps("vad,denoise")


def test_audio_without_a_quiet_stretch_keeps_its_segments():
    audio = bursts([(0.0, 4.0)], 4.0)  # loud from the first sample to the last: nothing to call silence
    kept = drop_non_speech([segment(0.0, 2.0), segment(2.0, 4.0)], frame_energy_db(audio))
    assert len(kept) == 2
