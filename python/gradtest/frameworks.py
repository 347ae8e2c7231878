"""Other AD systems as backends: PyTorch, JAX and HIPS autograd, and their arrays as leaves.

Backends (each registered only when its package is installed; see :doc:`frameworks`):

* ``"torch"``: ``torch.autograd.grad`` (reverse mode, custom ``torch.autograd.Function`` rules
  included); ``"torch_fwd"``: forward mode (``torch.autograd.forward_ad``), one pass per element;
* ``"jax"``: ``jax.grad``; ``"jax_fwd"``: ``jax.jacfwd`` (custom ``custom_vjp``/``custom_jvp``
  rules included);
* ``"autograd"``: HIPS autograd's ``grad`` (``defvjp`` rules included).

With ``backends=None`` a framework backend runs when every differentiated argument is one of its
arrays (autograd: when f calls ``autograd.numpy`` or an autograd primitive directly); a named
backend runs on any input, its differentiated arguments converted to its arrays (so code written
against the array API standard runs under it). Inputs keep their dtype: float64 stays float64
(JAX: under ``jax.enable_x64``), float32 stays float32.

Leaves: a floating torch tensor or JAX array in the arguments is differentiated like a NumPy array.
:mod:`gradtest._tree` stores a NumPy copy of it, so the ground truth, the comparison and the report
see NumPy, and :class:`ArrayAdapter` turns a NumPy value back into the framework's array each time
f is called. The finite-difference engine perturbs one NumPy working buffer in place;
:func:`bind_working_copy` makes f see that buffer as the framework's array: torch through
``torch.from_numpy`` views, which share memory, so an evaluation costs no conversion at all; JAX
arrays are immutable (and ``jnp.asarray``/DLPack copy on CPU), so each evaluation converts every
JAX leaf anew, one memcpy of the leaf, no Python per element.

Importing this module imports no framework: each function imports its framework when it runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import inspect
import sys
import types
import warnings
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import optree

from ._tree import framework_of, tree_map_outputs
from .backends import BackendNotApplicable, register_backend

__all__ = ["ArrayAdapter", "adapter_for", "bind_working_copy", "installed", "is_array", "uses_autograd"]

_FLOATING = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
#: the forward-mode backends run by default up to this many differentiated elements (as ``"forward"``)
FORWARD_MAX_DEFAULT_SIZE = 4096


def installed(package: str) -> bool:
    """Whether ``package`` can be imported, found without importing it."""
    if package in sys.modules:
        return sys.modules[package] is not None
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def is_array(framework: str, obj: Any) -> bool:
    """Whether ``obj`` is an array of ``framework`` (``"torch"`` or ``"jax"``), which must be imported."""
    if framework == "torch":
        return isinstance(obj, sys.modules["torch"].Tensor)
    if framework == "jax":
        return isinstance(obj, sys.modules["jax"].Array)
    if framework == "cupy":  # device arrays: gradtest.cuda_reverse
        return isinstance(obj, sys.modules["cupy"].ndarray)
    # arrays of other libraries, known by their protocols (gradtest._tree)
    return framework in ("cuda_array", "dlpack")


# ---------------------------------------------------------------------------------------------
# leaves


@dataclasses.dataclass(frozen=True)
class ArrayAdapter:
    """Converts one differentiated framework leaf to NumPy and back.

    Attributes
    ----------
    framework : {'torch', 'jax'}
        The leaf's framework.
    shares_memory : bool
        Whether :meth:`wrap` returns a view of the NumPy array (torch) rather than a copy (JAX), so
        that writing into the NumPy array changes what f sees.
    """

    framework: str
    shares_memory: bool
    #: where a device leaf lives (a torch.device, a CuPy device id); None on the host
    device: Any = None

    def to_numpy(self, leaf: Any) -> np.ndarray:
        """A NumPy copy of ``leaf`` (on the CPU, detached, same dtype); the caller's leaf is untouched."""
        if self.framework == "torch":
            return leaf.detach().resolve_conj().resolve_neg().cpu().numpy().copy()
        if self.framework == "cupy":
            return sys.modules["cupy"].asnumpy(leaf)
        if self.framework == "cuda_array":  # the CUDA runtime of gradtest's device library copies it
            from . import _dlpack, cuda

            return cuda.host_copy(leaf) if hasattr(type(leaf), "__cuda_array_interface__") else _dlpack.host_copy(leaf)
        if self.framework == "dlpack":
            return np.array(np.from_dlpack(leaf), copy=True)
        return np.array(leaf, copy=True)

    def wrap(self, value: np.ndarray) -> Any:
        """``value`` as the framework's CPU array: a shared-memory view for torch, a copy for JAX."""
        if self.framework == "torch":
            return sys.modules["torch"].from_numpy(value)
        if self.framework in ("cupy", "cuda_array", "dlpack"):  # f runs on NumPy host copies there
            return value
        jax = sys.modules["jax"]
        with _x64(value.dtype):
            return jax.numpy.asarray(value)


