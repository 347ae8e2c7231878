"""Forward mode: dual-number arrays whose tangents are computed by the C core.

A :class:`Dual` holds a primal ``value`` (a float32 or float64 NumPy array of any shape) and ``k``
tangent directions, stored as one array ``tangents`` of shape ``(k,) + value.shape``. NumPy
functions and operators run on duals unchanged through ``__array_ufunc__`` and
``__array_function__``, which dispatch through the one rule registry (:mod:`gradtest._rules`);
this module holds only the array type, the forward implementation of the primitives of
:mod:`gradtest._primitives`, and the backend plumbing:

* elementwise ufuncs compute their primal with NumPy itself, then the C core reads the local
  partials from the op table (``csrc/core/ops.c``) and combines them with all ``k`` tangents in
  one blocked pass (``csrc/core/dual.c``), broadcasting exactly as NumPy does;
* a gather applies the element selection to the tangents of all directions at once;
* matrix products run the ``k`` tangents of an operand as one stacked GEMM.

The kink and edge rules are the registry's (docs/rules_table.inc). A NumPy function without a
rule raises :class:`NotImplementedError` naming it, and so does converting a dual to a plain
array (``np.asarray``), which would drop its derivatives.

The ``"forward"`` backend seeds one-hot tangents in chunks of ``k`` over all differentiated
elements and reads the gradient off the tangents of the scalar output: ``n / k`` passes of f.
"""

from __future__ import annotations

import math
import operator
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import _forward, _rules
from . import _primitives as P
from ._arraylike import ArrayLike
from ._building import building_arrays
from ._tree import tree_map_outputs
from .backends import register_backend

__all__ = ["Dual", "jvp", "DEFAULT_CHUNK_SIZE", "MAX_DEFAULT_SIZE"]

#: Tangent directions per pass of f in the ``"forward"`` backend (``forward_chunk_size`` option).
DEFAULT_CHUNK_SIZE = 32
#: Largest total number of differentiated elements for which ``"forward"`` runs by default.
MAX_DEFAULT_SIZE = 4096

_FLOAT_DTYPES = (np.dtype(np.float64), np.dtype(np.float32))
_OP_INDEX = {name: i for i, name in enumerate(_forward.op_names())}


# --------------------------------------------------------------------------------------------
# the array type
# --------------------------------------------------------------------------------------------


