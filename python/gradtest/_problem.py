"""The gradient problem every backend solves: f, its flattened arguments and the output reduction."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from ._building import building_arrays
from ._tree import Constant, FlatArgs, output_leaves


@dataclasses.dataclass
class OutputSpec:
    """How f's output is reduced to the scalar whose gradient is checked.

    A scalar output is used as is. An array output (or a tree of arrays) is checked through the
    fixed random cotangent ``u``: the scalar is ``<u, f(x)>``, whose gradient is the vector-Jacobian
    product ``J^T u``. One output element gets ``u = 1``.

    Attributes
    ----------
    scalar : bool
        True when f returns a real scalar (a Python or NumPy number, or a 0-d array).
    cotangents : list of numpy.ndarray
        One float64 array per output leaf, with that leaf's shape (empty when ``scalar``).
    tree : bool
        True when the output is a tree (tuple, dict, ...) rather than a single array.
    eps : float
        Machine epsilon of the coarsest floating dtype f returns (float64's for Python numbers
        and integers): the relative precision of its values, which bounds the finite
        differences' rounding.
    """

    scalar: bool
    cotangents: list[np.ndarray]
    tree: bool
    eps: float = float(np.finfo(np.float64).eps)

    def reduce(self, out: Any, dtype: Any = None, dot: Callable[[np.ndarray, Any], Any] | None = None) -> Any:
        """Reduces an output of f (NumPy arrays, Dual/Tracked arrays, framework tensors) to the
        checked scalar, ``<u, f(x)>``: the one definition of it (the C glue computes the same sum
        for a single array output without a call into Python). With ``dtype`` (the finite
        differences pass float64) the leaves are converted to it first; otherwise the sum keeps
        the leaves' dtype, as a backend's own arithmetic would. ``dot(u, leaf)``, the sum of
        ``u * leaf``, defaults to NumPy's; a framework backend passes its own, so that the
        framework can differentiate the reduction.

        Raises
        ------
        ValueError
            If the output's structure or shapes differ from the first call's."""
        if self.scalar:
            return out
        leaves = output_leaves(out) if self.tree else [out]
        if len(leaves) != len(self.cotangents):
            raise ValueError(
                f"f returned {len(leaves)} output arrays where {len(self.cotangents)} were expected "
                "(its output structure changed between calls)"
            )
        total: Any = 0.0
        for u, leaf in zip(self.cotangents, leaves):
            if np.shape(leaf) != u.shape:
                raise ValueError(
                    f"f returned an output of shape {np.shape(leaf)} where {u.shape} was expected "
                    "(its output shape changed between calls)"
                )
            if dtype is not None:
                leaf = np.asarray(leaf, dtype=dtype)
            total = total + (dot(u, leaf) if dot is not None
                             else np.sum(np.multiply(u.astype(_dtype_of(leaf), copy=False), leaf)))
        return total


def _dtype_of(x: Any) -> np.dtype:
    dtype = getattr(x, "dtype", None)
    if dtype is not None and np.issubdtype(dtype, np.floating):
        return np.dtype(dtype)
    return np.dtype(np.float64)


def describe_output(out: Any, rng: np.random.Generator) -> OutputSpec:
    """Builds the output reduction from one output of f.

    Raises
    ------
    TypeError
        If the output is not real and numeric (complex, object, strings, None).
    """
    if not isinstance(out, (np.ndarray, float, int)):  # torch tensors, JAX arrays: as NumPy
        from .frameworks import outputs_as_numpy

        out = outputs_as_numpy(out)
    if _is_real_scalar(out):
        return OutputSpec(True, [], False, _output_eps([out]))
    tree = not isinstance(out, np.ndarray)
    leaves = output_leaves(out) if tree else [out]
    if not leaves:
        raise TypeError("f returned an empty structure; expected a real number or floating arrays")
    cotangents = []
    for leaf in leaves:
        arr = np.asarray(leaf) if not hasattr(leaf, "shape") else leaf
        dtype = getattr(arr, "dtype", None)
        if dtype is None or not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)
                                 or dtype == np.bool_):
            raise TypeError(
                f"f returned {type(leaf).__name__}"
                + (f" of dtype {dtype}" if dtype is not None else "")
                + "; expected a real number or real floating arrays"
            )
        size = int(np.prod(np.shape(arr)))
        u = np.ones(np.shape(arr)) if size == 1 else rng.standard_normal(np.shape(arr))
        cotangents.append(u)
    return OutputSpec(False, cotangents, tree, _output_eps(leaves))


def _output_eps(values: list[Any]) -> float:
    eps = [float(np.finfo(v.dtype).eps) for v in values
           if isinstance(getattr(v, "dtype", None), np.dtype) and np.issubdtype(v.dtype, np.floating)]
    return max(eps, default=float(np.finfo(np.float64).eps))


def _is_real_scalar(out: Any) -> bool:
    if isinstance(out, bool):
        return False
    if isinstance(out, (int, float)):
        return True
    if isinstance(out, np.generic):
        return np.issubdtype(out.dtype, np.floating) or np.issubdtype(out.dtype, np.integer)
    if isinstance(out, np.ndarray) and out.ndim == 0:
        return np.issubdtype(out.dtype, np.floating) or np.issubdtype(out.dtype, np.integer)
    return False


@dataclasses.dataclass
class GradientProblem:
    """What a backend differentiates: ``problem.scalar_output(x)`` for the differentiated leaves x.

    Attributes
    ----------
    f : callable
        The function under test.
    kwargs : dict
        Keyword arguments passed to ``f`` unchanged (never differentiated).
    flat : FlatArgs
        The flattened positional arguments.
    output : OutputSpec
        The reduction of f's output to a scalar.
    user_gradient : callable or None
        The ``gradient=`` function, for the ``"user"`` backend.
    options : dict
        Backend options from the caller (e.g. ``forward_chunk_size``), by backend-defined keys.
    notes : list of str
        Remarks for the report, added by the backend selection (why a backend did not run) and by
        backends (that ``gradient=`` mutated its inputs, the custom rules a framework
        differentiated through).
    directions : DirectionFamily or None
        Set while a check runs in directional mode: the directions its ground truth used. A
        backend that can differentiate along given directions (forward mode) may then return a
        :class:`DirectionalDerivatives` instead of the gradient, which is all the comparison
        reads; None otherwise.
    """

    f: Callable[..., Any]
    kwargs: dict[str, Any]
    flat: FlatArgs
    output: OutputSpec
    user_gradient: Callable[..., Any] | None = None
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    directions: Any = None

    @property
    def diff_leaves(self) -> list[np.ndarray]:
        """The caller's differentiated arrays (read them, never write them)."""
        return self.flat.diff_leaves

    @property
    def diff_paths(self) -> list[str]:
        return self.flat.diff_paths

    @property
    def size(self) -> int:
        """Total number of differentiated elements."""
        return int(sum(leaf.size for leaf in self.diff_leaves))

    def fresh_args(self, replacements: dict[int, Any] | None = None) -> tuple[Any, ...]:
        """Positional arguments for one call of f: every array leaf is a fresh copy (so f cannot
        change the caller's arrays), with ``replacements`` (leaf index -> value) substituted."""
        replacements = dict(replacements or {})
        for i, leaf in enumerate(self.flat.leaves):
            value = leaf.value if isinstance(leaf, Constant) else leaf
            if i not in replacements and isinstance(value, np.ndarray):
                replacements[i] = value.copy(order="K")
        return self.flat.call_args(replacements)

    def call(self, diff_values: list[Any]) -> Any:
        """Calls f with ``diff_values`` in place of the differentiated leaves (in leaf order) and
        returns its raw output."""
        if len(diff_values) != len(self.flat.differentiable):
            raise ValueError(
                f"diff_values: expected {len(self.flat.differentiable)} values, got {len(diff_values)}"
            )
        args = self.fresh_args(dict(zip(self.flat.differentiable, diff_values)))
        with building_arrays():  # np.array([...]) of engine values keeps tracking
            return self.f(*args, **self.kwargs)

    def scalar_output(self, diff_values: list[Any]) -> Any:
        """The checked scalar ``<u, f(x)>`` (or f(x) itself for scalar f) at ``diff_values``."""
        return self.output.reduce(self.call(diff_values))


@dataclasses.dataclass
class DirectionalDerivatives:
    """A backend's derivatives along the directions of ``problem.directions``, in place of its
    gradient (a directional check compares nothing else).

    Attributes
    ----------
    values : numpy.ndarray
        ``<g, v_j>`` for each direction j, float64.
    dtypes : list of numpy.dtype
        The dtype the backend computed each differentiated leaf's derivative in (for the
        rounding allowance).
    element : callable
        ``element(indices)`` returns the gradient's elements at flat indices (over the
        concatenated leaves) as float64, to confirm the elements a failure is traced to.
    """

    values: np.ndarray
    dtypes: list[np.dtype]
    element: Callable[[list[int]], np.ndarray]
