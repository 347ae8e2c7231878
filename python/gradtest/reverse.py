"""Reverse mode: :class:`Tracked` arrays record the user's unchanged NumPy code onto a tape held in
C (``gradtest._reverse.Tape``), which is swept backwards in C.

How the NumPy surface maps onto the tape's few node kinds:

- elementwise ufuncs of the op table record one ``elementwise`` node; the sweep computes the
  local partials from the shared op table (``gt_op_partials_f64/f32``) block by block and
  multiplies them into the output adjoint;
- every function that only moves elements (indexing, transpose, flip, tile, repeat, concatenate,
  stack, where, sort, diagonal, ...) is recorded as one ``gather`` node: the same NumPy function is
  applied to an array of element *indices*, and the VJP is a scatter-add of the output adjoint into
  those indices (``np.add.at`` semantics, so repeated indices add up);
- sum/mean/prod/max/min record a ``reduce`` node (the latter three with local weights computed
  once from the values); var, std, norm, tensordot, einsum, dot, inner and outer are compositions
  of the primitives, so they need no rule of their own;
- matmul records a ``matmul`` node whose VJPs are BLAS GEMM calls.

Broadcasting is never handled by a rule: the C sweep sums every contribution back to its input's
shape in one routine. Nothing in the sweep calls back into Python.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import _reverse
from ._arraylike import ArrayLike, public_name
from ._rules import extreme_weights as _extreme_weights, var_scale
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

# Ufuncs whose result is piecewise constant or not a float: they return plain NumPy values.
_NONDIFFERENTIABLE_UFUNCS = frozenset({
    "equal", "not_equal", "less", "less_equal", "greater", "greater_equal",
    "logical_and", "logical_or", "logical_xor", "logical_not", "isnan", "isinf", "isfinite",
    "signbit", "floor", "ceil", "trunc", "rint", "floor_divide", "bitwise_and", "bitwise_or",
    "bitwise_xor", "invert", "isnat", "spacing", "sign",
})


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
    from different tapes cannot be mixed. In-place operations (``out=``, item assignment) are
    refused because they would change values the tape has saved.
    """

    __slots__ = ("value", "tape", "node")

    def __init__(self, value: np.ndarray, tape: Any, node: int) -> None:
        self.value = value
        self.tape = tape
        self.node = node

    @classmethod
    def leaf(cls, tape: Any, value: Any) -> Tracked:
        """A new input on ``tape`` holding a copy of ``value`` (float16 is computed in float32).

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
            if arr.dtype == np.float16 or not np.issubdtype(arr.dtype, np.floating):
                arr = arr.astype(np.float32 if arr.dtype == np.float16 else np.float64)
            else:
                raise TypeError(f"value: expected a float32 or float64 array, got {arr.dtype}")
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
        return _array_ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func: Callable, types: Any, args: Any, kwargs: Any) -> Any:
        handler = _FUNCTIONS.get(func)
        if handler is None:
            raise NotImplementedError(
                f"gradtest's reverse mode does not support {public_name(func)}"
            )
        return handler(*args, **kwargs)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, Tracked) or (isinstance(key, tuple) and any(isinstance(k, Tracked) for k in key)):
            raise TypeError("indexing with a Tracked array is not supported; index with integers")
        return _gather([self], lambda ix: ix[key])

    def __setitem__(self, key: Any, value: Any) -> None:
        raise NotImplementedError(
            "item assignment on a Tracked array is not supported (it would change a value the tape "
            "has saved); build the array with numpy.where, concatenate or stack instead"
        )

    def astype(self, dtype: Any, copy: bool = True) -> Any:
        """The array converted to ``dtype``; floating targets stay on the tape."""
        dtype = np.dtype(dtype)
        if dtype in _DTYPE_CODE:
            return _cast(self, dtype)
        return self.value.astype(dtype)

    def copy(self) -> Tracked:
        return self


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


def _array_ufunc(ufunc: np.ufunc, method: str, inputs: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The general path of Tracked.__array_ufunc__: casts, broadcasting, reductions, errors."""
    if kwargs.get("out") is not None:
        raise NotImplementedError(
            f"numpy.{ufunc.__name__} with out=: in-place operations on Tracked arrays are not "
            "supported (they would overwrite values the tape has saved)"
        )
    name = ufunc.__name__
    if method != "__call__":
        return _ufunc_method(ufunc, method, inputs, kwargs)
    if kwargs:
        kwargs = {k: v for k, v in kwargs.items() if not (k == "out" and v is None)}
        if any(k not in ("dtype", "casting") for k in kwargs):
            raise NotImplementedError(
                f"numpy.{name} with {', '.join(sorted(kwargs))}= is not supported on Tracked arrays"
            )
    opi = _OP_INDEX.get(name)
    if opi is not None and name != "sign":
        return _elementwise(ufunc, opi, inputs)
    if name in _NONDIFFERENTIABLE_UFUNCS:
        return ufunc(*[_value(x) for x in inputs], **kwargs)
    if name == "matmul":
        return _matmul(*inputs)
    # ufuncs that are compositions of table ops
    if name in ("deg2rad", "radians"):
        return np.multiply(inputs[0], np.pi / 180.0)
    if name in ("rad2deg", "degrees"):
        return np.multiply(inputs[0], 180.0 / np.pi)
    if name == "fabs":
        return np.abs(inputs[0])
    if name == "float_power":
        a, b = (_cast(x, np.dtype(np.float64)) if isinstance(x, Tracked) else np.asarray(x, np.float64)
                for x in inputs)
        return np.power(a, b)
    if name == "conjugate":
        return inputs[0]
    raise NotImplementedError(f"gradtest's reverse mode does not support {public_name(ufunc)}")


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


