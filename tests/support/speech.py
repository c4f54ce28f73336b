"""Longer test speech assembled from the corpus, shared by tests and benchmarks."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from klipnote.audio import SAMPLE_RATE, decode

REPEATS, PAUSE = 6, 1.5


def long_mandarin(corpus: Path, target: Path, repeats: int = REPEATS, pause: float = PAUSE) -> Path:
    """zh.wav ``repeats`` times with ``pause`` seconds of silence after each, as a 16 kHz WAV."""
    speech = decode(corpus / "zh.wav")
    silence = np.zeros(int(pause * SAMPLE_RATE), dtype=np.float32)
    samples = np.concatenate([part for _ in range(repeats) for part in (speech, silence)])
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "f32le", "-ar", str(SAMPLE_RATE), "-ac", "1",
                    "-i", "-", str(target)], input=samples.tobytes(), check=True)
    return target
