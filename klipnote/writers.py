"""Output files from a transcript: SRT, WebVTT, plain text, TSV, the full JSON result and the review page.

Each writer is a pure function returning text; the worker writes the files atomically.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from klipnote.job import OutputFormat, output_name
from klipnote.subtitles import Cue, build_cues
from klipnote.transcript import Transcript

if TYPE_CHECKING:
    from klipnote.review import Audio


def timestamp(seconds: float, decimal: str) -> str:
    """``HH:MM:SS,mmm`` (SRT, ``decimal=","``) or ``HH:MM:SS.mmm`` (VTT, ``"."``), rounded to the ms."""
    millis = max(0, math.floor(seconds * 1000 + 0.5))  # half up: round() would send ties to even
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def flat(text: str) -> str:
    """One line, spacing otherwise as the model wrote it: a blank line would end an SRT/VTT cue early."""
    return " ".join(text.split())


def srt(cues: list[Cue]) -> str:
    blocks = [
        f"{n}\n{timestamp(c.start, ',')} --> {timestamp(c.end, ',')}\n{c.display_text}\n"
        for n, c in enumerate(cues, start=1)
    ]
    return "\n".join(blocks)


def vtt(cues: list[Cue]) -> str:
    blocks = [f"{timestamp(c.start, '.')} --> {timestamp(c.end, '.')}\n{c.display_text.replace('-->', '->')}\n"
              for c in cues]
    return "WEBVTT\n\n" + "\n".join(blocks)


def txt(transcript: Transcript) -> str:
    lines = [flat(s.text) for s in transcript.segments if s.text.strip()]
    return "".join(line + "\n" for line in lines)


def tsv(transcript: Transcript) -> str:
    """openai-whisper's layout: integer milliseconds, tabs and newlines in text replaced by spaces."""
    rows = ["start\tend\ttext"]
    for s in transcript.segments:
        text = flat(s.text)
        if text:
            rows.append(f"{math.floor(s.start * 1000 + 0.5)}\t{math.floor(s.end * 1000 + 0.5)}\t{text}")
    return "\n".join(rows) + "\n"


def result(transcript: Transcript, cues: list[Cue], metadata: dict[str, Any]) -> dict[str, Any]:
    """The result as the JSON output holds it: the transcript, its cues and the job's metadata."""
    data = transcript.to_dict()
    data["cues"] = [{"start": c.start, "end": c.end, "text": c.text, **({"speaker": c.speaker} if c.speaker else {})}
                    for c in cues]
    data["metadata"] = metadata
    return data


def result_json(transcript: Transcript, cues: list[Cue], metadata: dict[str, Any]) -> str:
    return json.dumps(result(transcript, cues, metadata), ensure_ascii=False, indent=2) + "\n"


def html(transcript: Transcript, cues: list[Cue], metadata: dict[str, Any], audio: Audio | None = None) -> str:
    """The review page; imported here so that commands which never write one do not load it."""
    from klipnote import review

    return review.page(result(transcript, cues, metadata), audio or review.Audio())


_RENDER: dict[OutputFormat, Callable[[Transcript, list[Cue], dict[str, Any]], str]] = {
    OutputFormat.SRT: lambda t, cues, m: srt(cues),
    OutputFormat.VTT: lambda t, cues, m: vtt(cues),
    OutputFormat.TXT: lambda t, cues, m: txt(t),
    OutputFormat.TSV: lambda t, cues, m: tsv(t),
    OutputFormat.JSON: result_json,
}


def render(transcript: Transcript, formats: tuple[OutputFormat, ...], metadata: dict[str, Any],
           cues: list[Cue] | None = None, *, audio: Audio | None = None) -> dict[str, str]:
    """Every requested output, keyed by its file name in the job folder; cues by the default style
    rules unless given (the enhancement pipeline builds them); ``audio``: where the review page's
    player finds the recording."""
    cues = build_cues(transcript) if cues is None else cues
    renderers = {**_RENDER, OutputFormat.HTML: lambda t, c, m: html(t, c, m, audio)}
    return {output_name(fmt): renderers[fmt](transcript, cues, metadata) for fmt in formats}
