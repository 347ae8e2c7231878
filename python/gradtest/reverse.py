"""Reverse mode: :class:`Tracked` arrays record the user's unchanged NumPy code onto a tape held in
C (``gradtest._reverse.Tape``), which is swept backwards in C.

NumPy functions reach the one rule registry (:mod:`gradtest._rules`) through ``__array_function__``
and ``__array_ufunc__``; this module holds only the array type, the reverse implementation of the
primitives of :mod:`gradtest._primitives`, and the backend plumbing. The primitives map onto the
tape's few node kinds:

- ``elementwise``: one ``elementwise`` node; the sweep computes the local partials from the
  shared op table (``gt_op_partials_f64/f32``) block by block and multiplies them into the
  output adjoint;
- ``gather``: one ``gather`` node: the selection is applied to an array of element *indices*,
  and the VJP is a scatter-add of the output adjoint into those indices (``np.add.at``
  semantics, so repeated indices add up);
- ``reduce``: a ``reduce`` node (with weights for max/min); ``pointwise``: one ``elementwise``
  multiply by the constant partial per input (so the op table's chain rule applies), summed by
  a ``linear`` node; ``matmul``: a ``matmul`` node whose VJPs are BLAS GEMM calls;
- ``linearized``: the rule's JVP applied to the inputs themselves records its transpose.

At order 2 (``hvp``), ``pointwise`` partials and ``linearized`` coefficients are recomputed from
the recorded inputs in a trapezoid form that keeps the primal and gives the exact second
derivative (see the comment above ``_ReverseEngine``).

Broadcasting is never handled by a rule: the C sweep sums every contribution back to its input's
shape in one routine. Nothing in the sweep calls back into Python.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from . import _primitives as P
from . import _reverse, _rules
from ._arraylike import ArrayLike
from ._building import building_arrays
from ._tree import flatten_args, output_leaves
from .backends import register_backend

__all__ = ["Tracked", "vjp", "hvp", "compute_hvp", "gradient_reverse"]

Tape = _reverse.Tape
_OP_INDEX: dict[str, int] = _reverse.op_indices()
_OP_INDEX["absolute"] = _OP_INDEX["abs"]  # np.abs is the ufunc named "absolute"
_LINEAR_UFUNCS = frozenset({"add", "subtract", "negative", "positive"})
_DTYPE_CODE = {np.dtype(np.float64): 0, np.dtype(np.float32): 1}
# ufunc object -> (op index, linear), for the C fast path (sign is handled as non-differentiable)
_FAST_UFUNCS = {getattr(np, name): (i, name in _LINEAR_UFUNCS)
                for name, i in _OP_INDEX.items() if hasattr(np, name) and name != "sign"}

class Tracked(ArrayLike):
    """An array whose operations are recorded on a reverse-mode tape.

    ``Tracked`` supports the NumPy surface of :class:`gradtest.forward.Dual` (ufuncs, array
    functions, operators, indexing, attributes and methods), so one function runs on both.

    Parameters
    ----------
    value : numpy.ndarray
        The primal value (float32 or float64); not copied, never modified.
    tape : gradtest._reverse.Tape
        The tape the array's node lives on.
    node : int
        Its node id on ``tape``.

    Notes
    -----
    Create leaves with :meth:`leaf`; every other ``Tracked`` comes out of an operation. Arrays
    from different tapes cannot be mixed. Item assignment (``y[i] = v``) records a new node and
    rebinds the array to it, as long as no other live array is a view of it or it of another
    (NumPy's views would share the change; the engine cannot, so that case raises). ``out=``
    is refused.
    """

    # _views/_base: weak references between an array and the live arrays NumPy would make views
    # of it (see _note_view); unset on most arrays, so read with getattr
    __slots__ = ("value", "tape", "node", "_views", "_base", "__weakref__")

    def __init__(self, value: np.ndarray, tape: Any, node: int) -> None:
        self.value = value
        self.tape = tape
        self.node = node

    @classmethod
    def leaf(cls, tape: Any, value: Any) -> Tracked:
        """A new input on ``tape`` holding ``value`` (float16 is computed in float32).

        A C-contiguous, aligned float32/float64 array is not copied: the leaf holds a read-only
        view of it, so that nothing recorded can write to the caller's array (an attempt raises),
        and the entry points copy any returned value that shares its memory (``_private``). Any
        other input is converted into a new C-contiguous array. The caller must not change the
        array while the tape is in use (during ``vjp``), as with any NumPy function.

        Parameters
        ----------
        tape : gradtest._reverse.Tape
            The tape to record on.
        value : array_like
            A real floating array (or number).

        Returns
        -------
        Tracked
        """
        arr = np.asarray(value)
        if arr.dtype not in _DTYPE_CODE:
            if arr.dtype.kind in "biu" or arr.dtype == np.float16:
                arr = arr.astype(np.float32 if arr.dtype == np.float16 else np.float64, order="C")
            else:
                raise TypeError(f"value: expected a float32 or float64 array, got {arr.dtype}"
                                + (" (complex values are out of scope)" if arr.dtype.kind == "c" else ""))
        if arr.flags.c_contiguous and arr.flags.aligned:
            # a copy of a large leaf cost a pass and fresh pages (a third of an MLP's gradient,
            # with its weight's gradient); a read-only view costs neither
            arr = arr.view(np.ndarray)
            arr.flags.writeable = False
        else:
            arr = np.array(arr, copy=True, order="C")
        return cls(arr, tape, tape.leaf(_DTYPE_CODE[arr.dtype], arr.shape))

    def __repr__(self) -> str:
        return f"Tracked({self.value!r}, node={self.node})"

    # ------------------------------------------------------------------ NumPy protocols
    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        if method == "__call__" and not kwargs:
            entry = _FAST_UFUNCS.get(ufunc)
            if entry is not None:
                # the common case in C: same-dtype operands of equal shape or scalars
                out = self.tape.ufunc(ufunc, entry[0], entry[1], *inputs)
                if out is not None:
                    return out
        return _rules.apply_ufunc(ufunc, method, inputs, kwargs, "reverse")

    def __array_function__(self, func: Callable, types: Any, args: Any, kwargs: Any) -> Any:
        return _rules.apply_function(func, args, kwargs, "reverse", self)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, Tracked) or (isinstance(key, tuple) and any(isinstance(k, Tracked) for k in key)):
            raise TypeError("indexing with a Tracked array is not supported; index with integers")
        return _gather([self], lambda ix: ix[key])

    def __setitem__(self, key: Any, value: Any) -> None:
        """``self[key] = value`` with NumPy's semantics: the assigned elements take value's
        derivative, the others keep theirs."""
        if isinstance(key, Tracked) or (isinstance(key, tuple) and any(isinstance(k, Tracked) for k in key)):
            raise TypeError("indexing with a Tracked array is not supported; index with integers")
        _check_assignable(self)
        # NumPy computes the new primal (casting, broadcasting and its errors are NumPy's own)
        new = self.value.copy()
        new[key] = np.asarray(_value(value))
        if isinstance(value, Tracked):
            v = _cast(value, self.dtype) if value.dtype != self.dtype else value
            target = self.value[key]
            if np.shape(target) != v.shape:
                v = _broadcast_to(v, np.shape(target))

            def assign(ix: np.ndarray, iv: np.ndarray) -> np.ndarray:
                out = ix.copy()
                out[key] = iv
                return out

            res = _gather([self, v], assign)
        else:
            def clear(ix: np.ndarray) -> np.ndarray:
                out = ix.copy()
                out[key] = P.FILL
                return out

            res = _gather([self], clear)
        res = Tracked(new, self.tape, self.tape.reshape(new.shape, res.node))
        self.value, self.node = res.value, res.node

    def astype(self, dtype: Any, copy: bool = True) -> Any:
        """The array converted to ``dtype``; floating targets stay on the tape."""
        return _rules.astype(self, dtype)

    def copy(self) -> Tracked:
        # a new object on the same node: assigning into the copy must not rebind the original
        return Tracked(self.value, self.tape, self.node)


def _note_view(base: Tracked, child: Tracked) -> None:
    """Records that NumPy would make ``child`` a view of ``base``: then an assignment into
    either would show in the other, which the engine's copies cannot do, so it is refused while
    both are alive."""
    views = getattr(base, "_views", None)
    if views is None:
        base._views = views = []
    views.append(weakref.ref(child))
    child._base = weakref.ref(base)


def _check_assignable(x: Tracked) -> None:
    base = getattr(x, "_base", None)
    if base is not None and base() is not None:
        raise NotImplementedError(
            "item assignment into a view of another array (a slice, row, reshape or transpose of "
            "it) is not supported in reverse mode: NumPy would change both arrays. Assign into the "
            "array itself, or into a copy of the view (v = x[...].copy())")
    views = getattr(x, "_views", None)
    if views:
        views[:] = [r for r in views if r() is not None]
        if views:
            raise NotImplementedError(
                "item assignment into an array while a view of it (a slice, row, reshape or "
                "transpose) is still alive is not supported in reverse mode: NumPy would change "
                "the view too. Take copies of the views (v = x[...].copy()) or assign first")


def _for_f(leaves: list[Tracked]) -> list[Tracked]:
    """New objects on the leaves' nodes, to pass to f: an assignment f makes into its argument
    rebinds f's object, and the leaf's own node, where its gradient is read, stays."""
    return [Tracked(x.value, x.tape, x.node) for x in leaves]


def _fast_operator(ufunc: np.ufunc, reflected: bool) -> Callable[..., Any]:
    """An arithmetic operator that goes straight to the C fast path, skipping NumPy's dispatch
    (the general path through the ufunc is taken whenever the fast one declines)."""
    opi, linear = _OP_INDEX[ufunc.__name__], ufunc.__name__ in _LINEAR_UFUNCS

    if reflected:
        def op(self: Tracked, other: Any) -> Any:
            out = self.tape.ufunc(ufunc, opi, linear, other, self)
            return ufunc(other, self) if out is None else out
    else:
        def op(self: Tracked, other: Any) -> Any:
            out = self.tape.ufunc(ufunc, opi, linear, self, other)
            return ufunc(self, other) if out is None else out
    op.__name__ = f"__{'r' if reflected else ''}{ufunc.__name__}__"
    return op


for _name, _ufunc in (("add", np.add), ("sub", np.subtract), ("mul", np.multiply),
                      ("truediv", np.divide), ("pow", np.power)):
    setattr(Tracked, f"__{_name}__", _fast_operator(_ufunc, False))
    setattr(Tracked, f"__r{_name}__", _fast_operator(_ufunc, True))
del _name, _ufunc


# ---------------------------------------------------------------------- helpers

def _value(x: Any) -> Any:
    return x.value if isinstance(x, Tracked) else x


def _common_tape(xs: Sequence[Any]) -> Any:
    tape = None
    for x in xs:
        if isinstance(x, Tracked):
            if tape is None:
                tape = x.tape
            elif x.tape is not tape:
                raise ValueError(
                    "an operation mixes Tracked arrays from different tapes (for example from "
                    "two gradient computations); use arrays from one computation"
                )
    return tape


def _cast(x: Tracked, dtype: np.dtype) -> Tracked:
    if x.value.dtype == dtype:
        return x
    out = Tracked(x.value.astype(dtype), x.tape, x.tape.cast(_DTYPE_CODE[dtype], x.node))
    return out


def _node_as(x: Any, dtype: np.dtype) -> int:
    """x's node id after conversion to ``dtype`` (-1 for a constant)."""
    if not isinstance(x, Tracked):
        return -1
    return _cast(x, dtype).node if x.value.dtype != dtype else x.node


def _operand(v: Any, y: np.ndarray) -> np.ndarray:
    """v in y's dtype, either of size 1 or broadcast to y's shape (the tape makes it contiguous)."""
    a = np.asarray(v, dtype=y.dtype)
    if a.size == 1 or a.shape == y.shape:
        return a
    return np.broadcast_to(a, y.shape)


def _elementwise(ufunc: np.ufunc, inputs: tuple[Any, ...]) -> Any:
    tape = _common_tape(inputs)
    vals = [_value(x) for x in inputs]
    y = np.asarray(ufunc(*vals))
    if y.dtype not in _DTYPE_CODE:
        y = y.astype(P.float_dtype(y))
    dt = y.dtype
    opi = _OP_INDEX[ufunc.__name__]
    a_id = _node_as(inputs[0], dt)
    b_id = _node_as(inputs[1], dt) if len(inputs) == 2 else -1
    if ufunc.__name__ in _LINEAR_UFUNCS:
        node = tape.elementwise(opi, y, a_id, None, b_id, None)
    else:
        a = _operand(vals[0], y)
        b = _operand(vals[1], y) if len(inputs) == 2 else None
        node = tape.elementwise(opi, y, a_id, a, b_id, b)
    out = Tracked(y, tape, node)
    return out


def _gather(xs: Sequence[Any], index_fn: Callable[..., Any]) -> Any:
    """Records ``y = index_fn(*xs)`` for an ``index_fn`` that only selects, moves or repeats
    elements: it is applied to arrays of element indices, and y is read through the result
    (:data:`gradtest._primitives.FILL` selects a constant 0)."""
    tape = _common_tape(xs)
    x0 = xs[0]
    dt = x0.value.dtype if len(xs) == 1 and isinstance(x0, Tracked) else P.float_dtype(*xs)
    ids, sizes, index_arrays, flats = [], [], [], []
    offset = 0
    for x in xs:
        v = x.value if isinstance(x, Tracked) and x.value.dtype == dt else np.asarray(_value(x), dtype=dt)
        ids.append(_node_as(x, dt))
        sizes.append(v.size)
        index_arrays.append(np.arange(offset, offset + v.size, dtype=np.intp).reshape(v.shape))
        flats.append(v.ravel())
        offset += v.size
    selected = index_fn(*index_arrays)
    # NumPy returns a view exactly when the selection is one: the index array says which
    view = len(xs) == 1 and isinstance(x0, Tracked) and np.may_share_memory(selected, index_arrays[0])
    # np.array, not ascontiguousarray, which turns the 0-d result of an integer index into 1-d
    idx = np.array(selected, dtype=np.intp, order="C")
    try:
        # the tape checks every index, so a FILL (negative) costs nothing where there is none
        node = tape.gather(_DTYPE_CODE[dt], idx, ids, sizes)
    except ValueError:
        fill = idx == P.FILL
        if not fill.any():
            raise
        zero = np.zeros(1, dtype=dt)
        ids.append(-1)
        sizes.append(1)
        flats.append(zero)
        idx = np.where(fill, offset, idx)
        node = tape.gather(_DTYPE_CODE[dt], idx, ids, sizes)
    flat = flats[0] if len(flats) == 1 else np.concatenate(flats)
    out = Tracked(np.asarray(flat[idx]), tape, node)
    if view:
        _note_view(x0, out)
    return out


def _reshape_node(x: Tracked, shape: tuple[int, ...]) -> Tracked:
    y = x.value.reshape(shape)
    out = Tracked(y, x.tape, x.tape.reshape(y.shape, x.node))
    _note_view(x, out)
    return out


def _reduce(x: Tracked, axes: tuple[int, ...], keepdims: bool, coef: float, w: np.ndarray | None,
            y: np.ndarray) -> Tracked:
    kshape = tuple(1 if i in axes else s for i, s in enumerate(x.shape))
    y = np.asarray(y, dtype=x.dtype)
    if keepdims:
        y = y.reshape(kshape)
    wbuf = None if w is None else np.ascontiguousarray(w, dtype=x.dtype)
    return Tracked(y, x.tape, x.tape.reduce(y.shape, kshape, x.node, float(coef), wbuf))


def _resolve_shape(a: Any, shape: Any) -> tuple[int, ...]:
    return np.empty(a.shape, dtype=np.bool_).reshape(shape).shape


def _broadcast_to(array: Tracked, shape: tuple[int, ...]) -> Tracked:
    y = np.ascontiguousarray(np.broadcast_to(array.value, shape))
    dt = array.value.dtype
    out = Tracked(y, array.tape, array.tape.linear(_DTYPE_CODE[dt], y.shape, (array.node,), (1.0,)))
    _note_view(array, out)
    return out


def _lift(x: Any) -> Any:
    return x if isinstance(x, Tracked) else np.asarray(x)


def _as_tracked_like(x: Any, dtype: np.dtype) -> Any:
    return _cast(x, dtype) if isinstance(x, Tracked) else np.asarray(x, dtype=dtype)


def _matmul(a: Any, b: Any) -> Any:
    a, b = _lift(a), _lift(b)
    _common_tape((a, b))  # raises for arrays of two tapes
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError("matmul: input operand does not have enough dimensions")
    dt = P.float_dtype(a, b)
    a = _as_tracked_like(a, dt)
    b = _as_tracked_like(b, dt)
    squeeze_a, squeeze_b = a.ndim == 1, b.ndim == 1
    if squeeze_a:
        a = _reshape_any(a, (1, a.shape[0]))
    if squeeze_b:
        b = _reshape_any(b, (b.shape[0], 1))
    m, k = a.shape[-2:]
    k2, n = b.shape[-2:]
    if k != k2:
        raise ValueError(f"matmul: mismatch in the contracted dimension ({k} != {k2}); shapes "
                         f"{_value(a).shape} and {_value(b).shape}")
    if b.ndim == 2 and a.ndim > 2:
        # (..., m, k) @ (k, n): one GEMM over the stacked rows
        lead = a.shape[:-2]
        y = _matmul_node(_reshape_any(a, (-1, k)), b, 1, int(np.prod(lead)) * m, k, n)
        y = _reshape_any(y, lead + (m, n))
    else:
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        if a.shape[:-2] != batch:
            a = _broadcast_any(a, batch + (m, k))
        if b.shape[:-2] != batch:
            b = _broadcast_any(b, batch + (k, n))
        y = _matmul_node(a, b, int(np.prod(batch)), m, k, n)
    if squeeze_a and squeeze_b:
        return _reshape_any(y, y.shape[:-2])
    if squeeze_a:
        return _reshape_any(y, y.shape[:-2] + (y.shape[-1],))
    if squeeze_b:
        return _reshape_any(y, y.shape[:-1])
    return y


def _reshape_any(x: Any, shape: tuple[int, ...]) -> Any:
    return _reshape_node(x, _resolve_shape(x, shape)) if isinstance(x, Tracked) else np.reshape(x, shape)


def _broadcast_any(x: Any, shape: tuple[int, ...]) -> Any:
    return _broadcast_to(x, shape) if isinstance(x, Tracked) else np.broadcast_to(x, shape)


def _matmul_node(a: Any, b: Any, batch: int, m: int, k: int, n: int) -> Any:
    tape = _common_tape((a, b))
    av, bv = np.ascontiguousarray(_value(a)), np.ascontiguousarray(_value(b))
    if tape is None:
        return np.matmul(av, bv)
    if av.dtype == bv.dtype and av.dtype in _DTYPE_CODE:
        # the core's GEMM, whose pool the sweep uses too: NumPy's pool, alternating with it,
        # made a gradient slower than with OPENBLAS_NUM_THREADS=1 (docs/performance.rst)
        y = _reverse.gemm(av, bv, batch, m, k, n).reshape(av.shape[:-2] + (m, n))
    else:
        y = np.matmul(av, bv)
    a_id = a.node if isinstance(a, Tracked) else -1
    b_id = b.node if isinstance(b, Tracked) else -1
    out = Tracked(y, tape, tape.matmul(y.shape, a_id, b_id, batch, m, k, n, av, bv))
    return out


_MULTIPLY = _OP_INDEX["multiply"]


def _second_order_error(name: str) -> NotImplementedError:
    return NotImplementedError(
        f"second order of {name} is not supported: its derivative is computed from values, "
        "not recorded as operations that can be differentiated again"
    )


# How many first-order scopes (see _first_order) this thread is inside: thread-local, as tapes
# are (each gradient computation records on its own tape, in one thread).
_SCOPE = threading.local()


@contextlib.contextmanager
def _first_order() -> Iterator[None]:
    """While order 2 is recorded: ``pointwise`` and ``linearized`` record their first order only
    (constant coefficients, zero curvature) instead of the trapezoid form. Used for the
    coefficients of that form, whose second derivative is multiplied by zero (see the comment
    above _ReverseEngine)."""
    _SCOPE.depth = getattr(_SCOPE, "depth", 0) + 1
    try:
        yield
    finally:
        _SCOPE.depth -= 1


def _order2(tape: Any) -> bool:
    """Whether a value-computed rule must record its second order here."""
    return tape.python_recording and not getattr(_SCOPE, "depth", 0)


def _deltas(inputs: Sequence[Any]) -> list[Any]:
    """x - x0 for each recorded input (exactly 0 in value, the identity in derivative), None for
    a constant."""
    return [x - x.value if isinstance(x, Tracked) else None for x in inputs]


def _trapezoid(first: Any, second: Any, value: np.ndarray) -> Any:
    """``value`` with the derivatives of ``(first + second) / 2``, in value's dtype."""
    both = first if second is None else (second if first is None else first + second)
    if not isinstance(both, Tracked):
        return value
    both = _cast(both * 0.5, value.dtype)
    if both.shape != value.shape:
        both = _broadcast_to(both, value.shape)
    return Tracked(value, both.tape, both.tape.reshape(value.shape, both.node))


# Order 2 of the rules whose derivative is computed from values (pointwise partials, the
# coefficients of a linearized JVP), in trapezoid form. With x0 the primal, d = x - x0 (recorded,
# exactly 0), J0 the rule's linear map with coefficients from x0 and J(x) the same map with its
# coefficients recomputed from the recorded inputs:
#     y = y0 (in value),   y ~ (J0 d + J(x) d) / 2 (in derivatives).
# At x0: dy = (J0 + J(x0)) / 2 = J0, and d2y[v, w] = (dJ[v] w + dJ[w] v) / 2 = d2y (the true
# second derivative is symmetric); the terms with J's second derivative are multiplied by d = 0.
# So J(x)'s coefficients need a correct first derivative only: they are computed in a first-order
# scope, where the rules they call (an inverse, digamma, ...) record their first order.


def _pointwise_first(tape: Any, value: np.ndarray, inputs: Sequence[Any],
                     partials: Sequence[Any]) -> Any:
    """``value`` with ``dy = sum_k partials[k] * dx_k``, the partials constants."""
    y = np.ascontiguousarray(value, dtype=P.float_dtype(value))
    dt = y.dtype
    nodes = []
    one = np.ones(1, dtype=dt)
    for x, p in zip(inputs, partials):
        if not isinstance(x, Tracked) or p is None:
            continue
        if np.broadcast_shapes(x.shape, y.shape) != y.shape:
            raise ValueError(f"pointwise: input of shape {x.shape} does not broadcast to {y.shape}")
        p = np.asarray(p, dtype=dt)
        # y_k = x * p as an elementwise multiply whose partial is the constant p: the op
        # table's chain rule then gives 0 where an infinite p meets a zero cotangent
        nodes.append(tape.elementwise(_MULTIPLY, y, _node_as(x, dt), one, -1, _operand(p, y)))
    if not nodes:
        return y
    node = nodes[0] if len(nodes) == 1 else tape.linear(_DTYPE_CODE[dt], y.shape, nodes,
                                                        [1.0] * len(nodes))
    return Tracked(y, tape, node)


def _apply_jvp(jvp: Callable[..., Any], inputs: Sequence[Any], tangents: Sequence[Any]) -> Any:
    """``jvp`` applied to the recorded ``tangents`` (zeros for a constant input, or where a
    tangent is None)."""
    args = [t if isinstance(t, Tracked) else np.zeros(np.shape(x), dtype=P.float_dtype(x))
            for x, t in zip(inputs, tangents)]
    # the jvp is linear: applied to recorded values it records exactly the linear map, whose sweep
    # is its transpose; the values it computes are unused
    with np.errstate(all="ignore"):
        return jvp(*args)


def _linear_outputs(tape: Any, vals: list[np.ndarray], r: Any, name: str) -> list[Any]:
    """Each output value with the derivative of the matching (recorded) jvp result."""
    outs = []
    for v, ri in zip(vals, r if len(vals) > 1 or isinstance(r, (tuple, list)) else (r,)):
        if isinstance(ri, Tracked):
            if ri.shape != v.shape:
                raise ValueError(f"{name}: the jvp gave shape {ri.shape}, expected {v.shape}")
            ri = _cast(ri, v.dtype)
            outs.append(Tracked(v, tape, tape.reshape(v.shape, ri.node)))
        else:
            outs.append(v)
    return outs


class _ReverseEngine:
    """The reverse implementation of :class:`gradtest._primitives.Engine` (docstrings there)."""

    mode = "reverse"
    array_type = Tracked

    def elementwise(self, ufunc: np.ufunc, *inputs: Any) -> Any:
        return _elementwise(ufunc, inputs)

    def pointwise(self, value: np.ndarray, inputs: Sequence[Any], partials: Sequence[Any],
                  name: str, constant: bool,
                  partials_of: Callable[..., Sequence[Any]] | None = None) -> Any:
        tape = _common_tape(inputs)
        if constant or not _order2(tape):
            return _pointwise_first(tape, value, inputs, partials)
        if partials_of is None:
            raise _second_order_error(name)
        y = np.ascontiguousarray(value, dtype=P.float_dtype(value))
        ds = _deltas(inputs)
        first = _pointwise_first(tape, y, [d if d is not None else x for d, x in zip(ds, inputs)],
                                 partials)
        with _first_order(), np.errstate(all="ignore"):
            parts = partials_of(*inputs)
        second = None
        with np.errstate(all="ignore"):
            for d, p, p0 in zip(ds, parts, partials):
                if d is None or p is None or p0 is None:
                    continue
                term = p * d
                second = term if second is None else second + term
        return _trapezoid(first, second, y)

    def linearized(self, value: Any, inputs: Sequence[Any],
                   jvp_of: Callable[[Sequence[Any], Any], Callable[..., Any]], name: str) -> Any:
        tape = _common_tape(inputs)
        multi = isinstance(value, (tuple, list))
        vals = []
        for v in value if multi else (value,):
            v = np.asarray(v)
            vals.append(v.astype(P.float_dtype(v), copy=False))
        jvp0 = jvp_of([_value(x) for x in inputs], tuple(vals) if multi else vals[0])
        if not _order2(tape):
            outs = _linear_outputs(tape, vals, _apply_jvp(jvp0, inputs, inputs), name)
            return tuple(outs) if multi else outs[0]
        with _first_order():
            recorded = _linear_outputs(tape, vals, _apply_jvp(jvp0, inputs, inputs), name)
            jvp = jvp_of(list(inputs), tuple(recorded) if multi else recorded[0])
        ds = _deltas(inputs)
        firsts = _apply_jvp(jvp0, inputs, ds)
        seconds = _apply_jvp(jvp, inputs, ds)
        outs = []
        for v, a, b in zip(vals, firsts if multi else (firsts,), seconds if multi else (seconds,)):
            outs.append(_trapezoid(a if isinstance(a, Tracked) else None,
                                   b if isinstance(b, Tracked) else None, v))
        return tuple(outs) if multi else outs[0]


    def records_second_order(self, inputs: Sequence[Any]) -> bool:
        return _order2(_common_tape(inputs))

    def gather(self, xs: Sequence[Any], index_fn: Callable[..., Any]) -> Any:
        return _gather(xs, index_fn)

    def reduce(self, x: Any, axes: tuple[int, ...], keepdims: bool, coef: float,
               weights: np.ndarray | None, value: np.ndarray | None) -> Any:
        if value is None:
            w = x.value if weights is None else x.value * weights
            value = np.sum(w, axis=axes, keepdims=keepdims) * coef
        return _reduce(x, axes, keepdims, coef, weights, value)

    def reshape(self, x: Any, shape: tuple[int, ...]) -> Any:
        return _reshape_node(x, shape)

    def cumsum(self, x: Any, axis: int) -> Any:
        last = axis == x.ndim - 1
        if not last:
            x = np.moveaxis(x, axis, -1)
        y = np.ascontiguousarray(np.cumsum(x.value, axis=-1))
        res = Tracked(y, x.tape, x.tape.cumsum(x.node))
        return res if last else np.moveaxis(res, -1, axis)

    def matmul(self, a: Any, b: Any) -> Any:
        return _matmul(a, b)

    def cast(self, x: Any, dtype: np.dtype) -> Any:
        return _cast(x, dtype)

    def with_value(self, x: Any, value: np.ndarray) -> Any:
        return Tracked(value, x.tape, x.tape.reshape(value.shape, x.node))


Tracked._engine = _ReverseEngine()


# ---------------------------------------------------------------------- entry points

def _seed_and_read(tape: Any, out: Any, cotangent: np.ndarray | None,
                   leaves: list[Tracked]) -> list[np.ndarray]:
    """Sweeps from ``out`` (a Tracked, or a constant: then every gradient is zero) and returns
    each leaf's adjoint, zeros where no gradient reached it."""
    if isinstance(out, Tracked):
        seed = np.ones(out.shape) if cotangent is None else np.asarray(cotangent, dtype=np.float64)
        if seed.size != out.size:
            raise ValueError(f"cotangent: expected shape {out.shape}, got {seed.shape}")
        tape.backward(out.node, seed)
    grads = []
    for leaf in leaves:
        # take the tape's buffer rather than a copy: a copy costs a pass and fresh pages
        g = tape.adjoint(leaf.node, True) if isinstance(out, Tracked) else None
        grads.append(np.zeros(leaf.shape, dtype=leaf.dtype) if g is None else g)
    return grads


def _compute(problem: Any) -> list[np.ndarray]:
    """The ``"reverse"`` backend: the gradient of ``problem.scalar_output`` by one sweep."""
    tape = Tape()
    try:
        leaves = [Tracked.leaf(tape, x) for x in problem.diff_leaves]
        out = problem.scalar_output(_for_f(leaves))
        if isinstance(out, Tracked) and out.size != 1:
            raise ValueError(f"f reduced to an array of shape {out.shape}, not a scalar")
        grads = _seed_and_read(tape, out, None, leaves)
        return [g.astype(x.dtype, copy=False) for g, x in zip(grads, problem.diff_leaves)]
    finally:
        tape.release()


def gradient_reverse(f: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    """The gradient of a scalar ``f`` with respect to every floating array in ``args``, by
    reverse mode.

    Parameters
    ----------
    f : callable
        Returns a real scalar (or a size-1 array).
    *args
        Positional arguments; floating NumPy arrays (inside any tree) are differentiated.
    **kwargs
        Passed to ``f`` unchanged.

    Returns
    -------
    tuple
        The argument tree with each differentiated array replaced by its gradient and every other
        leaf by None.
    """
    out, grads = vjp(lambda *a: f(*a, **kwargs), args, None)
    return grads


def vjp(f: Callable[..., Any], args: Sequence[Any], cotangent: Any) -> tuple[Any, tuple[Any, ...]]:
    """The vector-Jacobian product ``J(args)^T cotangent`` of ``f`` by one reverse sweep.

    Parameters
    ----------
    f : callable
        The function; its floating NumPy array arguments (inside any tree of tuples, lists, dicts
        or dataclasses) are differentiated, everything else is passed unchanged.
    args : sequence
        Positional arguments of ``f``.
    cotangent : array_like, tree of arrays, or None
        With the structure and shapes of ``f``'s output; None for a scalar output (taken as 1).

    Returns
    -------
    output : Any
        ``f(*args)`` with plain NumPy values.
    vjp : tuple
        The argument tree with each differentiated array replaced by its VJP (zeros when the
        output does not depend on it) and every other leaf by None.

    Raises
    ------
    ValueError
        If the cotangent's structure or shapes do not match the output.

    Examples
    --------
    >>> import numpy as np
    >>> from gradtest.reverse import vjp
    >>> out, (gx,) = vjp(lambda x: np.sin(x) * 2, (np.zeros(2),), np.ones(2))
    >>> gx
    array([2., 2.])
    """
    if not isinstance(args, (tuple, list)):
        raise TypeError(f"args: expected a tuple of positional arguments, got {type(args).__name__}")
    flat = flatten_args(tuple(args))
    tape = Tape()
    try:
        leaves = [Tracked.leaf(tape, flat.leaves[i]) for i in flat.differentiable]
        with building_arrays():
            out = f(*flat.call_args(dict(zip(flat.differentiable, _for_f(leaves)))))
        outs = output_leaves(out)
        primal = _private(_strip(out), [flat.leaves[i] for i in flat.differentiable])
        if cotangent is None:
            if len(outs) != 1 or np.size(_value(outs[0])) != 1:
                raise ValueError("cotangent: required for a non-scalar output")
            cots = [np.ones(np.shape(_value(outs[0])))]
        else:
            cots = output_leaves(cotangent)
        if len(cots) != len(outs):
            raise ValueError(f"cotangent: expected {len(outs)} arrays (f's outputs), got {len(cots)}")
        for u, o in zip(cots, outs):
            if np.shape(u) != np.shape(_value(o)):
                raise ValueError(f"cotangent: expected shape {np.shape(_value(o))}, got {np.shape(u)}")
        tracked = [(u, o) for u, o in zip(cots, outs) if isinstance(o, Tracked)]
        if len(tracked) == 1:
            target, seed = tracked[0][1], tracked[0][0]
        elif tracked:
            total = sum(np.sum(np.multiply(np.asarray(u, dtype=o.dtype), o)) for u, o in tracked)
            target, seed = total, None
        else:
            target, seed = None, None
        grads = _seed_and_read(tape, target, seed, leaves)
        grads = [g.astype(flat.leaves[i].dtype, copy=False) for g, i in zip(grads, flat.differentiable)]
        return primal, flat.gradient_tree(grads)
    finally:
        tape.release()


def _strip(out: Any) -> Any:
    if isinstance(out, Tracked):  # the common case, without the tree walk
        return out.value
    from ._tree import tree_map_outputs

    return tree_map_outputs(lambda x: x.value if isinstance(x, Tracked) else x, out)


def _private(primal: Any, inputs: Sequence[Any]) -> Any:
    """``primal`` with every array that may share memory with one of ``inputs`` (the caller's
    arrays, which leaves view rather than copy) replaced by a writeable copy, so that a result
    neither aliases an argument nor is read-only (``f = lambda x: x`` or ``x.reshape(...)``)."""
    from ._tree import tree_map_outputs

    arrays = [a for a in inputs if isinstance(a, np.ndarray)]
    if not arrays:
        return primal

    def own(v: Any) -> Any:
        if not isinstance(v, np.ndarray):
            return v
        flags = v.flags
        if flags.owndata and flags.writeable:  # its own memory: it cannot alias an argument
            return v
        if not flags.writeable or any(np.may_share_memory(v, a) for a in arrays):
            return v.copy()
        return v

    return own(primal) if isinstance(primal, np.ndarray) else tree_map_outputs(own, primal)


# ---------------------------------------------------------------------- order 2
#
# Hessian-vector products by reverse over reverse, in C. The tape records its own backward sweep
# (``Tape.backward_graph``, as PyTorch's create_graph=True does): every VJP becomes nodes on the same
# tape, the elementwise ones through the second partials of the C op table, so each leaf's gradient
# g(x) is a node, and one ordinary sweep from <g(x), v> gives H v. No derivative rule is restated
# here. While order 2 is recorded, ``tape.python_recording`` is set, and the primitives whose
# partials come from values (``pointwise`` with non-constant partials, ``linearized``) record the
# trapezoid form (above _ReverseEngine); a ``pointwise`` without ``partials_of`` refuses.


def hvp(f: Callable[..., Any], args: Sequence[Any], tangents: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """Gradient and Hessian-vector product of a scalar ``f`` by reverse over reverse.

    Parameters
    ----------
    f : callable
        Returns a real scalar (or a size-1 array).
    args : sequence
        Positional arguments; floating NumPy arrays (inside any tree) are differentiated.
    tangents : tree
        The vector v: the argument tree's structure, with an array of each differentiated leaf's
        shape in its place (anything, e.g. None, elsewhere).

    Returns
    -------
    gradient, hvp : tuple
        Argument trees with each differentiated array replaced by its gradient, respectively by
        its block of ``H v``, and every other leaf by None.

    Raises
    ------
    NotImplementedError
        For functions reverse mode does not support, and for those it supports at first order
        only (the message names the function).

    Examples
    --------
    >>> import numpy as np
    >>> from gradtest.reverse import hvp
    >>> (g,), (hv,) = hvp(lambda x: np.sum(x ** 3), (np.array([1.0, 2.0]),), (np.ones(2),))
    >>> hv
    array([ 6., 12.])
    """
    from ._tree import flatten_like

    if not isinstance(args, (tuple, list)):
        raise TypeError(f"args: expected a tuple of positional arguments, got {type(args).__name__}")
    flat = flatten_args(tuple(args))
    vs = flatten_like(flat, tangents, "tangents")
    vs = [np.asarray(vs[i], dtype=np.float64) for i in flat.differentiable]
    for v, i in zip(vs, flat.differentiable):
        if v.shape != flat.leaves[i].shape:
            raise ValueError(f"tangents: expected shape {flat.leaves[i].shape} for {flat.paths[i]}, "
                             f"got {v.shape}")
    grads, hvs = _hvp_core(lambda leaves: f(*flat.call_args(dict(zip(flat.differentiable, leaves)))),
                           [flat.leaves[i] for i in flat.differentiable], vs)
    return flat.gradient_tree(grads), flat.gradient_tree(hvs)


def compute_hvp(problem: Any, tangents: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The ``"reverse"`` backend at order 2: gradient and Hessian-vector product of
    ``problem.scalar_output`` (the scalar :func:`gradtest.check_gradients` checks).

    Parameters
    ----------
    problem : gradtest.GradientProblem
        The problem, as given to backends.
    tangents : sequence of numpy.ndarray
        v, one array per differentiated leaf, with its shape.

    Returns
    -------
    gradient, hvp : list of numpy.ndarray
        One float64 array per differentiated leaf each.
    """
    leaves = problem.diff_leaves
    vs = [np.asarray(v, dtype=np.float64) for v in tangents]
    if len(vs) != len(leaves) or any(v.shape != x.shape for v, x in zip(vs, leaves)):
        raise ValueError("tangents: expected one array per differentiated leaf, with its shape")
    return _hvp_core(problem.scalar_output, leaves, vs)


def _hvp_core(scalar_fn: Callable[[list[Tracked]], Any], values: list[np.ndarray],
              vs: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Records scalar_fn on Tracked leaves holding ``values``, records its backward sweep on the
    same tape, and sweeps from <g, v>."""
    tape = Tape()
    tape.python_recording = True
    try:
        leaves = [Tracked.leaf(tape, x) for x in values]
        with building_arrays():
            out = scalar_fn(_for_f(leaves))
        if not isinstance(out, Tracked):
            return [np.zeros(x.shape) for x in leaves], [np.zeros(x.shape) for x in leaves]
        if out.size != 1:
            raise ValueError(f"f returned an array of shape {out.shape}; hvp needs a scalar")
        try:
            entries = tape.backward_graph(out.node, np.ones(out.shape), [x.node for x in leaves])
        except ValueError as exc:
            raise NotImplementedError(
                "order 2 (a Hessian-vector product) is not supported for this function: its tape "
                "holds a node whose backward sweep cannot be recorded (a node of an earlier "
                f"recorded sweep: third order; {exc})"
            ) from None
        tape.python_recording = False  # what follows is swept once, not differentiated again
        grads = [None if e is None else Tracked(e[1], tape, e[0]) for e in entries]
        inner = [np.sum(g * v.astype(g.dtype)) for g, v in zip(grads, vs) if g is not None]
        total = inner[0] if inner else None
        for term in inner[1:]:
            total = total + term
        hv = _seed_and_read(tape, total, None, leaves)
        first = [np.zeros(x.shape) if g is None else np.array(g.value, dtype=np.float64)
                 for g, x in zip(grads, leaves)]
        return first, [h.astype(np.float64) for h in hv]
    finally:
        tape.release()

_reverse.set_tracked_type(Tracked)

register_backend(
    "reverse",
    _compute,
    default=True,
    description="reverse mode: the NumPy code recorded on a tape and swept backwards in C",
    hvp=lambda problem, tangents: compute_hvp(problem, tangents)[1],
)
