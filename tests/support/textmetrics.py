"""Error rates for judging transcripts against references: WER for words, CER for characters."""

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
