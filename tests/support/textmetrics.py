"""Judging transcripts against references (WER for words, CER for characters) and against each other."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        current = [i]
        for j, h in enumerate(hyp, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1]


def normalise(text: str) -> str:
    """Lower case, punctuation and symbols out, whitespace collapsed."""
    kept = "".join(c if unicodedata.category(c)[0] in "LNZ" else " " for c in text.lower())
    return re.sub(r"\s+", " ", kept).strip()


def wer(reference: str, hypothesis: str) -> float:
    ref = normalise(reference).split()
    return edit_distance(ref, normalise(hypothesis).split()) / max(1, len(ref))


def cer(reference: str, hypothesis: str) -> float:
    ref = normalise(reference).replace(" ", "")
    return edit_distance(list(ref), list(normalise(hypothesis).replace(" ", ""))) / max(1, len(ref))


def paired_starts(ours: Sequence[tuple[str, float]], theirs: Sequence[tuple[str, float]], within: float,
                  *, neighbours: bool = False) -> list[tuple[float, float]]:
    """(our start, their start) of each of their (word, start) pairs that ours has too, the nearest within
    ``within`` seconds: two readings of the same audio may differ by a word or a spelling, so their
    positions cannot pair them. ``neighbours``: pair only words read with the same word before and after
    (a reading that drops a word gives the next one the dropped word's time, and the other reading does not)."""
    def keyed(words: Sequence[tuple[str, float]]) -> list[tuple[tuple[str, ...], float]]:
        texts = ["", *(word for word, _ in words), ""]
        return [((*texts[i:i + 3],) if neighbours else (word,), at) for i, (word, at) in enumerate(words)]

    pairs = []
    mine = keyed(ours)
    for key, at in keyed(theirs):
        starts = [start for other, start in mine if other == key and abs(start - at) <= within]
        if starts:
            pairs.append((min(starts, key=lambda start: abs(start - at)), at))
    return pairs
