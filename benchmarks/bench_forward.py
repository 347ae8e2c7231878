"""Forward mode (gradtest.Dual) against NumPy, OpenBLAS and other autodiff tools, as ratios.

Run alone with ``python benchmarks/bench_forward.py [--quick]`` (from the repository root, after
``python setup.py build_ext --inplace``), or through ``benchmarks/run.py``. Rows:

* ``small-op overhead``: time of one op on 8-element duals over NumPy's own op on plain
  8-element arrays (target: under 3x), measured in alternation with NumPy (the minimum over
  rounds of each) so that both sides see the same machine load;
* ``large-op throughput``: time of one op on 1e6-element duals with k directions over k+1 times
  NumPy's op on 1e6 elements (the (k+1)-fold memory traffic a dual op must move; target: within
  1.5x), and over NumPy's op on (k+1)*1e6 elements (the same traffic with the same cache and
  page-fault behaviour; see ``large_op_throughput``);
* ``matmul``: GFLOP/s of the dual matmul (primal and both tangent terms) over the GFLOP/s of one
  plain GEMM as large as the stacked tangent product (target: at least 0.8);
* ``mlp gradient``: the gradient of an MLP loss with about 10^4 parameters by the forward backend,
  by HIPS autograd (reverse mode) and torch.func.jacfwd (forward mode) where installed;
* ``chunk size``: the forward backend on that MLP and on a small elementwise function over k,
  the measurement behind ``forward.DEFAULT_CHUNK_SIZE``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import chain, best_interleaved, import_gradtest, load_line, optional  # noqa: E402

gradtest = import_gradtest()

from gradtest import forward  # noqa: E402
from gradtest.backends import get_backend  # noqa: E402
from gradtest.forward import Dual  # noqa: E402

BENCH = "forward"
N_OPS = 20


def chain_tangent_numpy(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """A hand-written JVP of chain along t (rows of t: directions), the reference."""
    for _ in range(4):
        t = t * np.cos(x)
        x = np.sin(x)
        t = t * 1.1
        x = np.tanh(x * 1.1)
        t = t * (1.0 - x * x)
        x = np.exp(x + 0.3)
        t = t * x
    return t


def chain_contenders(x: np.ndarray, k: int, torch_threads: int | None = None) -> dict[str, Callable[[], Any]]:
    """The JVP of chain along k directions by each installed tool: gradtest.jvp (k = 1) or a
    gradtest.Dual with k tangents, torch.func.jvp (vmapped for k > 1), and JAX's jvp un-jitted
    (vmapped for k > 1), each checked against the hand-written one."""
    rng = np.random.default_rng(0)
    t = rng.standard_normal((k,) + x.shape)
    ref = chain_tangent_numpy(x, t)
    fns: dict[str, Callable[[], Any]] = {"numpy forward": lambda: chain(x)}
    if k == 1:
        fns["gradtest"] = lambda: gradtest.jvp(chain, (x,), (t[0],))[1][None]
    else:
        fns["gradtest"] = lambda: chain(gradtest.Dual(x, t)).tangents
    torch = optional("torch")
    if torch is not None:
        from torch.func import jvp as tjvp, vmap as tvmap

        if torch_threads:
            torch.set_num_threads(torch_threads)
        xt, tt = torch.tensor(x), torch.tensor(t)
        tchain = lambda v: chain(v, torch)  # noqa: E731
        if k == 1:
            fns["torch.func.jvp"] = lambda: tjvp(tchain, (xt,), (tt[0],))[1][None]
        else:
            fns["torch vmap(jvp)"] = lambda: tvmap(lambda d: tjvp(tchain, (xt,), (d,))[1])(tt)
    jax = optional("jax")
    if jax is not None:
        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        xj, tj = jnp.asarray(x), jnp.asarray(t)
        jchain = lambda v: chain(v, jnp)  # noqa: E731
        if k == 1:
            fns["jax.jvp"] = lambda: jax.jvp(jchain, (xj,), (tj[0],))[1][None].block_until_ready()
        else:
            fns["jax vmap(jvp)"] = lambda: jax.vmap(lambda d: jax.jvp(jchain, (xj,), (d,))[1])(tj).block_until_ready()
    for name, fn in fns.items():
        if name != "numpy forward":
            np.testing.assert_allclose(np.asarray(fn()), ref, rtol=1e-8, atol=1e-14, err_msg=name)
    return fns


def bench_chain(quick: bool) -> list[dict[str, Any]]:
    """The 20-op chain: per op at n = 8 (k = 1), and over NumPy's forward at 10^6 (k = 1, 32)."""
    rows = []
    small = chain_contenders(np.linspace(0.1, 0.8, 8), 1, torch_threads=1)
    t = best_interleaved(small, (0.05 if quick else 0.3) * len(small))
    per_op = {name: v / N_OPS * 1e6 for name, v in t.items()}
    rows.append(_row("chain-8 jvp: gradtest.jvp per op", per_op["gradtest"], "us", "<= 1.3"))
    for name in t:
        if name not in ("gradtest", "numpy forward"):
            rows.append(_row(f"chain-8 jvp: {name} per op", per_op[name], "us", "info"))
    n = 100_000 if quick else 1_000_000
    for k, target in ((1, "<= 2.0"), (32, "<= 40")):
        fns = chain_contenders(np.linspace(0.1, 0.8, n), k)
        t = best_interleaved(fns, (0.2 if quick else 1.0) * len(fns), rounds=3 if quick else 5)
        base = t.pop("numpy forward")
        what = "gradtest.jvp" if k == 1 else "gradtest.Dual"
        rows.append(_row(f"chain-{n:.0e} k={k}: {what} / numpy forward", t.pop("gradtest") / base, "x", target))
        for name, v in t.items():
            rows.append(_row(f"chain-{n:.0e} k={k}: {name} / numpy forward", v / base, "x", "info"))
        for name in ("torch", "jax"):
            if optional(name) is None:
                rows.append(_row(f"chain-{n:.0e} k={k}: {name} not installed (pip install \".[bench]\")",
                                 float("nan"), "x", "info"))
    return rows