def _protocol_dtype(framework: str, leaf: Any) -> np.dtype | None:
    """The dtype of an array known by its protocol (``__cuda_array_interface__`` or DLPack)."""
    cai = getattr(leaf, "__cuda_array_interface__", None) if framework == "cuda_array" else None
    if cai is not None:
        return np.dtype(cai["typestr"])
    from . import _dlpack

    return _dlpack.dtype_of(leaf)


def adapter_for(framework: str, leaf: Any) -> ArrayAdapter | None:
    """The adapter of a floating (float16/32/64) framework leaf; None for other dtypes, which
    are held constant."""
    try:
        dtype = _protocol_dtype(framework, leaf) if framework in ("cuda_array", "dlpack") else \
            np.dtype(str(leaf.dtype).removeprefix("torch."))
    except TypeError:  # bfloat16, complex32 and other dtypes NumPy does not know
        return None
    if dtype is None:
        return None
    if dtype not in _FLOATING:
        return None
    if framework == "cupy":
        return ArrayAdapter(framework, shares_memory=False, device=leaf.device.id)
    if framework in ("cuda_array", "dlpack"):
        return ArrayAdapter(framework, shares_memory=False, device="cuda" if framework == "cuda_array" else None)
    device = leaf.device if framework == "torch" and getattr(leaf, "is_cuda", False) else None
    return ArrayAdapter(framework, shares_memory=framework == "torch", device=device)


def _x64(dtype: Any) -> contextlib.AbstractContextManager:
    """JAX's 64-bit mode, only while float64 values are involved (it is off by default in JAX)."""
    if np.dtype(dtype) == np.float64:
        jax = sys.modules["jax"]
        enable = getattr(jax, "enable_x64", None)
        if enable is None:  # JAX before 0.6
            from jax.experimental import enable_x64 as enable
        return enable(True)
    return contextlib.nullcontext()


def as_numpy(value: Any) -> Any:
    """A framework array as a NumPy array (detached, on the CPU); anything else unchanged."""
    framework = framework_of(value)
    if framework == "torch":
        return value.detach().cpu().numpy()
    if framework == "jax":
        return np.asarray(value)
    return value


def outputs_as_numpy(out: Any) -> Any:
    """f's output with every framework array in it converted by :func:`as_numpy`."""
    return tree_map_outputs(as_numpy, out)


def bind_working_copy(fn: Callable[..., Any], problem: Any, args: tuple[Any, ...],
                      views: list[np.ndarray]) -> Callable[..., Any]:
    """The finite-difference engine's hook for framework leaves.

    Parameters
    ----------
    fn : callable
        What the engine would call, ``fn(*args, **kwargs)``.
    problem : GradientProblem
        Its flattened arguments carry the adapters.
    args : tuple
        The engine's argument tree, built on ``views`` (each framework leaf wrapped by its
        adapter, so a torch leaf is a tensor sharing the view's memory).
    views : list of numpy.ndarray
        The views of the engine's working buffer, one per differentiated leaf, which the engine
        perturbs in place.

    Returns
    -------
    callable
        Calls ``fn`` with the current values of the working buffer as the framework's arrays
        (a JAX leaf is converted anew on every call: JAX arrays are immutable), with torch's
        autograd off and JAX's 64-bit mode on while float64 values are involved, and returns
        f's output as NumPy values.
    """
    flat = problem.flat
    stale = [(i, view, flat.adapters[i]) for i, view in zip(flat.differentiable, views)
             if i in flat.adapters and not flat.adapters[i].shares_memory]
    leaves = flat.spec.flatten_up_to(args) if stale else None
    used = {adapter.framework for adapter in flat.adapters.values()}
    float64 = any(view.dtype == np.float64 for view in views)
    # torch: no graph for f's parameters that require grad; JAX: 64-bit mode for float64 views
    no_grad = sys.modules["torch"].no_grad if "torch" in used else contextlib.nullcontext
    x64 = (lambda: _x64(np.float64)) if "jax" in used and float64 else contextlib.nullcontext

    def evaluate(*call_args: Any, **kwargs: Any) -> Any:
        # one call of f per evaluation, so the common cases take the short paths
        with no_grad(), x64():
            if stale:
                current = list(leaves)
                for i, view, adapter in stale:
                    current[i] = adapter.wrap(view)
                call_args = tuple(optree.tree_unflatten(flat.spec, current))
            try:
                out = fn(*call_args, **kwargs)
            except (RuntimeError, TypeError) as exc:
                if not (float64 and _is_dtype_mismatch(exc)) or type(exc) not in (RuntimeError, TypeError):
                    raise
                raise type(exc)(f"{exc} [gradtest: the ground truth runs f in float64, with float64 "
                                "arguments; convert f's own float32 tensors (e.g. module.double()), or "
                                "pass ground_truth_dtype=numpy.float32]") from exc
        if isinstance(out, (float, np.ndarray)):
            return out
        if "torch" in used and type(out) is sys.modules["torch"].Tensor:
            return out.detach().cpu().numpy()
        return outputs_as_numpy(out)

    return evaluate