class Dual(ArrayLike):
    """An array of dual numbers: a primal value with ``k`` tangent directions.

    Parameters
    ----------
    value : array_like
        The primal values; integer and boolean inputs become float64, float16 becomes float32.
    tangents : array_like
        The tangent directions, shape ``(k,) + value.shape``; cast to the value's dtype.

    Attributes
    ----------
    value : numpy.ndarray
        The primal array (float32 or float64).
    tangents : numpy.ndarray
        The tangents, shape ``(k,) + value.shape``, same dtype as ``value``.
    """

    __slots__ = ("value", "tangents")

    def __init__(self, value: Any, tangents: Any) -> None:
        value = np.array(value, copy=True)
        if value.dtype == np.float16:
            value = value.astype(np.float32)
        elif value.dtype.kind in "biu":
            value = value.astype(np.float64)
        elif value.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"value: expected a real floating array, got dtype {value.dtype}"
                            + (" (complex values are out of scope)" if value.dtype.kind == "c" else ""))
        tangents = np.array(tangents, dtype=value.dtype, copy=True)
        if tangents.ndim != value.ndim + 1 or tangents.shape[1:] != value.shape:
            raise ValueError(
                f"tangents: expected shape (k,) + {value.shape}, got {tangents.shape}"
            )
        self.value = value
        self.tangents = tangents

    @property
    def k(self) -> int:
        """Number of tangent directions."""
        return self.tangents.shape[0]

    def __repr__(self) -> str:
        return f"Dual(value={self.value!r}, k={self.k})"

    # __getitem__ and reshape are _forward.getitem/_forward.reshape (set below), which handle int
    # and slice indices and C-order reshapes in C and hand everything else to these
    def _getitem(self, index: Any) -> Dual:
        index = _primal_index(index)
        value = self.value[index]
        tangents = np.moveaxis(np.moveaxis(self.tangents, 0, -1)[_trailing_index(index)], -1, 0)
        return _make(np.asarray(value), tangents)

    def __setitem__(self, index: Any, other: Any) -> None:
        index = _primal_index(index)
        value, tangent = _parts(other)
        self.value[index] = value
        target = np.moveaxis(self.tangents, 0, -1)
        if tangent is None:
            target[_trailing_index(index)] = 0
        else:
            _check_k(self.k, tangent)
            target[_trailing_index(index)] = np.moveaxis(tangent, 0, -1)

    def astype(self, dtype: Any, copy: bool = True) -> Any:
        return _rules.astype(self, dtype)

    def copy(self, order: str = "C") -> Dual:
        return _make(self.value.copy(), self.tangents.copy())

    def conj(self) -> Dual:
        return self

    conjugate = conj

    @property
    def real(self) -> Dual:
        return self

    # ---- operators and common methods, straight to their rules (skipping NumPy's dispatch,
    # which costs more than the op itself on small arrays) -----------------------------------

    # + - * / ** and unary - + abs(): set below the ufunc rules, one C call each (_operator)

    def __matmul__(self, other: Any) -> Any: return _rules.matmul(self, other)
    def __rmatmul__(self, other: Any) -> Any: return _rules.matmul(other, self)

    def sum(self, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False,
            **kw: Any) -> Any:
        return _SUM(self, axis, dtype, out, keepdims, **kw)

    def mean(self, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False,
             **kw: Any) -> Any:
        return _MEAN(self, axis, dtype, out, keepdims, **kw)

    def _reshape_method(self, *shape: Any, order: str = "C") -> Any:
        if order == "C":
            value = self.value.reshape(*shape)
            return _make(value, self.tangents.reshape((self.tangents.shape[0],) + value.shape))
        return _RESHAPE(self, shape[0] if len(shape) == 1 else shape, order=order)

    def transpose(self, *axes: Any) -> Any:
        return _transposed(self, axes[0] if len(axes) == 1 else (axes or None))

    @property
    def T(self) -> Any:
        return _transposed(self, None)

    # ---- NumPy protocols ------------------------------------------------------------------

    # __array_ufunc__ is _forward.array_ufunc (set below): plain calls of op-table ufuncs run in C,
    # everything else comes here
    def _array_ufunc(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        return _rules.apply_ufunc(ufunc, method, inputs, kwargs, "forward")

    def __array_function__(self, func: Callable[..., Any], types: Any, args: Any, kwargs: Any) -> Any:
        return _rules.apply_function(func, args, kwargs, "forward", self)


# the registry's rules the Dual methods call directly, skipping NumPy's dispatch
_SUM, _MEAN = _rules.FUNCTIONS[np.sum], _rules.FUNCTIONS[np.mean]
_RESHAPE = _rules.FUNCTIONS[np.reshape]


def _make(value: np.ndarray, tangents: np.ndarray) -> Dual:
    """A Dual from arrays already checked (no copy)."""
    d = object.__new__(Dual)
    d.value = value
    d.tangents = tangents
    return d


def _transposed(x: Dual, axes: Any) -> Dual:
    """x's value and tangents transposed as NumPy's views (the gather rule of np.transpose gives
    the same, through index arrays and strides it has to find, at several times the cost of a
    small ``x.T``)."""
    value = x.value.transpose(axes)  # NumPy's own checks of axes
    nd = x.value.ndim
    perm = range(nd - 1, -1, -1) if axes is None else [operator.index(a) % nd for a in axes]
    return _make(value, x.tangents.transpose((0, *(p + 1 for p in perm))))


def _view(x: Dual, index_fn: Callable[..., Any], writeable: bool) -> Dual | None:
    """``index_fn(x)`` as a view of x's value and tangents, for a selection NumPy makes a view
    (transpose, flip, diagonal, ...): assignments into either array then show in the other, as
    NumPy's do. None where a view cannot be formed (no tangent directions)."""
    t = x.tangents
    if t.shape[0] == 0:
        return None
    value = index_fn(x.value)
    first = index_fn(t[0])
    if not (np.may_share_memory(value, x.value) and np.may_share_memory(first, t[0])):
        return None
    tangents = _forward.tangent_view(t, first, writeable)
    if not writeable:
        value = value.view()
        value.flags.writeable = False
    return _make(value, tangents)


def _parts(x: Any) -> tuple[Any, np.ndarray | None]:
    if isinstance(x, Dual):
        return x.value, x.tangents
    return x, None


def _primal(x: Any) -> Any:
    return x.value if isinstance(x, Dual) else x


def _check_k(k: int, tangents: np.ndarray) -> None:
    if tangents.shape[0] != k:
        raise ValueError(f"cannot combine duals with {k} and {tangents.shape[0]} tangent directions")


def _common_k(items: Sequence[Any]) -> int:
    ks = {x.tangents.shape[0] for x in items if isinstance(x, Dual)}
    if len(ks) != 1:
        raise ValueError(f"cannot combine duals with different numbers of tangent directions: {sorted(ks)}")
    return ks.pop()


# --------------------------------------------------------------------------------------------
# elementwise ufuncs: through the op table
# --------------------------------------------------------------------------------------------


def _float_result(ufunc: np.ufunc, y: np.ndarray) -> np.ndarray:
    if y.dtype.kind != "f":
        raise TypeError(f"numpy.{ufunc.__name__} on gradtest.Dual gave dtype {y.dtype}; expected "
                        "float32 or float64 (complex values are out of scope)")
    return y.astype(np.float32 if y.dtype == np.float16 else np.float64)


def _operand(x: Any, dtype: np.dtype) -> tuple[Any, Any]:
    """Value and tangents (None for a constant) of one ufunc input, in the result's dtype."""
    if isinstance(x, Dual):
        if x.value.dtype != dtype:
            return x.value.astype(dtype), x.tangents.astype(dtype)
        return x.value, x.tangents
    return np.asarray(x, dtype=dtype), None


def _elementwise_rule(index: int, ufunc: np.ufunc) -> Callable[..., Any]:
    """The rule of an op-table ufunc: the primal by NumPy, the tangents by the C core.

    Written out per arity and without generic helpers because this is the per-op overhead that
    small arrays see."""
    elementwise = _forward.elementwise
    floats = _FLOAT_DTYPES

    def unary(a: Any, dtype: Any = None) -> Any:
        y = ufunc(a.value) if dtype is None else ufunc(a.value, dtype=dtype)
        if type(y) is not np.ndarray:
            y = np.asarray(y)
        if y.dtype not in floats:
            y = _float_result(ufunc, y)
        if not y.flags.c_contiguous:
            y = np.ascontiguousarray(y)
        av, at = _operand(a, y.dtype)
        return _make(y, elementwise(index, y, av, at))

    def binary(a: Any, b: Any, dtype: Any = None) -> Any:
        av = a.value if isinstance(a, Dual) else a
        bv = b.value if isinstance(b, Dual) else b
        y = ufunc(av, bv) if dtype is None else ufunc(av, bv, dtype=dtype)
        if type(y) is not np.ndarray:
            y = np.asarray(y)
        if y.dtype not in floats:
            y = _float_result(ufunc, y)
        if not y.flags.c_contiguous:
            y = np.ascontiguousarray(y)
        dt = y.dtype
        av, at = _operand(a, dt)
        bv, bt = _operand(b, dt)
        return _make(y, elementwise(index, y, av, at, bv, bt))

    rule = unary if ufunc.nin == 1 else binary
    rule.__name__ = f"dual_{ufunc.__name__}"
    return rule


_UFUNC_RULES: dict[np.ufunc, Callable[..., Any]] = {}
for _name, _index in _OP_INDEX.items():
    _ufunc = getattr(np, "absolute" if _name == "abs" else _name, None)
    if isinstance(_ufunc, np.ufunc) and _name != "sign":
        _UFUNC_RULES[_ufunc] = _elementwise_rule(_index, _ufunc)
_UFUNC_RULES[np.fabs] = _UFUNC_RULES[np.absolute]

# ufuncs whose rule _forward.ufunc runs in one C call (primal, tangents, result), falling back
# to the Python rule for anything but Duals, exact arrays of the Duals' dtype and Python numbers;
_TABLE_NAME = {"absolute": "abs", "fabs": "abs"}
_FAST_UFUNCS: dict[np.ufunc, tuple[int, Callable[..., Any]]] = {
    _ufunc: (_OP_INDEX[_TABLE_NAME.get(_ufunc.__name__, _ufunc.__name__)], _rule)
    for _ufunc, _rule in _UFUNC_RULES.items()
    if _TABLE_NAME.get(_ufunc.__name__, _ufunc.__name__) in _OP_INDEX
}
_ufunc_call = _forward.ufunc
_forward.register_dual(Dual, _FAST_UFUNCS, Dual._array_ufunc, Dual._getitem, Dual._reshape_method)
Dual.__array_ufunc__ = _forward.method(_forward.array_ufunc)  # type: ignore[method-assign]
Dual.__getitem__ = _forward.method(_forward.getitem)  # type: ignore[method-assign]
Dual.reshape = _forward.method(_forward.reshape)  # type: ignore[method-assign]


def _operator(ufunc: np.ufunc, reflected: bool = False) -> Callable[..., Any]:
    """An operator method of Dual (x + y, -x, ...): straight to _forward.ufunc, skipping NumPy's
    __array_ufunc__ dispatch, which costs more than the op itself on small arrays."""
    index, rule = _FAST_UFUNCS[ufunc]
    call = _ufunc_call
    if ufunc.nin == 1:
        def unary(self: Dual) -> Any:
            return call(index, ufunc, rule, self)
        return unary
    if reflected:
        def reflected_binary(self: Dual, other: Any) -> Any:
            return call(index, ufunc, rule, other, self)
        return reflected_binary

    def binary(self: Dual, other: Any) -> Any:
        return call(index, ufunc, rule, self, other)
    return binary


for _dunder, _ufunc in (("add", np.add), ("sub", np.subtract), ("mul", np.multiply),
                        ("truediv", np.divide), ("pow", np.power)):
    setattr(Dual, f"__{_dunder}__", _operator(_ufunc))
    setattr(Dual, f"__r{_dunder}__", _operator(_ufunc, reflected=True))
Dual.__neg__ = _operator(np.negative)  # type: ignore[method-assign]
Dual.__pos__ = _operator(np.positive)  # type: ignore[method-assign]
Dual.__abs__ = _operator(np.absolute)  # type: ignore[method-assign]

# --------------------------------------------------------------------------------------------
# the primitives (gradtest._primitives.Engine), forward implementation
# --------------------------------------------------------------------------------------------


def _shift(axes: tuple[int, ...]) -> tuple[int, ...]:
    """Axes of the value as axes of the tangents (the direction axis is first)."""
    return tuple(ax + 1 for ax in axes)


def _chain(partial: np.ndarray, tangent: np.ndarray) -> np.ndarray:
    """partial * tangent with the op table's chain rule: a zero factor gives exactly 0."""
    with np.errstate(invalid="ignore", over="ignore"):
        prod = partial * tangent
    # a zero meeting an infinite or NaN factor (on either side) is the only way the rule differs
    # from the plain product, and it always leaves a NaN there
    if not np.isnan(prod).any():
        return prod
    return np.where((partial == 0) | (tangent == 0), prod.dtype.type(0), prod)


class _ForwardEngine:
    """The forward implementation of :class:`gradtest._primitives.Engine` (docstrings there)."""

    mode = "forward"
    array_type = Dual

    def elementwise(self, ufunc: np.ufunc, *inputs: Any) -> Any:
        return _UFUNC_RULES[ufunc](*inputs)

    def pointwise(self, value: np.ndarray, inputs: Sequence[Any], partials: Sequence[Any],
                  name: str, constant: bool,
                  partials_of: Callable[..., Sequence[Any]] | None = None) -> Any:
        dt = P.float_dtype(value)
        value = np.asarray(value, dtype=dt)
        k = _common_k(inputs)
        tangents = np.zeros((k,) + value.shape, dtype=dt)
        for x, p in zip(inputs, partials):
            if isinstance(x, Dual) and p is not None:
                t = _aligned_tangent(x, dt, k, value.ndim)
                tangents = tangents + _chain(np.asarray(p, dtype=dt), t)
        return _make(value, np.ascontiguousarray(np.broadcast_to(tangents, (k,) + value.shape)))

    def records_second_order(self, inputs: Sequence[Any]) -> bool:
        return False

    def gather(self, xs: Sequence[Any], index_fn: Callable[..., Any]) -> Any:
        if len(xs) == 1 and isinstance(xs[0], Dual):
            # the common case (transpose, flip, take, ...): one dual, no fill
            x = xs[0]
            ix = np.arange(x.value.size, dtype=np.intp).reshape(x.value.shape)
            idx = np.asarray(index_fn(ix))
            if np.may_share_memory(idx, ix):
                view = _view(x, index_fn, idx.flags.writeable)
                if view is not None:
                    return view
            if idx.dtype != np.intp:
                idx = idx.astype(np.intp)
            if not idx.size or idx.min() >= 0:
                k = x.tangents.shape[0]
                return _make(np.asarray(x.value.reshape(-1)[idx]),
                             np.take(x.tangents.reshape(k, x.value.size), idx, axis=1))
        dt = P.float_dtype(*xs)
        k = _common_k(xs)
        flats, tflats, index_arrays, offset = [], [], [], 0
        for x in xs:
            v = np.asarray(_primal(x), dtype=dt)
            index_arrays.append(np.arange(offset, offset + v.size, dtype=np.intp).reshape(v.shape))
            flats.append(v.reshape(v.size))
            tflats.append(x.tangents.astype(dt, copy=False).reshape(k, v.size) if isinstance(x, Dual)
                          else np.zeros((k, v.size), dtype=dt))
            offset += v.size
        idx = np.asarray(index_fn(*index_arrays))
        if idx.dtype != np.intp:
            idx = idx.astype(np.intp)
        if idx.size and idx.min() < 0:  # FILL: the constant 0, appended as one more element
            flats.append(np.zeros(1, dtype=dt))
            tflats.append(np.zeros((k, 1), dtype=dt))
            idx = np.where(idx == P.FILL, offset, idx)
        flat = flats[0] if len(flats) == 1 else np.concatenate(flats)
        tflat = tflats[0] if len(tflats) == 1 else np.concatenate(tflats, axis=1)
        return _make(np.asarray(flat[idx]), np.take(tflat, idx, axis=1))

    def reduce(self, x: Any, axes: tuple[int, ...], keepdims: bool, coef: float,
               weights: np.ndarray | None, value: np.ndarray | None) -> Any:
        dt = x.dtype
        if weights is None:
            s = np.add.reduce(x.tangents, axis=_shift(axes), keepdims=keepdims)
        else:
            w = np.asarray(weights, dtype=dt)
            with np.errstate(invalid="ignore"):
                s = np.add.reduce(x.tangents * w, axis=_shift(axes), keepdims=keepdims)
            if np.isnan(s).any():  # a zero weight (max/min, a mask) meeting an infinite tangent
                s = np.add.reduce(_chain(w, x.tangents), axis=_shift(axes), keepdims=keepdims)
        if value is None:
            w = x.value if weights is None else x.value * weights
            value = np.add.reduce(w, axis=axes, keepdims=keepdims) * coef
        if coef != 1.0:
            # a non-finite coefficient (mean over an empty axis) meets a zero tangent as the chain
            # rule says
            s = s * dt.type(coef) if math.isfinite(coef) else _chain(np.full_like(s, coef), s)
        if type(value) is not np.ndarray or value.dtype != dt:
            value = np.asarray(value, dtype=dt)
        return _make(value, s if s.dtype == dt else s.astype(dt))

    def reshape(self, x: Any, shape: tuple[int, ...]) -> Any:
        value = x.value.reshape(shape)
        return _make(value, x.tangents.reshape((x.k,) + value.shape))

    def cumsum(self, x: Any, axis: int) -> Any:
        return _make(np.cumsum(x.value, axis=axis), np.cumsum(x.tangents, axis=axis + 1))

    def matmul(self, a: Any, b: Any) -> Any:
        return _matmul(a, b)

    def cast(self, x: Any, dtype: np.dtype) -> Any:
        return _make(x.value.astype(dtype), x.tangents.astype(dtype))

    def with_value(self, x: Any, value: np.ndarray) -> Any:
        return _make(value, x.tangents)

    def linearized(self, value: Any, inputs: Sequence[Any],
                   jvp_of: Callable[[Sequence[Any], Any], Callable[..., Any]], name: str) -> Any:
        multi = isinstance(value, (tuple, list))
        outs = [np.asarray(v) for v in (value if multi else (value,))]
        jvp = jvp_of([P.value(x) for x in inputs], tuple(outs) if multi else outs[0])
        k = _common_k(inputs)
        tangents = [np.zeros((k,) + v.shape, dtype=P.float_dtype(v)) for v in outs]
        constant = [None if isinstance(x, Dual) else np.zeros(np.shape(x), dtype=P.float_dtype(x))
                    for x in inputs]
        # one direction at a time: jvps are written for tangents of the inputs' own shapes
        for i in range(k):
            r = jvp(*[x.tangents[i] if c is None else c for x, c in zip(inputs, constant)])
            for t, ri in zip(tangents, r if multi else (r,)):
                t[i] = ri
        duals = [_make(v.astype(t.dtype, copy=False), t) for v, t in zip(outs, tangents)]
        return tuple(duals) if multi else duals[0]


Dual._engine = _ForwardEngine()

def _aligned_tangent(x: Any, dtype: np.dtype, k: int, ndim: int) -> np.ndarray:
    """x's tangents (zeros for a constant) with size-1 axes after the direction axis, so that
    they broadcast against (k,) + a shape of `ndim` axes as x broadcasts against that shape."""
    if isinstance(x, Dual):
        return x.tangents.astype(dtype, copy=False).reshape((k,) + (1,) * (ndim - x.ndim) + x.shape)
    return np.zeros((k,) + (1,) * ndim, dtype=dtype)


# --------------------------------------------------------------------------------------------
# products
# --------------------------------------------------------------------------------------------


def _dual_pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray | None, np.dtype]:
    av, at = _parts(a)
    bv, bt = _parts(b)
    dt = P.float_dtype(av, bv)
    av = np.asarray(av).astype(dt, copy=False)
    bv = np.asarray(bv).astype(dt, copy=False)
    if at is not None and bt is not None:
        _check_k(at.shape[0], bt)
    at = None if at is None else at.astype(dt, copy=False)
    bt = None if bt is None else bt.astype(dt, copy=False)
    return av, at, bv, bt, dt


