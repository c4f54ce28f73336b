"""Both engines on models with the real ones' shapes: large-v3's (BELLE-2) and large-v2's, tiny and random.

Everything else in the suite runs Whisper base, whose 80 mel bins and 51865-token layout are
large-v2's: an engine that took the number of mel bins, the prompt's token ids, where the timestamp
tokens begin or which heads time the words from a constant would pass there and fail on BELLE-2
(128 mel bins, ``<|yue|>`` moving every later special token up by one). The models here
(tests/support/tiny_whisper.py) have exactly those layouts and random weights, so they say nothing
sensible; what is checked is how the engines read the model's files and handle what it decodes.

The belle2 engine (transformers) runs in its own environment; the whisperx engine (CTranslate2,
converted by CTranslate2's own converter) in .venv, on both layouts since whisper_model may name either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from klipnote import audio, cjk
from klipnote.config import load_settings
from klipnote.engines import JobOptions, batching, create
from klipnote.job import Model
from klipnote.subtitles import build_cues, check_rules
from klipnote.transcript import Transcript, WordTiming
from klipnote.windows import Span

from .support.tiny_whisper import LARGE_V2, LARGE_V3, TINY_ALIGNMENT_HEADS, Layout, build_checkpoint, build_ct2

pytestmark = pytest.mark.slow

#: Token ids of each layout, as openai's tokenizers number them.
IDS = {
    "large-v3": {"<|startoftranscript|>": 50258, "<|zh|>": 50260, "<|yue|>": 50358, "<|transcribe|>": 50360,
                 "<|notimestamps|>": 50364, "<|0.00|>": 50365, "<|30.00|>": 51865},
    "large-v2": {"<|startoftranscript|>": 50258, "<|zh|>": 50260, "<|transcribe|>": 50359,
                 "<|notimestamps|>": 50363, "<|0.00|>": 50364, "<|30.00|>": 51864},
}
PUNCTUATED = "今天天气很好，我们一起去公园散步吧。你们呢？好的，明天见！"


@pytest.fixture(scope="module")
def offline(model_cache: Path) -> Any:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("KLIPNOTE_MODEL_CACHE", str(model_cache))
        env.setenv("HF_HUB_OFFLINE", "1")
        yield env


def checkpoint(layout: Layout, model_cache: Path) -> Path:
    return build_checkpoint(layout, model_cache / f"tiny-{layout.name}", model_cache)


def run(engine: Any, clips: list[np.ndarray], language: str) -> list[Transcript]:
    requests = [batching.Request(clip, JobOptions(language=language), lambda stage, percent: None) for clip in clips]
    finished = {id(f.request): f for f in batching.run(engine, requests)}
    for f in finished.values():
        assert f.error is None, f.error
    return [finished[id(r)].transcript for r in requests]  # type: ignore[misc]


def assert_timed_inside(transcript: Transcript, duration: float) -> None:
    """Segments in order inside the file, every word inside its segment."""
    assert transcript.segments, "the model decoded nothing"
    for segment in transcript.segments:
        assert 0 <= segment.start <= segment.end <= duration + 0.02, segment
        for word in segment.words:
            assert segment.start - 1e-3 <= word.start <= word.end <= segment.end + 1e-3, (word, segment)


@pytest.fixture(scope="module")
def clips(corpus: Path) -> list[np.ndarray]:
    return [audio.decode(corpus / "zh.wav"), audio.decode(corpus / "jfk.flac")]


# ---------------------------------------------------------------------- belle2 engine, large-v3 (BELLE-2)


@pytest.fixture(scope="module")
def belle2(offline: Any, model_cache: Path) -> Any:
    engine = create(Model.BELLE2, load_settings({"belle2_model": str(checkpoint(LARGE_V3, model_cache))}),
                    device="cpu", batch_size=2)
    engine.load()
    return engine


@pytest.mark.belle2
def test_the_belle2_engine_reads_large_v3s_layout_from_the_model(belle2: Any) -> None:
    tokenizer = belle2._processor.tokenizer
    ids = IDS["large-v3"]
    assert {token: tokenizer.convert_tokens_to_ids(token) for token in ids} == ids
    assert belle2._prompt == [ids["<|startoftranscript|>"], ids["<|zh|>"], ids["<|transcribe|>"]]
    assert belle2._first_special == 50257
    assert belle2._model.config.num_mel_bins == 128 and belle2._model.config.vocab_size == 51866
    assert belle2._heads == {1: [head for _, head in TINY_ALIGNMENT_HEADS]}
    features = belle2._processor.feature_extractor([np.zeros(16000, np.float32)], sampling_rate=16000,
                                                   return_tensors="pt").input_features
    assert tuple(features.shape) == (1, 128, 3000)


@pytest.mark.belle2
def test_the_belle2_engine_decodes_times_and_cuts_large_v3_output(belle2: Any, clips: list[np.ndarray]) -> None:
    """generate() on 128-bin features, timestamp tokens read at large-v3's ids, the alignment pass over the
    tiny decoder's heads, characters timed inside their segments: two files sharing batches."""
    seen: list[list[int]] = []
    generate = belle2._model.generate

    def keeping(*args: Any, **kwargs: Any) -> Any:
        out = generate(*args, **kwargs)
        seen.extend(segment["tokens"].tolist() for segments in out["segments"] for segment in segments)
        return out

    belle2._model.generate = keeping
    try:
        transcripts = run(belle2, clips, "zh")
    finally:
        belle2._model.generate = generate
    tokens = {token for segment in seen for token in segment}
    ids = IDS["large-v3"]
    assert tokens and not tokens & set(range(50257, ids["<|0.00|>"])), "a prompt or task token read as text or time"
    assert tokens & set(range(ids["<|0.00|>"], ids["<|30.00|>"] + 1)), "no timestamp token at large-v3's ids"
    for clip, transcript in zip(clips, transcripts, strict=True):
        assert transcript.word_timing is WordTiming.CROSS_ATTENTION
        assert_timed_inside(transcript, len(clip) / audio.SAMPLE_RATE)
        assert any(segment.words for segment in transcript.segments)