def _is_dtype_mismatch(exc: BaseException) -> bool:
    text = str(exc)
    return "dtype" in text and ("Double" in text or "float64" in text)


# ---------------------------------------------------------------------------------------------
# torch


def _torch() -> types.ModuleType:
    import torch

    return torch


_array_api_tensor: type | None = None


def _torch_inputs(problem: Any) -> list[Any]:
    """Fresh CPU tensors of the differentiated arguments, in their dtypes.

    An argument that was a NumPy array (the backend was named for NumPy inputs: code written
    against the array API standard) becomes a tensor with ``__array_namespace__``, which torch's
    own tensors lack, when array_api_compat is installed; torch arguments stay plain tensors, as
    the caller gave them.
    """
    torch = _torch()
    kind = _array_api_tensor_type()
    return [torch.from_numpy(leaf.copy()) if i in problem.flat.adapters or kind is None
            else torch.from_numpy(leaf.copy()).as_subclass(kind)
            for i, leaf in zip(problem.flat.differentiable, problem.diff_leaves)]


def _array_api_tensor_type() -> type | None:
    """A torch.Tensor subclass whose namespace is ``array_api_compat.torch`` (None without it)."""
    global _array_api_tensor
    if _array_api_tensor is None and installed("array_api_compat"):
        import array_api_compat.torch as namespace

        class ArrayAPITensor(_torch().Tensor):
            """A tensor that gives its array API namespace, as NumPy and JAX arrays do."""

            def __array_namespace__(self, *, api_version: str | None = None) -> Any:
                return namespace

        _array_api_tensor = ArrayAPITensor
    return _array_api_tensor


def _torch_dot(u: np.ndarray, leaf: Any) -> Any:
    torch = _torch()
    if not isinstance(leaf, torch.Tensor):
        return float(np.vdot(u, np.asarray(leaf, dtype=np.float64)))
    dtype = leaf.dtype if leaf.is_floating_point() else torch.float64
    return (torch.as_tensor(u, dtype=dtype, device=leaf.device) * leaf).sum()


def _tensor_to_numpy(t: Any) -> np.ndarray:
    return t.detach().as_subclass(_torch().Tensor).cpu().numpy()


def _torch_custom_rules(root: Any) -> list[str]:
    """The custom ``torch.autograd.Function`` s on the autograd graph below ``root``."""
    seen: set[int] = set()
    names: list[str] = []
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        cls = getattr(node, "_forward_cls", None)
        if cls is not None:
            name = f"{cls.__module__}.{cls.__qualname__}.backward"
            if name not in names:
                names.append(name)
        stack.extend(fn for fn, _ in getattr(node, "next_functions", ()))
    return names


def _note_rules(problem: Any, backend: str, rules: list[str]) -> None:
    if rules:
        problem.notes.append(f"{backend}: differentiated through the custom rule(s) {', '.join(rules)}; "
                             "a mismatch of this backend is a mismatch of these rules")


