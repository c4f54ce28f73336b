"""The few domain errors klipnote raises, each with a message a user can act on.

The CLI prints ``str(error)`` as one line and exits with ``error.exit_code``; nothing else
escapes as a traceback.
"""

from __future__ import annotations

import re


class KlipnoteError(Exception):
    """Base of every error meant for the user. Exit code 1: the operation failed."""

    exit_code = 1


class UsageError(KlipnoteError):
    """The command line or configuration asked for something invalid. Exit code 2."""

    exit_code = 2


class ConfigError(UsageError):
    """A setting has a value klipnote cannot use; the message names key, value and what is allowed."""


class SpoolError(KlipnoteError):
    """The spool cannot be used: wrong format, not writable, disk full, lock held too long."""


class SpoolFull(SpoolError):
    """The spool's disk is full. It passes once space is freed, so workers wait instead of failing jobs."""


class JobNotFound(KlipnoteError):
    """No job matches the id or prefix given."""


class InputRejected(KlipnoteError):
    """A file cannot become a job; the message says why and what to do."""


class BrokerUnavailable(KlipnoteError):
    """Redis, the broker of the several-hosts mode, cannot be reached: the spool keeps the jobs meanwhile."""


class ClaimLost(KlipnoteError):
    """A worker no longer owns the job it was running (canceled, or its lease expired)."""


def summary(exc: BaseException, limit: int = 200) -> str:
    """``TypeName: first meaningful line`` of an exception from a library, short enough for one line.

    Libraries' messages often start with blank or decorative lines (nltk's boxes of asterisks).
    """
    for line in str(exc).splitlines():
        cleaned = line.strip(" *\t")
        if re.search(r"\w", cleaned):
            return f"{type(exc).__name__}: {cleaned[:limit]}"
    return type(exc).__name__
