"""The backend registry.

A backend turns a :class:`~gradtest.GradientProblem` into one gradient array per differentiated
leaf. The orchestration (:func:`gradtest.check_gradients`) knows nothing of any backend beyond
this registry, so a new engine plugs in with one :func:`register_backend` call.

Third-party packages add backends through the ``gradtest.backends`` entry-point group: the registry
loads every entry point of that group when it is first looked at, and calls the loaded object when
it is callable (a module that registers on import needs no function)::

    [project.entry-points."gradtest.backends"]
    mybackend = "mypackage.gradtest_backend:register"

A plugin that fails to load is reported by a :class:`RuntimeWarning` and left out.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import threading
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from ._names import unknown_backend

if TYPE_CHECKING:
    from ._problem import GradientProblem

ComputeFn = Callable[["GradientProblem"], "list[np.ndarray]"]
AppliesFn = Callable[["GradientProblem"], bool]
HvpFn = Callable[["GradientProblem", "list[np.ndarray]"], "list[np.ndarray]"]


@dataclasses.dataclass(frozen=True)
class Backend:
    """A registered differentiation backend.

    Attributes
    ----------
    name : str
        The name used in ``backends=``, ``skip_backends=`` and reports.
    compute : callable
        ``compute(problem) -> list[numpy.ndarray]``: the gradient of ``problem.scalar_output``
        with respect to each differentiated leaf, in leaf order and with each leaf's shape.
    applies : callable
        ``applies(problem) -> bool``: whether the backend runs on these inputs when no
        ``backends=`` list names it explicitly (e.g. a size limit).
    default : bool
        Whether the backend runs when ``backends=None``.
    description : str
        One line for reports and documentation.
    hvp : callable or None
        ``hvp(problem, v) -> list[numpy.ndarray]``: the Hessian-vector product of
        ``problem.scalar_output`` with v (one array per differentiated leaf), for ``order=2``
        checks; None when the backend has no second-order mode.
    array_types : tuple of str
        The kinds of differentiated arguments it runs on by default: ``"numpy"`` (NumPy arrays),
        ``"torch"`` (torch tensors), ``"jax"`` (JAX arrays). With ``backends=None`` it runs only
        when every differentiated argument is of one of these kinds.
    """

    name: str
    compute: ComputeFn
    applies: AppliesFn
    default: bool = True
    description: str = ""
    hvp: HvpFn | None = None
    array_types: tuple[str, ...] = ("numpy",)


class BackendNotApplicable(Exception):
    """Raised by a backend's ``compute`` when it cannot differentiate this f at all, such as
    forward mode through a custom rule that has only a reverse rule. The backend is reported as
    ``skipped`` with this message, rather than as an error."""


_REGISTRY: dict[str, Backend] = {}

# Modules whose import registers the built-in backends; imported on the first look at the
# registry, so that `import gradtest` (and the pytest plugin) stays cheap. Their order is the
# order of reports.
_BUILTIN_MODULES = ("gradtest.api", "gradtest.forward", "gradtest.reverse", "gradtest.frameworks",
                    "gradtest.cuda_reverse")
_BUILTIN_ORDER = ("finite_diff", "user", "forward", "reverse", "torch", "torch_fwd", "jax", "jax_fwd", "autograd",
                  "cuda_reverse")
ENTRY_POINT_GROUP = "gradtest.backends"
_builtins_lock = threading.RLock()
_builtins_loaded = False


def _load_builtins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    with _builtins_lock:
        if not _builtins_loaded:
            for module in _BUILTIN_MODULES:
                importlib.import_module(module)
            _builtins_loaded = True
            _load_plugins()


def _load_plugins() -> None:
    """Loads the ``gradtest.backends`` entry points (see the module docstring)."""
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = entry.load()
            if callable(loaded):
                loaded()
        except Exception as exc:  # one broken plugin must not take gradtest down
            warnings.warn(f"gradtest: the backend plugin {entry.name!r} ({entry.value}) failed to load "
                          f"and is left out: {type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=2)


def _always(problem: GradientProblem) -> bool:
    return True


def register_backend(
    name: str,
    compute: ComputeFn,
    *,
    applies: AppliesFn | None = None,
    default: bool = True,
    description: str = "",
    hvp: HvpFn | None = None,
    array_types: tuple[str, ...] = ("numpy",),
) -> Backend:
    """Registers (or replaces) the backend called ``name``.

    Parameters
    ----------
    name : str
        Backend name; must be a non-empty identifier-like string.
    compute : callable
        ``compute(problem) -> list[numpy.ndarray]``, see :class:`Backend`.
    applies : callable, optional
        ``applies(problem) -> bool``; by default the backend applies to every input.
    default : bool, optional
        Whether the backend runs when ``backends=None``.
    description : str, optional
        One line shown in reports.
    hvp : callable, optional
        ``hvp(problem, v) -> list[numpy.ndarray]``, the backend's Hessian-vector product, which
        ``order=2`` checks use.
    array_types : tuple of str, optional
        The kinds of differentiated arguments it runs on by default (``"numpy"``, ``"torch"``,
        ``"jax"``); see :class:`Backend`.

    Returns
    -------
    Backend
        The registered entry.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a non-empty string, got {name!r}")
    if not callable(compute):
        raise TypeError(f"compute: expected a callable, got {type(compute).__name__}")
    if hvp is not None and not callable(hvp):
        raise TypeError(f"hvp: expected a callable or None, got {type(hvp).__name__}")
    array_types = tuple(array_types)
    if not array_types or not all(isinstance(kind, str) for kind in array_types):
        raise TypeError(f"array_types: expected a non-empty tuple of str, got {array_types!r}")
    backend = Backend(name, compute, applies or _always, default, description, hvp, array_types)
    _REGISTRY[name] = backend
    return backend