def _matmul(a: Any, b: Any) -> Any:
    av, at, bv, bt, dt = _dual_pair(a, b)
    if av.ndim == 0 or bv.ndim == 0:
        raise ValueError("matmul: Input operand does not have enough dimensions")
    if av.ndim <= 2 and bv.ndim <= 2:
        # promote vectors to matrices, run the stacked-GEMM kernel (primal included, so that one
        # BLAS thread pool does all of it), and drop the added axes
        a2 = av.reshape(1, -1) if av.ndim == 1 else av
        b2 = bv.reshape(-1, 1) if bv.ndim == 1 else bv
        if a2.shape[1] != b2.shape[0]:
            np.matmul(av, bv)  # raises NumPy's own shape error
        k = (at if at is not None else bt).shape[0]
        a2t = None if at is None else np.ascontiguousarray(at.reshape((k,) + a2.shape))
        b2t = None if bt is None else np.ascontiguousarray(bt.reshape((k,) + b2.shape))
        value, tangents = _forward.matmul(np.ascontiguousarray(a2), a2t, np.ascontiguousarray(b2), b2t)
        shape = value.shape[av.ndim == 1 : value.ndim - (bv.ndim == 1)]
        return _make(value.reshape(shape), tangents.reshape((k,) + shape))
    value = np.asarray(np.matmul(av, bv))
    # batched: NumPy's matmul loops BLAS over the stacks; the direction axis is one more batch
    # axis. Vectors are promoted to matrices and the added axes (size 1) dropped by the reshape.
    k = (at if at is not None else bt).shape[0]
    a2 = av[None, :] if av.ndim == 1 else av
    b2 = bv[:, None] if bv.ndim == 1 else bv
    r = max(a2.ndim, b2.ndim)
    out = None
    if at is not None:
        t = at[:, None, :] if av.ndim == 1 else at
        out = np.matmul(t.reshape((k,) + (1,) * (r - a2.ndim) + a2.shape), b2)
    if bt is not None:
        t = bt[..., None] if bv.ndim == 1 else bt
        term = np.matmul(a2, t.reshape((k,) + (1,) * (r - b2.ndim) + b2.shape))
        out = term if out is None else out + term
    assert out is not None
    return _make(value, out.reshape((k,) + value.shape))