@pytest.mark.belle2
def test_punctuated_belle2_output_is_cut_at_its_punctuation(belle2: Any) -> None:
    """What the punct variant writes: the engine times each character and keeps each mark a unit of its own,
    and the cue builder cuts after the marks (。？！ first, then ，), never before one."""
    tokenizer = belle2._processor.tokenizer
    tokens = tokenizer.encode(PUNCTUATED, add_special_tokens=False)
    step = 0.2
    timed = [(token, k * step, (k + 1) * step) for k, token in enumerate(tokens)]
    units = belle2._characters(timed)
    assert "".join(text for text, *_ in units) == PUNCTUATED
    assert all(len(text) == 1 for text, *_ in units)  # one unit per character, marks included
    from klipnote.engines.belle2_engine import Pass

    end = len(tokens) * step  # the segment as the engine builds it from a pass over a window at 0 s
    found = Pass(window=0, seek=0, frames=1500, segments=[(0.0, end, tokens)])
    segment = belle2._segments(found, np.arange(len(tokens) + 1) * step, Span(0.0, end))[0]
    assert [w.word for w in segment.words] == list(PUNCTUATED)
    cues = build_cues(Transcript([segment], "zh", None, WordTiming.CROSS_ATTENTION))
    assert check_rules(cues) == []
    assert "".join(cjk.join(c.text.split("\n")) for c in cues) == PUNCTUATED
    assert [c.text[-1] for c in cues] and all(c.text[-1] in "，。？！" for c in cues)
    assert not any(line[0] in "，。？！" for c in cues for line in c.text.split("\n"))


@pytest.mark.belle2
def test_a_timestamp_past_the_windows_audio_is_held_at_its_end(belle2: Any) -> None:
    """Found by the random large-v3: a segment said to start in the window's padding (8.28 s of a 5.2 s window)
    came out starting after it ended; its start and its characters stay inside the window now."""
    from klipnote.engines.belle2_engine import Pass

    tokens = belle2._processor.tokenizer.encode("好的", add_special_tokens=False)
    found = Pass(window=0, seek=0, frames=260, segments=[(8.28, 9.0, tokens)])
    window = Span(10.0, 15.2)
    [segment] = belle2._segments(found, np.linspace(8.28, 9.0, len(tokens) + 1), window)
    assert segment.start == segment.end == 15.2
    assert all(word.start == word.end == 15.2 for word in segment.words)


