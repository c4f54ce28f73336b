"""The review page: one self-contained HTML file per job to read, play, search and correct a transcript.

klipnote has no server, so the page carries everything itself: its CSS and JavaScript inline (the
files ``review.css`` and ``review.js`` beside this module), the cues as escaped markup, and the
recording by a relative path (or embedded as a compact Opus copy on request). A strict
Content-Security-Policy allows only that inline CSS and script, by hash, and media from files, so the
page makes no network request and a transcript that says ``<script>`` stays text.

The page is built from a job's result JSON (:func:`klipnote.writers.result`), so a page can be made
again later for any finished job, with its audio referenced from wherever the page goes.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

from klipnote import cjk, defaults, humanize
from klipnote.errors import KlipnoteError
from klipnote.job import Manifest
from klipnote.subtitles import Cue
from klipnote.writers import timestamp

#: Distinct speaker colours in review.css (``spk-0`` ...); more speakers reuse them in turn.
SPEAKER_COLOURS = 8


@dataclass(frozen=True)
class Audio:
    """Where the page's player finds the recording.

    ``sources`` are relative URLs tried in order (the browser takes the first that loads), so a page
    that sits next to a copy of the recording plays it; ``embedded`` is an Ogg Opus copy carried
    inside the page, for a page that travels.
    """

    sources: tuple[str, ...] = ()
    embedded: bytes | None = None


class EmbedTooLarge(KlipnoteError):
    """The Opus copy of the recording would make the page larger than the limit."""


def media(manifest: Manifest, job_dir: Path) -> list[Path]:
    """A job's recording: its snapshot in the job folder first (it outlives the original), then the original."""
    snapshot = [job_dir / manifest.input.snapshot] if manifest.input.snapshot else []
    return [*snapshot, Path(manifest.input.path)]


def sources(page_dir: Path, media: list[Path]) -> tuple[str, ...]:
    """Relative URLs from ``page_dir`` to each media file, in the order given, without repeats."""
    urls = [quote(Path(os.path.relpath(path, page_dir)).as_posix()) for path in media]
    return tuple(dict.fromkeys(urls))


def embed(path: Path, duration: float | None, *, limit: int = defaults.REVIEW_EMBED_MAX_BYTES,
          bitrate: int = defaults.REVIEW_EMBED_BITRATE) -> Audio:
    """An :class:`Audio` carrying an Ogg Opus copy of ``path`` (mono speech at ``bitrate`` bit/s).

    The size is checked before encoding, from the duration, and again after: past ``limit`` bytes
    the page would be slow to open, so :class:`EmbedTooLarge` says so and what to do instead.
    """
    if duration is not None and duration * bitrate / 8 > limit:
        raise EmbedTooLarge(_too_large(duration * bitrate / 8, limit))
    done = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-vn", "-ac", "1", "-c:a", "libopus",
         "-b:a", str(bitrate), "-application", "voip", "-f", "ogg", "-"],
        capture_output=True, check=False)
    if done.returncode != 0:
        raise KlipnoteError(f"could not encode {path.name} to Opus: {done.stderr.decode(errors='replace').strip()}")
    if len(done.stdout) > limit:
        raise EmbedTooLarge(_too_large(len(done.stdout), limit))
    return Audio(embedded=done.stdout)


def _too_large(size: float, limit: int) -> str:
    return (f"the recording's Opus copy would be {humanize.size(size)}, over the {humanize.size(limit)} limit for "
            "embedding it in the page; keep the page next to the recording instead")


# ---------------------------------------------------------------------- the page


def page(result: dict[str, Any], audio: Audio) -> str:
    """The review page of a result JSON (segments, words, cues, metadata), as one HTML document."""
    css, script = _asset("review.css"), _asset("review.js")
    segments = result.get("segments", [])
    cues = [Cue(c["start"], c["end"], c["text"], c.get("speaker")) for c in result.get("cues", [])]
    words = sorted((w for s in segments for w in s.get("words", [])), key=lambda w: w["start"])
    meta = result.get("metadata", {})
    name = meta.get("input", {}).get("name") or "transcript"
    duration = meta.get("input", {}).get("duration") or max((s["end"] for s in segments), default=0.0)
    colours = _speaker_colours(cues, segments)
    items = "".join(_cue_item(i, cue, cue_words, colours)
                    for i, (cue, cue_words) in enumerate(zip(cues, _words_by_cue(cues, words), strict=True)))
    language = html.escape(result.get("language") or "")
    esc = html.escape
    return f"""<!DOCTYPE html>
<html lang="{language}">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{esc(_policy(css, script))}">
<meta name="referrer" content="no-referrer">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="klipnote {esc(str(meta.get("klipnote_version", "")))}">
<title>{esc(name)} · klipnote review</title>
<style>{css}</style>
</head>
<body>
<header class="top">
<h1>{esc(name)}</h1>
{_facts(result, meta, duration)}
{_player(audio)}
{_timeline(segments, words, duration, colours)}
{_TOOLS}
</header>
<main>
<ol id="cues" lang="{language}">
{items}</ol>
{'<p class="empty">No speech was found in this recording.</p>' if not cues else ""}
</main>
<script type="application/json" id="klipnote-data">{_json_for_script(_script_data(name, duration, cues))}</script>
{_embedded(audio)}<script>{script}</script>
</body>
</html>
"""


