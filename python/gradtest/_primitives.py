"""The engine protocol: the few primitives both AD engines implement.

Every NumPy function gradtest differentiates is written once, in :mod:`gradtest._rules`, either as
a composition of other supported NumPy functions or in terms of the primitives below. The forward
engine (:mod:`gradtest.forward`, :class:`~gradtest.forward.Dual`) and the reverse engine
(:mod:`gradtest.reverse`, :class:`~gradtest.reverse.Tracked`) each implement the primitives once,
so a rule cannot drift between the modes.

A rule calls the module-level functions here (``gather(...)``, ``pointwise(...)``, ...); they find
the engine from the engine arrays among their arguments (each array type names its engine in the
class attribute ``_engine``) and call that engine's implementation. Arguments that are not engine
arrays are constants.

Conventions shared by every primitive:

* values are real float32 or float64 NumPy arrays; Python numbers promote as NumPy promotes them
  (a Python float does not turn a float32 array into float64);
* broadcasting is the engine's business: a primitive's inputs may broadcast to its output and
  the engine sums derivatives back to each input's shape;
* the chain rule is the C op table's (``gt_chain`` in ``csrc/core/ops.h``): a zero partial times
  anything, or anything times a zero tangent or cotangent, is exactly 0.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

#: In the index array an ``index_fn`` of :func:`gather` returns: "this element is the constant 0".
FILL = -1

_FLOAT_DTYPES = (np.dtype(np.float64), np.dtype(np.float32))


class Engine(Protocol):
    """What an AD engine implements. Each method's docstring is the primitive's contract."""

    #: The engine's array type (its instances carry ``value``, the primal NumPy array).
    array_type: type
    #: "forward" or "reverse", for messages.
    mode: str

    def elementwise(self, ufunc: np.ufunc, *inputs: Any) -> Any:
        """``ufunc(*inputs)`` for a ufunc of the C op table, with NumPy's broadcasting and type
        promotion; its partials come from the op table."""

    def pointwise(self, value: np.ndarray, inputs: Sequence[Any], partials: Sequence[Any],
                  name: str, constant: bool,
                  partials_of: Callable[..., Sequence[Any]] | None = None) -> Any:
        """``y = value`` (given, NumPy's own result) with ``dy = sum_k partials[k] * dx_k``.

        ``partials[k]`` is a plain array broadcastable to ``value`` (None for an input that is
        a constant), ``inputs[k]`` broadcastable to ``value``. ``constant`` says whether the
        partials are locally constant in the inputs (max/min/clip weights, masks): then the
        second order is exact (zero curvature). Otherwise ``partials_of(*inputs)`` computes the
        same partials (a list like ``partials``) with NumPy calls the engines support, from
        the inputs as given (engine arrays or constants); reverse order 2 calls it on the
        recorded inputs to get the partials' own derivative. Without it a second-order
        recording raises NotImplementedError naming ``name``. ``partials_of`` may call the
        function being defined on the inputs (its derivative is then taken at first order)."""

    def records_second_order(self, inputs: Sequence[Any]) -> bool:
        """Whether a rule applied to ``inputs`` here must record its second derivative: true
        only while reverse order 2 is recorded, outside the first-order scope of a trapezoid
        form's coefficients. Rules use it to skip computing a second derivative nobody reads."""

    def gather(self, xs: Sequence[Any], index_fn: Callable[..., Any]) -> Any:
        """``y = index_fn(*xs)`` for a function that only selects, moves or repeats elements.

        ``index_fn`` is called on integer arrays holding each element's index into the
        concatenation of the flattened ``xs`` (same shapes as the ``xs``); the returned index
        array says where each output element comes from, :data:`FILL` meaning the constant 0.
        Repeated indices add up in the derivative."""

    def reduce(self, x: Any, axes: tuple[int, ...], keepdims: bool, coef: float,
               weights: np.ndarray | None, value: np.ndarray | None) -> Any:
        """``y = coef * sum(weights * x, axes)`` (weights: a plain array of x's shape, or None
        for ones). ``value`` replaces the computed primal (NumPy's own sum, max, ...). A
        non-finite ``coef`` meets a zero derivative as the chain rule says (0)."""

    def reshape(self, x: Any, shape: tuple[int, ...]) -> Any:
        """``x.reshape(shape)`` in C order (``shape`` fully resolved, no -1)."""

    def cumsum(self, x: Any, axis: int) -> Any:
        """``np.cumsum(x, axis)`` along one non-negative axis of an array of ndim >= 1."""

    def matmul(self, a: Any, b: Any) -> Any:
        """``a @ b`` with NumPy's matmul semantics (vectors, broadcast batches), through BLAS."""

    def cast(self, x: Any, dtype: np.dtype) -> Any:
        """``x.astype(dtype)`` for a float32/float64 dtype."""

    def with_value(self, x: Any, value: np.ndarray) -> Any:
        """x's derivative with the primal replaced by ``value`` (same shape and dtype): for
        compositions whose rounding differs from NumPy's own function (var, norm, prod)."""

    def linearized(self, value: Any, inputs: Sequence[Any],
                   jvp_of: Callable[[Sequence[Any], Any], Callable[..., Any]], name: str) -> Any:
        """``y = value`` (an array, or a tuple of arrays) with ``dy = jvp(*dxs)``, where
        ``jvp = jvp_of(primals, outputs)``.

        ``jvp_of`` builds the JVP from the inputs (``primals``, a list matching ``inputs``) and
        the outputs (``outputs``, matching ``value``): its coefficients (an inverse, a factor,
        a matrix of eigenvalue gaps) are computed from those, with NumPy calls the engines
        support (matmul, ``numpy.linalg.inv``, elementwise ops, indexing), never by calling
        the function being defined on a tangent. Forward mode and first-order reverse call it
        once with the plain values (so the outputs are not factorized again); reverse order 2
        calls it a second time with the recorded inputs and outputs, which gives the
        coefficients' own derivative (``gradtest.reverse`` explains how that gives H v).

        ``jvp`` gets one tangent per input (zeros for a constant input), each of that input's
        shape, and returns an array of ``value``'s shape (or a tuple matching ``value``). It
        must be linear in the tangents: forward applies it to each tangent direction, reverse
        applies it to the recorded inputs themselves (their values are not used) and so gets
        the transpose."""


# --------------------------------------------------------------------------------------------
# finding the engine; the module-level primitives rules call
# --------------------------------------------------------------------------------------------


def _engine_arrays(x: Any, out: list[Any]) -> None:
    if hasattr(type(x), "_engine"):
        out.append(x)
    elif isinstance(x, (list, tuple)):
        for v in x:
            _engine_arrays(v, out)


def engine_of(*args: Any) -> Engine | None:
    """The engine of the engine arrays among ``args`` (searched inside lists and tuples), or
    None when there are none.

    Raises
    ------
    NotImplementedError
        For arrays of the two engines mixed (forward over reverse is not supported).
    """
    for a in args:  # the common case: a flat tuple of arrays and numbers
        if hasattr(type(a), "_engine"):
            engine = type(a)._engine
            if all(type(b)._engine is engine for b in args if hasattr(type(b), "_engine")):
                return engine
            break
        if isinstance(a, (list, tuple)):
            break
    found: list[Any] = []
    for a in args:
        _engine_arrays(a, found)
    if not found:
        return None
    engine = type(found[0])._engine
    for x in found[1:]:
        if type(x)._engine is not engine:
            raise NotImplementedError(
                "an operation mixes gradtest.Dual and gradtest.Tracked arrays: nesting forward "
                "and reverse mode is not supported"
            )
    return engine


def is_active(x: Any) -> bool:
    """Whether x is an engine array (it carries a derivative)."""
    return hasattr(type(x), "_engine")


def value(x: Any) -> Any:
    """The primal of an engine array; anything else unchanged."""
    return x.value if hasattr(type(x), "_engine") else x


def values(tree: Any) -> Any:
    """:func:`value` applied through lists, tuples and dicts."""
    if hasattr(type(tree), "_engine"):
        return tree.value
    if isinstance(tree, (list, tuple)):
        return type(tree)(values(v) for v in tree)
    if isinstance(tree, dict):
        return {k: values(v) for k, v in tree.items()}
    return tree


def float_dtype(*xs: Any) -> np.dtype:
    """The floating dtype NumPy's promotion gives ``xs`` (engine arrays by their primal dtype,
    Python numbers weakly): float16 computes in float32, integers, booleans and objects in
    float64.

    Raises
    ------
    TypeError
        For complex or non-numeric dtypes (complex inputs are out of scope).
    """
    dt = np.result_type(*[x.value.dtype if is_active(x) else
                          x if isinstance(x, (int, float, bool, np.ndarray, np.generic)) else
                          np.asarray(x) for x in xs])
    if dt in _FLOAT_DTYPES:
        return dt
    if dt == np.float16:
        return np.dtype(np.float32)
    if dt.kind in "biuO":
        # an object array (of Python numbers) computes in float64, as NumPy's float() would;
        # gradtest.check_dispatch reports such operands
        return np.dtype(np.float64)
    if dt.kind == "c":
        raise TypeError("gradtest differentiates real float32/float64 values; complex inputs are "
                        "out of scope")
    raise TypeError(f"gradtest differentiates real float32/float64 values, got dtype {dt}")


def normalize_axes(axis: Any, ndim: int) -> tuple[int, ...]:
    """``axis`` (None, an int or a sequence of ints) as non-negative axes of an ndim array.

    Raises
    ------
    numpy.exceptions.AxisError
        For an axis out of range.
    """
    if axis is None:
        return tuple(range(ndim))
    if type(axis) is int and -ndim <= axis < ndim:
        return (axis % ndim,)  # the common case, without NumPy calls
    axes = (axis,) if np.ndim(axis) == 0 else tuple(axis)
    out = []
    for ax in axes:
        ax = operator.index(ax)
        if ndim == 0 and ax in (0, -1):
            continue  # NumPy accepts axis 0 of a 0-d array in reductions
        if not -ndim <= ax < ndim:
            raise np.exceptions.AxisError(ax, ndim)
        out.append(ax % ndim)
    return tuple(out)


def elementwise(ufunc: np.ufunc, *inputs: Any) -> Any:
    """See :meth:`Engine.elementwise`."""
    engine = engine_of(*inputs)
    return ufunc(*inputs) if engine is None else engine.elementwise(ufunc, *inputs)


def pointwise(value: Any, inputs: Sequence[Any], partials: Sequence[Any], name: str,
              constant: bool = False,
              partials_of: Callable[..., Sequence[Any]] | None = None) -> Any:
    """See :meth:`Engine.pointwise`."""
    engine = engine_of(inputs)
    if engine is None:
        return np.asarray(value)
    return engine.pointwise(np.asarray(value), list(inputs), list(partials), name, constant,
                            partials_of)


def records_second_order(inputs: Sequence[Any]) -> bool:
    """See :meth:`Engine.records_second_order`; False with no engine array among ``inputs``."""
    engine = engine_of(inputs)
    return engine is not None and engine.records_second_order(list(inputs))


def gather(xs: Sequence[Any], index_fn: Callable[..., Any]) -> Any:
    """See :meth:`Engine.gather`; with no engine array among ``xs`` it returns the plain array."""
    if len(xs) == 1 and is_active(xs[0]):
        return type(xs[0])._engine.gather(xs, index_fn)
    engine = engine_of(xs)
    if engine is None:
        return _plain_gather(list(xs), index_fn)
    return engine.gather(list(xs), index_fn)


def _plain_gather(xs: list[Any], index_fn: Callable[..., Any]) -> np.ndarray:
    dt = float_dtype(*xs)
    flats, index_arrays, offset = [], [], 0
    for x in xs:
        v = np.asarray(x, dtype=dt)
        index_arrays.append(np.arange(offset, offset + v.size, dtype=np.intp).reshape(v.shape))
        flats.append(v.ravel())
        offset += v.size
    idx = np.array(index_fn(*index_arrays), dtype=np.intp)
    flat = np.concatenate(flats + [np.zeros(1, dtype=dt)])
    return flat[np.where(idx == FILL, offset, idx)]


def reduce(x: Any, axes: tuple[int, ...], keepdims: bool = False, coef: float = 1.0,
           weights: np.ndarray | None = None, value: np.ndarray | None = None) -> Any:
    """See :meth:`Engine.reduce`."""
    if not is_active(x):
        if value is not None:
            return value
        w = np.asarray(x) if weights is None else np.asarray(x) * weights
        return np.sum(w, axis=axes, keepdims=keepdims) * coef
    return type(x)._engine.reduce(x, axes, keepdims, coef, weights, value)


def reshape(x: Any, shape: tuple[int, ...]) -> Any:
    """See :meth:`Engine.reshape`."""
    if not is_active(x):
        return np.reshape(x, shape)
    return type(x)._engine.reshape(x, tuple(shape))


def cumsum(x: Any, axis: int) -> Any:
    """See :meth:`Engine.cumsum`."""
    if not is_active(x):
        return np.cumsum(x, axis=axis)
    return type(x)._engine.cumsum(x, axis)


def matmul(a: Any, b: Any) -> Any:
    """See :meth:`Engine.matmul`."""
    engine = engine_of(a, b)
    return np.matmul(a, b) if engine is None else engine.matmul(a, b)


def cast(x: Any, dtype: Any) -> Any:
    """See :meth:`Engine.cast`; a constant becomes an array of ``dtype``."""
    if not is_active(x):
        return np.asarray(x, dtype=dtype)
    dtype = np.dtype(dtype)
    return x if x.value.dtype == dtype else type(x)._engine.cast(x, dtype)


def with_value(x: Any, value: Any) -> Any:
    """See :meth:`Engine.with_value`; a constant x gives ``value`` itself."""
    if not is_active(x):
        return value
    value = np.asarray(value)
    if value.shape != x.shape:
        raise ValueError(f"with_value: expected shape {x.shape}, got {value.shape}")
    return type(x)._engine.with_value(x, value.astype(x.value.dtype, copy=False))


def with_library_value(y: Any, value: Any) -> Any:
    """y's derivative carrying a library's own ``value`` and its dtype (so results are SciPy's
    bit for bit); a constant y gives the value as an array."""
    value = np.asarray(value)
    if not is_active(y):
        return value
    return with_value(cast(y, value.dtype), value)


def linearized(value: Any, inputs: Sequence[Any],
               jvp_of: Callable[[Sequence[Any], Any], Callable[..., Any]], name: str) -> Any:
    """See :meth:`Engine.linearized`."""
    engine = engine_of(inputs)
    if engine is None:
        return value
    return engine.linearized(value, list(inputs), jvp_of, name)
