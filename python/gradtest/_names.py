"""Validation of arguments that name things: backends, patterns. A leaf, shared by
:mod:`gradtest.api` and :mod:`gradtest.dispatch`."""

from __future__ import annotations

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