#: Search, downloads and the keys: the same on every page.
_TOOLS = f"""<div class="tools">
<input id="search" type="search" placeholder="Search the transcript (/)" aria-label="Search the transcript">
<span id="found" aria-live="polite"></span>
<span class="downloads">Download edited: <button type="button" data-download="srt">SRT</button>
<button type="button" data-download="vtt">VTT</button> <button type="button" data-download="txt">TXT</button></span>
</div>
<p class="keys"><kbd>Space</kbd> or <kbd>k</kbd> play/pause · <kbd>↑</kbd>/<kbd>p</kbd> previous cue ·
<kbd>↓</kbd>/<kbd>n</kbd> next cue · <kbd>e</kbd> edit the current cue (<kbd>Ctrl</kbd>+<kbd>Enter</kbd> keeps,
<kbd>Esc</kbd> drops) · <kbd>/</kbd> search · <span class="low">underlined</span> words: the model was unsure
(score under {defaults.REVIEW_LOW_WORD_SCORE})</p>"""


def _policy(css: str, script: str) -> str:
    """Only this page's own stylesheet and script, by hash; media from files; nothing else, no network."""
    return (f"default-src 'none'; style-src '{_hash(css)}'; script-src '{_hash(script)}'; "
            "media-src 'self' file: blob:; base-uri 'none'; form-action 'none'")


def _script_data(name: str, duration: float, cues: list[Cue]) -> dict[str, Any]:
    """What review.js needs beyond the markup: each cue's text and its SRT and VTT times, made by the
    writers' own timestamp, so that an unedited page downloads the worker's files byte for byte."""
    return {"stem": Path(name).stem, "duration": duration,
            "cues": [{"start": c.start, "end": c.end, "speaker": c.speaker, "text": c.text,
                      "srt": [timestamp(c.start, ","), timestamp(c.end, ",")],
                      "vtt": [timestamp(c.start, "."), timestamp(c.end, ".")]} for c in cues]}


def _asset(name: str) -> str:
    return resources.files("klipnote").joinpath(name).read_text(encoding="utf-8")


