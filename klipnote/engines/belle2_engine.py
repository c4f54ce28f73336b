"""The belle2 engine: BELLE-2 (a Mandarin fine-tune of whisper-large-v3) on transformers.

What the service klipnote replaces got wrong, and what this does instead:

- fixed 30 s windows cut blindly -> windows cut at pauses found by Silero VAD (its weights ship
  in the ``silero-vad`` PyPI package: no hub, no torch.hub; its ONNX model, run by onnxruntime, which is faster
  on a CPU than its TorchScript one), packed up to 30 s, decoded in batches;
- one subtitle per window -> Whisper's own timestamp tokens give segments that follow the speech,
  mapped back to file time by the window's offset;
- no character times -> times from the alignment heads' cross-attention, spread over the
  characters each token spells (below);
- English audio translated into Chinese -> Mandarin only, forced ``zh`` transcription; a job
  whose language is known not to be Mandarin is refused with a message;
- Traditional/Simplified mixed output -> the worker converts it to the job's script (klipnote/zhscript.py).

A job's prompt and hotwords (:mod:`klipnote.engines.prompts`) go to ``generate`` as ``prompt_ids``,
which transformers takes once for a whole batch, so jobs with different prompts never share a
batch here (``Job.group``); jobs without one share batches as before. Translation is whisperx's:
this engine refuses a job that asks for it.

Character times without the memory bill. ``generate(return_token_timestamps=True)`` switches the
model to eager attention and keeps every layer's attention weights at every step (3.3x the
transformers pipeline's peak memory). Here generate() runs with SDPA and keeps nothing per step;
afterwards ONE teacher-forced decoder pass over each pass's decoded tokens (timestamp tokens
included, exactly as generated, so the attention is what generation saw) reuses the windows'
encoder output, and forward hooks on the layers that hold alignment heads compute q k^T for those
heads only. :mod:`klipnote.engines.dtw` turns that attention into token boundaries (openai-whisper's
method: normalise, median filter, average heads, DTW). A token's row is the position that holds
it, as transformers counts (openai-whisper uses the position before it): on zh.wav with Whisper
base that matched syllable onsets, while the position before put every character one early.

Precision follows ``compute_type``: float16 on a GPU; on a CPU, int8 by default, as CTranslate2
runs the whisperx engine there. On a CPU the token loop reads every decoder weight and the
51,866-word output layer once per step for a handful of rows, so it is bound by memory traffic, not
arithmetic; the encoder is bound by arithmetic. Dynamic int8 (weights stored in int8, activations
quantized per call, fbgemm's kernels) reads a quarter of the bytes and multiplies in integers: on
the build machine it made the engine 2x faster at the same character error rate. Every linear layer
is quantized except the decoder's cross-attention, whose weights the alignment pass reads to
recompute the attention the model paid: that stays float32, and so exact. One cost: torch quantizes a
layer's input with one scale for all its rows, so a window's numbers move a little with the windows
that share its batch, and a character can read differently with other jobs beside it (float32 reads
the same either way).

Weights are loaded from safetensors only: torch < 2.6 (this engine's environment) can execute
code hidden in pickled ``.bin`` weights (CVE-2025-32434), so those are never read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from klipnote import cjk, modelstore
from klipnote.audio import SAMPLE_RATE
from klipnote.config import ComputeType
from klipnote.engines import dtw, prompts
from klipnote.envcheck import version_of
from klipnote.errors import ConfigError, KlipnoteError, summary
from klipnote.job import Lane, Task
from klipnote.routing import is_mandarin
from klipnote.transcript import Segment, Transcript, Word, WordTiming
from klipnote.windows import Span, pack

if TYPE_CHECKING:
    from klipnote.config import Settings
    from klipnote.engines.batching import Job, Window

log = logging.getLogger("klipnote.belle2")

#: Whisper's mel frames are 10 ms apart; its encoder halves them into 1500 frames per 30 s window.
SAMPLES_PER_MEL_FRAME = 160
ENCODER_STRIDE = 2
ENCODER_FRAMES = 1500
#: How far a segment's start (seconds, float arithmetic) may sit before its pass's start and still belong to it.
SECONDS_SLACK = 1e-6
#: Decoded tokens per alignment pass at most (passes are grouped up to this; a longer one goes alone): the pass's
#: memory grows with tokens x audio frames, and a window that loops to the 448-token limit would multiply it.
ALIGNMENT_ROWS = 512
#: The prompt generate() decodes from (language and task forced, timestamps on); the alignment pass repeats it.
PROMPT = ("<|startoftranscript|>", "<|zh|>", "<|transcribe|>")


class Belle2Engine:
    name = "belle2"
    lanes = (Lane.BELLE2,)

    def __init__(self, settings: Settings, *, device: str, batch_size: int) -> None:
        self.model_name = settings.belle2_model
        self.revision = modelstore.belle2_revision(settings)  # what models pull pinned, else main; not for a folder
        self.device = device
        self.batch_size = batch_size
        self.compute_type = settings.compute_type.on(device)
        self.dtype_name = _dtype_name(self.compute_type, device)
        self._model: Any = None
        self._processor: Any = None
        self._vad: Any = None
        # Set by load(): token ids from _first_special up are special or timestamps; the alignment
        # heads as layer -> heads; the alignment pass's prompt as token ids.
        self._first_special = 0
        self._heads: dict[int, list[int]] = {}
        self._prompt: list[int] = []

    # ------------------------------------------------------------------ loading

    def load(self) -> None:
        import torch

        threads = torch.get_num_threads()  # importing silero_vad sets the whole process to one thread
        from silero_vad import load_silero_vad
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        torch.set_num_threads(threads)

        try:
            self._processor = WhisperProcessor.from_pretrained(self.model_name, revision=self.revision)
            self._model = WhisperForConditionalGeneration.from_pretrained(
                self.model_name, revision=self.revision, use_safetensors=True,
                torch_dtype=getattr(torch, self.dtype_name), attn_implementation="sdpa", low_cpu_mem_usage=True,
            ).to(self.device).eval()
            if self.compute_type is ComputeType.INT8:
                _quantize(self._model)
        except Exception as exc:
            raise KlipnoteError(
                f"cannot load BELLE-2 model {self.model_name!r}@{self.revision} ({summary(exc)}); "
                "give a hub id or a local folder with model.safetensors (pickled .bin weights are never loaded "
                "under torch < 2.6); for a hub id, klipnote models pull belle2 pins a revision that has them"
            ) from exc
        alignment_heads = getattr(self._model.generation_config, "alignment_heads", None)
        if not alignment_heads:
            raise KlipnoteError(f"{self.model_name} has no alignment_heads in its generation_config.json and "
                                f"character times need them: {modelstore.NO_ALIGNMENT_HEADS_FIX}")
        for layer, head in alignment_heads:
            self._heads.setdefault(int(layer), []).append(int(head))
        self._vad = load_silero_vad(onnx=True)
        tokenizer = self._processor.tokenizer
        self._first_special = tokenizer.convert_tokens_to_ids("<|endoftext|>")
        self._prompt = tokenizer.convert_tokens_to_ids(list(PROMPT))

    def describe(self) -> dict[str, Any]:
        return {
            "engine": self.name,
            "model": self.model_name,
            "model_path": self.model_name,
            "revision": self.revision,
            "device": self.device,
            "compute_type": self.compute_type.value,
            "versions": {p: version_of(p) for p in ("transformers", "torch", "silero-vad", "onnxruntime")},
        }

    def is_out_of_memory(self, exc: BaseException) -> bool:
        return "out of memory" in str(exc).lower()

    # ------------------------------------------------------------------ the three steps of batching.run

    def plan(self, job: Job) -> list[Span]:
        """Silero VAD's speech regions packed into windows, and the job's prompt; a job known not to be
        Mandarin, or asking for a translation, is refused."""
        language = job.request.options.language
        if language and not is_mandarin(language):
            raise KlipnoteError(f"the belle2 engine transcribes Mandarin only and this job's language is "
                                f"{language!r}: submit it with --model whisperx or --model auto")
        decoding = job.request.options.decoding
        if decoding.task is not Task.TRANSCRIBE:
            raise KlipnoteError(f"the belle2 engine only transcribes and this job asks to {decoding.task.value}: "
                                "submit it with --model whisperx")
        tokenizer = self._processor.tokenizer
        prompt = prompts.build(decoding, lambda text: tokenizer.encode(text, add_special_tokens=False),
                               tokenizer.convert_tokens_to_ids("<|startofprev|>"),
                               self._model.config.max_target_positions)
        if prompt.note and job.request.note is not None:
            job.request.note(prompt.note)
        job.state["prompt"] = prompt.tokens
        job.group = prompt.tokens  # one prompt_ids per generate call: jobs with other prompts wait for their own
        job.language = "zh"
        return pack(self.speech(job.request.audio))

    def speech(self, audio: np.ndarray) -> list[Span]:
        """Where there is speech, by Silero VAD."""
        return speech_regions(audio, self._vad)

    def decode_batch(self, batch: list[Window]) -> list[list[Segment]]:
        """Each window's segments in file time, characters timed by the alignment heads.

        generate() runs with SDPA attention and keeps no attention weights; the windows' encoder
        output from its first pass is kept and reused for the one teacher-forced alignment pass.
        """
        import torch

        pieces = [_cut(window.job.request.audio, window.span) for window in batch]
        features = self._processor.feature_extractor(pieces, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        inputs = features.input_features.to(self.device, dtype=self._model.dtype)
        prompt = list(batch[0].job.state["prompt"])  # the batch's one group (batching keeps groups apart)
        asked = {"prompt_ids": torch.tensor(prompt, device=self.device)} if prompt else {}
        seeks: list[torch.Tensor] = []
        with torch.inference_mode(), _first_output(self._model.model.encoder) as encoded:
            out = self._model.generate(inputs, language="zh", task="transcribe", return_timestamps=True,
                                       return_segments=True, monitor_progress=lambda s: seeks.append(s.clone()),
                                       **asked)
            passes = [found for index, piece in enumerate(pieces)
                      for found in _passes(index, piece, seeks, out["segments"][index], self._first_special)]
            bounds = [times for group in _by_rows(passes, ALIGNMENT_ROWS)
                      for times in self._align(group, inputs, encoded[0], prompt)]
        decoded: list[list[Segment]] = [[] for _ in batch]
        for found, times in zip(passes, bounds, strict=True):
            window = batch[found.window].span
            decoded[found.window].extend(self._segments(found, times, window))
        return [[segment for segment in segments if segment.text] for segments in decoded]

    def assemble(self, job: Job) -> Transcript:
        """The windows' segments in order, in the characters the model wrote (the worker applies the job's
        Chinese script to either engine's output: :mod:`klipnote.zhscript`)."""
        segments = [segment for index in sorted(job.decoded) for segment in job.decoded[index]]
        return Transcript(segments, "zh", None, WordTiming.CROSS_ATTENTION if segments else WordTiming.NONE)

    # ------------------------------------------------------------------ character times

    def _align(self, passes: list[Pass], inputs: Any, encoded: Any, prompt: list[int]) -> list[np.ndarray]:
        """Token boundaries (seconds from each pass's start) from one teacher-forced decoder pass over all passes,
        each preceded by the batch's ``prompt`` (generate() decoded every pass from it)."""
        import torch

        if encoded.shape[0] != inputs.shape[0]:
            raise RuntimeError("generate() did not encode the whole batch first: cannot reuse its encoder output")
        later = [found for found in passes if found.seek]
        states = {id(found): encoded[found.window] for found in passes if not found.seek}
        if later:  # the window was decoded again from a later point: encode that input, as generate() did
            shifted = torch.stack([_shift(inputs[found.window], found.seek) for found in later])
            states.update(zip(map(id, later), self._model.model.encoder(shifted).last_hidden_state, strict=True))
        sequences = [[*prompt, *self._prompt, *found.tokens] for found in passes]
        width = max(map(len, sequences))
        ids = torch.tensor([s + [self._first_special] * (width - len(s)) for s in sequences], device=self.device)
        with _alignment_scores(self._model.model.decoder, self._heads) as scores:
            self._model.model.decoder(input_ids=ids, encoder_hidden_states=torch.stack([states[id(p)] for p in passes]),
                                      use_cache=False)
        weights = torch.cat(scores, dim=1)  # passes x alignment heads x positions x frames
        first = len(prompt) + len(self._prompt)  # one row per decoded token, at the position that holds it
        attention = [weights[index, :, first:first + len(found.tokens), :found.frames].float().softmax(dim=-1)
                     .cpu().numpy() for index, found in enumerate(passes)]
        return [found.offset + times for found, times in zip(passes, dtw.boundaries(attention), strict=True)]

    def _segments(self, found: Pass, times: np.ndarray, window: Span) -> list[Segment]:
        """The pass's segments that hold text, in file time; token ``k`` of the pass spans ``times[k:k + 2]``."""
        segments = []
        row = 0
        for said_start, said_end, tokens in found.segments:
            start = min(said_start, window.length)  # a timestamp past the window's audio (in its padding)
            end = min(max(said_end, start), window.length)
            spans = np.clip(times[row:row + len(tokens) + 1], start, end)
            row += len(tokens)
            text_tokens = [(token, float(spans[k]), float(spans[k + 1]))
                           for k, token in enumerate(tokens) if token < self._first_special]
            if not text_tokens:
                continue
            words = [Word(text, round(window.start + at, 3), round(window.start + until, 3))
                     for text, at, until in self._characters(text_tokens)]
            text = self._processor.tokenizer.decode([token for token, *_ in text_tokens]).strip()  # the model's spacing
            segments.append(Segment(round(window.start + start, 3), round(window.start + end, 3), text, words))
        return segments

    def _characters(self, tokens: list[tuple[int, float, float]]) -> list[tuple[str, float, float]]:
        """One timed unit per character of Chinese, per word otherwise (a word spelled by several tokens is one)."""
        tokenizer = self._processor.tokenizer
        units: list[list[Any]] = []
        begun = 0
        for index in range(len(tokens)):
            text = tokenizer.decode([token for token, *_ in tokens[begun:index + 1]])
            if "\ufffd" in text:  # a character split across byte-level tokens: wait for the rest
                continue
            for piece, at, until in _spread(text, tokens[begun][1], tokens[index][2]):
                if units and not text[:1].isspace() and not cjk.has_cjk(piece + units[-1][0][-1]):
                    units[-1][0] += piece  # a Latin word or number spelled by several tokens
                    units[-1][2] = until
                else:
                    units.append([piece, at, until])
            begun = index + 1
        return [(text, at, until) for text, at, until in units]


