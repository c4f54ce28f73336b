"""Job ids: time-sortable, unique across hosts, safe to put in a path.

An id is 18 characters of lowercase Crockford base32: 10 for the submit time in milliseconds
(so ``sorted(ids)`` is submit order) and 8 random (40 bits, so two hosts submitting in the same
millisecond do not collide in practice). Anything else is refused before it reaches a path.
"""

from __future__ import annotations

import re
import secrets
import threading
import time

from klipnote.errors import UsageError

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
TIME_CHARS = 10
RANDOM_CHARS = 8
ID_LENGTH = TIME_CHARS + RANDOM_CHARS

_ID_RE = re.compile(f"[{ALPHABET}]{{{ID_LENGTH}}}")
_PREFIX_RE = re.compile(f"[{ALPHABET}]{{1,{ID_LENGTH}}}")


def _encode(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        value, digit = divmod(value, 32)
        chars.append(ALPHABET[digit])
    return "".join(reversed(chars))


_last: tuple[int, int] = (-1, 0)
_last_lock = threading.Lock()


def new_job_id(now_ms: int | None = None) -> str:
    """A fresh id for a job submitted at ``now_ms`` (default: now).

    Within one process, ids made in the same millisecond still sort in the order they were
    made: the random part of the later one is the earlier one's plus one (as ULIDs do).
    """
    global _last  # noqa: PLW0603 - the per-process monotonic counter
    millis = int(time.time() * 1000) if now_ms is None else now_ms
    with _last_lock:
        if millis == _last[0] and _last[1] + 1 < 32**RANDOM_CHARS:
            randomness = _last[1] + 1
        else:
            randomness = secrets.randbits(5 * RANDOM_CHARS - 1)  # leave room to count up
        _last = (millis, randomness)
    return _encode(millis, TIME_CHARS) + _encode(randomness, RANDOM_CHARS)


def is_job_id(text: str) -> bool:
    return _ID_RE.fullmatch(text) is not None


def check_prefix(text: str) -> str:
    """Return ``text`` normalised to lowercase if it can be (a prefix of) a job id, else raise."""
    candidate = text.strip().lower()
    if not _PREFIX_RE.fullmatch(candidate):
        raise UsageError(
            f"{text!r} is not a job id: ids are {ID_LENGTH} characters of 0-9 and a-z "
            "(without i, l, o, u); a unique prefix is enough"
        )
    return candidate