# --------------------------------------------------------------------------------------------
# indexing
# --------------------------------------------------------------------------------------------


def _primal_index(index: Any) -> Any:
    if isinstance(index, Dual):
        raise IndexError("a gradtest.Dual cannot be used as an index; use its .value")
    if isinstance(index, tuple):
        if any(isinstance(i, Dual) for i in index):
            raise IndexError("a gradtest.Dual cannot be used as an index; use its .value")
        return index
    return (index,)


def _trailing_index(index: tuple[Any, ...]) -> tuple[Any, ...]:
    """The index that selects the same elements of the tangents with the direction axis moved last.

    The direction axis stays a trailing, basic axis, so advanced-index reordering (NumPy moves
    non-adjacent advanced indices to the front) affects values and tangents alike."""
    if any(i is Ellipsis for i in index):
        return index + (slice(None),)
    return index


# --------------------------------------------------------------------------------------------
# public API: jvp and the backend
# --------------------------------------------------------------------------------------------


def jvp(f: Callable[..., Any], args: Sequence[Any], tangents: Sequence[Any]) -> tuple[Any, Any]:
    """Jacobian-vector product of ``f`` at ``args`` along ``tangents``, in forward mode.

    Parameters
    ----------
    f : callable
        A NumPy function of the positional arguments ``args``.
    args : sequence
        Primal values: arrays or numbers.
    tangents : sequence
        One tangent per argument, of that argument's shape, or None for an argument held
        constant.

    Returns
    -------
    value, tangent
        f's output and its directional derivative, with the same structure (an array, a number,
        or a tuple/list/dict of them). Outputs that do not depend on the arguments get zeros.

    Raises
    ------
    NotImplementedError
        If f uses a NumPy function the forward mode does not support (the message names it).
    """
    for value, name in ((args, "args"), (tangents, "tangents")):
        # an array or a string would be taken apart element by element
        if not isinstance(value, (tuple, list)):
            raise TypeError(f"{name}: expected a tuple or list with one entry per argument of f, "
                            f"got {type(value).__name__}")
    args = tuple(args)
    tangents = tuple(tangents)
    if len(args) != len(tangents):
        raise ValueError(f"tangents: expected {len(args)} entries (one per argument), got {len(tangents)}")
    duals = []
    for i, (x, t) in enumerate(zip(args, tangents)):
        if t is None:
            duals.append(x)
            continue
        value = np.asarray(x)
        if value.dtype not in _FLOAT_DTYPES and value.dtype.kind not in "biuf":
            raise TypeError(f"args[{i}]: expected a real array or number, got dtype {value.dtype}")
        t = np.asarray(t)
        if t.shape != value.shape:
            raise ValueError(f"tangents[{i}]: expected shape {value.shape}, got {t.shape}")
        duals.append(Dual(value, t[None]))
    with building_arrays():
        out = f(*duals)
    if isinstance(out, Dual):  # the common single-array output: no tree walk (two cost 10 us)
        return out.value, out.tangents[0]

    def primal(leaf: Any) -> Any:
        return leaf.value if isinstance(leaf, Dual) else leaf

    def tangent(leaf: Any) -> Any:
        if isinstance(leaf, Dual):
            return leaf.tangents[0]
        return np.zeros_like(np.asarray(leaf, dtype=np.result_type(leaf, np.float64)))

    return tree_map_outputs(primal, out), tree_map_outputs(tangent, out)


