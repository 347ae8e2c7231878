"""Argument trees: flattening nested arguments into leaves with readable paths.

Arguments may nest dicts, lists, tuples, namedtuples and dataclasses (through optree, the pytree
library PyTorch uses). Leaves that are floating NumPy arrays are differentiated, and so are floating
torch tensors and JAX arrays (see :mod:`gradtest.frameworks`); every other leaf is held constant and
its gradient is ``None``.

A framework leaf is stored as a NumPy copy, so that every engine, the ground truth and the
comparison see NumPy arrays; :meth:`FlatArgs.call_args` hands f the framework's array again.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optree

_NAMESPACE = "gradtest"
_DIFFERENTIABLE_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
_registered_dataclasses: set[type] = set()
_registration_lock = threading.Lock()


class Constant:
    """Marks an argument that is held constant: it is passed to ``f`` unchanged and its gradient
    is ``None``, even when it is a floating array.

    Parameters
    ----------
    value : Any
        The value passed to the function under test.

    Examples
    --------
    >>> import numpy as np, gradtest
    >>> w = gradtest.Constant(np.ones(3))
    >>> w.value
    array([1., 1., 1.])
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Constant({self.value!r})"


def _register_dataclass(cls: type) -> None:
    names = tuple(f.name for f in dataclasses.fields(cls) if f.init)

    def flatten(obj: Any) -> tuple[list[Any], tuple[str, ...], tuple[str, ...]]:
        return [getattr(obj, name) for name in names], names, names

    def unflatten(field_names: tuple[str, ...], children: Sequence[Any]) -> Any:
        return cls(**dict(zip(field_names, children)))

    optree.register_pytree_node(
        cls, flatten, unflatten, path_entry_type=optree.GetAttrEntry, namespace=_NAMESPACE
    )


def _is_leaf(node: Any) -> bool:
    if isinstance(node, (np.ndarray, Constant)):
        return True
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        cls = type(node)
        if cls not in _registered_dataclasses:
            with _registration_lock:
                if cls not in _registered_dataclasses:
                    _register_dataclass(cls)
                    _registered_dataclasses.add(cls)
    return False


def is_differentiable(leaf: Any) -> bool:
    """True for a floating NumPy array (float16, float32 or float64) of any shape, 0-d included."""
    return isinstance(leaf, np.ndarray) and leaf.dtype in _DIFFERENTIABLE_DTYPES


# top-level module of an array type -> the framework that owns it (gradtest.frameworks adapts it)
_FRAMEWORK_MODULES = {"torch": "torch", "jax": "jax", "jaxlib": "jax", "cupy": "cupy"}


def _protocol_kind(obj: Any) -> str | None:
    """An array of another library, known by the protocols it speaks: ``"cuda_array"`` for device
    memory (``__cuda_array_interface__``, as Numba's device arrays, or DLPack on a CUDA device),
    ``"dlpack"`` for a DLPack array in CPU memory (checked as its NumPy copy); None otherwise."""
    if isinstance(obj, (np.ndarray, np.generic)) or isinstance(obj, type):
        return None
    if hasattr(type(obj), "__cuda_array_interface__"):
        return "cuda_array"
    from . import _dlpack

    if _dlpack.is_dlpack(obj):
        try:
            return "cuda_array" if _dlpack.on_cuda(obj) else "dlpack"
        except Exception:  # a __dlpack_device__ that fails: not an array gradtest can read
            return None
    return None


def framework_of(obj: Any) -> str | None:
    """``"torch"`` or ``"jax"`` when ``obj`` is that framework's array, else None.

    Decided by the object's type alone, so a framework is never imported here: an object of one
    of its types exists only once the user has imported it.
    """
    framework = _FRAMEWORK_MODULES.get(type(obj).__module__.partition(".")[0])
    if framework is None:
        return _protocol_kind(obj)
    if framework not in sys.modules:
        return None
    from . import frameworks

    return framework if frameworks.is_array(framework, obj) else None