def _hash(text: str) -> str:
    """A CSP source for exactly this inline text: nothing else inline may run or style the page."""
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def _json_for_script(data: Any) -> str:
    """JSON that cannot end its ``<script>`` element early: ``<``, ``>`` and ``&`` as escapes."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _speaker_colours(cues: list[Cue], segments: list[dict[str, Any]]) -> dict[str, int]:
    """A colour index per speaker, in order of first appearance, so the same speaker keeps one colour."""
    names = [c.speaker for c in cues] + [s.get("speaker") for s in segments]
    ordered = dict.fromkeys(n for n in names if n)
    return {name: i % SPEAKER_COLOURS for i, name in enumerate(ordered)}


def _facts(result: dict[str, Any], meta: dict[str, Any], duration: float) -> str:
    """What a reviewer wants to know before trusting the text: language, engine, model, routing."""
    probability = result.get("language_probability")
    language = (result.get("language") or "unknown") + (f" (p = {probability:.2f})" if probability is not None else "")
    engine = " · ".join(str(meta[k]) for k in ("engine", "model", "device", "compute_type") if meta.get(k))
    rows = [("Duration", humanize.duration(duration)), ("Language", language), ("Engine", engine or "unknown"),
            ("Routing", (meta.get("routing") or {}).get("reason", "")),
            ("Word times", meta.get("word_timestamps", "")), ("Job", meta.get("job", ""))]
    items = "".join(f"<div><dt>{label}</dt><dd>{html.escape(str(value))}</dd></div>" for label, value in rows if value)
    return f'<dl class="facts">{items}</dl>'


def _player(audio: Audio) -> str:
    tags = "".join(f'<source src="{html.escape(url)}">' for url in audio.sources)
    return f'<audio id="player" controls preload="metadata">{tags}</audio>'


def _embedded(audio: Audio) -> str:
    """The Opus copy as base64 in a data block; review.js turns it into a blob: URL for the player."""
    if audio.embedded is None:
        return ""
    payload = base64.b64encode(audio.embedded).decode()
    return f'<script type="application/octet-stream" id="klipnote-audio" data-type="audio/ogg">{payload}</script>\n'


def _timeline(segments: list[dict[str, Any]], words: list[dict[str, Any]], duration: float,
              colours: dict[str, int]) -> str:
    """Where speech was found (a bar per segment, in its speaker's colour) and where low-score words are."""
    span = max(duration, 1e-3)
    bars = "".join(
        f'<rect class="speech{_speaker_class(s.get("speaker"), colours)}" x="{s["start"]:.3f}" y="2" '
        f'width="{max(s["end"] - s["start"], 0.01):.3f}" height="12"/>' for s in segments)
    ticks = "".join(f'<rect class="unsure" x="{w["start"]:.3f}" y="14" width="{max(span / 400, 0.05):.3f}" '
                    f'height="4"/>' for w in words if _low(w))
    return (f'<svg id="timeline" viewBox="0 0 {span:.3f} 18" preserveAspectRatio="none" role="img" '
            f'aria-label="Where speech was found; click to play from there">{bars}{ticks}'
            f'<rect id="playhead" x="0" y="0" width="{span / 500:.3f}" height="18"/></svg>')


def _speaker_class(speaker: str | None, colours: dict[str, int]) -> str:
    return f" spk-{colours[speaker]}" if speaker in colours else ""


def _low(word: dict[str, Any]) -> bool:
    return word.get("score") is not None and word["score"] < defaults.REVIEW_LOW_WORD_SCORE


def _words_by_cue(cues: list[Cue], words: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Each cue's words: those whose middle falls before the next cue starts.

    Cue times were adjusted for reading (lengthened, gaps made), so words are handed out by order, not
    matched to each cue's own interval; :func:`_cue_text` checks that they spell the cue.
    """
    groups: list[list[dict[str, Any]]] = [[] for _ in cues]
    i = 0
    for word in words:
        middle = (word["start"] + word["end"]) / 2
        while i + 1 < len(cues) and middle >= cues[i + 1].start:
            i += 1
        if groups:
            groups[i].append(word)
    return groups


def _cue_item(i: int, cue: Cue, words: list[dict[str, Any]], colours: dict[str, int]) -> str:
    speaker = f'<span class="speaker">{html.escape(cue.speaker)}</span>' if cue.speaker else ""
    return (f'<li class="cue{_speaker_class(cue.speaker, colours)}" data-i="{i}">'
            f'<button type="button" class="time" title="Play from here">{_clock(cue.start)}</button>{speaker}'
            f'<p class="text">{_cue_text(cue, words)}</p>'
            f'<button type="button" class="edit" title="Edit this cue (e)">Edit</button></li>\n')


def _cue_text(cue: Cue, words: list[dict[str, Any]]) -> str:
    """The cue's text as clickable words with their times when the words spell it, else as plain text.

    Lines are joined the way their script expects (no space between Chinese characters); between
    words, spacing is the cue's own, so ``早上9点`` stays as the model wrote it.
    """
    text = cjk.join(cue.text.split("\n"))
    out: list[str] = []
    pos = 0
    for word in words:
        piece = word["word"].strip()
        gap = len(text) - pos - len(text[pos:].lstrip())
        if not piece or not text.startswith(piece, pos + gap):
            return html.escape(text)
        out.append(" " if gap and out else "")
        out.append(_word_span(word, piece))
        pos += gap + len(piece)
    return "".join(out) if out and not text[pos:].strip() else html.escape(text)


def _word_span(word: dict[str, Any], piece: str) -> str:
    score = word.get("score")
    title = f' title="score {score:.2f}"' if score is not None else ""
    return (f'<span class="w{" low" if _low(word) else ""}" data-s="{word["start"]:.3f}" data-e="{word["end"]:.3f}"'
            f'{title}>{html.escape(piece)}</span>')


def _clock(seconds: float) -> str:
    """``01:02.3``, or ``1:01:02.3`` past an hour: the cue's start, to the tenth."""
    stamp = timestamp(seconds, ".")[:-2]
    return stamp[3:] if stamp.startswith("00:") else stamp.lstrip("0")
