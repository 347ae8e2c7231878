"""Validation of arguments that name things: backends, patterns. A leaf, shared by
:mod:`gradtest.api` and :mod:`gradtest.dispatch`."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def string_list(value: str | Iterable[str] | None, argument: str, what: str = "backend names") -> list[str]:
    """A string or an iterable of strings as a list; a TypeError naming ``argument`` otherwise."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    try:
        names = list(value)
    except TypeError:
        raise TypeError(f"{argument}: expected a list of {what}, got {type(value).__name__}") from None
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"{argument}: expected {what} (str), got {name!r}")
    return names


def unknown_backend(name: object, known: Iterable[str], known_as: str = "known backends") -> str:
    """The message for a backend name that is not registered: the known ones, with the closest
    named first where the name looks like a typo of it (``'forwrd'``)."""
    known = list(known)
    close = difflib.get_close_matches(name, known, n=1) if isinstance(name, str) else []
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown backend {name!r}{hint}; {known_as}: {', '.join(known)}"