def _best(fn: Callable[[], Any], min_time: float, repeat: int = 5) -> float:
    """Best seconds per call of fn over `repeat` rounds taking about `min_time` in all."""
    return best_interleaved({"fn": fn}, min_time, rounds=repeat)["fn"]


def _paired(fns: list[Callable[[], Any]], min_time: float, rounds: int) -> list[float]:
    """Best seconds per call of each fn, timed in alternating rounds (best_interleaved) within
    about `min_time` in all, so both sides of a ratio see the same load."""
    best = best_interleaved(dict(enumerate(fns)), min_time / len(fns), rounds=rounds)
    return [best[i] for i in range(len(fns))]


def _row(case: str, value: float, unit: str, target: str) -> dict[str, Any]:
    return {"benchmark": BENCH, "case": case, "value": float(value), "unit": unit, "target": target}


def _dual(rng: np.random.Generator, shape: tuple[int, ...], k: int) -> Dual:
    return Dual(rng.uniform(0.5, 1.5, shape), rng.standard_normal((k,) + shape))


SMALL_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "add": lambda a, b: a + b,
    "multiply": lambda a, b: a * b,
    "divide": lambda a, b: a / b,
    "sin": lambda a, b: np.sin(a),
    "exp": lambda a, b: np.exp(a),
    "maximum": lambda a, b: np.maximum(a, b),
    "sum": lambda a, b: np.sum(a),
    "reshape": lambda a, b: a.reshape(2, 4),
    "getitem": lambda a, b: a[1:5],
}


def small_op_overhead(quick: bool, k: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.5, 1.5, 8), rng.uniform(0.5, 1.5, 8)
    da, db = _dual(rng, (8,), k), _dual(rng, (8,), k)
    rows = []
    for name, op in SMALL_OPS.items():
        t_np, t_dual = _paired([lambda: op(a, b), lambda: op(da, db)], 0.1 if quick else 0.6,
                               rounds=10 if quick else 30)
        rows.append(_row(f"small-op overhead {name} (8 elements, k={k}) dual/numpy", t_dual / t_np, "x",
                         "< 3"))
    return rows


LARGE_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "add": lambda a, b: a + b,
    "multiply": lambda a, b: a * b,
    "divide": lambda a, b: a / b,
    "exp": lambda a, b: np.exp(a),
    "sin": lambda a, b: np.sin(a),
    "tanh": lambda a, b: np.tanh(a),
    "sum": lambda a, b: np.sum(a),
}


