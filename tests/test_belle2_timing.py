"""The belle2 engine in process: its text and character times against the method it replaced and known speech.

Until this engine timed characters itself, it asked ``generate(return_token_timestamps=True)`` for
them: transformers then switches the model to eager attention and keeps every layer's attention at
every step. The reference here is exactly that call, on a model instance of its own (the switch
sticks to the instance), on the engine's own windows: the engine must decode the same text and time
the same tokens as well. The independent reference is the audio itself: zh.wav with a known stretch
of silence put into it, and six copies of zh.wav at known offsets.

The replaced method ran at float32, so the engine compared with it does too; the engine's default on
a CPU, int8 (every linear layer but the cross-attention quantized), is held to the float32 engine's reading and
character times and to the same known speech.

Model: Whisper base as a transformers checkpoint, built offline (see tests/test_belle2.py).
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from klipnote.audio import SAMPLE_RATE, decode
from klipnote.engines import JobOptions, batching
from klipnote.engines.batching import Job, Request
from klipnote.transcript import Transcript

from .support.e2ekit import belle2_checkpoint
from .support.speech import PAUSE, REPEATS, ZH, long_mandarin, zh_cer
from .support.textmetrics import paired_starts

pytestmark = [pytest.mark.slow, pytest.mark.belle2]

#: Where zh.wav pauses between 早上9点 and 至下午5点 (seconds), and the silence put there.
PAUSE_AT, INSERTED = 3.28, 1.5
#: 10 ms frames louder than this are speech (zh.wav: speech -10 to -30 dB, its silence -60 to -70 dB).
SPEECH_DB = -35.0
#: How far a character may sit from where the audio says speech starts or ends (Whisper base, 20 ms frames).
ONSET_TOLERANCE = 0.25
#: Two readings' characters of the same text this close (seconds) are the same character said.
SAME_CHARACTER = 0.5
#: One encoder frame (seconds), and a hair for float rounding.
FRAME = 0.02 + 1e-6


def no_progress(stage: Any, percent: float) -> None:
    """batching.run reports progress; these tests do not follow it."""


@pytest.fixture(scope="module")
def checkpoint(model_cache: Path) -> Path:
    return belle2_checkpoint(model_cache)


def loaded(checkpoint: Path, compute_type: str) -> Any:
    from klipnote.config import load_settings
    from klipnote.engines import create
    from klipnote.job import Model

    settings = load_settings({"belle2_model": str(checkpoint), "compute_type": compute_type})
    engine = create(Model.BELLE2, settings, device="cpu", batch_size=8)
    engine.load()
    return engine


@pytest.fixture(scope="module")
def engine(checkpoint: Path) -> Any:
    return loaded(checkpoint, "float32")  # the replaced method's precision


@pytest.fixture(scope="module")
def int8_engine(checkpoint: Path) -> Any:
    return loaded(checkpoint, "auto")  # int8 on a CPU


@pytest.fixture(scope="module")
def reference(checkpoint: Path) -> tuple[Any, Any]:
    """The replaced method's model: a separate instance, eager attention (what token timestamps force)."""
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    model = WhisperForConditionalGeneration.from_pretrained(checkpoint, attn_implementation="eager").eval()
    return model, WhisperProcessor.from_pretrained(checkpoint)


@pytest.fixture(scope="module")
def gap_audio(corpus: Path) -> np.ndarray:
    """zh.wav with INSERTED seconds of silence at PAUSE_AT."""
    speech = decode(corpus / "zh.wav")
    cut = int(PAUSE_AT * SAMPLE_RATE)
    return np.concatenate([speech[:cut], np.zeros(int(INSERTED * SAMPLE_RATE), np.float32), speech[cut:]])


