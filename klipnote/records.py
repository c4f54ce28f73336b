"""Records read back from JSON files (statuses, manifests, worker heartbeats, model manifests), checked.

A file edited by hand or written by another version can be valid JSON of the wrong shape. Each
record is checked against its dataclass's type hints once, where it is read, so that such a file
stops there with one message instead of a traceback wherever a field is first used.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

R = TypeVar("R")

#: What building a record from parsed JSON raises when the JSON has the wrong shape: a missing key,
#: a field of the wrong type, a value an enum does not know, a list where an object belongs.
MALFORMED: tuple[type[Exception], ...] = (KeyError, TypeError, AttributeError, ValueError)
#: What reading a record file raises when it is unreadable, not JSON, or malformed.
UNREADABLE: tuple[type[Exception], ...] = (OSError, *MALFORMED)


def from_json(cls: type[R], data: Any, **converted: Any) -> R:
    """A ``cls`` built from the JSON object ``data`` and :func:`checked`: keys ``cls`` does not declare are
    ignored (a newer version may add some), ``converted`` replaces the values that need more than JSON."""
    if not isinstance(data, dict):
        raise TypeError(f"{data!r:.40} is not an object")
    return checked(cls(**{**known_fields(cls, data), **converted}))


def known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The items of ``data`` that name a field of the dataclass ``cls``."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {name: value for name, value in data.items() if name in names}


def checked(record: R) -> R:
    """``record`` (a dataclass just parsed) if every field has its declared type, else TypeError."""
    kind: type = type(record)
    for name, matches, expected in _field_checks(kind):
        value = getattr(record, name)
        if not matches(value):
            raise TypeError(f"field {name!r} is {type(value).__name__} {value!r:.40}, expected {expected}")
    return record


@functools.cache
def _field_checks(cls: type) -> tuple[tuple[str, Callable[[Any], bool], str], ...]:
    """Per field of the dataclass ``cls``: its name, a test of a value against its type hint, the hint's name."""
    return tuple((name, _predicate(hint), getattr(hint, "__name__", str(hint)))
                 for name, hint in typing.get_type_hints(cls).items())


def _predicate(hint: Any) -> Callable[[Any], bool]:
    """A test for values of ``hint`` as they come out of JSON (built once per field: ``list`` reads thousands)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [_predicate(arg) for arg in typing.get_args(hint)]
        return lambda v: any(option(v) for option in options)
    if hint is Any:
        return lambda v: True
    if hint is type(None):
        return lambda v: v is None
    if hint is int:
        return lambda v: type(v) is int  # not bool
    if hint is float:
        return lambda v: type(v) in (int, float)
    if origin in (list, tuple):
        item = _predicate(typing.get_args(hint)[0]) if typing.get_args(hint) else _predicate(Any)
        return lambda v: isinstance(v, origin) and all(item(x) for x in v)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return lambda v: isinstance(v, hint) and checked(v) is v
    kind = origin or hint
    return lambda v: isinstance(v, kind)
