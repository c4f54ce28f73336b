"""Chinese, Japanese and Korean text: which characters are CJK, and how to join pieces of text.

Latin-script words are joined with a space; CJK characters are not (``开放 时间`` is wrong), and a
space never goes before closing or after opening punctuation of either kind.
"""

from __future__ import annotations

from collections.abc import Iterable

_CJK_RANGES = (
    (0x2E80, 0x2FFF),  # radicals
    (0x3000, 0x303F),  # CJK symbols and punctuation
    (0x3040, 0x30FF),  # hiragana, katakana
    (0x3100, 0x31FF),  # bopomofo and extensions
    (0x3400, 0x4DBF),  # extension A
    (0x4E00, 0x9FFF),  # unified ideographs
    (0xAC00, 0xD7AF),  # hangul syllables
    (0xF900, 0xFAFF),  # compatibility ideographs
    (0xFF00, 0xFFEF),  # full-width forms
    (0x20000, 0x3134F),  # extensions B-G
)

_NO_SPACE_BEFORE = set(",.!?;:%)]}”’、。，！？；：）》」』】")
_HANGUL = ((0x1100, 0x11FF), (0x3130, 0x318F), (0xAC00, 0xD7AF))
_NO_SPACE_AFTER = set("([{“‘（《「『【")


def is_cjk(char: str) -> bool:
    code = ord(char)
    return any(lo <= code <= hi for lo, hi in _CJK_RANGES)


def has_cjk(text: str) -> bool:
    return any(is_cjk(c) for c in text)


def unspaced(char: str) -> bool:
    """Scripts written without spaces between words: Chinese and Japanese (Korean uses spaces)."""
    code = ord(char)
    return is_cjk(char) and not any(lo <= code <= hi for lo, hi in _HANGUL)


def join(parts: Iterable[str]) -> str:
    """Join text pieces (words, segments, lines) the way each script expects."""
    out = ""
    for raw in parts:
        piece = raw.strip()
        if not piece:
            continue
        if out and not (unspaced(out[-1]) and unspaced(piece[0])) and piece[0] not in _NO_SPACE_BEFORE \
                and out[-1] not in _NO_SPACE_AFTER:
            out += " "
        out += piece
    return out
