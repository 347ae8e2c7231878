"""Order 2: the time of a Hessian-vector product over the time of one gradient, both through the
public API (``gradtest.reverse.hvp`` and ``gradtest.reverse.gradient_reverse``), timed side by
side in one run.

Run alone with ``python benchmarks/bench_order2.py [--quick]`` (from the repository root, after
``python setup.py build_ext --inplace``), or through ``benchmarks/run.py``. Target (issue 10): a
Hessian-vector product costs at most 4x one gradient. Rows, each with both times and the ratio:

* ``chain-8``: a 20-op elementwise chain on 8 elements (per-op overhead dominates);
* ``chain-1e5``: the same chain on 10^5 elements (memory traffic dominates);
* ``mlp``: the mean squared error of a 3-layer tanh MLP in about 10^4 parameters (matmuls);
* ``structural``: gathers, a broadcast, sum/max/mean reductions, cumsum and prod on a (64, 64)
  array (prod is a tree of multiplies, at every order);
* ``linalg`` (no target): slogdet, solve and eigvalsh of a 32x32 matrix, rules whose order 2 is
  the trapezoid form (docs/reverse.rst): their coefficients (an inverse, the eigenvectors) are
  recomputed on the tape, so the ratio is higher;
* ``special`` (no target, SciPy only): betaln and xlogy on 10^4 elements, the same form for
  ``pointwise`` partials (digamma's derivative, polygamma, is most of it).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_interleaved, import_gradtest, row  # noqa: E402

import_gradtest()
from gradtest.reverse import gradient_reverse, hvp  # noqa: E402

BENCH = "order2"
TARGET = "<= 4"


def _row(case: str, value: float, unit: str, target: str = "") -> dict[str, Any]:
    return row(BENCH, case, value, unit, target)


def chain(x: Any) -> Any:
    """20 elementwise ops: 4 rounds of sin, *, tanh, +, exp, summed."""
    for _ in range(4):
        x = np.exp(np.tanh(np.sin(x) * 1.1) + 0.3)
    return np.sum(x)


def mlp_case() -> tuple[Callable[..., Any], tuple[np.ndarray, ...]]:
    rng = np.random.default_rng(0)
    sizes = [32, 96, 64, 10]  # 10 026 parameters
    params = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        params += [rng.standard_normal((a, b)) / np.sqrt(a), np.zeros(b)]
    x, y = rng.standard_normal((64, 32)), rng.standard_normal((64, 10))

    def loss(*ps: Any) -> Any:
        h = x
        for i in range(0, len(ps) - 2, 2):
            h = np.tanh(h @ ps[i] + ps[i + 1])
        return np.mean((h @ ps[-2] + ps[-1] - y) ** 2)

    return loss, tuple(params)


def structural(x: Any) -> Any:
    z = np.sin(x[::2, 1:] * x[1::2, :-1]) + np.mean(x, axis=0)[1:]
    return (np.sum(np.max(z, axis=1) ** 2) + np.sum(np.cumsum(z, axis=1) * z)
            + np.sum(np.prod(0.5 + 0.5 * np.tanh(x[:4]), axis=1)))


def linalg_case() -> tuple[Callable[..., Any], tuple[np.ndarray, ...]]:
    rng = np.random.default_rng(2)
    a = rng.standard_normal((32, 32))

    def f(s: Any, b: Any) -> Any:
        return (np.linalg.slogdet(s)[1] + np.sum(np.linalg.solve(s, b) ** 2)
                + np.sum(np.linalg.eigvalsh(s) ** 2))

    return f, (a @ a.T + 32 * np.eye(32), rng.standard_normal((32, 4)))


def _case(name: str, f: Callable[..., Any], args: tuple[np.ndarray, ...], min_time: float,
          target: str = TARGET) -> list[dict[str, Any]]:
    rng = np.random.default_rng(1)
    vs = tuple(rng.standard_normal(a.shape) for a in args)
    grads, _ = hvp(f, args, vs)
    for g, r in zip(grads, gradient_reverse(f, *args)):  # the recorded sweep's gradient is the gradient
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-14)
    t = best_interleaved({"gradient": lambda: gradient_reverse(f, *args), "hvp": lambda: hvp(f, args, vs)}, min_time)
    return [
        _row(f"{name}: one gradient", t["gradient"] * 1e6, "us"),
        _row(f"{name}: one Hessian-vector product", t["hvp"] * 1e6, "us"),
        _row(f"{name}: hvp / gradient", t["hvp"] / t["gradient"], "x", target),
    ]


def run(quick: bool = False) -> list[dict[str, Any]]:
    """All rows; ``quick`` shortens the timings and the large chain (for smoke runs)."""
    min_time = 0.05 if quick else 0.5
    rng = np.random.default_rng(0)
    loss, params = mlp_case()
    rows = _case("chain-8", chain, (np.linspace(0.1, 0.8, 8),), min_time)
    n = 10_000 if quick else 100_000
    rows += _case(f"chain-{n:.0e}".replace("+0", ""), chain, (rng.uniform(0.1, 0.8, n),), min_time)
    rows += _case("mlp", loss, params, min_time)
    rows += _case("structural", structural, (rng.uniform(0.1, 0.9, (64, 64)),), min_time)
    f, args = linalg_case()
    rows += _case("linalg", f, args, min_time, target="")
    try:
        import scipy.special as sc
    except ImportError:
        return rows
    m = 1_000 if quick else 10_000
    rows += _case("special", lambda x, y: np.sum(sc.betaln(x, y) * sc.xlogy(x, y)),
                  (rng.uniform(1, 2, m), rng.uniform(1, 2, m)), min_time, target="")
    return rows


def main(argv: list[str] | None = None) -> int:
    quick = "--quick" in (argv if argv is not None else sys.argv[1:])
    for r in run(quick):
        target = f"  (target {r['target']})" if r["target"] else ""
        print(f"{r['case']:<52} {r['value']:>10.3f} {r['unit']}{target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