def _chunk_size(problem: Any) -> int:
    k = problem.options.get("forward_chunk_size", DEFAULT_CHUNK_SIZE)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"forward_chunk_size: expected a positive integer, got {k!r}")
    return int(k)


def _blas_threads(problem: Any) -> int:
    n = problem.options.get("forward_blas_threads", 1)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"forward_blas_threads: expected a positive integer, got {n!r}")
    return int(n)


def _compute(problem: Any) -> list[np.ndarray]:
    """The gradient of problem.scalar_output by forward mode: one pass of f per chunk of k
    one-hot directions across all differentiated elements.

    The dual matmuls of a gradient check are many small GEMMs; OpenBLAS's worker threads cost
    more than they save on those (30x slower on a loaded two-core machine in the benchmark), so
    they run on ``forward_blas_threads`` (default 1) threads while any forward computation is
    in progress. The setting belongs to the core's own OpenBLAS (NumPy's is separate) and is
    process-wide, so concurrent computations share it: the first sets it, the last restores it."""
    k = _chunk_size(problem)
    threads = _blas_threads(problem)
    with _BLAS_LOCK:
        if _BLAS_STATE["active"] == 0:
            _BLAS_STATE["saved"] = _forward.blas_threads(threads)
        _BLAS_STATE["active"] += 1
    try:
        if getattr(problem, "directions", None) is not None:
            return _compute_directional(problem, problem.directions, k)
        return _compute_chunks(problem, k)
    finally:
        with _BLAS_LOCK:
            _BLAS_STATE["active"] -= 1
            if _BLAS_STATE["active"] == 0:
                _forward.blas_threads(_BLAS_STATE["saved"])