@dataclass
class Pass:
    """One generate() pass over a window: the segments it found, timed together against the input it decoded.

    generate() decodes a window again from its last timestamp when a pass ends inside a segment;
    each such pass saw the window's features from its own ``seek`` on. Its segments' tokens, timestamp
    tokens included, are the pass's decoded tokens in order (what generate() kept of them).
    """

    window: int  # index in the batch
    seek: int  # mel frames from the window's start
    frames: int  # encoder frames of real audio in the pass's input
    segments: list[tuple[float, float, list[int]]]  # start and end (seconds in the window), tokens with timestamps

    @property
    def offset(self) -> float:
        return self.seek * SAMPLES_PER_MEL_FRAME / SAMPLE_RATE

    @property
    def tokens(self) -> list[int]:
        return [token for *_, tokens in self.segments for token in tokens]


def _passes(window: int, piece: np.ndarray, seeks: list[Any], found: list[dict], first_special: int) -> list[Pass]:
    """One window's segments from generate(), grouped by the pass that found them.

    ``seeks``: what generate() reported to ``monitor_progress`` before each pass, (seek, end) per window.
    """
    starts = sorted({int(seek[window, 0]) for seek in seeks if seek[window, 0] < seek[window, 1]})
    passes: dict[int, Pass] = {}
    for segment in found:
        start, end = float(segment["start"]), float(segment["end"])
        seek = max((s for s in starts if s * SAMPLES_PER_MEL_FRAME / SAMPLE_RATE <= start + SECONDS_SLACK), default=0)
        if seek not in passes:
            audio_frames = (len(piece) - seek * SAMPLES_PER_MEL_FRAME) // (SAMPLES_PER_MEL_FRAME * ENCODER_STRIDE)
            passes[seek] = Pass(window, seek, min(max(audio_frames, 1), ENCODER_FRAMES), [])
        passes[seek].segments.append((start, end, segment["tokens"].tolist()))
    return [found for found in passes.values() if any(token < first_special for token in found.tokens)]


