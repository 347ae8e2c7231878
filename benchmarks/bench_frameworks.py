"""gradtest's framework backends against torch.autograd.gradcheck and jax.test_util.check_grads.

Run alone with ``python benchmarks/bench_frameworks.py [--quick]`` (from the repository root, after
``python setup.py build_ext --inplace``; ``pip install ".[torch,jax]"``), or through
``benchmarks/run.py``. A framework that is not installed is skipped with a message.

The same function, ``sum(cube(x))`` with ``cube`` a custom rule (a ``torch.autograd.Function``, a
``jax.custom_vjp``) whose backward multiplies one element (index n // 3) of the gradient by
``1 + e``, is checked on x ~ U(0.5, 1.5)^n in float64 by each tool with its default settings. Rows
per framework and n:

* ``time``: seconds of one check of the correct rule (best of a few, after a warm-up), for gradtest
  (``check_gradients`` with the framework's reverse-mode backend) and for the framework's own
  checker; and their ratio;
* ``smallest error caught``: the smallest e in 1e-1, 1e-2, ..., 1e-13 such that the tool flags
  this and every larger e of the scan (NaN when it misses even 1e-1); and gradtest's advantage,
  the other tool's smallest e over gradtest's (``>= 10`` is the target of the issue that asked for
  these backends).
* ``float32 false alarm``: 1 when the tool fails a correct float32 MLP (inputs and parameters all
  checked), 0 when it passes it.

The verdicts are whatever the installed gradtest decides: nothing here is fixed in advance.
Also measured: gradtest's own cost per ground-truth evaluation beyond f's, for a NumPy, a torch
and a JAX leaf: torch's ``from_numpy`` views share the engine's buffer, while a JAX leaf costs one
``jnp.asarray`` copy per evaluation (JAX arrays are immutable).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

try:
    import gradtest
except ImportError:  # run from a checkout: use the in-place build under python/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
    import gradtest

BENCH = "frameworks"
ERRORS = [10.0 ** -k for k in range(1, 14)]  # down to 1e-13, about 450 float64 ulps


def _row(case: str, value: float, unit: str, target: str = "") -> dict[str, Any]:
    return {"benchmark": BENCH, "case": case, "value": float(value), "unit": unit, "target": target}


def _seconds(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm-up: compilation, lazy initialisation
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _smallest_caught(flags: Callable[[float], bool]) -> float:
    """The smallest error of the scan caught along with every larger one (NaN: none caught)."""
    smallest = float("nan")
    for e in ERRORS:
        if not flags(e):
            break
        smallest = e
    return smallest


def _inputs(n: int) -> np.ndarray:
    return np.random.default_rng(0).uniform(0.5, 1.5, n)


# ---------------------------------------------------------------------------------------------
# torch


def _torch_cube(torch: Any, n: int, e: float) -> Any:
    scale = torch.ones(n, dtype=torch.float64)
    scale[n // 3] += e

    class Cube(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Any) -> Any:
            ctx.save_for_backward(x)
            return x ** 3

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            (x,) = ctx.saved_tensors
            return 3 * x ** 2 * grad * scale.to(x.dtype)

    return lambda x: Cube.apply(x).sum()


def _torch_rows(sizes: list[int], repeat: int) -> list[dict[str, Any]]:
    import torch

    rows = []
    for n in sizes:
        x = torch.from_numpy(_inputs(n))

        def ours(f: Any, x: Any = x) -> bool:
            return gradtest.check_gradients(f, x, backends=["torch"]).outcomes["torch"].status == "fail"

        def theirs(f: Any, x: Any = x) -> bool:
            return not torch.autograd.gradcheck(f, (x.clone().requires_grad_(True),), raise_exception=False)

        rows += _side_by_side(f"torch n={n}", "gradcheck", ours, theirs, lambda e, n=n: _torch_cube(torch, n, e),
                              repeat)
    rows += _torch_float32(torch)
    return rows


def _side_by_side(label: str, other: str, ours: Callable[[Any], bool], theirs: Callable[[Any], bool],
                  make: Callable[[float], Any], repeat: int) -> list[dict[str, Any]]:
    """Time (on the correct rule) and smallest error caught, gradtest's and the other tool's."""
    correct = make(0.0)
    t_ours, t_theirs = _seconds(lambda: ours(correct), repeat), _seconds(lambda: theirs(correct), repeat)
    e_ours = _smallest_caught(lambda e: ours(make(e)))
    e_theirs = _smallest_caught(lambda e: theirs(make(e)))
    return [
        _row(f"{label}: time, gradtest", t_ours, "s"),
        _row(f"{label}: time, {other}", t_theirs, "s"),
        _row(f"{label}: {other} time / gradtest's", t_theirs / t_ours, "x"),
        _row(f"{label}: smallest error caught, gradtest", e_ours, "rel. error"),
        _row(f"{label}: smallest error caught, {other}", e_theirs, "rel. error"),
        _row(f"{label}: {other}'s smallest / gradtest's", _ratio(e_theirs, e_ours), "x", ">= 10"),
    ]


def _mlp_params(n_in: int = 16, n_hidden: int = 32) -> list[np.ndarray]:
    """x, w1, b1, w2 of a small MLP, in float32."""
    rng = np.random.default_rng(0)
    shapes = [(8, n_in), (n_in, n_hidden), (n_hidden,), (n_hidden, 1)]
    return [(rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32) for s in shapes]


def _torch_float32(torch: Any) -> list[dict[str, Any]]:
    """A correct float32 MLP, its parameters among the checked inputs: does either tool raise a
    false alarm?"""
    def f(x: Any, w1: Any, b1: Any, w2: Any) -> Any:
        return (torch.tanh(x @ w1 + b1) @ w2).sum()

    args = [torch.from_numpy(a) for a in _mlp_params()]
    ours = not gradtest.check_gradients(f, *args, backends=["torch"]).passed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gradcheck warns that the inputs are not float64
        theirs = not torch.autograd.gradcheck(f, tuple(a.clone().requires_grad_(True) for a in args),
                                              raise_exception=False)
    return [_row("torch float32 MLP: false alarm, gradtest", ours, "1 = alarm", "< 1"),
            _row("torch float32 MLP: false alarm, gradcheck", theirs, "1 = alarm")]


# ---------------------------------------------------------------------------------------------
# JAX


def _jax_cube(jax: Any, n: int, e: float) -> Any:
    jnp = jax.numpy
    scale = np.ones(n)
    scale[n // 3] += e

    @jax.custom_vjp
    def cube(x: Any) -> Any:
        return x ** 3

    def cube_fwd(x: Any) -> Any:
        return x ** 3, x

    def cube_bwd(x: Any, g: Any) -> Any:
        return (3 * x ** 2 * g * jnp.asarray(scale, dtype=x.dtype),)

    cube.defvjp(cube_fwd, cube_bwd)
    return jax.jit(lambda x: jnp.sum(cube(x)))


def _jax_rows(sizes: list[int], repeat: int) -> list[dict[str, Any]]:
    import jax
    from jax.test_util import check_grads

    def flags(f: Any, args: tuple[Any, ...]) -> bool:
        try:
            check_grads(f, args, order=1, modes=["rev"])
        except AssertionError:
            return True
        return False

    rows = []
    with jax.enable_x64(True):
        for n in sizes:
            x = jax.numpy.asarray(_inputs(n))

            def ours(f: Any, x: Any = x) -> bool:
                return gradtest.check_gradients(f, x, backends=["jax"]).outcomes["jax"].status == "fail"

            rows += _side_by_side(f"jax n={n}", "check_grads", ours, lambda f, x=x: flags(f, (x,)),
                                  lambda e, n=n: _jax_cube(jax, n, e), repeat)
    jnp = jax.numpy

    def mlp(x: Any, w1: Any, b1: Any, w2: Any) -> Any:
        return jnp.sum(jnp.tanh(x @ w1 + b1) @ w2)

    args = tuple(jnp.asarray(a) for a in _mlp_params())
    ours = not gradtest.check_gradients(mlp, *args, backends=["jax"]).passed
    rows += [_row("jax float32 MLP: false alarm, gradtest", ours, "1 = alarm", "< 1"),
             _row("jax float32 MLP: false alarm, check_grads", flags(mlp, args), "1 = alarm")]
    return rows


def _conversion_rows(n: int, repeat: int) -> list[dict[str, Any]]:
    """gradtest's own cost per ground-truth evaluation with a framework leaf: the ground truth's
    time per evaluation of f(x) = x[0] (jitted for JAX) minus the time of one direct call of
    the same f on a ready-made array of that framework (f's own cost)."""
    cases = [("NumPy", _inputs(n), lambda x: x[0])]
    if _have("torch"):
        import torch

        cases.append(("torch", torch.from_numpy(_inputs(n)), lambda x: x[0]))
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gradtest.NoBackendWarning)  # only the ground truth runs
        for name, x, f in cases:
            rows.append(_overhead_row(name, x, f, n, repeat))
        if _have("jax"):
            import jax

            with jax.enable_x64(True):
                rows.append(_overhead_row("JAX", jax.numpy.asarray(_inputs(n)), jax.jit(lambda x: x[0]), n, repeat))
    return rows


