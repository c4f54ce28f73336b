"""Which lane a job enters at submit: the user's choice, or a decision from the language hint.

Routing that needs the audio (auto without a hint) happens later in a whisperx worker; here a
hint-less auto job goes to the ``auto`` lane, which whisperx workers serve, and :func:`settle`
records the decision and hands the job over once the worker's engine has heard its language.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from klipnote.job import Lane, Model, Task

if TYPE_CHECKING:
    from klipnote.claim import Claim

#: Language hints that mean Mandarin (compared after lower-casing and ``_`` -> ``-``).
MANDARIN_HINTS = frozenset({"zh", "zh-cn", "zh-hans", "zh-hant", "zh-tw", "zh-hk", "zh-sg", "cmn", "mandarin"})


def normalise_language(hint: str | None) -> str | None:
    if hint is None:
        return None
    value = hint.strip().lower().replace("_", "-")
    return value or None


def is_mandarin(hint: str | None) -> bool:
    return normalise_language(hint) in MANDARIN_HINTS


@dataclass(frozen=True)
class Route:
    lane: Lane
    reason: str


def route_at_submit(model: Model, language: str | None, task: Task = Task.TRANSCRIBE) -> Route:
    """Decide the lane from what is known before any audio is decoded; ``auto`` sends a translation to
    whisperx whatever the language (belle2 only transcribes, and ``submit`` refuses it for belle2)."""
    if model is Model.BELLE2:
        return Route(Lane.BELLE2, "model belle2 requested")
    if model is Model.WHISPERX:
        return Route(Lane.WHISPERX, "model whisperx requested")
    if task is Task.TRANSLATE:
        return Route(Lane.WHISPERX, "translation into English: only whisperx translates")
    hint = normalise_language(language)
    if hint is None:
        return Route(Lane.AUTO, "no language hint: the whisperx worker detects the language")
    if hint in MANDARIN_HINTS:
        return Route(Lane.BELLE2, f"language hint {hint!r} is Mandarin")
    return Route(Lane.WHISPERX, f"language hint {hint!r} is not Mandarin")


def route_after_detection(language: str | None, probability: float | None, belle2_alive: bool,
                          error: str | None = None) -> Route:
    """Where an ``auto`` job goes once a whisperx worker has listened to it.

    Mandarin goes to belle2 only if a belle2 worker is alive to take it; anything else, and any
    failed detection, stays on whisperx (the worker that detected it transcribes it).
    """
    if error is not None or language is None:
        return Route(Lane.WHISPERX, f"language detection failed ({error or 'no language'}): whisperx transcribes it")
    heard = f"detected {language}" + (f" (p={probability:.2f})" if probability is not None else "")
    if not is_mandarin(language):
        return Route(Lane.WHISPERX, f"{heard}, not Mandarin")
    if not belle2_alive:
        return Route(Lane.WHISPERX, f"{heard}, but no live belle2 worker: whisperx transcribes it")
    return Route(Lane.BELLE2, f"{heard}: handed to belle2")


def settle(claim: Claim, language: str | None, probability: float | None, error: str | None, belle2_alive: bool,
           serves: tuple[Lane, ...]) -> Route:
    """Record where an ``auto`` job goes now that its language was heard, and hand it over when the lane
    it belongs to is not one this worker serves (routing uses no attempt: the claim is released)."""
    route = route_after_detection(language, probability, belle2_alive, error)
    claim.update(routing={**claim.status.routing, "decided": route.lane.value, "reason": route.reason,
                          "detected_language": language, "language_probability": probability})
    if route.lane not in serves:
        claim.release(route.reason, lane=route.lane, engine=None)
    return route
