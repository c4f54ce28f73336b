"""Where the speech is, for the whisperx engine: pyannote (whisperx's own cuts, the default) or Silero.

Both return the windows to decode, in order, none longer than Whisper's 30 s.

- ``pyannote``: whisperx's segmentation model and its merge of speech regions into cuts, so that
  the text equals whisperx's own on the corpus. Its price on a CPU: importing pyannote.audio
  (lightning, torchmetrics, and through them transformers and scikit-learn; 4-5 s on a quiet
  2-CPU machine, over 10 s on a busy one) and its inference (3.7 s for the 180 s of the cron8
  benchmark set).
- ``silero``: the Silero ONNX model that faster-whisper ships in its wheel (offline, no torch),
  with the settings of faster-whisper's batched pipeline; its regions are packed into windows as
  the belle2 engine packs its own (:func:`klipnote.windows.pack`). The cuts differ from whisperx's,
  so a word at a cut's edge may come out differently; docs/benchmarks.md compares speed and text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from klipnote.audio import SAMPLE_RATE
from klipnote.config import VadMethod
from klipnote.windows import MAX_WINDOW, Span, pack

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np

#: pyannote VAD thresholds, whisperx's defaults.
PYANNOTE_ONSET = 0.500
PYANNOTE_OFFSET = 0.363
#: Silero: the shortest pause that ends a speech region, as faster-whisper's batched pipeline sets it.
SILERO_MIN_SILENCE_MS = 160


class PyannoteCuts:
    """whisperx's pyannote VAD: speech regions merged into cuts of at most 30 s as whisperx merges them."""

    def __init__(self, device: str) -> None:
        import torch
        from whisperx.vads import Pyannote

        self._vad = Pyannote(torch.device(device), token=None, vad_onset=PYANNOTE_ONSET, vad_offset=PYANNOTE_OFFSET)

    def __call__(self, audio: np.ndarray) -> list[Span]:
        from whisperx.vads import Pyannote

        regions = self._vad({"waveform": Pyannote.preprocess_audio(audio), "sample_rate": SAMPLE_RATE})
        cuts = Pyannote.merge_chunks(regions, MAX_WINDOW, onset=PYANNOTE_ONSET, offset=PYANNOTE_OFFSET)
        return [Span(float(cut["start"]), float(cut["end"])) for cut in cuts]


class SileroCuts:
    """faster-whisper's bundled Silero VAD, its regions packed into windows of at most 30 s."""

    def __init__(self) -> None:
        from faster_whisper.vad import VadOptions, get_vad_model

        get_vad_model()  # loaded now, with the engine, not inside the first job (faster-whisper caches it)
        self._options = VadOptions(max_speech_duration_s=MAX_WINDOW, min_silence_duration_ms=SILERO_MIN_SILENCE_MS)

    def __call__(self, audio: np.ndarray) -> list[Span]:
        from faster_whisper.vad import get_speech_timestamps

        regions = get_speech_timestamps(audio, self._options, sampling_rate=SAMPLE_RATE)
        return pack([Span(r["start"] / SAMPLE_RATE, r["end"] / SAMPLE_RATE) for r in regions])


def load(method: VadMethod, device: str) -> Callable[[np.ndarray], list[Span]]:
    """The cutter for ``method``: a callable from 16 kHz mono samples to windows."""
    return PyannoteCuts(device) if method is VadMethod.PYANNOTE else SileroCuts()
