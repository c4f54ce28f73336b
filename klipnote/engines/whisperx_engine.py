"""The whisperx engine: VAD cuts, one CTranslate2 encoder pass per window, timed words.

WhisperX's own pipeline encodes each VAD cut to decode it, and the language detection and word
timing around it encoded the same 30 s again, twice (three encoder passes: most of a short file's
time). Here each batch of cuts, from one file or from several, is encoded once, and that output
serves all three: the language of jobs that gave none (``detect_language``), the text (beam search
as whisperx decodes: no timestamps, one segment per cut) and, where no wav2vec2 alignment model is
available, the words' times from Whisper's alignment heads (``align``, batched).

Each window is decoded from its own job's prompt (CTranslate2's ``generate`` takes one per batch
item), so jobs with different languages, tasks (transcribe, translate) and prompts share batches and
their encoder pass. ``generate`` needs ``<|startoftranscript|>`` at the same position in every item,
so it runs once per prompt length: jobs without a prompt, whatever their language and task, decode
together, and a prompted job's windows decode beside them from the same encoder output.

whisperx keeps what it is for: its pyannote VAD cuts (the default ``vad_method``; ``silero`` trades
them for a faster start, :mod:`klipnote.engines.vad`), wav2vec2 alignment (``whisperx.align``) when
an alignment model for the language can be loaded, and diarization. Those libraries are imported
when a job first needs them, so a cron-started worker does not pay for them up front.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from klipnote import cjk, modelstore, offline_models
from klipnote.audio import SAMPLE_RATE
from klipnote.config import Settings
from klipnote.decoding import Speakers
from klipnote.engines import prompts, vad
from klipnote.engines.batching import Job, Window
from klipnote.envcheck import version_of
from klipnote.errors import KlipnoteError, summary
from klipnote.job import Lane, Stage, Task
from klipnote.routing import is_mandarin, normalise_language
from klipnote.transcript import Segment, Transcript, Word, WordTiming
from klipnote.windows import MAX_WINDOW, Span

log = logging.getLogger("klipnote.whisperx")

#: Samples in Whisper's 30 s input, and per mel frame.
WINDOW_SAMPLES = int(MAX_WINDOW) * SAMPLE_RATE
HOP_LENGTH = 160
#: Decoding as whisperx's pipeline does by default (``whisperx.asr.load_model``): beam search, no timestamps.
BEAM_SIZE = 5
#: Punctuation that belongs to the next / the previous word (faster-whisper's defaults).
PREPEND_PUNCTUATION = "\"'“¿([{-"
APPEND_PUNCTUATION = "\"'.。,，!！?？:：”)]}、"


@dataclass
class Decoded:
    """One window's text and, when Whisper's heads timed them, its words (seconds from the window's start)."""

    text: str
    words: list[dict[str, Any]] | None = None


class WhisperXEngine:
    name = "whisperx"
    lanes = (Lane.WHISPERX, Lane.AUTO)

    def __init__(self, settings: Settings, *, device: str, batch_size: int) -> None:
        self.model_name = settings.whisper_model
        self.revision = settings.whisper_model_revision
        self.settings = settings
        self.device = device
        self.compute_type = settings.compute_type.on(device).value
        self.batch_size = batch_size
        self.hf_token = settings.hf_token
        self.vad_method = settings.vad_method
        self.align_model = settings.align_model
        self.diarization_model = settings.diarization_model
        self.model_path: str | None = None
        self._whisper: Any = None  # faster_whisper.WhisperModel
        self._vad: Any = None
        self._tokenizers: dict[tuple[str, Task], Any] = {}  # (language, task) -> faster-whisper Tokenizer
        self._aligners: dict[str, Any] = {}  # language -> (model, metadata), or the reason it failed
        self._diarizer: Any = None

    # ------------------------------------------------------------------ loading

    def load(self) -> None:
        os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")  # no telemetry from pyannote.audio 4
        _quiet_whisperx_logging()
        from faster_whisper import WhisperModel

        self.model_path = offline_models.resolve_whisper(self.model_name)
        try:
            pinned = modelstore.pinned_folder(self.model_name, self.settings)  # a hub name at a pinned revision
            if pinned is not None:
                self.model_path = str(pinned)
            self._whisper = WhisperModel(self.model_path, device=self.device, compute_type=self.compute_type,
                                         cpu_threads=os.cpu_count() or 4)
        except Exception as exc:
            at = f"@{self.revision}" if self.revision else ""
            raise KlipnoteError(
                f"cannot load Whisper model {self.model_name!r}{at} ({type(exc).__name__}: {exc}); give a local "
                "CTranslate2 folder or a name the model hub has, or WHISPER_MODEL=base-offline without a hub"
            ) from exc
        self._vad = vad.load(self.vad_method, self.device)

    def describe(self) -> dict[str, Any]:
        return {
            "engine": self.name,
            "model": self.model_name,
            "model_path": self.model_path,
            "revision": self.revision,
            "device": self.device,
            "compute_type": self.compute_type,
            "vad_method": self.vad_method.value,
            "versions": {p: version_of(p) for p in ("whisperx", "faster-whisper", "ctranslate2", "torch")},
        }

    def is_out_of_memory(self, exc: BaseException) -> bool:
        return "out of memory" in str(exc).lower()

    @property
    def multilingual(self) -> bool:
        return bool(self._whisper.model.is_multilingual)

    # ------------------------------------------------------------------ the three steps of batching.run

    def plan(self, job: Job) -> list[Span]:
        """The job's language if it gave one (English for an English-only model), its prompt, and its
        VAD cuts."""
        decoding = job.request.options.decoding
        if decoding.task is Task.TRANSLATE and not self.multilingual:
            raise KlipnoteError(f"Whisper model {self.model_name} is English-only and cannot translate: set "
                                "whisper_model to a multilingual model, or submit with --task transcribe")
        hf = self._whisper.hf_tokenizer
        prompt = prompts.build(decoding, lambda text: hf.encode(text, add_special_tokens=False).ids,
                               hf.token_to_id("<|startofprev|>"), self._whisper.max_length)
        if prompt.note and job.request.note is not None:
            job.request.note(prompt.note)
        job.state["prompt"] = list(prompt.tokens)
        hint = job.request.options.language
        if hint:
            job.language = whisper_language(hint)
        elif not self.multilingual:
            job.decide_language("en", None)
        return self.speech(job.request.audio)

    def speech(self, audio: np.ndarray) -> list[Span]:
        """The windows to decode: speech cut by the ``vad_method`` (:mod:`klipnote.engines.vad`), 30 s at most."""
        return self._vad(audio)

    def decode_batch(self, batch: list[Window]) -> list[Decoded]:
        encoded = self._whisper.encode(_features(batch, self._n_mels))
        self._settle_languages(batch, encoded)
        texts = self._generate(batch, encoded)
        untimed = [i for i, window in enumerate(batch)
                   if window.job.alive and texts[i].strip() and not isinstance(self._aligner(window.job), tuple)]
        words = self._align(batch, encoded, texts, untimed)
        return [Decoded(text, words.get(i)) for i, text in enumerate(texts)]

    def assemble(self, job: Job) -> Transcript:
        language = job.language
        spoken = [(job.windows[i], result) for i, result in sorted(job.decoded.items()) if result.text.strip()]
        if not spoken:
            return Transcript([], language, job.probability, WordTiming.NONE)
        job.report(Stage.ALIGNING, 0.0)
        aligner = self._aligner(job)
        segments: list[Segment] | None = None
        if isinstance(aligner, tuple):
            segments, aligner = self._wav2vec2(job, spoken, aligner)
        if segments is None:
            log.info("no wav2vec2 alignment for %s (%s): words timed by Whisper's alignment heads", language, aligner)
            if any(result.words is None for _, result in spoken):  # wav2vec2 was meant to time them: not done yet
                spoken = self._retime(job, spoken)
            segments = [_segment(span, result) for span, result in spoken]
        job.report(Stage.ALIGNING, 100.0)
        timing, note = ((WordTiming.ALIGNMENT, None) if isinstance(aligner, tuple)
                        else (WordTiming.CROSS_ATTENTION, f"no wav2vec2 alignment: {aligner}"))
        transcript = Transcript(segments, language, job.probability, timing, note)
        if job.request.options.diarize:
            job.report(Stage.ENHANCING, 0.0)
            self._diarize(job.request.audio, transcript, job.request.options.decoding.speakers)
        return transcript

    # ------------------------------------------------------------------ one encoder output, three uses

    @property
    def _n_mels(self) -> int:
        return int(self._whisper.feat_kwargs.get("feature_size") or 80)

    def _settle_languages(self, batch: list[Window], encoded: Any) -> None:
        """Detect the language of each job that has none, averaged over its windows in this batch."""
        undecided = [i for i, window in enumerate(batch) if window.job.alive and window.job.language is None]
        if not undecided:
            return
        heard = self._whisper.model.detect_language(encoded)
        totals: dict[int, dict[str, float]] = {}
        for i in undecided:
            votes = totals.setdefault(id(batch[i].job), {})
            for token, probability in heard[i]:
                votes[token[2:-2]] = votes.get(token[2:-2], 0.0) + probability
        for i in undecided:
            job = batch[i].job
            if job.language is None:
                votes = totals[id(job)]
                language = max(votes, key=votes.__getitem__)
                probability = round(votes[language] / sum(votes.values()), 4)
                log.info("detected language %s (p=%.3f) over %d window(s)", language, probability,
                         sum(1 for w in batch if w.job is job))
                job.decide_language(language, probability)

    def _generate(self, batch: list[Window], encoded: Any) -> list[str]:
        """Beam search from each window's own prompt (its job's prompt, language and task), one ``generate``
        call per prompt length (where ``<|startoftranscript|>`` sits) over those rows of the encoder output."""
        whisper = self._whisper
        starts = [[*window.job.state["prompt"], *whisper.get_prompt(self._tokenizer_of(window.job), [],
                                                                      without_timestamps=True)]
                  for window in batch]
        by_length: dict[int, list[int]] = {}
        for i, window in enumerate(batch):
            by_length.setdefault(len(window.job.state["prompt"]), []).append(i)
        eot = whisper.hf_tokenizer.token_to_id("<|endoftext|>")
        tokens: dict[int, list[int]] = {}
        for rows in by_length.values():
            with _rows(encoded, rows) as subset:
                results = whisper.model.generate(subset, [starts[i] for i in rows], beam_size=BEAM_SIZE,
                                                 max_length=whisper.max_length, suppress_blank=True,
                                                 suppress_tokens=[-1])
            tokens.update((i, [t for t in r.sequences_ids[0] if t < eot]) for i, r in zip(rows, results, strict=True))
        return whisper.hf_tokenizer.decode_batch([tokens[i] for i in range(len(batch))])

    def _align(self, batch: list[Window], encoded: Any, texts: list[str], rows: list[int]) -> dict[int, list[dict]]:
        """Word times from the alignment heads for windows ``rows``, one ``align`` call per language and task."""
        from faster_whisper.transcribe import merge_punctuations

        by_tokenizer: dict[int, list[int]] = {}
        for i in rows:
            by_tokenizer.setdefault(id(self._tokenizer_of(batch[i].job)), []).append(i)
        words: dict[int, list[dict]] = {}
        for group in by_tokenizer.values():
            tokenizer = self._tokenizer_of(batch[group[0]].job)
            tokens = [tokenizer.encode(" " + texts[i].strip()) for i in group]
            frames = [min(_samples(batch[i]) // HOP_LENGTH, WINDOW_SAMPLES // HOP_LENGTH) for i in group]
            with _rows(encoded, group) as subset:
                timed = self._whisper.find_alignment(tokenizer, tokens, subset, frames)
            for i, found in zip(group, timed, strict=True):
                merge_punctuations(found, PREPEND_PUNCTUATION, APPEND_PUNCTUATION)  # "Americans," is one word
                words[i] = found
        return words

    def _retime(self, job: Job, spoken: list[tuple[Span, Decoded]]) -> list[tuple[Span, Decoded]]:
        """Time words by the alignment heads after wav2vec2 failed: encode the job's windows once more."""
        windows = [Window(job, i) for i, result in sorted(job.decoded.items()) if result.text.strip()]
        texts = [result.text for _, result in spoken]
        retimed: list[tuple[Span, Decoded]] = []
        for first in range(0, len(windows), self.batch_size):
            part = windows[first:first + self.batch_size]
            encoded = self._whisper.encode(_features(part, self._n_mels))
            words = self._align(part, encoded, texts[first:first + len(part)], list(range(len(part))))
            retimed.extend((w.span, Decoded(texts[first + i], words[i])) for i, w in enumerate(part))
        return retimed

    def _tokenizer(self, language: str, task: Task = Task.TRANSCRIBE) -> Any:
        """The tokenizer of one language and task, made once per pair."""
        if (language, task) not in self._tokenizers:
            from faster_whisper.tokenizer import Tokenizer

            self._tokenizers[language, task] = Tokenizer(self._whisper.hf_tokenizer, self.multilingual,
                                                         task=task.value,
                                                         language=language if self.multilingual else None)
        return self._tokenizers[language, task]

    def _tokenizer_of(self, job: Job) -> Any:
        """The tokenizer of the job's language (English until heard) and task."""
        return self._tokenizer(job.language or "en", job.request.options.decoding.task)

    # ------------------------------------------------------------------ wav2vec2 alignment

    def _aligner(self, job: Job) -> tuple[Any, dict] | str:
        """A loaded alignment model for the job's language, or why there is none (cached either way)."""
        if self.align_model == "off":
            return "alignment is off (align_model)"
        if job.request.options.decoding.task is Task.TRANSLATE:
            return "the text is a translation, not what was said"
        language = job.language or "en"
        if language not in self._aligners:
            import whisperx

            name = None if self.align_model == "auto" else self.align_model
            try:
                self._aligners[language] = whisperx.load_align_model(language, self.device, model_name=name)
            except Exception as exc:  # no default model, or not reachable offline
                self._aligners[language] = summary(exc)
        return self._aligners[language]

    def _wav2vec2(self, job: Job, spoken: list[tuple[Span, Decoded]],
                  aligner: tuple[Any, dict]) -> tuple[list[Segment] | None, tuple[Any, dict] | str]:
        """Segments timed by ``whisperx.align``, or None and why it could not run."""
        import whisperx

        raw = [{"text": result.text.strip(), "start": round(span.start, 3), "end": round(span.end, 3)}
               for span, result in spoken]
        try:
            aligned = whisperx.align(raw, aligner[0], aligner[1], job.request.audio, self.device,
                                     return_char_alignments=False)
        except Exception as exc:  # e.g. its sentence splitter's data cannot be downloaded
            if self.is_out_of_memory(exc):
                raise
            return None, f"whisperx.align failed: {summary(exc)}"
        return [_segment_from_whisperx(s) for s in aligned["segments"]], aligner

    # ------------------------------------------------------------------ speakers

    def _diarize(self, audio: np.ndarray, transcript: Transcript, speakers: Speakers) -> None:
        """Label the transcript's words by speaker; ``speakers``: the job's hints on how many there are."""
        import whisperx
        from whisperx.diarize import DiarizationPipeline

        if self._diarizer is None:
            looks_like_path = self.diarization_model.startswith(("/", ".", "~"))
            if looks_like_path and not os.path.isdir(os.path.expanduser(self.diarization_model)):
                raise KlipnoteError(f"diarization_model {self.diarization_model} is not a folder: point it at a "
                                    "local pyannote pipeline folder (with config.yaml) or a hub id")
            try:
                self._diarizer = DiarizationPipeline(model_name=os.path.expanduser(self.diarization_model),
                                                     token=self.hf_token,
                                                     device=self.device)
            except Exception as exc:
                raise KlipnoteError(
                    f"no diarization model is reachable: {self.diarization_model} ({type(exc).__name__}); set HF_TOKEN "
                    "for a gated hub model, or diarization_model to a local pipeline folder, or submit without "
                    "--diarize") from exc
        turns = self._diarizer(audio, **speakers.pipeline_arguments())
        assigned = whisperx.assign_word_speakers(turns, {"segments": [_segment_to_whisperx(s)
                                                                      for s in transcript.segments]})
        transcript.segments = [piece for item in assigned["segments"]
                               for piece in split_by_speaker(_segment_from_whisperx(item))]


def _quiet_whisperx_logging() -> None:
    """whisperx logs to stdout, where the worker's ready line is its contract: send it to stderr."""
    wx_log = logging.getLogger("whisperx")
    wx_log.handlers[:] = [logging.NullHandler()]  # non-empty, so whisperx does not re-add its own
    wx_log.propagate = True


def whisper_language(hint: str) -> str:
    """A Whisper language code from a user's hint: ``zh-TW`` -> ``zh``, ``mandarin`` -> ``zh``."""
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    value = normalise_language(hint) or ""
    code = "zh" if is_mandarin(value) else value.split("-")[0]
    if code not in _LANGUAGE_CODES:
        raise KlipnoteError(f"language {hint!r} is not one Whisper knows; use a code such as en, de, zh or ja")
    return code


def _samples(window: Window) -> int:
    span = window.span
    return min(int(span.end * SAMPLE_RATE), window.job.request.audio.shape[0]) - int(span.start * SAMPLE_RATE)


def _features(batch: list[Window], n_mels: int) -> np.ndarray:
    """Log-mel features of each window padded to 30 s, as whisperx computes them (per window: its
    normalisation depends on the window's loudest frame)."""
    from whisperx.audio import log_mel_spectrogram

    pieces = []
    for window in batch:
        span = window.span
        piece = window.job.request.audio[int(span.start * SAMPLE_RATE):int(span.end * SAMPLE_RATE)][:WINDOW_SAMPLES]
        pieces.append(log_mel_spectrogram(piece, n_mels=n_mels, padding=WINDOW_SAMPLES - piece.shape[0]).numpy())
    return np.stack(pieces)


@contextmanager
def _rows(encoded: Any, rows: list[int]) -> Iterator[Any]:
    """The encoder output's ``rows`` as a StorageView (on the CPU or the GPU), its memory kept alive while used."""
    if rows == list(range(encoded.shape[0])):
        yield encoded
        return
    import ctranslate2

    kept: Any  # a CUDA tensor or a numpy array: from_array takes either
    if encoded.device == "cuda":
        import torch

        kept = torch.as_tensor(encoded, device="cuda")[rows].contiguous()
    else:
        kept = np.ascontiguousarray(np.asarray(encoded)[rows])
    yield ctranslate2.StorageView.from_array(kept)  # kept referenced until the caller's block ends


def _segment(span: Span, result: Decoded) -> Segment:
    """A window's segment in file time, with its words clamped inside the window."""
    start, end = round(span.start, 3), round(span.end, 3)
    words = [Word(w["word"].strip(), round(min(end, start + w["start"]), 3), round(min(end, start + w["end"]), 3),
                  round(float(w["probability"]), 3))
             for w in result.words or [] if w["word"].strip()]
    return Segment(start, end, result.text.strip(), words)


def _segment_from_whisperx(item: dict) -> Segment:
    words = [Word(w["word"], round(float(w["start"]), 3), round(float(w["end"]), 3),
                  round(float(w["score"]), 3) if w.get("score") is not None else None, w.get("speaker"))
             for w in item.get("words", []) if "start" in w and "end" in w]
    return Segment(round(float(item["start"]), 3), round(float(item["end"]), 3), item["text"].strip(), words,
                   item.get("speaker"))


def split_by_speaker(segment: Segment) -> list[Segment]:
    """One segment per run of words by the same speaker: a 30 s cut often holds a dialogue."""
    runs: list[list[Word]] = []
    for word in segment.words:
        word.speaker = word.speaker or (runs[-1][-1].speaker if runs else segment.speaker)
        if runs and runs[-1][-1].speaker == word.speaker:
            runs[-1].append(word)
        else:
            runs.append([word])
    if len(runs) <= 1:
        return [segment]
    return [Segment(run[0].start, run[-1].end, cjk.join(w.word for w in run), run, run[0].speaker) for run in runs]


def _segment_to_whisperx(segment: Segment) -> dict:
    return {"start": segment.start, "end": segment.end, "text": segment.text,
            "words": [{"word": w.word, "start": w.start, "end": w.end, "score": w.score} for w in segment.words]}