def _float_dtype(*values: Any) -> np.dtype:
    dt = np.result_type(*[v.dtype if isinstance(v, np.ndarray) else v for v in values])
    if dt not in _DTYPE_CODE:
        dt = np.dtype(np.float32) if dt == np.float16 else np.dtype(np.float64)
    return dt


def _operand(v: Any, y: np.ndarray) -> np.ndarray:
    """v in y's dtype, either of size 1 or broadcast to y's shape (the tape makes it contiguous)."""
    a = np.asarray(v, dtype=y.dtype)
    if a.size == 1 or a.shape == y.shape:
        return a
    return np.broadcast_to(a, y.shape)


def _elementwise(ufunc: np.ufunc, opi: int, inputs: tuple[Any, ...]) -> Any:
    tape = _common_tape(inputs)
    vals = [_value(x) for x in inputs]
    y = np.asarray(ufunc(*vals))
    if y.dtype not in _DTYPE_CODE:
        y = y.astype(_float_dtype(y))
    dt = y.dtype
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


def _ufunc_method(ufunc: np.ufunc, method: str, inputs: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    name = ufunc.__name__
    axis = kwargs.get("axis", 0)
    keepdims = kwargs.get("keepdims", False)
    if method == "reduce" and name in ("add", "multiply", "maximum", "minimum"):
        fn = {"add": np.sum, "multiply": np.prod, "maximum": np.max, "minimum": np.min}[name]
        return fn(inputs[0], axis=axis, keepdims=keepdims)
    if method == "accumulate" and name in ("add", "multiply"):
        return (np.cumsum if name == "add" else np.cumprod)(inputs[0], axis=axis)
    raise NotImplementedError(f"gradtest's reverse mode does not support {public_name(ufunc, method)}")


def _as_tracked_like(x: Any, dtype: np.dtype) -> Any:
    return _cast(x, dtype) if isinstance(x, Tracked) else np.asarray(x, dtype=dtype)


def _gather(xs: Sequence[Any], index_fn: Callable[..., Any]) -> Any:
    """Records ``y = index_fn(*xs)`` for an ``index_fn`` that only selects, moves or repeats
    elements: it is applied to arrays of element indices, and y is read through the result."""
    tape = _common_tape(xs)
    vals = [np.asarray(_value(x)) for x in xs]
    dt = _float_dtype(*vals)
    ids, sizes, index_arrays, flats = [], [], [], []
    offset = 0
    for x, v in zip(xs, vals):
        ids.append(_node_as(x, dt))
        sizes.append(v.size)
        index_arrays.append(np.arange(offset, offset + v.size, dtype=np.intp).reshape(v.shape))
        flats.append(v.astype(dt, copy=False).ravel())
        offset += v.size
    # np.array, not ascontiguousarray, which turns the 0-d result of an integer index into 1-d
    idx = np.array(index_fn(*index_arrays), dtype=np.intp, order="C")
    flat = flats[0] if len(flats) == 1 else np.concatenate(flats)
    y = np.asarray(flat[idx])
    if tape is None:
        return y
    out = Tracked(y, tape, tape.gather(_DTYPE_CODE[dt], idx, ids, sizes))
    return out


def _reshape_node(x: Tracked, shape: tuple[int, ...]) -> Tracked:
    y = x.value.reshape(shape)
    out = Tracked(y, x.tape, x.tape.reshape(y.shape, x.node))
    return out


def _normalize_axes(axis: Any, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    for a in axes:
        a = operator.index(a)
        if not -ndim <= a < ndim:
            raise np.exceptions.AxisError(a, ndim)
        out.append(a % ndim)
    return tuple(out)


def _reduce(x: Tracked, axis: Any, keepdims: bool, coef: float, w: np.ndarray | None,
            y: np.ndarray) -> Tracked:
    axes = _normalize_axes(axis, x.ndim)
    kshape = tuple(1 if i in axes else s for i, s in enumerate(x.shape))
    y = np.asarray(y, dtype=x.dtype)
    if keepdims:
        y = y.reshape(kshape)
    wbuf = None if w is None else np.ascontiguousarray(w, dtype=x.dtype)
    out = Tracked(y, x.tape, x.tape.reduce(y.shape, kshape, x.node, float(coef), wbuf))
    return out


def _check_reduce_kwargs(name: str, kw: dict[str, Any]) -> None:
    extra = {k: v for k, v in kw.items() if v is not None and k not in ("dtype",)}
    if extra:
        raise NotImplementedError(
            f"numpy.{name} with {', '.join(sorted(extra))}= is not supported on Tracked arrays"
        )


def _lift(x: Any) -> Any:
    """A Tracked stays; a constant becomes an ndarray."""
    return x if isinstance(x, Tracked) else np.asarray(x)


# ---------------------------------------------------------------------- reductions

def _sum(a: Any, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False,
         initial: Any = None, where: Any = None) -> Any:
    _check_reduce_kwargs("sum", {"out": out, "initial": initial, "where": where})
    if not isinstance(a, Tracked):
        return np.sum(np.asarray(a), axis=axis, keepdims=keepdims)
    return _reduce(a, axis, keepdims, 1.0, None, np.sum(a.value, axis=axis, keepdims=keepdims))


def _mean(a: Any, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False,
          where: Any = None) -> Any:
    _check_reduce_kwargs("mean", {"out": out, "where": where})
    y = np.mean(a.value, axis=axis, keepdims=keepdims)
    count = a.size // max(np.size(y), 1) if np.size(y) else 0
    return _reduce(a, axis, keepdims, 1.0 / count if count else np.nan, None, y)


def _exclusive_products(v: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """prod over `axes` of all elements but the one at each position (exact with zeros)."""
    moved = np.moveaxis(v, axes, tuple(range(v.ndim - len(axes), v.ndim)))
    lead = moved.shape[: v.ndim - len(axes)]
    line = moved.reshape(lead + (-1,))
    ones = np.ones(lead + (1,), dtype=v.dtype)
    left = np.cumprod(np.concatenate([ones, line[..., :-1]], axis=-1), axis=-1)
    right = np.cumprod(np.concatenate([ones, line[..., :0:-1]], axis=-1), axis=-1)[..., ::-1]
    w = (left * right).reshape(moved.shape)
    return np.moveaxis(w, tuple(range(v.ndim - len(axes), v.ndim)), axes)


def _prod(a: Any, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False,
          initial: Any = None, where: Any = None) -> Any:
    _check_reduce_kwargs("prod", {"out": out, "initial": initial, "where": where})
    axes = _normalize_axes(axis, a.ndim)
    if a.tape.python_recording:
        return _prod_by_multiplies(a, axes, keepdims)
    w = _exclusive_products(a.value, axes) if axes and a.size else None
    return _reduce(a, axis, keepdims, 1.0, w, np.prod(a.value, axis=axis, keepdims=keepdims))


def _extremum(fn: Callable, name: str) -> Callable:
    def handler(a: Any, axis: Any = None, out: Any = None, keepdims: bool = False,
                initial: Any = None, where: Any = None) -> Any:
        _check_reduce_kwargs(name, {"out": out, "where": where})
        extra = {} if initial is None else {"initial": initial}
        axes = _normalize_axes(axis, a.ndim)
        y = fn(a.value, axis=axes, keepdims=True, **extra)
        w = _extreme_weights(a.value, y, axes)
        return _reduce(a, axes, keepdims, 1.0, w, fn(a.value, axis=axes, keepdims=keepdims, **extra))
    return handler


def _var(a: Any, axis: Any = None, dtype: Any = None, out: Any = None, ddof: float = 0,
         keepdims: bool = False, where: Any = None, mean: Any = None, correction: Any = None,
         _value_fn: Callable[..., Any] = np.var) -> Any:
    _check_reduce_kwargs("var", {"out": out, "where": where, "mean": mean})
    if correction is not None:
        ddof = correction
    axes = _normalize_axes(axis, a.ndim)
    m = np.mean(a, axis=axes, keepdims=True)
    d = a - m
    n = int(np.prod([a.shape[i] for i in axes]))
    y = _value_fn(a.value, axis=axes, ddof=ddof, keepdims=keepdims)  # NumPy's value, bit for bit
    return _reduce(d * d, axes, keepdims, var_scale(n, ddof), None, y)


def _std(a: Any, axis: Any = None, dtype: Any = None, out: Any = None, ddof: float = 0,
         keepdims: bool = False, where: Any = None, mean: Any = None, correction: Any = None) -> Any:
    axes = _normalize_axes(axis, a.ndim)
    count = int(np.prod([a.shape[i] for i in axes]))
    if not np.isfinite(var_scale(count, ddof if correction is None else correction)):
        # ddof >= n: the derivative stays var's NaN (sqrt'(inf) = 0 would hide it)
        return _var(a, axes, out=out, ddof=ddof, keepdims=keepdims, where=where, mean=mean,
                    correction=correction, _value_fn=np.std)
    return np.sqrt(_var(a, axis=axes, out=out, ddof=ddof, keepdims=keepdims, where=where,
                        mean=mean, correction=correction))


def _cumulative(kind: str) -> Callable:
    def handler(a: Any, axis: Any = None, dtype: Any = None, out: Any = None) -> Any:
        _check_reduce_kwargs("cum" + kind, {"out": out})
        x = a
        if axis is None:
            x, axis = np.ravel(x), 0
        if x.ndim == 0:
            x = _reshape_node(x, (1,))
        axis = _normalize_axes(axis, x.ndim)[0]
        last = axis == x.ndim - 1
        if not last:
            x = np.moveaxis(x, axis, -1)
        if kind == "prod" and x.tape.python_recording:
            res = _cumprod_by_multiplies(x)
            return res if last else np.moveaxis(res, -1, axis)
        fn = np.cumsum if kind == "sum" else np.cumprod
        y = np.ascontiguousarray(fn(x.value, axis=-1))
        xv = None if kind == "sum" else np.ascontiguousarray(x.value)
        res = Tracked(y, x.tape, x.tape.cumulative(kind, x.node, xv, None if kind == "sum" else y))
        return res if last else np.moveaxis(res, -1, axis)
    return handler


# ---------------------------------------------------------------------- shape operations

def _reshape(a: Any, *args: Any, **kwargs: Any) -> Any:
    shape = args[0] if args else kwargs.pop("newshape", kwargs.pop("shape", None))
    order = kwargs.pop("order", "C")
    if order != "C":
        return _gather([a], lambda ix: np.reshape(ix, shape, order=order))
    return _reshape_node(a, np.shape(np.empty(0)) if shape is None else _resolve_shape(a, shape))


def _resolve_shape(a: Any, shape: Any) -> tuple[int, ...]:
    return np.empty(a.shape, dtype=np.bool_).reshape(shape).shape


def _ravel(a: Any, order: str = "C") -> Any:
    if order != "C":
        return _gather([a], lambda ix: np.ravel(ix, order=order))
    return _reshape_node(a, (a.size,))


def _expand_dims(a: Any, axis: Any) -> Any:
    return _reshape_node(a, np.expand_dims(np.empty(a.shape, dtype=np.bool_), axis).shape)


def _squeeze(a: Any, axis: Any = None) -> Any:
    return _reshape_node(a, np.squeeze(np.empty(a.shape, dtype=np.bool_), axis).shape)


def _broadcast_to(array: Any, shape: Any, subok: bool = False) -> Any:
    shape = tuple(np.broadcast_shapes(np.shape(array.value), tuple(np.atleast_1d(shape))))
    y = np.ascontiguousarray(np.broadcast_to(array.value, shape))
    dt = array.value.dtype
    out = Tracked(y, array.tape, array.tape.linear(_DTYPE_CODE[dt], y.shape, (array.node,), (1.0,)))
    return out


def _moves(fn: Callable) -> Callable:
    """Handler for a function of one array that only moves elements."""
    def handler(a: Any, *args: Any, **kwargs: Any) -> Any:
        return _gather([_lift(a)], lambda ix: fn(ix, *args, **kwargs))
    return handler


def _moves_many(fn: Callable) -> Callable:
    """Handler for a function of a sequence of arrays that only moves elements."""
    def handler(arrays: Any, *args: Any, **kwargs: Any) -> Any:
        arrays = [_lift(x) for x in arrays]
        return _gather(arrays, lambda *ix: fn(list(ix), *args, **kwargs))
    return handler


def _where(condition: Any, x: Any = None, y: Any = None) -> Any:
    if x is None and y is None:
        return np.where(_value(condition))
    cond = np.asarray(_value(condition), dtype=bool)
    return _gather([_lift(x), _lift(y)], lambda ia, ib: np.where(cond, ia, ib))


def _with_zero(a: Any, fn: Callable[[np.ndarray, int], np.ndarray]) -> Any:
    """A gather whose output also has structural zeros: a constant 0 is appended as a second input
    and ``fn(indices, zero_index)`` selects it where the output is 0."""
    return _gather([_lift(a), np.zeros(1, dtype=_value(a).dtype)],
                   lambda ix, iz: fn(ix, int(iz[0])))


def _tri(fn: Callable) -> Callable:
    def handler(m: Any, k: int = 0) -> Any:
        def select(ix: np.ndarray, zero: int) -> np.ndarray:
            keep = fn(np.ones(ix.shape, dtype=bool), k)
            return np.where(keep, ix, zero)
        return _with_zero(m, select)
    return handler


def _diag(v: Any, k: int = 0) -> Any:
    if np.ndim(_value(v)) != 1:
        return _gather([_lift(v)], lambda ix: np.diag(ix, k))
    def select(ix: np.ndarray, zero: int) -> np.ndarray:
        out = np.full((ix.size + abs(k),) * 2, zero, dtype=np.intp)
        out[np.diag_indices_from(out)[0][: ix.size] + max(-k, 0),
            np.diag_indices_from(out)[1][: ix.size] + max(k, 0)] = ix
        return out
    return _with_zero(v, select)


def _sort(a: Any, axis: int = -1, kind: Any = None, order: Any = None, **kw: Any) -> Any:
    if axis is None:
        a, axis = np.ravel(a), -1
    perm = np.argsort(_value(a), axis=axis, kind=kind)
    return _gather([_lift(a)], lambda ix: np.take_along_axis(ix, perm, axis=axis))


def _take_along_axis(arr: Any, indices: Any, axis: Any = -1) -> Any:
    if axis is None:
        arr, axis = np.ravel(arr), 0
    return _gather([_lift(arr)], lambda ix: np.take_along_axis(ix, np.asarray(indices), axis))


def _broadcast_arrays(*args: Any, subok: bool = False) -> tuple[Any, ...]:
    shape = np.broadcast_shapes(*[np.shape(_value(a)) for a in args])
    return tuple(_broadcast_to(a, shape) if isinstance(a, Tracked) else np.broadcast_to(a, shape)
                 for a in args)


def _diff(a: Any, n: int = 1, axis: int = -1, prepend: Any = np._NoValue, append: Any = np._NoValue) -> Any:
    a = _lift(a)
    axis = _normalize_axes(axis, a.ndim)[0]
    parts = []
    for extra, where in ((prepend, 0), (append, 1)):
        if extra is not np._NoValue:
            e = _lift(extra)
            if np.ndim(_value(e)) == 0:
                shape = list(a.shape)
                shape[axis] = 1
                e = np.broadcast_to(e, tuple(shape))
            parts.append((where, e))
    if parts:
        a = np.concatenate([e for w, e in parts if w == 0] + [a] + [e for w, e in parts if w == 1], axis=axis)
    for _ in range(n):
        hi = [slice(None)] * a.ndim
        lo = [slice(None)] * a.ndim
        hi[axis], lo[axis] = slice(1, None), slice(None, -1)
        a = a[tuple(hi)] - a[tuple(lo)]
    return a


def _copy(a: Any, *args: Any, **kwargs: Any) -> Any:
    return a


def _plain(fn: Callable) -> Callable:
    """Handler for a non-differentiable function: it runs on the primal values."""
    def handler(*args: Any, **kwargs: Any) -> Any:
        args = tuple([_value(x) for x in a] if isinstance(a, (list, tuple)) else _value(a) for a in args)
        return fn(*args, **{k: _value(v) for k, v in kwargs.items()})
    return handler


def _clip(a: Any, a_min: Any = None, a_max: Any = None, out: Any = None, **kwargs: Any) -> Any:
    _check_reduce_kwargs("clip", {"out": out})
    a_min = kwargs.pop("min", a_min)
    a_max = kwargs.pop("max", a_max)
    y = a
    if a_min is not None:
        y = np.maximum(y, a_min)
    if a_max is not None:
        y = np.minimum(y, a_max)
    return y


# ---------------------------------------------------------------------- linear algebra

def _matmul(a: Any, b: Any, **kwargs: Any) -> Any:
    if kwargs:
        raise NotImplementedError(f"numpy.matmul with {', '.join(sorted(kwargs))}= is not supported")
    a, b = _lift(a), _lift(b)
    _common_tape((a, b))  # raises for arrays of two tapes
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError("matmul: input operand does not have enough dimensions")
    dt = _float_dtype(_value(a), _value(b))
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
    y = np.matmul(av, bv)
    if tape is None:
        return y
    a_id = a.node if isinstance(a, Tracked) else -1
    b_id = b.node if isinstance(b, Tracked) else -1
    out = Tracked(y, tape, tape.matmul(y.shape, a_id, b_id, batch, m, k, n, av, bv))
    return out


def _tensordot(a: Any, b: Any, axes: Any = 2) -> Any:
    a, b = _lift(a), _lift(b)
    if isinstance(axes, (int, np.integer)):
        axes_a = list(range(a.ndim - axes, a.ndim))
        axes_b = list(range(axes))
    else:
        axes_a, axes_b = axes
        axes_a = [axes_a] if isinstance(axes_a, (int, np.integer)) else list(axes_a)
        axes_b = [axes_b] if isinstance(axes_b, (int, np.integer)) else list(axes_b)
    axes_a = [x % a.ndim for x in axes_a]
    axes_b = [x % b.ndim for x in axes_b]
    if len(axes_a) != len(axes_b) or any(a.shape[i] != b.shape[j] for i, j in zip(axes_a, axes_b)):
        raise ValueError("tensordot: shape-mismatch for sum")
    free_a = [i for i in range(a.ndim) if i not in axes_a]
    free_b = [i for i in range(b.ndim) if i not in axes_b]
    K = int(np.prod([a.shape[i] for i in axes_a]))
    out_shape = tuple(a.shape[i] for i in free_a) + tuple(b.shape[i] for i in free_b)
    at = _transpose_any(a, free_a + axes_a)
    bt = _transpose_any(b, axes_b + free_b)
    # explicit sizes, not -1, which cannot be resolved for a zero-size operand
    M = int(np.prod([a.shape[i] for i in free_a]))
    N = int(np.prod([b.shape[i] for i in free_b]))
    y = np.matmul(_reshape_any(at, (M, K)), _reshape_any(bt, (K, N)))
    return _reshape_any(y, out_shape)


def _transpose_any(x: Any, axes: list[int]) -> Any:
    if axes == list(range(len(axes))):
        return x
    return np.transpose(x, axes)


def _dot(a: Any, b: Any, out: Any = None) -> Any:
    _check_reduce_kwargs("dot", {"out": out})
    a, b = _lift(a), _lift(b)
    if a.ndim == 0 or b.ndim == 0:
        return np.multiply(a, b)
    if b.ndim <= 2:
        return np.matmul(a, b)
    return _tensordot(a, b, axes=([a.ndim - 1], [b.ndim - 2]))


def _inner(a: Any, b: Any) -> Any:
    a, b = _lift(a), _lift(b)
    if a.ndim == 0 or b.ndim == 0:
        return np.multiply(a, b)
    return _tensordot(a, b, axes=([a.ndim - 1], [b.ndim - 1]))


def _outer(a: Any, b: Any, out: Any = None) -> Any:
    _check_reduce_kwargs("outer", {"out": out})
    a, b = _lift(a), _lift(b)
    return np.multiply(_reshape_any(a, (-1, 1)), _reshape_any(b, (1, -1)))


def _vdot(a: Any, b: Any) -> Any:
    return np.sum(np.multiply(np.ravel(a), np.ravel(b)))


def _einsum(*operands: Any, out: Any = None, optimize: Any = False, **kwargs: Any) -> Any:
    _check_reduce_kwargs("einsum", {"out": out, **kwargs})
    if not operands or not isinstance(operands[0], str):
        raise NotImplementedError("numpy.einsum: only the subscripts-string form is supported")
    spec = operands[0].replace(" ", "")
    arrays = [_lift(x) for x in operands[1:]]
    if "." in spec:
        raise NotImplementedError("numpy.einsum with '...' is not supported on Tracked arrays")
    if "->" in spec:
        ins, outs = spec.split("->")
    else:
        ins = spec
        letters = ins.replace(",", "")
        outs = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    terms = ins.split(",")
    if len(terms) != len(arrays) or len(arrays) not in (1, 2):
        raise NotImplementedError("numpy.einsum: one or two operands are supported on Tracked arrays")
    for t, x in zip(terms, arrays):
        if len(set(t)) != len(t):
            raise NotImplementedError(
                f"numpy.einsum with a repeated index within one operand ({t!r}) is not supported"
            )
        if len(t) != x.ndim:
            raise ValueError(f"einsum: operand {t!r} has {x.ndim} dimensions")
    # sum out the letters that appear in one operand only and not in the output
    reduced = []
    for i, (t, x) in enumerate(zip(terms, arrays)):
        others = "".join(terms[:i] + terms[i + 1:]) + outs
        drop = [j for j, c in enumerate(t) if c not in others]
        if drop:
            x = np.sum(x, axis=tuple(drop))
            t = "".join(c for j, c in enumerate(t) if j not in drop)
        reduced.append((t, x))
    if len(reduced) == 1:
        t, x = reduced[0]
        return _transpose_any(x, [t.index(c) for c in outs])
    (ta, a), (tb, b) = reduced
    batch = [c for c in ta if c in tb and c in outs]
    contract = [c for c in ta if c in tb and c not in outs]
    fa = [c for c in ta if c not in tb]
    fb = [c for c in tb if c not in ta]
    size = {c: a.shape[ta.index(c)] for c in ta}
    size.update({c: b.shape[tb.index(c)] for c in tb})
    for c in ta:
        if c in tb and a.shape[ta.index(c)] != b.shape[tb.index(c)]:
            raise ValueError(f"einsum: dimension {c!r} differs between the operands")
    at = _transpose_any(a, [ta.index(c) for c in batch + fa + contract])
    bt = _transpose_any(b, [tb.index(c) for c in batch + contract + fb])
    nb = int(np.prod([size[c] for c in batch]))
    m, k, n = (int(np.prod([size[c] for c in g])) for g in (fa, contract, fb))
    y = np.matmul(_reshape_any(at, (nb, m, k)), _reshape_any(bt, (nb, k, n)))
    order = batch + fa + fb
    y = _reshape_any(y, tuple(size[c] for c in order))
    return _transpose_any(y, [order.index(c) for c in outs])


def _trace(a: Any, offset: int = 0, axis1: int = 0, axis2: int = 1, dtype: Any = None,
           out: Any = None) -> Any:
    _check_reduce_kwargs("trace", {"out": out})
    return np.sum(np.diagonal(a, offset, axis1, axis2), axis=-1)


def _norm(x: Any, ord: Any = None, axis: Any = None, keepdims: bool = False) -> Any:
    x = _lift(x)
    if isinstance(axis, (int, np.integer)):
        axis = (int(axis),)
    nd = len(axis) if axis is not None else x.ndim
    if ord is None or ord == "fro" or (ord == 2 and nd == 1):
        if ord == "fro" and nd != 2:
            raise ValueError("Invalid norm order 'fro' for vectors")
        return np.sqrt(np.sum(x * x, axis=axis, keepdims=keepdims))
    if nd == 1 or (axis is None and x.ndim == 1):
        a = np.abs(x)
        if ord == np.inf:  # initial=0 as NumPy: an empty vector's norm is 0
            return np.max(a, axis=axis, keepdims=keepdims, initial=0.0)
        if ord == -np.inf:
            return np.min(a, axis=axis, keepdims=keepdims)
        if ord == 0:
            return np.sum(_value(x) != 0, axis=axis, keepdims=keepdims).astype(_value(x).dtype)
        if ord == 1:
            return np.sum(a, axis=axis, keepdims=keepdims)
        return np.sum(a ** ord, axis=axis, keepdims=keepdims) ** (1.0 / ord)
    if nd == 2 and ord in (1, -1, np.inf, -np.inf):
        ax = axis if axis is not None else (0, 1)
        ax = tuple(i % x.ndim for i in ax)
        row, col = ax
        if ord in (np.inf, -np.inf):
            row, col = col, row
        sums = np.sum(np.abs(x), axis=row, keepdims=True)
        red = np.max if ord in (1, np.inf) else np.min
        res = red(sums, axis=col, keepdims=True)
        return res if keepdims else np.squeeze(res, axis=ax)
    raise NotImplementedError(f"numpy.linalg.norm with ord={ord!r} is not supported on Tracked arrays")


_FUNCTIONS: dict[Callable, Callable] = {
    np.sum: _sum, np.mean: _mean, np.prod: _prod,
    np.max: _extremum(np.max, "max"), np.min: _extremum(np.min, "min"),
    np.amax: _extremum(np.max, "amax"), np.amin: _extremum(np.min, "amin"),
    np.var: _var, np.std: _std, np.cumsum: _cumulative("sum"), np.cumprod: _cumulative("prod"),
    np.reshape: _reshape, np.ravel: _ravel, np.expand_dims: _expand_dims, np.squeeze: _squeeze,
    np.broadcast_to: _broadcast_to,
    np.transpose: _moves(np.transpose), np.swapaxes: _moves(np.swapaxes),
    np.moveaxis: _moves(np.moveaxis), np.flip: _moves(np.flip), np.fliplr: _moves(np.fliplr),
    np.flipud: _moves(np.flipud), np.rot90: _moves(np.rot90), np.roll: _moves(np.roll),
    np.tile: _moves(np.tile), np.repeat: _moves(np.repeat), np.diagonal: _moves(np.diagonal),
    np.take: _moves(np.take), np.atleast_1d: _moves(np.atleast_1d),
    np.atleast_2d: _moves(np.atleast_2d), np.atleast_3d: _moves(np.atleast_3d),
    np.concatenate: _moves_many(np.concatenate), np.stack: _moves_many(np.stack),
    np.hstack: _moves_many(np.hstack), np.vstack: _moves_many(np.vstack),
    np.column_stack: _moves_many(np.column_stack), np.dstack: _moves_many(np.dstack),
    np.where: _where, np.sort: _sort, np.triu: _tri(np.triu), np.tril: _tri(np.tril),
    np.diag: _diag, np.clip: _clip, np.copy: _copy, np.take_along_axis: _take_along_axis,
    np.broadcast_arrays: _broadcast_arrays, np.diff: _diff,
    np.matrix_transpose: _moves(np.matrix_transpose),
    np.matmul: _matmul, np.dot: _dot, np.inner: _inner, np.outer: _outer, np.vdot: _vdot,
    np.tensordot: _tensordot, np.einsum: _einsum, np.trace: _trace, np.linalg.norm: _norm,
    np.shape: _plain(np.shape), np.ndim: _plain(np.ndim), np.size: _plain(np.size),
    np.argmax: _plain(np.argmax), np.argmin: _plain(np.argmin), np.argsort: _plain(np.argsort),
    np.nonzero: _plain(np.nonzero), np.isclose: _plain(np.isclose), np.allclose: _plain(np.allclose),
    np.array_equal: _plain(np.array_equal), np.count_nonzero: _plain(np.count_nonzero),
    np.zeros_like: _plain(np.zeros_like), np.ones_like: _plain(np.ones_like),
    np.empty_like: _plain(np.empty_like), np.full_like: _plain(np.full_like),
    np.round: _plain(np.round), np.around: _plain(np.around), np.result_type: _plain(np.result_type),
    np.any: _plain(np.any), np.all: _plain(np.all),
}
# the rest of the non-differentiable functions forward mode lists: plain values here too
_FUNCTIONS.update({getattr(np, name): _plain(getattr(np, name)) for name in (
    "argwhere array_equiv digitize fix flatnonzero histogram iscomplex isreal isscalar "
    "searchsorted unique").split()})


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
        g = tape.adjoint(leaf.node) if isinstance(out, Tracked) else None
        grads.append(np.zeros(leaf.shape, dtype=leaf.dtype) if g is None else g)
    return grads


def _compute(problem: Any) -> list[np.ndarray]:
    """The ``"reverse"`` backend: the gradient of ``problem.scalar_output`` by one sweep."""
    tape = Tape()
    try:
        leaves = [Tracked.leaf(tape, x) for x in problem.diff_leaves]
        out = problem.scalar_output(leaves)
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
        out = f(*flat.call_args(dict(zip(flat.differentiable, leaves))))
        outs = output_leaves(out)
        primal = _strip(out)
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
    from ._tree import tree_map_outputs

    return tree_map_outputs(lambda x: x.value if isinstance(x, Tracked) else x, out)


# ---------------------------------------------------------------------- order 2
#
# Hessian-vector products by reverse over reverse, in C. The tape records its own backward sweep
# (``Tape.backward_graph``, as PyTorch's create_graph=True does): every VJP becomes nodes on the same
# tape, the elementwise ones through the second partials of the C op table, so each leaf's gradient
# g(x) is a node, and one ordinary sweep from <g(x), v> gives H v. No derivative rule is restated
# here. While order 2 is recorded, ``tape.python_recording`` is set; the two primitives whose
# first-order VJP reads weights computed from the input (prod's exclusive products, cumprod's
# quotient) are then recorded as compositions of multiplies instead, which are exact at zeros.


def _prod_by_multiplies(a: Tracked, axes: tuple[int, ...], keepdims: bool) -> Any:
    """prod of ``a`` over ``axes`` as a balanced tree of elementwise multiplies (order 2)."""
    if not axes:
        return a
    kshape = tuple(1 if i in axes else s for i, s in enumerate(a.shape))
    out_shape = kshape if keepdims else tuple(s for i, s in enumerate(a.shape) if i not in axes)
    rest = [i for i in range(a.ndim) if i not in axes]
    lead = tuple(a.shape[i] for i in rest)
    x = np.reshape(np.transpose(a, rest + list(axes)), lead + (-1,) if a.size else lead + (0,))
    if x.shape[-1] == 0:
        # the empty product: 1, on the tape with a zero derivative
        return np.reshape(np.sum(x, axis=-1) + 1.0, out_shape)
    while x.shape[-1] > 1:
        if x.shape[-1] % 2:
            x = np.concatenate([x, np.ones(lead + (1,), dtype=x.dtype)], axis=-1)
        x = x[..., 0::2] * x[..., 1::2]
    return np.reshape(x, out_shape)


def _cumprod_by_multiplies(x: Tracked) -> Any:
    """cumprod along the last axis of ``x`` as a prefix scan of elementwise multiplies (order 2):
    after the step with shift s every element holds the product of the 2s elements ending there."""
    y, s, n = x, 1, x.shape[-1]
    while s < n:
        ones = np.ones(x.shape[:-1] + (s,), dtype=x.dtype)
        y = y * np.concatenate([ones, y[..., : n - s]], axis=-1)
        s *= 2
    return y


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
        out = scalar_fn(leaves)
        if not isinstance(out, Tracked):
            return [np.zeros(x.shape) for x in leaves], [np.zeros(x.shape) for x in leaves]
        if out.size != 1:
            raise ValueError(f"f returned an array of shape {out.shape}; hvp needs a scalar")
        try:
            entries = tape.backward_graph(out.node, np.ones(out.shape), [x.node for x in leaves])
        except ValueError as exc:
            raise NotImplementedError(
                "order 2 (a Hessian-vector product) is not supported for this function: its tape "
                "holds a node whose backward sweep cannot be recorded (one recorded for first order "
                f"only, such as numpy.cumprod with tape.python_recording unset; {exc})"
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