def large_op_throughput(quick: bool, k: int) -> list[dict[str, Any]]:
    """Two baselines for a 1e6-element dual op with k directions:

    * (k+1) times NumPy's op on 1e6 elements, the issue's definition. Its 16-24 MB working set
      sits largely in a 32 MB L3 cache and its output comes from the heap warm, while the dual op
      streams (k+1) times as much through DRAM into freshly mapped pages, so this baseline is
      faster per element than memory allows the dual op to be: even NumPy itself, adding two
      (k, 1e6) arrays, measures 1.5-1.6x of k times its 1e6-element add here;
    * NumPy's op on arrays of (k+1) * 1e6 elements: the same memory traffic, out of cache, into a
      fresh output, as the dual op has it.
    """
    rng = np.random.default_rng(1)
    n = 10**6
    a, b = rng.uniform(0.5, 1.5, n), rng.uniform(0.5, 1.5, n)
    big_a, big_b = rng.uniform(0.5, 1.5, (k + 1) * n), rng.uniform(0.5, 1.5, (k + 1) * n)
    da, db = _dual(rng, (n,), k), _dual(rng, (n,), k)
    rows = []
    for name, op in LARGE_OPS.items():
        t_np, t_big, t_dual = _paired([lambda: op(a, b), lambda: op(big_a, big_b), lambda: op(da, db)],
                                      0.6 if quick else 4.0, rounds=2 if quick else 5)
        rows.append(_row(f"large-op throughput {name} (1e6 elements, k={k}) dual/((k+1) numpy)",
                         t_dual / ((k + 1) * t_np), "x", "<= 1.5"))
        rows.append(_row(f"large-op throughput {name} (1e6 elements, k={k}) dual/numpy on (k+1)*1e6",
                         t_dual / t_big, "x", "<= 1.5"))
    return rows


def matmul(quick: bool, k: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(2)
    rows = []
    for m in ((128,) if quick else (128, 256)):
        n = p = m
        a, b = _dual(rng, (m, n), k), _dual(rng, (n, p), k)
        t_dual = _best(lambda: a @ b, 0.3 if quick else 1.5, repeat=3)
        dual_flops = (2 * k + 1) * 2.0 * m * n * p  # primal + k directions of dA @ B and A @ dB
        big_a, big_b = rng.standard_normal((k * m, n)), rng.standard_normal((n, p))
        t_gemm = _best(lambda: big_a @ big_b, 0.3 if quick else 1.5, repeat=3)
        gemm_flops = 2.0 * k * m * n * p
        rows.append(_row(f"matmul {m}x{m} (k={k}) dual GFLOP/s / DGEMM GFLOP/s",
                         (dual_flops / t_dual) / (gemm_flops / t_gemm), "ratio", ">= 0.8"))
        rows.append(_row(f"matmul {m}x{m} (k={k}) dual GFLOP/s", dual_flops / t_dual / 1e9, "GFLOP/s", "info"))
    return rows


def _mlp(sizes: tuple[int, ...], batch: int, rng: np.random.Generator):
    """An MLP regression loss of its parameters, written once for any array module."""
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        params.append(rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in))
        params.append(np.zeros(fan_out) + 0.01)
    x = rng.standard_normal((batch, sizes[0]))
    y = rng.standard_normal((batch, sizes[-1]))

    def make_loss(xp: Any, x: Any, y: Any) -> Callable[..., Any]:
        def loss(*ps: Any) -> Any:
            h = x
            for i in range(0, len(ps), 2):
                h = h @ ps[i] + ps[i + 1]
                if i + 2 < len(ps):
                    h = xp.tanh(h)
            return xp.mean((h - y) ** 2)

        return loss

    return make_loss, params, x, y


def _forward_gradient(loss: Callable[..., Any], params: list[np.ndarray], k: int) -> list[np.ndarray]:
    from gradtest._problem import GradientProblem, describe_output
    from gradtest._tree import flatten_args

    problem = GradientProblem(loss, {}, flatten_args(tuple(params)), describe_output(0.0, np.random.default_rng(0)),
                              options={"forward_chunk_size": k})
    problem.output = describe_output(loss(*params), np.random.default_rng(0))
    return get_backend("forward").compute(problem)