_BLAS_LOCK = threading.Lock()
_BLAS_STATE = {"active": 0, "saved": 0}


def _compute_chunks(problem: Any, k: int) -> list[np.ndarray]:
    leaves = problem.diff_leaves
    dtypes = [leaf.dtype if leaf.dtype in _FLOAT_DTYPES else
              np.dtype(np.float32 if leaf.dtype == np.float16 else np.float64) for leaf in leaves]
    grads = [np.zeros(leaf.size, dtype=dt) for leaf, dt in zip(leaves, dtypes)]
    offsets = np.cumsum([0] + [leaf.size for leaf in leaves])
    total = int(offsets[-1])
    for start in range(0, total, k):
        kk = min(k, total - start)
        duals = []
        for leaf, dt, off in zip(leaves, dtypes, offsets[:-1]):
            t = np.zeros((kk, leaf.size), dtype=dt)
            lo, hi = max(start, off), min(start + kk, off + leaf.size)
            if lo < hi:
                t[np.arange(lo - start, hi - start), np.arange(lo - off, hi - off)] = 1
            duals.append(_make(np.array(leaf, dtype=dt, copy=True), t.reshape((kk,) + leaf.shape)))
        out = problem.scalar_output(duals)
        if isinstance(out, Dual):
            if out.size != 1:
                raise ValueError(f"f's checked output has shape {out.shape}; expected a scalar")
            directional = out.tangents.reshape(kk)
        else:
            directional = np.zeros(kk)  # the output does not depend on the inputs
        for g, off, size in zip(grads, offsets[:-1], (leaf.size for leaf in leaves)):
            lo, hi = max(start, off), min(start + kk, off + size)
            if lo < hi:
                g[lo - off : hi - off] = directional[lo - start : hi - start]
    return [g.reshape(leaf.shape) for g, leaf in zip(grads, leaves)]