def _torch_compute(problem: Any) -> list[np.ndarray]:
    """The ``"torch"`` backend: ``torch.autograd.grad`` of ``<u, f(x)>`` on CPU tensors."""
    torch = _torch()
    xs = [x.requires_grad_(True) for x in _torch_inputs(problem)]
    with torch.enable_grad():
        out = problem.output.reduce(problem.call(xs), dot=_torch_dot)
        if not isinstance(out, torch.Tensor) or not out.requires_grad:
            raise TypeError(f"f returned {type(out).__name__} that torch cannot differentiate with "
                            "respect to the inputs (not a tensor computed from them)")
        if out.numel() != 1:
            raise ValueError(f"f reduced to a tensor of shape {tuple(out.shape)}, not a scalar")
        _note_rules(problem, "torch", _torch_custom_rules(out.grad_fn))
        grads = torch.autograd.grad(out.reshape(()), xs, allow_unused=True)
    return [np.zeros_like(leaf) if g is None else _tensor_to_numpy(g).astype(leaf.dtype, copy=False)
            for g, leaf in zip(grads, problem.diff_leaves)]


@contextlib.contextmanager
def _quiet_torch_forward_ad() -> Iterator[None]:
    # torch's forward AD scripts its decompositions on first use and warns that torch.jit.script
    # is deprecated: torch's own business, not the user's
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=DeprecationWarning)
        yield


def _torch_fwd_compute(problem: Any) -> list[np.ndarray]:
    """The ``"torch_fwd"`` backend: forward mode, one pass per differentiated element."""
    torch = _torch()
    fwad = torch.autograd.forward_ad
    primals = _torch_inputs(problem)
    grads = [np.zeros(leaf.shape, dtype=leaf.dtype) for leaf in problem.diff_leaves]
    with _quiet_torch_forward_ad(), torch.no_grad():
        for k, leaf in enumerate(problem.diff_leaves):
            flat_grad = grads[k].reshape(-1)
            for j in range(leaf.size):
                tangent = torch.zeros(leaf.size, dtype=primals[k].dtype)
                tangent[j] = 1
                with fwad.dual_level():
                    xs = [fwad.make_dual(p, tangent.reshape(p.shape)) if m == k else p
                          for m, p in enumerate(primals)]
                    try:
                        out = problem.output.reduce(problem.call(xs), dot=_torch_dot)
                    except NotImplementedError as exc:
                        if "jvp" in str(exc) and "autograd.Function" in str(exc):
                            raise BackendNotApplicable(
                                f"f uses a custom torch.autograd.Function without a jvp rule ({exc})") from exc
                        raise
                    if not isinstance(out, torch.Tensor):
                        raise TypeError(f"f returned {type(out).__name__}, not a tensor computed from its inputs")
                    tangent_out = fwad.unpack_dual(out).tangent
                    flat_grad[j] = 0.0 if tangent_out is None else float(tangent_out.sum())
    return grads


def _torch_hvp(problem: Any, vs: list[np.ndarray]) -> list[np.ndarray]:
    """Hessian-vector products by reverse over reverse (``create_graph=True``)."""
    torch = _torch()
    xs = [x.requires_grad_(True) for x in _torch_inputs(problem)]
    with torch.enable_grad():
        out = problem.output.reduce(problem.call(xs), dot=_torch_dot)
        grads = torch.autograd.grad(out.reshape(()), xs, create_graph=True, allow_unused=True)
        dot = sum((g * torch.as_tensor(v, dtype=g.dtype)).sum() for g, v in zip(grads, vs) if g is not None)
        if not isinstance(dot, torch.Tensor) or not dot.requires_grad:
            return [np.zeros_like(leaf) for leaf in problem.diff_leaves]
        hv = torch.autograd.grad(dot, xs, allow_unused=True)
    return [np.zeros_like(leaf) if h is None else _tensor_to_numpy(h) for h, leaf in zip(hv, problem.diff_leaves)]


# ---------------------------------------------------------------------------------------------
# JAX


def _jax() -> types.ModuleType:
    import jax

    return jax


def _jax_dot(u: np.ndarray, leaf: Any) -> Any:
    jnp = _jax().numpy
    dtype = leaf.dtype if jnp.issubdtype(leaf.dtype, jnp.floating) else jnp.float64
    return jnp.sum(jnp.asarray(u, dtype=dtype) * leaf)


