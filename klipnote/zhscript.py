"""Chinese script of a finished transcript: Simplified or Traditional characters, whichever engine wrote it.

Whisper writes Mandarin in either script and switches between them within one file (on a long
Mandarin recording the whisperx engine wrote 开放时间早上9点 in one segment and 太棒時間早上9點 in
another). A job's output is therefore converted after the engine, for both engines, text and words
alike, with OpenCC. Which script:

1. the job's own ``zh_script`` (``submit --zh-script``), which also converts Cantonese;
2. else a Traditional language hint (``-l zh-TW``, ``zh-Hant``, ``zh-HK``, ``zh-MO``) means Traditional;
3. else the worker's ``zh_script`` setting (Simplified by default).

Cantonese (``yue``) is left as the model wrote it unless the job asks: written Cantonese has its own
usage that a Mandarin conversion table would flatten.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from klipnote.job import ZhScript
from klipnote.routing import normalise_language

if TYPE_CHECKING:
    from collections.abc import Callable

    from klipnote.transcript import Transcript, Word

#: Language hints (normalised as routing does) that ask for Traditional characters.
TRADITIONAL_HINTS = frozenset({"zh-tw", "zh-hant", "zh-hk", "zh-mo", "zh-hant-tw", "zh-hant-hk"})
#: Transcript languages converted by default, and those converted only when the job asks.
MANDARIN = "zh"
CANTONESE = "yue"

#: OpenCC configurations; ``original`` leaves the model's characters alone.
_OPENCC_CONFIG = {ZhScript.SIMPLIFIED: "t2s", ZhScript.TRADITIONAL: "s2t"}


def choose(asked: ZhScript | None, hint: str | None, default: ZhScript, language: str | None) -> ZhScript:
    """The script a job's transcript in ``language`` comes out in (see the module docstring for the order)."""
    if language not in (MANDARIN, CANTONESE):
        return ZhScript.ORIGINAL
    if asked is not None:
        return asked
    if language == CANTONESE:
        return ZhScript.ORIGINAL
    if normalise_language(hint) in TRADITIONAL_HINTS:
        return ZhScript.TRADITIONAL
    return default


def convert(transcript: Transcript, script: ZhScript) -> Transcript:
    """Rewrite every segment's and word's text in ``script``, in place; returns the transcript."""
    config = _OPENCC_CONFIG.get(script)
    if config is None or not transcript.segments:
        return transcript
    change = _converter(config)
    for segment in transcript.segments:
        segment.text = change(segment.text)
        _convert_words(segment.words, change)
    return transcript


def _convert_words(words: list[Word], change: Callable[[str], str]) -> None:
    """Convert a segment's words together: OpenCC picks characters by phrase (头发 -> 頭髮, not 頭發),
    and a one-character word has no phrase. Its tables keep lengths, so the converted run is cut back at
    the words' own lengths; should one not, each word is converted alone."""
    joined = "".join(word.word for word in words)
    converted = change(joined)
    if len(converted) != len(joined):
        for word in words:
            word.word = change(word.word)
        return
    at = 0
    for word in words:
        word.word, at = converted[at : at + len(word.word)], at + len(word.word)


@cache
def _converter(config: str) -> Callable[[str], str]:
    from opencc import OpenCC  # a dictionary load: only workers that meet Chinese pay for it

    return OpenCC(config).convert