@dataclasses.dataclass(frozen=True)
class FlatArgs:
    """Flattened call arguments.

    Attributes
    ----------
    leaves : list
        Every leaf, in tree order (``Constant`` wrappers kept).
    paths : list of str
        A Python expression per leaf naming it, such as ``args[1]['x']['z']``.
    spec : optree.PyTreeSpec
        The structure, to rebuild trees of the same shape.
    differentiable : list of int
        Indices into ``leaves`` of the differentiated leaves.
    n_args : int
        How many positional arguments there were.
    adapters : dict of int to gradtest.frameworks.ArrayAdapter
        Differentiated leaves that were framework arrays (torch tensors, JAX arrays): their entry
        in ``leaves`` is a NumPy copy, and the adapter converts a NumPy value back for f.
    """

    leaves: list[Any]
    paths: list[str]
    spec: Any
    differentiable: list[int]
    n_args: int
    adapters: dict[int, Any] = dataclasses.field(default_factory=dict)

    @property
    def diff_leaves(self) -> list[np.ndarray]:
        return [self.leaves[i] for i in self.differentiable]

    @property
    def diff_paths(self) -> list[str]:
        return [self.paths[i] for i in self.differentiable]

    def call_args(self, replacements: dict[int, Any] | None = None) -> tuple[Any, ...]:
        """Positional arguments for ``f``: the leaves, with ``replacements[i]`` in place of leaf i
        and ``Constant`` wrappers removed."""
        replacements = replacements or {}
        leaves = [
            replacements[i] if i in replacements else _unwrap(leaf)
            for i, leaf in enumerate(self.leaves)
        ]
        for i, adapter in self.adapters.items():
            # a NumPy value at a framework leaf becomes the framework's array again; anything else
            # (a backend's own tracer, Dual or Tracked) is f's business
            if isinstance(leaves[i], np.ndarray):
                leaves[i] = adapter.wrap(leaves[i])
        return tuple(optree.tree_unflatten(self.spec, leaves))

    def gradient_tree(self, gradients: Sequence[Any]) -> tuple[Any, ...]:
        """The argument tree with each differentiated leaf replaced by its gradient and every other
        leaf by ``None``."""
        out: list[Any] = [None] * len(self.leaves)
        for i, g in zip(self.differentiable, gradients):
            out[i] = g
        return tuple(optree.tree_unflatten(self.spec, out))


def _unwrap(leaf: Any) -> Any:
    return leaf.value if isinstance(leaf, Constant) else leaf


def flatten_args(args: tuple[Any, ...]) -> FlatArgs:
    """Flattens positional arguments into leaves, paths and the indices of differentiable leaves."""
    accessors, leaves, spec = optree.tree_flatten_with_accessor(
        tuple(args), is_leaf=_is_leaf, none_is_leaf=True, namespace=_NAMESPACE
    )
    paths = [accessor.codify("args") for accessor in accessors]
    leaves = list(leaves)
    adapters: dict[int, Any] = {}
    for i, leaf in enumerate(leaves):
        framework = None if isinstance(leaf, np.ndarray) else framework_of(leaf)
        if framework is not None:
            from . import frameworks

            adapter = frameworks.adapter_for(framework, leaf)
            if adapter is not None:  # a floating array; others are held constant, unchanged
                leaves[i] = adapter.to_numpy(leaf)
                adapters[i] = adapter
    differentiable = [i for i, leaf in enumerate(leaves) if is_differentiable(leaf)]
    return FlatArgs(leaves, paths, spec, differentiable, len(args), adapters)


# ndarray subclasses that are plain arrays for every purpose of a check
_PLAIN_SUBCLASSES = (np.memmap,)


def refuse_subclasses(flat: FlatArgs) -> None:
    """Raises a TypeError naming the argument for a floating ndarray subclass among the caller's
    arguments (a masked array, np.matrix...): the ground truth perturbs and copies its data as a
    plain array, so a mask, or matrix semantics, would be silently dropped there and kept in the
    backends. Leaves wrapped in Constant are the caller's to pass as they are."""
    for leaf, path in zip(flat.leaves, flat.paths):
        _refuse_subclass(leaf, path)


def _refuse_subclass(leaf: Any, path: str) -> None:
    kind = type(leaf)
    if not isinstance(leaf, np.ndarray) or kind is np.ndarray or kind in _PLAIN_SUBCLASSES:
        return
    if leaf.dtype not in _DIFFERENTIABLE_DTYPES:
        return
    name = f"{kind.__module__}.{kind.__qualname__}"
    hint = ("fill or drop the masked elements first (x.filled(...), x.compressed()), or pass the "
            "data and the mask separately" if isinstance(leaf, np.ma.MaskedArray)
            else "pass np.asarray(x) if its semantics do not matter to f")
    raise TypeError(f"{path}: gradtest differentiates plain numpy.ndarray, got {name}, whose semantics "
                    f"the finite-difference ground truth would drop; {hint}, or wrap it in "
                    "gradtest.Constant to hold it constant")


def flatten_like(flat: FlatArgs, tree: Any, what: str) -> list[Any]:
    """One entry per leaf of the argument tree ``flat``, read from ``tree``, which must have the
    same structure, except that ``None`` may stand for a whole subtree (every leaf under it gets
    ``None``, as for an argument that is not differentiated). A top-level list stands for the
    tuple of arguments; for a single argument, its tree may also come unwrapped (``g`` or
    ``{'w': g}`` for ``(g,)`` or ``({'w': g},)``), as a single array may.

    Raises
    ------
    ValueError
        Naming ``what``, saying in the caller's terms what ``tree`` is and what was expected, when
        the structures differ, or when one value stands for several differentiated arrays.
    """
    candidates = [tuple(tree) if isinstance(tree, list) else tree]
    if flat.n_args == 1:
        candidates.append((tree,))
    for candidate in candidates:
        values = _match(flat, candidate)
        if values is not None:
            return values
    raise ValueError(_mismatch(flat, tree, what))


