"""A tiny bridge from check functions to whoever listens (the pytest plugin).

The API reports each finished check here; the pytest plugin installs a listener for the duration
of a test so that every backend's outcome shows up in pytest's summary. Without a listener this
costs one context-variable lookup.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Any

_listener: contextvars.ContextVar[Callable[[Any], None] | None] = contextvars.ContextVar(
    "gradtest_listener", default=None
)


def emit(report: Any) -> None:
    """Hands a finished report (gradient or dispatch) to the active listener, if any."""
    listener = _listener.get()
    if listener is not None:
        listener(report)


@contextlib.contextmanager
def listening(listener: Callable[[Any], None]) -> Iterator[None]:
    """Installs ``listener`` for the ``with`` block."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)