def _dtype_name(compute_type: ComputeType, device: str) -> str:
    """The torch dtype the weights load in; int8 loads float32 and quantizes afterwards (on a CPU only)."""
    if compute_type is ComputeType.INT8_FLOAT16 or (compute_type is ComputeType.INT8 and device != "cpu"):
        raise ConfigError(f"the belle2 engine cannot run compute_type {compute_type.value} on {device}: "
                          "use float16 or bfloat16 on a GPU, int8 or float32 on a CPU")
    if compute_type is ComputeType.FLOAT16 and device == "cpu":
        raise ConfigError("the belle2 engine cannot run float16 on a CPU (torch has no fast float16 kernels "
                          "there): set compute_type to auto, int8 or float32")
    return "float32" if compute_type is ComputeType.INT8 else compute_type.value


def _quantize(model: Any) -> None:
    """Dynamic int8 for every linear layer but the cross-attention's (the alignment pass reads those weights)."""
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    chosen = {name: per_channel_dynamic_qconfig for name, module in model.named_modules()
              if isinstance(module, torch.nn.Linear) and ".encoder_attn." not in name}
    quantize_dynamic(model, chosen, inplace=True)


def speech_regions(audio: np.ndarray, vad: Any) -> list[Span]:
    """Where ``vad`` (a Silero model from ``load_silero_vad``, ONNX or TorchScript) hears speech in ``audio``."""
    import torch
    from silero_vad import get_speech_timestamps

    stamps = get_speech_timestamps(torch.from_numpy(audio), vad, sampling_rate=SAMPLE_RATE, return_seconds=True)
    return [Span(float(s["start"]), float(s["end"])) for s in stamps]