def _match(flat: FlatArgs, tree: Any) -> list[Any] | None:
    """The per-leaf values of ``tree`` over the arguments, or None when it does not fit them."""
    n = len(flat.leaves)
    full = optree.tree_unflatten(flat.spec, list(range(n)))
    options = dict(is_leaf=_is_leaf, none_is_leaf=True, namespace=_NAMESPACE)
    try:
        values = list(optree.broadcast_prefix(tree, full, **options))
        # which of tree's own leaves covers each argument leaf: a value other than None may
        # stand for one differentiated array only, never be copied onto several
        leaves = optree.tree_leaves(tree, **options)
        owners = optree.broadcast_prefix(optree.tree_unflatten(optree.tree_structure(tree, **options),
                                                               list(range(len(leaves)))), full, **options)
    except (ValueError, TypeError):
        return None
    covered: dict[int, int] = {}
    for position, owner in enumerate(owners):
        if position in flat.differentiable:
            covered[owner] = covered.get(owner, 0) + 1
    if any(count > 1 and leaves[owner] is not None for owner, count in covered.items()):
        return None
    return values


def _describe(node: Any) -> str:
    """What a value is, in a user's words: 'a dict with keys ['w']', 'an array of shape (3,)'."""
    if node is None:
        return "None"
    if isinstance(node, np.ndarray):
        return f"an array of shape {node.shape}"
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return f"a {type(node).__name__} (dataclass)"
    if isinstance(node, tuple) and hasattr(type(node), "_fields"):
        return f"a {type(node).__name__} (namedtuple)"
    if isinstance(node, dict):
        return f"a dict with keys {sorted(map(str, node))}"
    if isinstance(node, (tuple, list)):
        return f"a {type(node).__name__} of {len(node)}"
    return f"a {type(node).__name__}"


def _skeleton(node: Any) -> str:
    """The argument tree as the expected gradient: 'array(3,)' at each differentiated array,
    None elsewhere."""
    if is_differentiable(node):
        return f"array{node.shape}"
    if isinstance(node, (np.ndarray, Constant)) or node is None:
        return "None"
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        inner = ", ".join(f"{f.name}={_skeleton(getattr(node, f.name))}" for f in dataclasses.fields(node) if f.init)
        return f"{type(node).__name__}({inner})"
    if isinstance(node, tuple) and hasattr(type(node), "_fields"):
        inner = ", ".join(f"{k}={_skeleton(v)}" for k, v in zip(node._fields, node))
        return f"{type(node).__name__}({inner})"
    if isinstance(node, dict):
        return "{" + ", ".join(f"{k!r}: {_skeleton(v)}" for k, v in node.items()) + "}"
    if isinstance(node, tuple):
        return "(" + ", ".join(_skeleton(v) for v in node) + ("," if len(node) == 1 else "") + ")"
    if isinstance(node, list):
        return "[" + ", ".join(_skeleton(v) for v in node) + "]"
    return "None"


def _mismatch(flat: FlatArgs, tree: Any, what: str) -> str:
    args = optree.tree_unflatten(flat.spec, flat.leaves)
    if flat.n_args == 1:
        expected = (f"the gradient of the one argument, {_skeleton(args[0])} (or that wrapped in a "
                    "1-tuple)")
    else:
        expected = f"a tuple of {flat.n_args} gradients, one per argument: {_skeleton(args)}"
    # every floating array is differentiated, so a data array (X, y) the user thinks of as fixed
    # is the usual cause of a mismatch: name the way to hold it fixed
    return (f"{what}: returned {_describe(tree)}; expected {expected}, with None for what is not "
            "differentiated (every floating array is; wrap an argument in gradtest.Constant(...) "
            "to hold it fixed)")


def tree_map_outputs(fn: Callable[[Any], Any], tree: Any) -> Any:
    """Maps ``fn`` over the leaves of an output tree (arrays and numbers are leaves)."""
    return optree.tree_map(fn, tree, is_leaf=_is_leaf, none_is_leaf=True, namespace=_NAMESPACE)


def output_leaves(tree: Any) -> list[Any]:
    """The leaves of an output tree (arrays and numbers are leaves)."""
    return optree.tree_leaves(tree, is_leaf=_is_leaf, none_is_leaf=True, namespace=_NAMESPACE)
