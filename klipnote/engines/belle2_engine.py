"""The belle2 engine: BELLE-2 (a Mandarin fine-tune of whisper-large-v3) on transformers.

What the service klipnote replaces got wrong, and what this does instead:

- fixed 30 s windows cut blindly -> windows cut at pauses found by Silero VAD (its weights ship
  in the ``silero-vad`` PyPI package: no hub, no torch.hub), packed up to 30 s, decoded in batches;
- one subtitle per window -> Whisper's own timestamp tokens give segments that follow the speech,
  mapped back to file time by the window's offset;
- no character times -> transformers' token timestamps from the alignment heads' cross-attention,
  spread over the characters each token spells;
- English audio translated into Chinese -> Mandarin only, forced ``zh`` transcription; a job
  whose language is known not to be Mandarin is refused with a message;
- Traditional/Simplified mixed output -> OpenCC conversion (Simplified by default).

Weights are loaded from safetensors only: torch < 2.6 (this engine's environment) can execute
code hidden in pickled ``.bin`` weights (CVE-2025-32434), so those are never read.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from klipnote import cjk
from klipnote.config import Settings
from klipnote.engines import JobOptions, Progress
from klipnote.envcheck import version_of
from klipnote.errors import KlipnoteError, summary
from klipnote.job import Lane, Stage, ZhScript
from klipnote.routing import is_mandarin
from klipnote.transcript import Segment, Transcript, Word, WordTiming
from klipnote.windows import Span, pack

log = logging.getLogger("klipnote.belle2")

SAMPLE_RATE = 16_000
#: OpenCC configurations for ``zh_script``; ``original`` leaves the model's characters alone.
OPENCC_CONFIG = {ZhScript.SIMPLIFIED: "t2s", ZhScript.TRADITIONAL: "s2t", ZhScript.ORIGINAL: None}


class Belle2Engine:
    name = "belle2"
    lanes = (Lane.BELLE2,)

    def __init__(self, settings: Settings, *, device: str, batch_size: int) -> None:
        self.model_name = settings.belle2_model
        self.revision = settings.belle2_model_revision or "main"  # ignored for a local folder
        self.device = device
        self.batch_size = batch_size
        self.zh_script = settings.zh_script
        self.dtype_name = "float16" if device == "cuda" else "float32"
        self._model: Any = None
        self._processor: Any = None
        self._vad: Any = None
        self._converters: dict[str, Any] = {}
        self._first_special = 0  # token ids from here up are special or timestamps, set by load()

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
        except Exception as exc:
            raise KlipnoteError(
                f"cannot load BELLE-2 model {self.model_name!r} ({summary(exc)}); "
                "give a hub id or a local folder with model.safetensors (pickled .bin weights are never loaded "
                "under torch < 2.6)"
            ) from exc
        if not getattr(self._model.generation_config, "alignment_heads", None):
            raise KlipnoteError(f"{self.model_name} has no alignment_heads in its generation_config.json: "
                                "character times need them")
        self._vad = load_silero_vad()
        self._first_special = self._processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")

    def describe(self) -> dict[str, Any]:
        return {
            "engine": self.name,
            "model": self.model_name,
            "model_path": self.model_name,
            "revision": self.revision,
            "device": self.device,
            "compute_type": self.dtype_name,
            "zh_script": self.zh_script,
            "versions": {p: version_of(p) for p in ("transformers", "torch", "silero-vad")},
        }

    def is_out_of_memory(self, exc: BaseException) -> bool:
        return "out of memory" in str(exc).lower()

    # ------------------------------------------------------------------ transcribing

    def transcribe(self, audio: np.ndarray, options: JobOptions, progress: Progress) -> Transcript:
        if options.language and not is_mandarin(options.language):
            raise KlipnoteError(f"the belle2 engine transcribes Mandarin only and this job's language is "
                                f"{options.language!r}: submit it with --model whisperx or --model auto")
        progress(Stage.TRANSCRIBING, 0.0)
        windows = pack(self.speech(audio))
        segments: list[Segment] = []
        for first in range(0, len(windows), self.batch_size):
            batch = windows[first:first + self.batch_size]
            segments.extend(self._decode(audio, batch))
            progress(Stage.TRANSCRIBING, 100.0 * (first + len(batch)) / len(windows))
        script = options.zh_script or self.zh_script
        segments = [self._convert(s, script) for s in segments if s.text]
        return Transcript(segments, "zh", None, WordTiming.CROSS_ATTENTION if segments else WordTiming.NONE)

    def speech(self, audio: np.ndarray) -> list[Span]:
        """Where there is speech, by Silero VAD."""
        import torch
        from silero_vad import get_speech_timestamps

        stamps = get_speech_timestamps(torch.from_numpy(audio), self._vad, sampling_rate=SAMPLE_RATE,
                                       return_seconds=True)
        return [Span(float(s["start"]), float(s["end"])) for s in stamps]

    def _decode(self, audio: np.ndarray, windows: list[Span]) -> list[Segment]:
        import torch

        pieces = [audio[int(w.start * SAMPLE_RATE):int(w.end * SAMPLE_RATE)] for w in windows]
        # The attention mask tells the alignment where each window's audio ends: without it token
        # times can run past the end of a short window.
        features = self._processor.feature_extractor(pieces, sampling_rate=SAMPLE_RATE, return_tensors="pt",
                                                     return_attention_mask=True)
        inputs = features.input_features.to(self.device, dtype=self._model.dtype)
        with torch.inference_mode():
            out = self._model.generate(inputs, attention_mask=features.attention_mask.to(self.device),
                                       language="zh", task="transcribe", return_timestamps=True,
                                       return_token_timestamps=True, return_dict_in_generate=True)
        # generate() may decode a window in several passes, each restarting its timestamps at 0;
        # its "segments" carry the offset of their pass, the flat "sequences" do not.
        segments = []
        for index, window in enumerate(windows):
            for found in out["segments"][index]:
                pairs = [(token, float(at)) for token, at in
                         zip(found["tokens"].tolist(), found["token_timestamps"].tolist(), strict=False)
                         if token < self._first_special]
                if pairs:
                    segments.append(self._segment(pairs, float(found["start"]), float(found["end"]), window))
        return segments

    def _segment(self, tokens: list[tuple[int, float]], start: float, end: float, window: Span) -> Segment:
        """A segment in file time, with one timed word per character of Chinese (per word otherwise)."""
        tokenizer = self._processor.tokenizer
        offset = window.start
        end = min(max(end, start), window.length)
        units: list[tuple[str, float]] = []
        pending: list[int] = []
        for token, at in tokens:
            pending.append(token)
            text = tokenizer.decode(pending)
            if "\ufffd" in text:  # a character split across byte-level tokens: wait for the rest
                continue
            units.append((text, min(max(at, start), end)))
            pending = []
        words: list[Word] = []
        for index, (text, at) in enumerate(units):
            until = units[index + 1][1] if index + 1 < len(units) else end
            for piece, piece_start, piece_end in _spread(text, at, max(until, at)):
                previous = words[-1] if words else None
                if previous and not text[:1].isspace() and not cjk.has_cjk(piece + previous.word[-1]):
                    previous.word += piece  # a Latin word or number spelled by several tokens
                    previous.end = round(offset + piece_end, 3)
                    continue
                words.append(Word(piece, round(offset + piece_start, 3), round(offset + piece_end, 3)))
        text = tokenizer.decode([token for token, _ in tokens]).strip()  # the model's own spacing
        return Segment(round(offset + start, 3), round(offset + end, 3), text, words)

    def _convert(self, segment: Segment, script: str) -> Segment:
        config = OPENCC_CONFIG[ZhScript(script)]
        if config is None:
            return segment
        if config not in self._converters:
            from opencc import OpenCC

            self._converters[config] = OpenCC(config)
        convert = self._converters[config].convert
        for word in segment.words:
            word.word = convert(word.word)
        segment.text = convert(segment.text)
        return segment


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
