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

Listener = Callable[[Any, "BaseException | None"], None]

_listener: contextvars.ContextVar[Listener | None] = contextvars.ContextVar("gradtest_listener", default=None)


def emit(report: Any, raised: BaseException | None = None) -> None:
    """Hands a finished report (gradient or dispatch) to the active listener, if any.

    ``raised`` is the exception the caller is about to raise for it (``test_gradients``'s
    AssertionError), so that the listener can tell a check that decided the test's outcome from
    one whose failure the test expected and caught (``pytest.raises``).
    """
    listener = _listener.get()
    if listener is not None:
        listener(report, raised)


@contextlib.contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Installs ``listener`` for the ``with`` block."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)