# elements of tangent (directions times differentiated elements) one directional pass may carry:
# 4 float64 directions of 10^6 elements, so that a pass's intermediates stay within a few times
# the input's memory per op
DIRECTIONAL_BLOCK_ELEMENTS = 1 << 22


def _leaf_dtypes(leaves: list[np.ndarray]) -> list[np.dtype]:
    return [leaf.dtype if leaf.dtype in _FLOAT_DTYPES else
            np.dtype(np.float32 if leaf.dtype == np.float16 else np.float64) for leaf in leaves]


def _pass_along(problem: Any, leaves: list[np.ndarray], dtypes: list[np.dtype], rows: np.ndarray) -> np.ndarray:
    """One pass of f with the tangents ``rows`` (kk, total), split over the leaves in order:
    the kk directional derivatives of problem.scalar_output, float64."""
    kk, off, duals = rows.shape[0], 0, []
    for leaf, dt in zip(leaves, dtypes):
        t = np.ascontiguousarray(rows[:, off:off + leaf.size], dtype=dt).reshape((kk,) + leaf.shape)
        duals.append(_make(np.array(leaf, dtype=dt, copy=True), t))
        off += leaf.size
    out = problem.scalar_output(duals)
    if not isinstance(out, Dual):
        return np.zeros(kk)  # the output does not depend on the inputs
    if out.size != 1:
        raise ValueError(f"f's checked output has shape {out.shape}; expected a scalar")
    return np.asarray(out.tangents, dtype=np.float64).reshape(kk)


