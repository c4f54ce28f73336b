"""A job's prompt as Whisper reads it: ``<|startofprev|>``, its hotwords, then its prompt, cut to fit.

Whisper reads the text before ``<|startoftranscript|>`` as what was said before, and copies its
spelling and style: names and jargon written there come out spelled that way. Both engines build
the same token list (the idea is faster-whisper's ``get_prompt`` with ``hotwords``: the hotwords go
where the previous text would be). The model takes at most half its context there, less the
``<|startofprev|>`` token: Whisper's 448 positions leave 223 tokens. Hotwords are kept first (they
are short and chosen), then the end of the prompt, which is the part nearest the speech, as Whisper
itself keeps the end of the previous text; what is cut is said in a note for the job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from klipnote.decoding import Decoding


@dataclass(frozen=True)
class Prompt:
    """The tokens to put before the start-of-transcript tokens (empty for none), and a note when cut."""

    tokens: tuple[int, ...] = ()
    note: str | None = None


def build(decoding: Decoding, encode: Callable[[str], list[int]], start_of_prev: int, max_length: int) -> Prompt:
    """``decoding``'s hotwords and prompt as ``[<|startofprev|>, hotwords..., prompt...]``, cut to fit a model
    whose decoder holds ``max_length`` positions; ``encode``: text to token ids, no special tokens."""
    if not decoding.prompted:
        return Prompt()
    limit = max_length // 2 - 1
    hot = encode(" " + decoding.hotwords.strip()) if decoding.hotwords else []
    text = encode(" " + decoding.prompt.strip()) if decoding.prompt else []
    kept_hot = hot[:limit]
    kept_text = text[len(text) - min(len(text), limit - len(kept_hot)):]
    note = None
    if len(kept_hot) + len(kept_text) < len(hot) + len(text):
        what = " and ".join(name for name, tokens in (("hotwords", hot), ("prompt", text)) if tokens)
        kept = ("the first hotwords" if len(kept_hot) < len(hot) else
                "the hotwords and the end of the prompt" if hot else "the end of the prompt")
        note = (f"{what} cut to {limit} of {len(hot) + len(text)} tokens, the most the model reads before the "
                f"speech (kept: {kept})")
    return Prompt((start_of_prev, *kept_hot, *kept_text), note)
