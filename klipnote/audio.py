"""Decoding any audio or video file to what every engine wants: 16 kHz mono float32 samples.

ffmpeg does the work (all containers and codecs it knows, video files included). numpy is
imported here, so only workers import this module.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from klipnote.errors import KlipnoteError

SAMPLE_RATE = 16_000


class DecodeError(KlipnoteError):
    """ffmpeg could not turn the input into audio samples."""


def decode(path: Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-threads", "0", "-i", f"file:{path}", "-vn", "-f", "f32le",
           "-ac", "1", "-ar", str(sample_rate), "-"]
    try:
        proc = subprocess.run(cmd, capture_output=True, check=False)
    except FileNotFoundError:
        raise DecodeError("ffmpeg not found on PATH: install ffmpeg (e.g. apt-get install ffmpeg)") from None
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.decode("utf-8", "replace").splitlines() if line.strip()]
        raise DecodeError(f"ffmpeg could not decode {path.name}: {lines[-1] if lines else proc.returncode}")
    samples = np.frombuffer(proc.stdout, dtype=np.float32).copy()  # writable: torch.from_numpy wants that
    if samples.size == 0:
        raise DecodeError(f"{path.name} decoded to no audio samples")
    return samples


def seconds(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    return samples.shape[0] / sample_rate