@pytest.fixture(scope="module")
def long_audio(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    return decode(long_mandarin(corpus, tmp_path_factory.mktemp("speech") / "long-mandarin.wav"))


def transcribe(engine: Any, audio: np.ndarray) -> Transcript:
    return batching.transcribe(engine, audio, JobOptions(), no_progress)


def replaced_method(engine: Any, reference: tuple[Any, Any], audio: np.ndarray) -> list[tuple[str, list]]:
    """Per segment on the engine's own windows: its text and (character, onset in file seconds) for each
    token that spells one character, from ``generate(return_token_timestamps=True)``."""
    import torch

    model, processor = reference
    tokenizer = processor.tokenizer
    first_special = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    segments = []
    for window in engine.plan(Job(Request(audio, JobOptions(), no_progress))):
        piece = audio[int(window.start * SAMPLE_RATE):int(window.end * SAMPLE_RATE)]
        features = processor.feature_extractor([piece], sampling_rate=SAMPLE_RATE, return_tensors="pt",
                                               return_attention_mask=True)
        with torch.inference_mode():
            out = model.generate(features.input_features, attention_mask=features.attention_mask, language="zh",
                                 task="transcribe", return_timestamps=True, return_token_timestamps=True,
                                 return_dict_in_generate=True)
        for found in out["segments"][0]:
            pairs = [(token, float(at)) for token, at in zip(found["tokens"].tolist(),
                                                              found["token_timestamps"].tolist(), strict=False)
                     if token < first_special]
            if pairs:
                text = tokenizer.decode([token for token, _ in pairs]).strip()
                chars = [(tokenizer.decode([token]), window.start + at) for token, at in pairs]
                segments.append((text, [(c, at) for c, at in chars if len(c) == 1 and "\u4e00" <= c <= "\u9fff"]))
    return segments


def onsets(transcript: Transcript) -> list[list[tuple[str, float]]]:
    return [[(w.word, w.start) for w in s.words] for s in transcript.segments]


def matched(ours: list[tuple[str, float]], theirs: list[tuple[str, float]]) -> list[tuple[float, float]]:
    """(our onset, their onset) for each of their characters, found in order among ours."""
    pairs, position = [], 0
    for char, at in theirs:
        while ours[position][0] != char:
            position += 1
        pairs.append((ours[position][1], at))
        position += 1
    return pairs


def speech_edges(audio: np.ndarray) -> np.ndarray:
    """Seconds at which each 10 ms frame is louder than SPEECH_DB."""
    frames = audio[:len(audio) // 160 * 160].reshape(-1, 160)
    loud = 10 * np.log10((frames.astype(np.float64) ** 2).mean(axis=1) + 1e-12) > SPEECH_DB
    return np.flatnonzero(loud) / 100


@pytest.fixture(scope="module")
def gap_results(engine, reference, gap_audio) -> tuple[Transcript, list]:
    return transcribe(engine, gap_audio), replaced_method(engine, reference, gap_audio)


@pytest.fixture(scope="module")
def long_results(engine, reference, long_audio) -> tuple[Transcript, list]:
    return transcribe(engine, long_audio), replaced_method(engine, reference, long_audio)


@pytest.fixture(scope="module")
def int8_results(int8_engine, gap_audio, long_audio) -> dict[str, Transcript]:
    return {"gap": transcribe(int8_engine, gap_audio), "long": transcribe(int8_engine, long_audio)}


@pytest.mark.parametrize("results", ["gap_results", "long_results"])
def test_same_text_as_the_replaced_method(results, request):
    transcript, replaced = request.getfixturevalue(results)
    assert [s.text for s in transcript.segments] == [text for text, _ in replaced]


@pytest.mark.parametrize("results", ["gap_results", "long_results"])
def test_characters_are_timed_where_the_replaced_method_timed_them(results, request):
    transcript, replaced = request.getfixturevalue(results)
    gaps = [abs(ours - theirs) for segment, (_, chars) in zip(onsets(transcript), replaced, strict=True)
            for ours, theirs in matched(segment, chars)]
    assert len(gaps) >= 8
    assert np.median(gaps) <= 0.02 and max(gaps) <= 0.12, gaps


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_no_character_straddles_known_silence_and_speech_resumes_on_time(precision, gap_results, int8_results,
                                                                        gap_audio):
    """Speech stops before the inserted silence and starts again after it: characters keep to either side,
    and the first one after it starts where the speech does, no later than the replaced method put it."""
    transcript, replaced = gap_results
    if precision == "int8":
        transcript = int8_results["gap"]
    loud = speech_edges(gap_audio)
    stops, resumes = loud[loud < PAUSE_AT].max() + 0.01, loud[loud > PAUSE_AT].min()
    words = [w for s in transcript.segments for w in s.words]
    assert all(w.end <= stops + ONSET_TOLERANCE or w.start >= resumes - ONSET_TOLERANCE for w in words), words
    ours = next(w.start for w in words if w.start >= stops)
    theirs = next(at for _, chars in replaced for _, at in chars if at >= stops)
    assert abs(ours - resumes) <= ONSET_TOLERANCE
    assert abs(ours - resumes) <= abs(theirs - resumes) + 0.04, (ours, theirs, resumes)


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_each_copy_of_the_sentence_keeps_its_characters(precision, long_results, int8_results, corpus):
    """Six copies of zh.wav at known offsets: every character lies inside the speech of its own copy."""
    transcript = long_results[0] if precision == "float32" else int8_results["long"]
    loud = speech_edges(decode(corpus / "zh.wav"))
    period = len(decode(corpus / "zh.wav")) / SAMPLE_RATE + PAUSE
    words = [w for s in transcript.segments for w in s.words]
    copies = {int((w.start + w.end) / 2 // period) for w in words}
    assert copies == set(range(REPEATS))
    for w in words:
        copy = int((w.start + w.end) / 2 // period) * period
        assert copy + loud.min() - ONSET_TOLERANCE <= w.start <= w.end <= copy + loud.max() + ONSET_TOLERANCE, w


def reads_alike(ours: Transcript, theirs: Transcript, copies: int) -> None:
    """``ours`` reads zh.wav's sentence (said ``copies`` times) at most one character worse than ``theirs`` does,
    and the characters both read with the same neighbours start within a frame of each other by the median,
    none more than 0.12 s apart."""
    def error_rate(transcript: Transcript) -> float:
        return zh_cer("".join(s.text for s in transcript.segments), copies)

    assert error_rate(ours) <= error_rate(theirs) + 1 / (len(ZH) * copies), (ours.text, theirs.text)
    mine = [(w.word, w.start) for s in ours.segments for w in s.words]
    other = [(w.word, w.start) for s in theirs.segments for w in s.words]
    gaps = [abs(a - b) for a, b in paired_starts(mine, other, SAME_CHARACTER, neighbours=True)]
    assert len(gaps) >= 0.6 * len(other), (mine, other)
    assert np.median(gaps) <= FRAME and max(gaps) <= 0.12, gaps


@pytest.mark.parametrize("audio", ["gap", "long"])
def test_int8_reads_and_times_as_float32_does(audio, gap_results, long_results, int8_results):
    """The default precision on a CPU loses no accuracy against float32, the replaced method's."""
    reads_alike(int8_results[audio], (gap_results if audio == "gap" else long_results)[0],
                1 if audio == "gap" else REPEATS)


def test_int8_keeps_the_cross_attention_in_float32(int8_engine):
    """Every linear layer is int8 but the cross-attention's, whose weights the alignment pass reads."""
    import torch

    kinds = {name: type(module) for name, module in int8_engine._model.named_modules()
             if isinstance(module, torch.nn.Linear) or "quantized" in type(module).__module__}
    float32 = {name for name, kind in kinds.items() if kind is torch.nn.Linear}
    assert float32 and all(".encoder_attn." in name for name in float32), float32
    assert {"proj_out", "model.encoder.layers.0.fc1", "model.decoder.layers.0.self_attn.q_proj"} <= set(kinds) - float32
    assert int8_engine.describe()["compute_type"] == "int8"


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_windows_decoded_in_several_passes_keep_their_segments_in_place(precision, engine, int8_engine, corpus,
                                                                       monkeypatch):
    """84 s of English forced to zh makes generate() decode windows again from their last timestamp (passes
    that start past the window's start), each restarting its timestamps at 0: the segments still come out in
    order, inside the file, with their characters inside them."""
    from klipnote.engines import belle2_engine

    passes: list[Any] = []
    found_by = belle2_engine._passes

    def observed(*args: Any) -> list[Any]:
        found = found_by(*args)
        passes.extend(found)
        return found

    monkeypatch.setattr(belle2_engine, "_passes", observed)
    audio = decode(corpus / "whole-earth.wav")
    segments = transcribe(engine if precision == "float32" else int8_engine, audio).segments
    assert any(found.seek > 0 for found in passes), [(found.window, found.seek) for found in passes]
    assert all(0 <= s.start < s.end <= len(audio) / SAMPLE_RATE for s in segments)
    assert all(a.end <= b.start + 1e-6 for a, b in pairwise(segments)), [
        (s.start, s.end) for s in segments]
    assert all(s.start <= w.start <= w.end <= s.end for s in segments for w in s.words)


def test_passes_aligned_apart_are_timed_as_aligned_together(int8_engine, int8_results, long_audio, monkeypatch):
    """The alignment pass groups a batch's passes up to ALIGNMENT_ROWS tokens to bound its memory; each pass
    alone reads and times the same (int8 quantizes a layer's input with one scale for all its rows, so the
    numbers of a row move a little with the rows beside it)."""
    from klipnote.engines import belle2_engine

    monkeypatch.setattr(belle2_engine, "ALIGNMENT_ROWS", 1)
    reads_alike(transcribe(int8_engine, long_audio), int8_results["long"], REPEATS)


def test_decoding_keeps_sdpa_attention(engine, long_results):
    """The replaced method switched the model to eager attention for good; this engine never does."""
    assert engine._model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_alignment_heads_scores_are_the_models_own_attention(precision, engine, int8_engine, long_audio):
    """The hooks' q k^T for the alignment heads, after a softmax, equals the attention weights that eager
    attention returns for those heads (on the same tokens and audio)."""
    import torch

    from klipnote.engines.belle2_engine import _alignment_scores

    engine = engine if precision == "float32" else int8_engine
    model = engine._model
    features = engine._processor.feature_extractor([long_audio[:10 * SAMPLE_RATE]], sampling_rate=SAMPLE_RATE,
                                                   return_tensors="pt").input_features
    tokens = torch.tensor([engine._prompt + engine._processor.tokenizer.encode("开放时间", add_special_tokens=False)])
    with torch.inference_mode():
        encoded = model.model.encoder(features).last_hidden_state
        with _alignment_scores(model.model.decoder, engine._heads) as scores:
            model.model.decoder(input_ids=tokens, encoder_hidden_states=encoded, use_cache=False)
        model.config._attn_implementation = "eager"
        try:
            eager = model.model.decoder(input_ids=tokens, encoder_hidden_states=encoded, use_cache=False,
                                        output_attentions=True).cross_attentions
        finally:
            model.config._attn_implementation = "sdpa"
    ours = torch.cat(scores, dim=1).softmax(dim=-1)
    expected = torch.stack([eager[layer][:, head] for layer, heads in engine._heads.items() for head in heads], dim=1)
    assert torch.allclose(ours, expected, atol=1e-5)


def test_windows_of_several_jobs_in_one_batch_come_out_as_each_alone(engine, gap_audio, long_audio):
    """At float32: the same text, the same times within a frame."""
    alone = [transcribe(engine, audio) for audio in (gap_audio, long_audio)]
    shared = in_one_batch(engine, gap_audio, long_audio)
    for one, other in zip(alone, shared, strict=True):
        assert [s.text for s in one.segments] == [s.text for s in other.segments]
        ours = [(w.start, w.end) for s in one.segments for w in s.words]
        theirs = [(w.start, w.end) for s in other.segments for w in s.words]
        assert np.allclose(ours, theirs, atol=FRAME)


def test_at_int8_jobs_sharing_a_batch_read_as_well_as_each_alone(int8_engine, gap_audio, long_audio):
    """At int8 a window's numbers move a little with the windows beside it (one quantization scale per layer
    input), so a character can read differently with other jobs in the batch: no worse, and timed alike."""
    alone = [transcribe(int8_engine, audio) for audio in (gap_audio, long_audio)]
    shared = in_one_batch(int8_engine, gap_audio, long_audio)
    for one, other, copies in zip(alone, shared, (1, REPEATS), strict=True):
        reads_alike(other, one, copies)


def in_one_batch(engine: Any, *audio: np.ndarray) -> list[Transcript]:
    requests = [Request(samples, JobOptions(), no_progress) for samples in audio]
    finished = {id(f.request): f.transcript for f in batching.run(engine, requests)}
    assert engine.batch_size >= 3  # the gap audio's window and long audio's two went through one batch
    assert all(finished[id(r)] is not None for r in requests)
    return [finished[id(r)] for r in requests]