def _compute_directional(problem: Any, family: Any, k: int) -> Any:
    """The derivatives along the check's own directions, ``<g, v_j>`` for j < family.k, in
    passes of up to k directions (fewer for large inputs: DIRECTIONAL_BLOCK_ELEMENTS), instead
    of the whole gradient: family.k passes' worth of work in place of n / k passes. Single
    gradient elements, which the comparison asks for to confirm a located error, come from a
    pass along their unit vectors."""
    from ._problem import DirectionalDerivatives

    leaves = problem.diff_leaves
    dtypes = _leaf_dtypes(leaves)
    total = int(sum(leaf.size for leaf in leaves))
    block = max(1, min(k, DIRECTIONAL_BLOCK_ELEMENTS // max(total, 1)))
    values = np.zeros(family.k)
    for start in range(0, family.k, block):
        stop = min(start + block, family.k)
        rows = np.empty((stop - start, total))
        for j in range(start, stop):
            rows[j - start] = family.vector(j)
        values[start:stop] = _pass_along(problem, leaves, dtypes, rows)

    def element(indices: list[int]) -> np.ndarray:
        rows = np.zeros((len(indices), total))
        rows[np.arange(len(indices)), np.asarray(indices, dtype=np.intp)] = 1.0
        return _pass_along(problem, leaves, dtypes, rows)

    return DirectionalDerivatives(values, dtypes, element)


def _applies(problem: Any) -> bool:
    return problem.size <= MAX_DEFAULT_SIZE and all(
        type(leaf) is np.ndarray and leaf.dtype.kind in "fiub" for leaf in problem.diff_leaves
    )


register_backend(
    "forward",
    _compute,
    applies=_applies,
    default=True,
    description=f"forward mode: dual numbers computed by the C core, chunks of "
    f"{DEFAULT_CHUNK_SIZE} directions; on by default up to {MAX_DEFAULT_SIZE} elements",
)
