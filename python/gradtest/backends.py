"""The backend registry.

A backend turns a :class:`~gradtest.GradientProblem` into one gradient array per differentiated
leaf. The orchestration (:func:`gradtest.check_gradients`) knows nothing of any backend beyond
this registry, so a new engine plugs in with one :func:`register_backend` call.
"""

from __future__ import annotations

import dataclasses
import importlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

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
    """

    name: str
    compute: ComputeFn
    applies: AppliesFn
    default: bool = True
    description: str = ""
    hvp: HvpFn | None = None


_REGISTRY: dict[str, Backend] = {}

# Modules whose import registers the built-in backends; imported on the first look at the
# registry, so that `import gradtest` (and the pytest plugin) stays cheap. Their order is the
# order of reports.
_BUILTIN_MODULES = ("gradtest.api", "gradtest.forward", "gradtest.reverse")
_BUILTIN_ORDER = ("finite_diff", "user", "forward", "reverse")
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
    backend = Backend(name, compute, applies or _always, default, description, hvp)
    _REGISTRY[name] = backend
    return backend


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
        raise ValueError(
            f"unknown backend {name!r}; known backends: {', '.join(available_backends())}"
        ) from None


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