def _jax_x64(problem: Any) -> contextlib.AbstractContextManager:
    float64 = any(leaf.dtype == np.float64 for leaf in problem.diff_leaves)
    return _x64(np.float64 if float64 else np.float32)


def _jax_scalar(problem: Any) -> Callable[[list[Any]], Any]:
    def scalar(xs: list[Any]) -> Any:
        out = problem.output.reduce(problem.call(list(xs)), dot=_jax_dot)
        if np.shape(out) not in ((), (1,)):
            raise ValueError(f"f reduced to an array of shape {np.shape(out)}, not a scalar")
        return _jax().numpy.reshape(out, ())

    return scalar


def _jax_custom_rules(jaxpr: Any) -> list[str]:
    """Custom ``custom_vjp``/``custom_jvp`` rules in a (closed) jaxpr, nested calls included, as
    ``'<rule> at <file>:<line>'``. Best effort: an unknown jaxpr layout gives no names."""
    names: list[str] = []
    stack = [jaxpr]
    while stack:
        node = stack.pop()
        inner = getattr(node, "jaxpr", node)
        for eqn in getattr(inner, "eqns", ()):
            kind = eqn.primitive.name
            for key, value in eqn.params.items():
                if kind.startswith("custom_vjp") and key == "bwd" or kind.startswith("custom_jvp") and key == "jvp_jaxpr_fun":
                    info = getattr(getattr(value, "debug_info", None), "func_src_info", None)
                    flavour = "jax.custom_vjp" if kind.startswith("custom_vjp") else "jax.custom_jvp"
                    label = f"{info} ({flavour})" if info else f"a {flavour} rule"
                    if label not in names:
                        names.append(label)
                elif hasattr(value, "eqns") or hasattr(getattr(value, "jaxpr", None), "eqns"):
                    stack.append(value)
                elif isinstance(value, (tuple, list)):
                    stack.extend(v for v in value if hasattr(v, "eqns") or hasattr(getattr(v, "jaxpr", None), "eqns"))
    return names


# f -> its custom rules: tracing f again for the note costs as much as a gradient, and order=2
# checks compute a gradient per evaluation
_RULES_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _jax_note_rules(problem: Any, backend: str, scalar: Callable[[list[Any]], Any], xs: list[Any]) -> None:
    key = (tuple((x.shape, str(x.dtype)) for x in xs), problem.output.scalar)
    try:
        rules = _RULES_CACHE.get(problem.f, {}).get(key)
    except TypeError:  # f cannot be weakly referenced
        rules = None
    if rules is None:
        try:
            rules = _jax_custom_rules(_jax().make_jaxpr(scalar)(xs))
        except Exception:  # the note is a courtesy; the backend's own run reports f's failures
            rules = []
        with contextlib.suppress(TypeError):
            _RULES_CACHE.setdefault(problem.f, {})[key] = rules
    _note_rules(problem, backend, rules)


def _jax_compute(problem: Any) -> list[np.ndarray]:
    """The ``"jax"`` backend: ``jax.grad`` of ``<u, f(x)>``."""
    jax = _jax()
    with _jax_x64(problem):
        xs = [jax.numpy.asarray(leaf) for leaf in problem.diff_leaves]
        scalar = _jax_scalar(problem)
        grads = jax.grad(scalar)(xs)
        _jax_note_rules(problem, "jax", scalar, xs)
    return [np.asarray(g).astype(leaf.dtype, copy=False) for g, leaf in zip(grads, problem.diff_leaves)]


def _jax_fwd_compute(problem: Any) -> list[np.ndarray]:
    """The ``"jax_fwd"`` backend: ``jax.jacfwd`` (forward mode, vectorised over the elements)."""
    jax = _jax()
    with _jax_x64(problem):
        xs = [jax.numpy.asarray(leaf) for leaf in problem.diff_leaves]
        try:
            grads = jax.jacfwd(_jax_scalar(problem))(xs)
        except TypeError as exc:
            if "custom_vjp" in str(exc):
                raise BackendNotApplicable(f"f uses a jax.custom_vjp rule, which has no forward mode ({exc})") from exc
            raise
    return [np.asarray(g).astype(leaf.dtype, copy=False) for g, leaf in zip(grads, problem.diff_leaves)]