def _overhead_row(name: str, x: Any, f: Callable[[Any], Any], n: int, repeat: int) -> dict[str, Any]:
    def ground_truth() -> gradtest.GradientReport:
        return gradtest.check_gradients(f, x, backends=[], mode="full", time_budget=600.0)

    evals = ground_truth().evaluations  # the engine decides how many (adaptive steps)

    def direct() -> None:
        for _ in range(evals):
            f(x)

    per_eval = (_seconds(ground_truth, repeat) - _seconds(direct, repeat)) / evals
    return _row(f"ground truth overhead per evaluation, {name} leaf, n={n}", per_eval * 1e6, "µs")


# ---------------------------------------------------------------------------------------------


def _ratio(theirs: float, ours: float) -> float:
    if np.isnan(theirs):  # the other tool missed even the largest error
        return float("inf") if not np.isnan(ours) else float("nan")
    return theirs / ours


def _have(package: str) -> bool:
    try:
        __import__(package)
    except ImportError:
        return False
    return True


def run(quick: bool = False) -> list[dict[str, Any]]:
    """All rows; ``quick`` checks fewer sizes with fewer repeats."""
    sizes = [100, 1000] if quick else [100, 1000, 10_000]
    repeat = 1 if quick else 3
    rows: list[dict[str, Any]] = []
    for package, make_rows in (("torch", _torch_rows), ("jax", _jax_rows)):
        if _have(package):
            rows += make_rows(sizes, repeat)
        else:
            print(f"bench_frameworks: {package} is not installed; skipping its rows "
                  f'(pip install ".[{package}]")', file=sys.stderr)
    for n in [1000] if quick else [1000, 10_000]:
        rows += _conversion_rows(n, repeat)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    options = parser.parse_args(argv)
    for row in run(options.quick):
        target = f"  (target {row['target']})" if row["target"] else ""
        print(f"{row['case']:<62} {row['value']:>12.4g} {row['unit']}{target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