def mlp_gradient(quick: bool, k: int) -> list[dict[str, Any]]:
    make_loss, params, x, y = _mlp((64, 128, 16), 32, np.random.default_rng(3))
    loss = make_loss(np, x, y)
    size = sum(p.size for p in params)
    rows = []
    t_fwd = _best(lambda: _forward_gradient(loss, params, k), 0.5 if quick else 2.0, repeat=1 if quick else 3)
    rows.append(_row(f"mlp gradient ({size} params) gradtest forward, k={k}", t_fwd * 1e3, "ms", "info"))
    g_fwd = _forward_gradient(loss, params, k)
    try:
        import autograd
        import autograd.numpy as anp

        grad = autograd.grad(lambda ps: make_loss(anp, x, y)(*ps))
        g_ag = grad(params)
        t_ag = _best(lambda: grad(params), 0.3 if quick else 1.0, repeat=3)
        rows.append(_row(f"mlp gradient ({size} params) HIPS autograd (reverse)", t_ag * 1e3, "ms", "info"))
        rows.append(_row("mlp gradient forward/autograd time", t_fwd / t_ag, "x", "info"))
        rows.append(_row("mlp gradient max |forward - autograd|",
                         max(float(np.max(np.abs(a - b))) for a, b in zip(g_ag, g_fwd)), "abs", "< 1e-12"))
    except ImportError:
        rows.append(_row("mlp gradient HIPS autograd", float("nan"), "not installed", "info"))
    try:
        import torch
        from torch.func import jacfwd

        tparams = [torch.tensor(p) for p in params]
        jac = jacfwd(make_loss(torch, torch.tensor(x), torch.tensor(y)), argnums=tuple(range(len(params))))
        t_torch = _best(lambda: jac(*tparams), 0.5 if quick else 2.0, repeat=1 if quick else 3)
        rows.append(_row(f"mlp gradient ({size} params) torch.func.jacfwd", t_torch * 1e3, "ms", "info"))
        rows.append(_row("mlp gradient forward/jacfwd time", t_fwd / t_torch, "x", "info"))
    except ImportError:
        rows.append(_row("mlp gradient torch.func.jacfwd", float("nan"), "not installed", "info"))
    return rows


def chunk_sweep(quick: bool) -> list[dict[str, Any]]:
    rng = np.random.default_rng(4)
    make_loss, params, mx, my = _mlp((16, 32, 4), 16, rng)  # 676 parameters
    loss = make_loss(np, mx, my)
    x = rng.uniform(0.5, 1.5, 300)

    def small(v: Any) -> Any:
        return np.sum(np.sin(v) * np.exp(-v) + v ** 2) / np.linalg.norm(v)

    rows = []
    for k in ((4, 16, 64) if quick else (1, 4, 8, 16, 32, 64, 128)):
        t_mlp = _best(lambda: _forward_gradient(loss, params, k), 0.2 if quick else 1.0, repeat=1 if quick else 3)
        t_small = _best(lambda: _forward_gradient(small, [x], k), 0.2 if quick else 1.0, repeat=1 if quick else 3)
        rows.append(_row(f"chunk size k={k}: mlp gradient (676 params)", t_mlp * 1e3, "ms", "info"))
        rows.append(_row(f"chunk size k={k}: elementwise gradient (300 elements)", t_small * 1e3, "ms", "info"))
    return rows


def directional_check(quick: bool) -> list[dict[str, Any]]:
    """A default check of sum(sin(x) * x) with backends=["forward"] at 10^6 elements (10^5 with
    --quick), which runs in directional mode: the forward backend differentiates along the check's
    own directions only (it used to compute all n gradient elements, over 300 s at 10^6)."""
    n = 100_000 if quick else 1_000_000
    x = np.linspace(0.2, 1.4, n)
    t0 = time.perf_counter()
    report = gradtest.check_gradients(lambda v: np.sum(np.sin(v) * v), x, backends=["forward"])
    total = time.perf_counter() - t0
    outcome = report.outcomes["forward"]
    return [_row(f"directional check n={n:.0e}, backends=['forward']: total", total, "s", "info"),
            _row(f"directional check n={n:.0e}: of it in the forward backend", outcome.seconds, "s", "info"),
            _row(f"directional check n={n:.0e}: passes ({outcome.n_compared} directions)",
                 float(outcome.status == "pass"), "yes=1", ">= 1")]


def run(quick: bool = False) -> list[dict[str, Any]]:
    """All forward-mode benchmark rows; ``quick`` shortens every measurement."""
    import os

    k = forward.DEFAULT_CHUNK_SIZE
    # OpenBLAS threads spin while idle: on a loaded machine with few cores the two OpenBLAS
    # libraries in the process (NumPy's and scipy-openblas32) slow each other down, so record
    # the setting next to the matmul rows
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "")
    rows = [_row(f"OPENBLAS_NUM_THREADS={threads or 'unset'}, {load_line()}", float(threads or 0), "threads", "info")]
    rows += bench_chain(quick)
    rows += directional_check(quick)
    rows += small_op_overhead(quick, k)
    rows += large_op_throughput(quick, k)
    rows += matmul(quick, k)
    rows += mlp_gradient(quick, k)
    rows += chunk_sweep(quick)
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    rows = run(quick="--quick" in argv)
    width = max(len(r["case"]) for r in rows)
    for r in rows:
        print(f"{r['case']:<{width}}  {r['value']:>10.3f} {r['unit']:<13} target {r['target']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
