"""What a file is, by ffprobe: has it an audio stream, how long is it, is there video.

Decided by content, never by extension: a text file named ``.mp3`` is rejected, a ``.dat`` that
holds AAC is accepted.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from klipnote.errors import InputRejected, KlipnoteError

FFPROBE_TIMEOUT = 60.0


class NotMedia(InputRejected):
    """ffprobe found no audio in the file: in a folder walk it is passed over, given by name it is rejected."""


@dataclass(frozen=True)
class MediaInfo:
    duration: float | None  # seconds; None when the container does not say
    has_video: bool
    format_name: str
    audio_codec: str


def ffprobe_binary() -> str:
    found = shutil.which("ffprobe")
    if found is None:
        raise KlipnoteError("ffprobe not found on PATH: install ffmpeg (e.g. apt-get install ffmpeg)")
    return found


def probe(path: Path) -> MediaInfo:
    """Probe ``path``; raise :class:`InputRejected` when it holds no decodable audio stream."""
    cmd = [
        ffprobe_binary(),
        "-v",
        "error",
        "-print_format",
        "json",
        "-show_format",
        "-show_streams",
        "-i",
        f"file:{path}",
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=FFPROBE_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise InputRejected(f"ffprobe took over {FFPROBE_TIMEOUT:.0f} s to read it; is it a media file?") from None
    if proc.returncode != 0:
        detail = _first_line(proc.stderr.decode("utf-8", "replace")) or f"exit code {proc.returncode}"
        raise NotMedia(f"not a readable audio or video file (ffprobe: {detail})")
    try:
        info = json.loads(proc.stdout.decode("utf-8", "replace"))
    except ValueError:
        raise NotMedia("not a readable audio or video file (ffprobe printed no description)") from None
    streams = info.get("streams", [])
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    video = [s for s in streams if s.get("codec_type") == "video" and not _is_cover_art(s)]
    if not audio:
        kinds = sorted({s.get("codec_type", "unknown") for s in streams}) or ["nothing"]
        raise NotMedia(f"no audio stream (ffprobe found: {', '.join(kinds)})")
    return MediaInfo(
        duration=_duration(info.get("format", {}), audio[0]),
        has_video=bool(video),
        format_name=str(info.get("format", {}).get("format_name", "")),
        audio_codec=str(audio[0].get("codec_name", "")),
    )


def _is_cover_art(stream: dict) -> bool:
    return bool(stream.get("disposition", {}).get("attached_pic"))


def _duration(fmt: dict, audio: dict) -> float | None:
    candidates: tuple[Any, ...] = (fmt.get("duration"), audio.get("duration"))  # None or junk: skipped
    for raw in candidates:
        try:
            value = float(raw)
        except (TypeError, ValueError):
            continue
        if value >= 0:
            return value
    return None


def _first_line(text: str) -> str:
    for raw in text.splitlines():
        line = raw.strip()
        if line:
            # ffprobe prefixes errors with the input name or "[demuxer @ 0x...]"; the reader needs neither.
            return re.sub(r"^(file:.*?: |\[[^]]*\] )", "", line)
    return ""