# ---------------------------------------------------------------------- whisperx engine, CTranslate2


@pytest.mark.parametrize("layout", [LARGE_V2, LARGE_V3], ids=lambda layout: layout.name)
def test_the_whisperx_engine_runs_each_layout_in_ctranslate2(offline: Any, model_cache: Path, clips: list[np.ndarray],
                                                            layout: Layout) -> None:
    """large-v2 (the default whisper_model) and large-v3 converted by CTranslate2's converter: features with
    the model's mel bins, prompts and timestamp ids from its tokenizer, words timed by its alignment heads."""
    ct2 = build_ct2(checkpoint(layout, model_cache), model_cache / f"tiny-{layout.name}-ct2")
    engine: Any = create(Model.WHISPERX, load_settings({"whisper_model": str(ct2), "align_model": "off"}),
                         device="cpu", batch_size=2)
    engine.load()
    ids = IDS[layout.name]
    assert engine._n_mels == layout.num_mel_bins and engine._whisper.model.n_mels == layout.num_mel_bins
    assert engine._whisper.model.num_languages == (100 if layout.cantonese else 99)
    tokenizer = engine._tokenizer("zh")
    assert tokenizer.sot_sequence == [ids["<|startoftranscript|>"], ids["<|zh|>"], ids["<|transcribe|>"]]
    assert (tokenizer.no_timestamps, tokenizer.timestamp_begin) == (ids["<|notimestamps|>"], ids["<|0.00|>"])
    assert engine._whisper.model.is_multilingual
    for clip, transcript in zip(clips, run(engine, clips, "zh"), strict=True):
        assert transcript.word_timing is WordTiming.CROSS_ATTENTION
        assert_timed_inside(transcript, len(clip) / audio.SAMPLE_RATE)


def test_tiny_layouts_are_the_real_tokenizers_numbering(model_cache: Path) -> None:
    """The tokenizer of each layout, as built: large-v3's has <|yue|> after <|su|> and everything after it moved."""
    from .support.tiny_whisper import tokenizer_of

    for layout in (LARGE_V2, LARGE_V3):
        tokenizer, vocabulary = tokenizer_of(layout, model_cache)
        assert len(vocabulary) == layout.vocab_size
        added = {token["content"]: token["id"] for token in tokenizer["added_tokens"]}
        assert {token: added.get(token) for token in IDS[layout.name]} == IDS[layout.name]
        assert all(vocabulary[i] == token for token, i in added.items())
        assert [s["ids"] for s in tokenizer["post_processor"]["special_tokens"].values()] == [
            [added["<|endoftext|>"]], [added["<|notimestamps|>"]], [added["<|startoftranscript|>"]]]



@pytest.mark.belle2
def test_the_memory_benchmark_measures_and_prints_its_tables(model_cache: Path, tmp_path: Path) -> None:
    """scripts/bench_memory.py in its smallest run: it still drives the engine and prints the formula's tables
    (a check that it works; the figures in docs/models.md come from its default run)."""
    import json
    import os
    import subprocess
    import sys

    from .conftest import REPO

    out = tmp_path / "out"
    env = {**os.environ, "KLIPNOTE_MODEL_CACHE": str(model_cache), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_memory.py"), "--shapes", "tiny", "--batches",
                           "1,2", "--positions", "8", "--cache", str(model_cache), "--belle2-python", sys.executable,
                           "--out", str(out)], capture_output=True, text=True, env=env, timeout=1200, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads((out / "memory.json").read_text())["results"]
    assert [(r["shape"], r["batch"], r["positions"]) for r in rows] == [("tiny", 1, 8), ("tiny", 2, 8)]
    assert all(r["peak_above_start"] > 0 and r["decoder_calls"] >= 8 for r in rows)
    assert "| large-v3 | 32 |" in done.stdout
    assert "largest batch that fits 24 GB by the formula, large-v3:" in done.stdout