def _jax_hvp(problem: Any, vs: list[np.ndarray]) -> list[np.ndarray]:
    """Hessian-vector products by forward over reverse (``jax.jvp`` of ``jax.grad``)."""
    jax = _jax()
    with _jax_x64(problem):
        xs = [jax.numpy.asarray(leaf) for leaf in problem.diff_leaves]
        ts = [jax.numpy.asarray(v, dtype=leaf.dtype) for v, leaf in zip(vs, problem.diff_leaves)]
        _, hv = jax.jvp(jax.grad(_jax_scalar(problem)), (xs,), (ts,))
    return [np.asarray(h) for h in hv]


# ---------------------------------------------------------------------------------------------
# HIPS autograd


def _autograd_compute(problem: Any) -> list[np.ndarray]:
    """The ``"autograd"`` backend: HIPS autograd's reverse mode, on NumPy arrays."""
    import autograd
    import autograd.numpy as anp

    def dot(u: np.ndarray, leaf: Any) -> Any:
        return anp.sum(u * leaf)

    def scalar(xs: list[Any]) -> Any:
        return problem.output.reduce(problem.call(list(xs)), dot=dot)

    with warnings.catch_warnings():
        # autograd warns "Output seems independent of input" and returns zeros: a valid gradient
        warnings.filterwarnings("ignore", message="Output seems independent of input", category=UserWarning)
        grads = autograd.grad(scalar)([leaf.copy() for leaf in problem.diff_leaves])
    return [np.asarray(g, dtype=leaf.dtype).reshape(leaf.shape) for g, leaf in zip(grads, problem.diff_leaves)]


def _is_autograd_object(obj: Any) -> bool:
    if getattr(obj, "_is_autograd_primitive", False):
        return True
    module = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", None)
    return isinstance(module, str) and (module == "autograd" or module.startswith("autograd."))


def uses_autograd(f: Any) -> bool:
    """Whether f's own code refers to autograd (``autograd.numpy``, an autograd primitive, a
    ``defvjp`` rule): the names its code (and the lambdas and comprehensions in it) looks up in
    its globals and closure. Functions it calls are not inspected."""
    if "autograd" not in sys.modules:
        return False
    while isinstance(f, functools.partial):
        f = f.func
    f = inspect.unwrap(f)
    if _is_autograd_object(f):
        return True
    code = getattr(f, "__code__", None)
    if code is None:
        return False
    scope = dict(getattr(f, "__globals__", {}))
    for name, cell in zip(code.co_freevars, getattr(f, "__closure__", None) or ()):
        with contextlib.suppress(ValueError):
            scope[name] = cell.cell_contents
    codes = [code]
    while codes:
        c = codes.pop()
        for name in c.co_names + c.co_freevars:
            if name in scope and _is_autograd_object(scope[name]):
                return True
        codes.extend(const for const in c.co_consts if isinstance(const, types.CodeType))
    return False


# ---------------------------------------------------------------------------------------------
# registration


def _forward_size_applies(problem: Any) -> bool:
    return problem.size <= FORWARD_MAX_DEFAULT_SIZE


def _register() -> None:
    common = "runs by default when every differentiated argument is a {} array; named in backends=, on any input"
    if installed("torch"):
        register_backend("torch", _torch_compute, array_types=("torch",), hvp=_torch_hvp,
                         description="PyTorch reverse mode (torch.autograd.grad, custom Functions included); "
                         + common.format("torch"))
        register_backend("torch_fwd", _torch_fwd_compute, array_types=("torch",), applies=_forward_size_applies,
                         description="PyTorch forward mode (torch.autograd.forward_ad), one pass per element; "
                         + common.format("torch") + f", up to {FORWARD_MAX_DEFAULT_SIZE} elements")
    if installed("jax"):
        register_backend("jax", _jax_compute, array_types=("jax",), hvp=_jax_hvp,
                         description="JAX reverse mode (jax.grad, custom_vjp rules included); " + common.format("JAX"))
        register_backend("jax_fwd", _jax_fwd_compute, array_types=("jax",), applies=_forward_size_applies,
                         description="JAX forward mode (jax.jacfwd); " + common.format("JAX")
                         + f", up to {FORWARD_MAX_DEFAULT_SIZE} elements")
    if installed("autograd"):
        register_backend("autograd", _autograd_compute, applies=lambda problem: uses_autograd(problem.f),
                         description="HIPS autograd reverse mode (defvjp rules included); runs by default when "
                         "f's own code calls autograd.numpy or an autograd primitive")


_register()
