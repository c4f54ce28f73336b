"""The whisperx engine: batched faster-whisper over pyannote VAD cuts, then timed words.

Words are timed by wav2vec2 alignment (``whisperx.align``) when an alignment model for the
language can be loaded (locally or from a hub); otherwise by Whisper's own cross-attention
alignment heads, run on each cut with the text whisperx decoded. Every result has timed words,
and its JSON says which method timed them.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from klipnote import cjk, models, modelstore
from klipnote.config import Settings
from klipnote.engines import JobOptions, Progress
from klipnote.envcheck import version_of
from klipnote.errors import KlipnoteError, summary
from klipnote.job import Lane, Stage
from klipnote.routing import is_mandarin, normalise_language
from klipnote.transcript import Segment, Transcript, Word, WordTiming

log = logging.getLogger("klipnote.whisperx")

SAMPLE_RATE = 16_000
WINDOW_SECONDS = 30
#: Windows used to detect the language, chosen among the loudest so silence does not vote.
DETECTION_WINDOWS = 3
HOP_LENGTH = 160  # samples per mel frame
#: Punctuation that belongs to the next / the previous word (faster-whisper's defaults).
PREPEND_PUNCTUATION = "\"'“¿([{-"
APPEND_PUNCTUATION = "\"'.。,，!！?？:：”)]}、"


class WhisperXEngine:
    name = "whisperx"
    lanes = (Lane.WHISPERX, Lane.AUTO)

    def __init__(self, settings: Settings, *, device: str, batch_size: int) -> None:
        self.model_name = settings.whisper_model
        self.revision = settings.whisper_model_revision
        self.settings = settings
        self.device = device
        self.compute_type = settings.compute_type if settings.compute_type != "auto" else (
            "float16" if device == "cuda" else "int8")
        self.batch_size = batch_size
        self.hf_token = settings.hf_token
        self.align_model = settings.align_model
        self.diarization_model = settings.diarization_model
        self.model_path: str | None = None
        self._pipeline: Any = None
        self._aligners: dict[str, Any] = {}  # language -> (model, metadata), or the reason it failed
        self._diarizer: Any = None

    # ------------------------------------------------------------------ loading

    def load(self) -> None:
        os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")  # no telemetry from pyannote.audio 4
        _quiet_whisperx_logging()
        import whisperx

        self.model_path = models.resolve_whisper(self.model_name)
        try:
            pinned = modelstore.pinned_folder(self.model_name, self.settings)  # load_model takes no revision
            if pinned is not None:
                self.model_path = str(pinned)
            self._pipeline = whisperx.load_model(self.model_path, self.device, compute_type=self.compute_type,
                                                 vad_method="pyannote", threads=os.cpu_count() or 4)
        except Exception as exc:
            at = f"@{self.revision}" if self.revision else ""
            raise KlipnoteError(
                f"cannot load Whisper model {self.model_name!r}{at} ({type(exc).__name__}: {exc}); give a local "
                "CTranslate2 folder or a name the model hub has, or WHISPER_MODEL=base-offline without a hub"
            ) from exc

    def describe(self) -> dict[str, Any]:
        return {
            "engine": self.name,
            "model": self.model_name,
            "model_path": self.model_path,
            "revision": self.revision,
            "device": self.device,
            "compute_type": self.compute_type,
            "versions": {p: version_of(p) for p in ("whisperx", "faster-whisper", "ctranslate2", "torch")},
        }

    def is_out_of_memory(self, exc: BaseException) -> bool:
        return "out of memory" in str(exc).lower()

    @property
    def _whisper(self) -> Any:
        """The faster-whisper model inside the whisperx pipeline."""
        return self._pipeline.model

    # ------------------------------------------------------------------ transcribing

    def transcribe(self, audio: np.ndarray, options: JobOptions, progress: Progress) -> Transcript:
        progress(Stage.ROUTING, 0.0)
        language, probability = self._language(audio, options.language)
        progress(Stage.TRANSCRIBING, 0.0)
        result = self._pipeline.transcribe(
            audio, batch_size=self.batch_size, language=language,
            progress_callback=lambda percent: progress(Stage.TRANSCRIBING, percent),
        )
        raw = [s for s in result["segments"] if s["text"].strip()]
        progress(Stage.ALIGNING, 0.0)
        segments, timing, note = self._time_words(audio, raw, language, progress)
        transcript = Transcript(segments, language, probability, timing, note)
        if options.diarize:
            progress(Stage.ENHANCING, 0.0)
            self._diarize(audio, transcript)
        return transcript

    def _language(self, audio: np.ndarray, hint: str | None) -> tuple[str, float | None]:
        """The hint as a Whisper code, or the language detected over several loud windows."""
        if hint:
            return whisper_language(hint), None
        if not self._whisper.model.is_multilingual:
            return "en", None
        return self.detect_language(audio)

    def detect_language(self, audio: np.ndarray) -> tuple[str, float]:
        """Average Whisper's language probabilities over the loudest 30 s windows of the file."""
        from whisperx.audio import N_SAMPLES, log_mel_spectrogram

        totals: dict[str, float] = {}
        windows = loudest_windows(audio, DETECTION_WINDOWS)
        n_mels = self._whisper.feat_kwargs.get("feature_size") or 80
        for start in windows:
            piece = audio[start:start + N_SAMPLES]
            features = log_mel_spectrogram(piece, n_mels=n_mels, padding=N_SAMPLES - piece.shape[0])
            encoded = self._whisper.encode(features.cpu().numpy() if hasattr(features, "cpu") else features)
            for token, prob in self._whisper.model.detect_language(encoded)[0]:
                totals[token[2:-2]] = totals.get(token[2:-2], 0.0) + prob / len(windows)
        language = max(totals, key=totals.__getitem__)
        log.info("detected language %s (p=%.3f) over %d window(s)", language, totals[language], len(windows))
        return language, round(totals[language], 4)

    # ------------------------------------------------------------------ word times

    def _time_words(self, audio: np.ndarray, raw: list[dict], language: str,
                    progress: Progress) -> tuple[list[Segment], WordTiming, str | None]:
        """Timed words by wav2vec2 alignment if it can run, else by Whisper's heads, and why not."""
        if not raw:
            return [], WordTiming.NONE, None
        aligner = self._aligner(language)
        if isinstance(aligner, tuple):
            import whisperx

            try:
                aligned = whisperx.align(raw, aligner[0], aligner[1], audio, self.device,
                                         return_char_alignments=False)
                return [_segment_from_whisperx(s) for s in aligned["segments"]], WordTiming.ALIGNMENT, None
            except Exception as exc:  # e.g. its sentence splitter's data cannot be downloaded
                if self.is_out_of_memory(exc):
                    raise
                aligner = f"whisperx.align failed: {summary(exc)}"
        log.info("no wav2vec2 alignment for %s (%s): timing words with Whisper's alignment heads", language, aligner)
        words = self._cross_attention_words(audio, raw, language, progress)
        return words, WordTiming.CROSS_ATTENTION, f"no wav2vec2 alignment: {aligner}"

    def _aligner(self, language: str) -> tuple[Any, dict] | str:
        """A loaded alignment model for ``language``, or why there is none (cached either way)."""
        if self.align_model == "off":
            return "alignment is off (align_model)"
        if language not in self._aligners:
            import whisperx

            name = None if self.align_model == "auto" else self.align_model
            try:
                self._aligners[language] = whisperx.load_align_model(language, self.device, model_name=name)
            except Exception as exc:  # no default model, or not reachable offline
                self._aligners[language] = summary(exc)
        return self._aligners[language]

    def _cross_attention_words(self, audio: np.ndarray, raw: list[dict], language: str,
                               progress: Progress) -> list[Segment]:
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import merge_punctuations
        from whisperx.audio import N_SAMPLES, log_mel_spectrogram

        whisper = self._whisper
        tokenizer = Tokenizer(whisper.hf_tokenizer, whisper.model.is_multilingual, task="transcribe",
                              language=language if whisper.model.is_multilingual else None)
        n_mels = whisper.feat_kwargs.get("feature_size") or 80
        segments = []
        for index, item in enumerate(raw):
            start, end, text = float(item["start"]), float(item["end"]), item["text"].strip()
            piece = audio[int(start * SAMPLE_RATE):int(end * SAMPLE_RATE)][:N_SAMPLES]
            features = log_mel_spectrogram(piece, n_mels=n_mels, padding=N_SAMPLES - piece.shape[0])
            encoded = whisper.encode(features.cpu().numpy() if hasattr(features, "cpu") else features)
            frames = min(piece.shape[0] // HOP_LENGTH, N_SAMPLES // HOP_LENGTH)
            tokens = tokenizer.encode(" " + text)
            timed = whisper.find_alignment(tokenizer, [tokens], encoded, frames)[0] if frames else []
            merge_punctuations(timed, PREPEND_PUNCTUATION, APPEND_PUNCTUATION)  # "Americans," is one word
            words = [Word(w["word"].strip(), round(min(end, start + w["start"]), 3),
                          round(min(end, start + w["end"]), 3), round(float(w["probability"]), 3))
                     for w in timed if w["word"].strip()]
            segments.append(Segment(start, end, text, words))
            progress(Stage.ALIGNING, 100.0 * (index + 1) / len(raw))
        return segments

    # ------------------------------------------------------------------ speakers

    def _diarize(self, audio: np.ndarray, transcript: Transcript) -> None:
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
        turns = self._diarizer(audio)
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


def loudest_windows(audio: np.ndarray, count: int) -> list[int]:
    """Start samples of up to ``count`` non-overlapping 30 s windows with the most energy."""
    size = WINDOW_SECONDS * SAMPLE_RATE
    starts = list(range(0, max(1, audio.shape[0] - size // 2), size)) or [0]
    energy = [float(np.mean(np.square(audio[s:s + size]))) if audio[s:s + size].size else 0.0 for s in starts]
    ranked = sorted(range(len(starts)), key=lambda i: energy[i], reverse=True)[:count]
    return sorted(starts[i] for i in ranked)


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