def _by_rows(passes: list[Pass], rows: int) -> list[list[Pass]]:
    """The passes in order, grouped so that a group's decoded tokens stay within ``rows`` (or it holds one pass)."""
    groups: list[list[Pass]] = []
    held = 0
    for found in passes:
        if not groups or held + len(found.tokens) > rows:
            groups.append([])
            held = 0
        groups[-1].append(found)
        held += len(found.tokens)
    return groups


def _cut(audio: np.ndarray, span: Span) -> np.ndarray:
    return audio[int(span.start * SAMPLE_RATE):int(span.end * SAMPLE_RATE)]


def _shift(features: Any, seek: int) -> Any:
    """A window's features from mel frame ``seek`` on, padded with zeros to the full length, as generate() cuts them."""
    import torch

    return torch.nn.functional.pad(features[:, seek:], (0, seek))


@contextmanager
def _first_output(encoder: Any) -> Iterator[list[Any]]:
    """The encoder's output from its first call inside the block (generate() encodes the whole batch first)."""
    kept: list[Any] = []

    def keep(_module: Any, _args: Any, output: Any) -> None:
        if not kept:
            kept.append(output[0])

    handle = encoder.register_forward_hook(keep)
    try:
        yield kept
    finally:
        handle.remove()


@contextmanager
def _alignment_scores(decoder: Any, heads: dict[int, list[int]]) -> Iterator[list[Any]]:
    """Cross-attention scores (before the softmax) of the alignment heads only, per layer in ``heads``' order.

    Forward hooks on those layers' ``encoder_attn`` recompute q k^T for their alignment heads from
    the module's own inputs and weights: the attention itself stays SDPA, which returns no weights,
    and no other head's or layer's weights are ever made. Each entry: batch x heads x positions x frames.
    """
    import torch
    from torch.nn.functional import linear

    scores: list[Any] = []

    def score(module: Any, args: tuple, kwargs: dict, _output: Any, *, rows: Any) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        query = linear(hidden, module.q_proj.weight[rows], module.q_proj.bias[rows]) * module.scaling
        key = linear(kwargs["key_value_states"], module.k_proj.weight[rows])
        query = query.unflatten(-1, (-1, module.head_dim)).transpose(1, 2)
        key = key.unflatten(-1, (-1, module.head_dim)).transpose(1, 2)
        scores.append(query @ key.transpose(-1, -2))

    handles = []
    for layer, chosen in heads.items():
        attention = decoder.layers[layer].encoder_attn
        rows = torch.cat([torch.arange(h * attention.head_dim, (h + 1) * attention.head_dim) for h in chosen])
        handles.append(attention.register_forward_hook(partial(score, rows=rows.to(attention.q_proj.weight.device)),
                                                       with_kwargs=True))
    try:
        yield scores
    finally:
        for handle in handles:
            handle.remove()


def _spread(text: str, start: float, end: float) -> list[tuple[str, float, float]]:
    """Split a decoded token's text into units (CJK characters, or the whole word) sharing its time."""
    stripped = text.strip()
    if not stripped:
        return []
    if not cjk.has_cjk(stripped):
        return [(stripped, start, end)]
    chars = [c for c in stripped if not c.isspace()]
    step = (end - start) / len(chars)
    return [(c, start + i * step, start + (i + 1) * step) for i, c in enumerate(chars)]