# (plural, singular) names of the kinds of differentiated arguments, for the reasons below
_KIND_NAMES = {"numpy": ("NumPy arrays", "a NumPy array"), "torch": ("torch tensors", "a torch tensor"),
               "jax": ("JAX arrays", "a JAX array"), "cupy": ("CuPy arrays", "a CuPy array"),
               "cuda_array": ("device arrays", "a device array (__cuda_array_interface__ or DLPack)"),
               "dlpack": ("DLPack arrays", "a DLPack array")}


def _leaf_kind_name(adapter: object) -> str:
    kind = getattr(adapter, "framework", "numpy")
    if kind == "torch" and getattr(adapter, "device", None) is not None:
        return "a torch CUDA tensor"
    return _KIND_NAMES.get(kind, (kind, kind))[1]


def device_leaf_note(problem: GradientProblem) -> str | None:
    """The report's note on what each engine does with device arrays (CuPy arrays, PyTorch CUDA
    tensors) among the differentiated leaves; None when there are none."""
    adapters = problem.flat.adapters
    device = [problem.flat.paths[i] for i in problem.flat.differentiable
              if getattr(adapters.get(i), "device", None) is not None]
    if not device:
        return None
    return (f"device arrays ({', '.join(device)}): the ground truth runs f on host copies on the CPU; "
            "cuda_reverse differentiates on the device (NumPy-API f; not applicable to torch code); "
            "the host engines forward and reverse do not run on device arrays; the torch backends run f "
            "on CPU copies of CUDA tensors")


def _other_array_type(backend: Backend, problem: GradientProblem) -> str | None:
    """'args[0] is a NumPy array' for the first differentiated leaf of a type ``backend`` does
    not run f on; None when it runs f on every leaf's type."""
    adapters = problem.flat.adapters
    for i in problem.flat.differentiable:
        kind = adapters[i].framework if i in adapters else "numpy"
        if kind == "dlpack":  # a DLPack array in CPU memory is checked as its NumPy copy
            kind = "numpy"
        if kind not in backend.array_types:
            return f"{problem.flat.paths[i]} is {_leaf_kind_name(adapters.get(i))}"
    return None


def _runs_on(backends: list[Backend]) -> str:
    kinds = list(dict.fromkeys(k for b in backends for k in b.array_types))
    names = [_KIND_NAMES.get(k, (k, k))[0] for k in kinds]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def not_run_reason(backend: Backend, problem: GradientProblem) -> str | None:
    """Why ``backend`` does not run on ``problem`` when ``backends=None``; None when it does."""
    if not backend.default:
        return "off by default (name it in backends=)"
    leaf = _other_array_type(backend, problem)
    if leaf is not None:
        return f"it runs f on {_runs_on([backend])} and {leaf}"
    if not backend.applies(problem):
        return f"not applicable to these inputs: {backend.description}" if backend.description else \
            "not applicable to these inputs"
    return None


def not_run_note(backends: list[Backend], problem: GradientProblem) -> str | None:
    """The report's note on the default ``backends`` that do not run on ``problem``, one clause
    per reason: those that run f on other array types than the leaves' share one clause, so a
    NumPy user reads one line about the framework backends, not one per backend."""
    by_leaf: dict[str, list[Backend]] = {}
    by_reason: dict[str, list[Backend]] = {}
    for backend in backends:
        leaf = _other_array_type(backend, problem) if backend.default else None
        if leaf is not None:
            by_leaf.setdefault(leaf, []).append(backend)
        else:
            by_reason.setdefault(not_run_reason(backend, problem) or "not applicable", []).append(backend)
    clauses = [f"{', '.join(b.name for b in group)} ({'they run' if len(group) > 1 else 'it runs'} f on "
               f"{_runs_on(group)}; {leaf})" for leaf, group in by_leaf.items()]
    clauses += [f"{', '.join(b.name for b in group)} ({why})" for why, group in by_reason.items()]
    return "not run by default: " + "; ".join(clauses) if clauses else None


def get_backend(name: str) -> Backend:
    """The backend registered as ``name``.

    Raises
    ------
    ValueError
        If no backend has that name; the message lists the known ones.
    """
    _load_builtins()
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(unknown_backend(name, available_backends())) from None


def available_backends() -> list[str]:
    """Names of all registered backends: the built-in ones first, then others in registration
    order."""
    _load_builtins()
    rank = {name: i for i, name in enumerate(_BUILTIN_ORDER)}
    return sorted(_REGISTRY, key=lambda name: rank.get(name, len(rank)))


def unregister_backend(name: str) -> None:
    """Removes the backend called ``name`` (for tests and plugins that registered temporary ones).

    Raises
    ------
    ValueError
        If no backend has that name.
    """
    get_backend(name)
    del _REGISTRY[name]
