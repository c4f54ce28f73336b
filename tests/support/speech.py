"""Longer test speech assembled from the corpus, shared by tests and benchmarks."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from klipnote.audio import SAMPLE_RATE, decode

REPEATS, PAUSE = 6, 1.5
#: What zh.wav says, with digits and with the numbers written out: Whisper writes either.
ZH = "开放时间早上9点至下午5点"
ZH_ALSO = "开放时间早上九点至下午五点"


def zh_cer(text: str, copies: int = 1) -> float:
    """Character error rate of ``text``, in Simplified characters, against zh.wav's sentence said ``copies`` times
    (the nearer spelling)."""
    from opencc import OpenCC

    from .textmetrics import cer

    simplified = OpenCC("t2s").convert(text)
    return min(cer(sentence * copies, simplified) for sentence in (ZH, ZH_ALSO))


def long_mandarin(corpus: Path, target: Path, repeats: int = REPEATS, pause: float = PAUSE) -> Path:
    """zh.wav ``repeats`` times with ``pause`` seconds of silence after each, as a 16 kHz WAV."""
    speech = decode(corpus / "zh.wav")
    silence = np.zeros(int(pause * SAMPLE_RATE), dtype=np.float32)
    samples = np.concatenate([part for _ in range(repeats) for part in (speech, silence)])
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "f32le", "-ar", str(SAMPLE_RATE), "-ac", "1",
                    "-i", "-", str(target)], input=samples.tobytes(), check=True)
    return target
