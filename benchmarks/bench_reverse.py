"""Reverse mode (gradtest.Tracked and the C tape) against NumPy and other autodiff tools, as ratios.

Run alone with ``python benchmarks/bench_reverse.py [--quick]`` (from the repository root, after
``python setup.py build_ext --inplace``), or through ``benchmarks/run.py``. Rows:

* ``chain-8``: a 20-op elementwise chain on 8 elements, forward plus backward. Reported as the
  overhead per op in microseconds (ours, HIPS autograd, torch autograd where installed) and the
  ratios against them (targets: per-op overhead at most torch's, at least 5x below autograd's),
  and against NumPy's forward alone for scale;
* ``chain-1e6``: the same chain on 1e6 elements, forward plus backward, over NumPy's forward plus
  a hand-written NumPy backward (the memory traffic the job needs; target: within 1.5x);
* ``mlp``: the gradient of an MLP loss with about 10^4 parameters, over HIPS autograd and torch
  (the issue sets no target for these ratios);
* ``mlp hvp``: a Hessian-vector product of that loss (reverse over reverse), over HIPS autograd's.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

try:
    import gradtest  # noqa: F401
except ImportError:  # run from a checkout: use the in-place build under python/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

from gradtest import _reverse
from gradtest.reverse import Tracked

BENCH = "reverse"
N_OPS = 20




def _best_interleaved(fns: dict[str, Callable[[], Any]], min_time: float,
                      rounds: int = 7) -> dict[str, float]:
    """Best seconds per call of each fn, measured in alternating rounds so that a load spike on a
    shared machine hits all of them alike (their ratios are what the rows report)."""
    numbers = {}
    for name, fn in fns.items():
        fn()
        number = 1
        while True:
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            if time.perf_counter() - t0 >= min_time / rounds or number > 1 << 20:
                break
            number *= 2
        numbers[name] = number
    best = {name: float("inf") for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(numbers[name]):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t0) / numbers[name])
    return best


def chain(x: Any, np_: Any = np) -> Any:
    """20 elementwise ops: 4 rounds of sin, *, tanh, +, exp (``np_`` is numpy or a clone)."""
    for _ in range(4):
        x = np_.sin(x)
        x = x * 1.1
        x = np_.tanh(x)
        x = x + 0.3
        x = np_.exp(x)
    return x


def chain_backward_numpy(x: np.ndarray) -> np.ndarray:
    """NumPy forward of `chain` plus a hand-written backward (gradient of sum(chain(x)))."""
    saved = []
    for _ in range(4):
        saved.append(x)
        s = np.sin(x)
        t = np.tanh(s * 1.1)
        x = np.exp(t + 0.3)
        saved.append((s, t, x))
    g = np.ones_like(x)
    for _ in range(4):
        s, t, e = saved.pop()
        x0 = saved.pop()
        g = g * e
        g = g * (1.0 - t * t)
        g = g * 1.1
        g = g * np.cos(x0)
    return g


def reverse_grad_chain(x: np.ndarray) -> np.ndarray:
    tape = _reverse.Tape()
    try:
        leaf = Tracked.leaf(tape, x)
        y = np.sum(chain(leaf))
        tape.backward(y.node, np.ones(1))
        return tape.adjoint(leaf.node)
    finally:
        tape.release()


def _row(case: str, value: float, unit: str, target: str = "") -> dict[str, Any]:
    return {"benchmark": BENCH, "case": case, "value": float(value), "unit": unit, "target": target}


def _optional(name: str) -> Any:
    try:
        return __import__(name)
    except ImportError:
        return None


def bench_small(min_time: float) -> list[dict[str, Any]]:
    x = np.linspace(0.1, 0.8, 8)
    g = reverse_grad_chain(x)
    np.testing.assert_allclose(g, chain_backward_numpy(x), rtol=1e-12)
    fns: dict[str, Callable[[], Any]] = {
        "numpy": lambda: np.sum(chain(x)),
        "ours": lambda: reverse_grad_chain(x),
    }
    ag = _optional("autograd")
    if ag is not None:
        import autograd.numpy as anp

        agrad = ag.grad(lambda v: anp.sum(chain(v, anp)))
        np.testing.assert_allclose(agrad(x), g, rtol=1e-12)
        fns["autograd"] = lambda: agrad(x)
    torch = _optional("torch")
    if torch is not None:
        torch.set_num_threads(1)  # 8 elements: threads only add overhead
        xt = torch.tensor(x)

        def torch_grad() -> Any:
            v = xt.clone().requires_grad_(True)
            torch.sum(chain(v, torch)).backward()
            return v.grad

        np.testing.assert_allclose(torch_grad().numpy(), g, rtol=1e-12)
        fns["torch"] = torch_grad
    t = _best_interleaved(fns, min_time * len(fns))
    per_op = {name: v / (N_OPS + 1) * 1e6 for name, v in t.items()}
    rows = [_row("chain-8: ours, fwd+bwd per op", per_op["ours"], "us"),
            _row("chain-8: ours / numpy forward", t["ours"] / t["numpy"], "x")]
    if "autograd" in t:
        rows.append(_row("chain-8: HIPS autograd, fwd+bwd per op", per_op["autograd"], "us"))
        rows.append(_row("chain-8: autograd / ours", t["autograd"] / t["ours"], "x", ">= 5"))
    else:
        rows.append(_row("chain-8: autograd / ours (autograd not installed)", float("nan"), "x", ">= 5"))
    if "torch" in t:
        rows.append(_row("chain-8: torch autograd, fwd+bwd per op", per_op["torch"], "us"))
        rows.append(_row("chain-8: torch / ours", t["torch"] / t["ours"], "x", ">= 1"))
    else:
        rows.append(_row("chain-8: torch / ours (torch not installed)", float("nan"), "x", ">= 1"))
    return rows


def bench_large(min_time: float, n: int) -> list[dict[str, Any]]:
    x = np.linspace(0.1, 0.8, n)
    np.testing.assert_allclose(reverse_grad_chain(x), chain_backward_numpy(x), rtol=1e-12)
    t = _best_interleaved({"hand": lambda: chain_backward_numpy(x), "ours": lambda: reverse_grad_chain(x)},
                          min_time, rounds=5)
    return [
        _row(f"chain-{n:.0e}: numpy fwd + hand bwd", t["hand"] * 1e3, "ms"),
        _row(f"chain-{n:.0e}: ours fwd+bwd", t["ours"] * 1e3, "ms"),
        _row(f"chain-{n:.0e}: ours / (numpy fwd + hand bwd)", t["ours"] / t["hand"], "x", "<= 1.5"),
    ]


def mlp_problem() -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    sizes = [32, 96, 64, 10]  # 32*96+96 + 96*64+64 + 64*10+10 = 10 026 parameters
    params = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        params += [rng.standard_normal((a, b)) / np.sqrt(a), np.zeros(b)]
    x = rng.standard_normal((64, 32))
    y = rng.standard_normal((64, 10))
    return params, x, y


def mlp_loss(params: list[Any], x: Any, y: Any, np_: Any = np) -> Any:
    h = x
    for i in range(0, len(params) - 2, 2):
        h = np_.tanh(h @ params[i] + params[i + 1])
    out = h @ params[-2] + params[-1]
    return np_.mean((out - y) ** 2)


def bench_mlp(min_time: float) -> list[dict[str, Any]]:
    params, x, y = mlp_problem()
    n_params = sum(p.size for p in params)

    def ours() -> list[np.ndarray]:
        tape = _reverse.Tape()
        try:
            leaves = [Tracked.leaf(tape, p) for p in params]
            loss = mlp_loss(leaves, x, y)
            tape.backward(loss.node, np.ones(1))
            return [tape.adjoint(p.node) for p in leaves]
        finally:
            tape.release()

    g = ours()
    fns: dict[str, Callable[[], Any]] = {"ours": ours}
    ag = _optional("autograd")
    if ag is not None:
        import autograd.numpy as anp

        agrad = ag.grad(lambda ps: mlp_loss(ps, x, y, anp))
        for a, b in zip(agrad(params), g):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)
        fns["autograd"] = lambda: agrad(params)
    torch = _optional("torch")
    if torch is not None:
        torch.set_num_threads(1)
        tp = [torch.tensor(p) for p in params]
        xt, yt = torch.tensor(x), torch.tensor(y)

        def torch_grad() -> Any:
            ps = [p.clone().requires_grad_(True) for p in tp]
            mlp_loss(ps, xt, yt, torch).backward()
            return [p.grad for p in ps]

        for a, b in zip(torch_grad(), g):
            np.testing.assert_allclose(a.numpy(), b, rtol=1e-10, atol=1e-14)
        fns["torch"] = torch_grad
    t = _best_interleaved(fns, min_time * len(fns))
    rows = [_row(f"mlp ({n_params} params): ours", t["ours"] * 1e6, "us")]
    if "autograd" in t:
        rows.append(_row("mlp: HIPS autograd", t["autograd"] * 1e6, "us"))
        rows.append(_row("mlp: autograd / ours", t["autograd"] / t["ours"], "x"))
    if "torch" in t:
        rows.append(_row("mlp: torch (1 thread)", t["torch"] * 1e6, "us"))
        rows.append(_row("mlp: torch / ours", t["torch"] / t["ours"], "x"))
    return rows


def bench_hvp(min_time: float) -> list[dict[str, Any]]:
    """Hessian-vector product of the MLP loss (reverse over reverse) against autograd's."""
    from gradtest.reverse import hvp

    params, x, y = mlp_problem()
    shapes = [p.shape for p in params]
    theta = np.concatenate([p.ravel() for p in params])
    v = np.random.default_rng(1).standard_normal(theta.shape)

    def loss(th: Any, np_: Any = np) -> Any:  # the loss of a flat parameter vector
        ps, offset = [], 0
        for shape in shapes:
            size = int(np.prod(shape))
            ps.append(np_.reshape(th[offset:offset + size], shape))
            offset += size
        return mlp_loss(ps, x, y, np_)

    fns: dict[str, Callable[[], Any]] = {"ours": lambda: hvp(loss, (theta,), (v,))}
    ag = _optional("autograd")
    if ag is not None:
        import autograd.numpy as anp

        ahvp = ag.hessian_vector_product(lambda th: loss(th, anp))
        np.testing.assert_allclose(ahvp(theta, v), fns["ours"]()[1][0], rtol=1e-8, atol=1e-12)
        fns["autograd"] = lambda: ahvp(theta, v)
    t = _best_interleaved(fns, min_time * len(fns), rounds=5)
    rows = [_row("mlp hvp: ours (reverse over reverse)", t["ours"] * 1e6, "us")]
    if "autograd" in t:
        rows.append(_row("mlp hvp: HIPS autograd", t["autograd"] * 1e6, "us"))
        rows.append(_row("mlp hvp: autograd / ours", t["autograd"] / t["ours"], "x"))
    return rows


def run(quick: bool = False) -> list[dict[str, Any]]:
    """All rows; ``quick`` shortens the timings and the large chain (for smoke runs)."""
    min_time = 0.05 if quick else 0.5
    rows = bench_small(min_time)
    rows += bench_large(min_time, 100_000 if quick else 1_000_000)
    rows += bench_mlp(min_time)
    rows += bench_hvp(min_time)
    return rows


def main(argv: list[str] | None = None) -> int:
    quick = "--quick" in (argv if argv is not None else sys.argv[1:])
    for row in run(quick):
        target = f"  (target {row['target']})" if row["target"] else ""
        print(f"{row['case']:<52} {row['value']:>10.3f} {row['unit']}{target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
