"""Arrays built from engine values: ``np.array([x[0], 2 * x[1]])``, ``np.asarray(t)``, ``np.r_``, ``np.c_``.

NumPy builds these in C without dispatching to ``__array_function__``, so an engine array would
meet ``__array__`` and be refused (its derivative would silently become 0 otherwise). While an
engine runs the user's function, :func:`building_arrays` replaces ``numpy.array``,
``numpy.asarray`` and ``numpy.asanyarray`` (and the ``array`` that ``np.r_``/``np.c_`` call) by
wrappers that keep tracking:

* a list or tuple holding engine arrays becomes ``np.stack`` of its (recursively built) items,
  which the one rule registry differentiates;
* an engine array itself stays an engine array (cast to a requested float dtype, ``ndmin``
  applied); ``np.array`` gives a copy unless ``copy=False``, since item assignment into either
  would otherwise show in the other;
* everything else, and any request that would drop the derivative (an integer, complex or object
  dtype), goes to NumPy unchanged, which refuses engine arrays with the usual clear error.

The replacement is process-wide while any engine computation runs (counted, under a lock), so
plain calls from other threads meanwhile go to NumPy through one type check. Code that bound
``from numpy import array`` before the engine ran keeps NumPy's own function.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import numpy.lib._index_tricks_impl as _index_tricks

from . import _primitives as P

_ORIGINAL = {"array": np.array, "asarray": np.asarray, "asanyarray": np.asanyarray}
_LOCK = threading.Lock()
_ACTIVE = [0]


def _holds_engine_array(obj: Any) -> bool:
    if P.is_active(obj):
        return True
    if isinstance(obj, (list, tuple)):
        return any(_holds_engine_array(item) for item in obj)
    return False


def _build(obj: Any) -> Any:
    """obj (an engine array, a number, an ndarray, or a list/tuple of those) as one array."""
    if isinstance(obj, (list, tuple)):
        if not obj:
            return _ORIGINAL["array"](obj, dtype=np.float64)
        return np.stack([_build(item) for item in obj])
    if P.is_active(obj):
        return obj
    return _ORIGINAL["asarray"](obj)


def _wrapper(name: str) -> Any:
    original = _ORIGINAL[name]

    def build(obj: Any, dtype: Any = None, *args: Any, ndmin: int = 0, **kwargs: Any) -> Any:
        if ndmin:
            kwargs["ndmin"] = ndmin
        if not P.is_active(obj):
            # NumPy first: a list of plain numbers is not scanned in Python; an engine array
            # inside it makes NumPy call its __array__, which refuses (NotImplementedError)
            try:
                return original(obj, dtype, *args, **kwargs)
            except NotImplementedError:
                if not _holds_engine_array(obj):
                    raise
        if dtype is not None and np.dtype(dtype).kind != "f":
            # would drop the derivative: NumPy's own call raises the engines' clear error
            return original(obj, dtype, *args, **kwargs)
        out = _build(obj)
        copy = kwargs.get("copy", True)
        # np._CopyMode's IF_NEEDED refuses bool(); only True and ALWAYS ask for a copy
        if out is obj and name == "array" and (copy is True or copy is np._CopyMode.ALWAYS):
            out = out.copy()
        if dtype is not None:
            out = out.astype(dtype)
        if out.ndim < ndmin:
            out = np.reshape(out, (1,) * (ndmin - out.ndim) + out.shape)
        return out

    build.__name__ = build.__qualname__ = name
    build.__doc__ = original.__doc__
    build.__wrapped__ = original  # type: ignore[attr-defined]
    return build


_WRAPPERS = {name: _wrapper(name) for name in _ORIGINAL}


def _install(table: dict[str, Any]) -> None:
    np.array, np.asarray, np.asanyarray = table["array"], table["asarray"], table["asanyarray"]
    _index_tricks.array = table["array"]


class _BuildingArrays:
    """The context manager behind :func:`building_arrays` (a class, not a generator: it is
    entered on every engine call, so its cost counts at small sizes)."""

    __slots__ = ()

    def __enter__(self) -> None:
        _LOCK.acquire()
        try:
            if _ACTIVE[0] == 0:
                _install(_WRAPPERS)
            _ACTIVE[0] += 1
        finally:
            _LOCK.release()

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        _LOCK.acquire()
        try:
            _ACTIVE[0] -= 1
            if _ACTIVE[0] == 0:
                _install(_ORIGINAL)
        finally:
            _LOCK.release()
        if exc_type is ValueError and str(exc) == _SEQUENCE_ERROR:
            # NumPy's message when an engine array is stored as one element of a plain array
            # (its __array__ is never asked): say what happened and what to write instead
            raise NotImplementedError(
                "assignment of an AD value into an element of a plain NumPy array (h = np.zeros(n); "
                "h[i] = ...), which would drop its derivative (NumPy reports it as 'setting an array "
                "element with a sequence'); create the array from the differentiated one instead: "
                "h = np.zeros_like(x) or np.zeros(n, like=x) (engine arrays that keep assigned "
                "derivatives), or build it with np.stack / np.array([...])") from exc


_SEQUENCE_ERROR = "setting an array element with a sequence."


_CONTEXT = _BuildingArrays()


def building_arrays() -> _BuildingArrays:
    """While active, ``np.array``/``np.asarray``/``np.asanyarray``/``np.r_``/``np.c_`` keep engine
    arrays tracked (see the module docstring). Re-entrant and thread-safe."""
    return _CONTEXT
