"""Reverse mode through the public API (``gradtest.vjp``, ``gradtest.gradient``) against NumPy,
torch, HIPS autograd and JAX, as ratios taken side by side in one run.

Run alone with ``python benchmarks/bench_reverse.py [--quick]``, or through ``benchmarks/run.py``.
torch, autograd and jax are optional (``pip install ".[bench]"``); a missing one gets a row that
says so. Rows:

* ``chain-8``: a 20-op elementwise chain on 8 elements, forward plus backward, per op (target: at
  most 3 us an op), and ``gradient(backend="reverse")`` minus ``vjp`` (target: at most 20 us);
* ``chain-1e6``: the same chain on 10^6 elements over NumPy's forward pass (target: at most 2.0x),
  ``gradient`` over ``vjp`` (target: at most 1.1x), and the peak memory of one gradient over the
  input's size, each contender in a fresh child process (target: ours at most torch's);
* ``mlp``: the gradient of a 784-256-10 tanh MLP's softmax cross-entropy (batch 64) with the
  environment as users leave it and with ``OPENBLAS_NUM_THREADS=1``, in alternating child
  processes, median of back-to-back calls (targets: default at most 1.0x single-threaded, and at
  most 1.2x torch's time in the default environment); the core's GEMMs with 1 and 2 threads
  (the measurement behind the core's thread count, docs/performance.rst);
* ``mlp hvp``: a Hessian-vector product of a small MLP loss (reverse over reverse), over autograd's.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (chain, best_interleaved, import_gradtest, load_line, median_per_call, optional,  # noqa: E402
                     peak_bytes_of, row, run_child)

gradtest = import_gradtest()

BENCH = "reverse"
N_OPS = 20
HERE = Path(__file__).resolve()


def _row(case: str, value: float, unit: str, target: str = "") -> dict[str, Any]:
    return row(BENCH, case, value, unit, target)


def loss_chain(x: Any) -> Any:
    return np.sum(chain(x))


def chain_backward_numpy(x: np.ndarray) -> np.ndarray:
    """A hand-written gradient of sum(chain(x)), the reference the rows check against."""
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


def chain_contenders(x: np.ndarray, torch_threads: int | None = None,
                     check: bool = True) -> dict[str, Callable[[], Any]]:
    """One gradient of sum(chain(x)) per installed tool, each checked against the hand-written one
    (``check=False``: not called at all, for the peak-memory children, whose first call is the
    measured one; JAX's function is then compiled ahead of time, without running it)."""
    fns: dict[str, Callable[[], Any]] = {
        "numpy forward": lambda: loss_chain(x),
        "numpy forward + hand-written backward": lambda: chain_backward_numpy(x),
        "vjp": lambda: gradtest.vjp(loss_chain, (x,), None)[1][0],
        "gradient": lambda: gradtest.gradient(loss_chain, x, backend="reverse")[0],
    }
    ag = optional("autograd")
    if ag is not None:
        import autograd.numpy as anp

        fns["autograd"] = lambda grad=ag.grad(lambda v: anp.sum(chain(v, anp))): grad(x)
    torch = optional("torch")
    if torch is not None:
        if torch_threads:
            torch.set_num_threads(torch_threads)
        xt = torch.tensor(x)

        def torch_grad() -> Any:
            v = xt.clone().requires_grad_(True)
            torch.sum(chain(v, torch)).backward()
            return v.grad

        fns["torch"] = torch_grad
    jax = optional("jax")
    if jax is not None:
        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        xj = jnp.asarray(x)
        jgrad = jax.jit(jax.grad(lambda v: jnp.sum(chain(v, jnp)))).lower(xj).compile()
        fns["jax.jit(grad)"] = lambda: jgrad(xj).block_until_ready()
    if not check:
        return fns
    ref = chain_backward_numpy(x)
    for name, fn in fns.items():
        if name != "numpy forward":
            np.testing.assert_allclose(np.asarray(fn()), ref, rtol=1e-8, atol=1e-14, err_msg=name)
    return fns


def _missing(rows: list[dict[str, Any]], names: dict[str, Any], what: str,
             wanted: tuple[str, ...] = ("torch", "autograd", "jax.jit(grad)")) -> None:
    for name in wanted:
        if name not in names:
            rows.append(_row(f"{what}: {name} not installed (pip install \".[bench]\")", float("nan"), "x"))


def bench_small(min_time: float) -> list[dict[str, Any]]:
    # 8 elements: torch's intra-op threads only add overhead there
    fns = chain_contenders(np.linspace(0.1, 0.8, 8), torch_threads=1)
    fns.pop("jax.jit(grad)", None)  # a compiled function: not an eager per-op cost
    fns.pop("numpy forward + hand-written backward")  # a large-array reference only
    t = best_interleaved(fns, min_time * len(fns))
    per_op = {name: v / (N_OPS + 1) * 1e6 for name, v in t.items()}  # 20 ops and the sum
    rows = [_row("chain-8: gradtest.vjp, fwd+bwd per op", per_op["vjp"], "us", "<= 3"),
            _row("chain-8: gradient(backend='reverse') - vjp", (t["gradient"] - t["vjp"]) * 1e6, "us", "<= 20")]
    for name in ("torch", "autograd"):
        if name in t:
            rows.append(_row(f"chain-8: {name}, fwd+bwd per op", per_op[name], "us"))
            rows.append(_row(f"chain-8: {name} / gradtest.vjp", t[name] / t["vjp"], "x", ">= 1"))
    _missing(rows, t, "chain-8", ("torch", "autograd"))
    return rows


def bench_large(min_time: float, n: int, peak: bool) -> list[dict[str, Any]]:
    fns = chain_contenders(np.linspace(0.1, 0.8, n))
    t = best_interleaved(fns, min_time * len(fns), rounds=5)
    base = t["numpy forward"]
    tag = f"chain-{n:.0e}"
    rows = [_row(f"{tag}: numpy forward", base * 1e3, "ms"),
            _row(f"{tag}: gradtest.vjp / numpy forward", t["vjp"] / base, "x", "<= 2.0"),
            _row(f"{tag}: gradtest.vjp / (numpy forward + hand-written backward)",
                 t["vjp"] / t["numpy forward + hand-written backward"], "x", "<= 1.13"),
            _row(f"{tag}: gradient(backend='reverse') / numpy forward", t["gradient"] / base, "x"),
            _row(f"{tag}: gradient(backend='reverse') / vjp", t["gradient"] / t["vjp"], "x", "<= 1.1")]
    for name in ("torch", "autograd", "jax.jit(grad)"):
        if name in t:
            rows.append(_row(f"{tag}: {name} / numpy forward", t[name] / base, "x"))
    _missing(rows, t, tag)
    if peak:
        peaks = {}
        for name in ("vjp", "gradient", "torch", "autograd", "jax.jit(grad)"):
            if name in fns:
                peaks[name] = run_child(HERE, ["peak", name, str(n)])["ratio"]
                rows.append(_row(f"{tag}: peak memory of {name} / input size", peaks[name], "x"))
        if "torch" in peaks:
            rows.append(_row(f"{tag}: peak memory gradtest.vjp / torch", peaks["vjp"] / peaks["torch"], "x", "<= 1.0"))
    return rows


# ---------------------------------------------------------------------- the MLP and threading

def mlp_problem(d: int = 784, h: int = 256, batch: int = 64) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    params = [rng.standard_normal((d, h)) / np.sqrt(d), np.zeros(h), rng.standard_normal((h, 10)) / np.sqrt(h),
              np.zeros(10)]
    x = rng.standard_normal((batch, d))
    y = np.eye(10)[rng.integers(0, 10, batch)]
    return params, x, y


def mlp_loss(params: list[Any], x: Any, y: Any, np_: Any = np) -> Any:
    """Softmax cross-entropy of a one-hidden-layer tanh MLP, written once for any array module."""
    w1, b1, w2, b2 = params
    z = np_.tanh(x @ w1 + b1) @ w2 + b2
    # torch's max over an axis returns (values, indices): amax is its NumPy max
    zmax = z.amax(dim=1, keepdim=True) if hasattr(z, "amax") else np_.max(z, axis=1, keepdims=True)
    z = z - zmax
    lse = np_.log(np_.sum(np_.exp(z), axis=1, keepdims=True))
    return -np_.sum(y * (z - lse)) / x.shape[0]


def mlp_child(calls: int) -> dict[str, float]:
    """Median seconds per gradient in this process's environment: ours, torch, autograd."""
    import resource

    params, x, y = mlp_problem()
    ours = lambda: gradtest.vjp(lambda ps: mlp_loss(ps, x, y), (params,), None)  # noqa: E731
    out = {"ours": median_per_call(ours, calls)}
    # fresh pages cost this machine microseconds each (the "machine" row): count them, after the
    # timed calls have warmed the allocator up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        ours()
    out["ours faults"] = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls
    torch = optional("torch")
    if torch is not None:
        tp = [torch.tensor(p) for p in params]
        xt, yt = torch.tensor(x), torch.tensor(y)

        def torch_grad() -> Any:
            ps = [p.clone().requires_grad_(True) for p in tp]
            mlp_loss(ps, xt, yt, torch).backward()
            return [p.grad for p in ps]

        out["torch"] = median_per_call(torch_grad, calls)
    ag = optional("autograd")
    if ag is not None:
        import autograd.numpy as anp

        grad = ag.grad(lambda ps: mlp_loss(ps, x, y, anp))
        out["autograd"] = median_per_call(lambda: grad(params), calls)
    return out


def gemm_threads_child(calls: int) -> dict[str, float]:
    """Median seconds of the MLP's gradient (every GEMM of it in the core's OpenBLAS) and of
    sweeps of one recorded GEMM, with the core's pool at 1 and 2 threads, alternating in one
    process: what a second core thread gains, or costs, on this machine."""
    from gradtest import _forward

    out = {}
    for d, h, batch in ((784, 256, 64), (784, 1024, 256)):
        params, x, y = mlp_problem(d, h, batch)
        fn = lambda: gradtest.vjp(lambda ps: mlp_loss(ps, x, y), (params,), None)  # noqa: E731
        times: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(5):
            for threads in (1, 2):
                previous = _forward.blas_threads(threads)
                times[threads].append(median_per_call(fn, max(3, calls // 5)))
                _forward.blas_threads(previous)
        for threads, ts in times.items():
            out[f"{d}-{h}-10 batch {batch}, {threads}"] = sorted(ts)[len(ts) // 2]
    # the core's pool alone: sweeps of one recorded GEMM, no NumPy GEMM in between
    rng = np.random.default_rng(1)
    for m in (128, 512):
        a, b = rng.standard_normal((m, m)), rng.standard_normal((m, m))
        tape = _reverse_tape()
        try:
            la, lb = tape_leaf(tape, a), tape_leaf(tape, b)
            y = la @ lb
            seed = np.ones((m, m))
            times = {1: [], 2: []}
            for _ in range(5):
                for threads in (1, 2):
                    previous = _forward.blas_threads(threads)
                    times[threads].append(median_per_call(lambda: tape.backward(y.node, seed), max(3, calls // 10)))
                    _forward.blas_threads(previous)
        finally:
            tape.release()
        for threads, ts in times.items():
            out[f"isolated sweep of a {m}x{m}x{m} GEMM, {threads}"] = sorted(ts)[len(ts) // 2]
    return out


def _reverse_tape() -> Any:
    from gradtest import _reverse

    return _reverse.Tape()


def tape_leaf(tape: Any, x: np.ndarray) -> Any:
    from gradtest.reverse import Tracked

    return Tracked.leaf(tape, x)


def bench_mlp(quick: bool) -> list[dict[str, Any]]:
    calls = 30 if quick else 150
    runs: dict[str, list[dict[str, float]]] = {"default": [], "single": []}
    for _ in range(2 if quick else 3):  # alternating children: both see the same load
        runs["default"].append(run_child(HERE, ["mlp", str(calls)], env={"OPENBLAS_NUM_THREADS": None}))
        runs["single"].append(run_child(HERE, ["mlp", str(calls)], env={"OPENBLAS_NUM_THREADS": "1"}))
    best = {env: {k: min(r[k] for r in rs) for k in rs[0]} for env, rs in runs.items()}
    d, s = best["default"], best["single"]
    rows = [_row("mlp 784-256-10: gradtest.vjp, default environment", d["ours"] * 1e3, "ms"),
            _row("mlp: gradtest.vjp, OPENBLAS_NUM_THREADS=1", s["ours"] * 1e3, "ms"),
            _row("mlp: gradtest.vjp default / OPENBLAS_NUM_THREADS=1", d["ours"] / s["ours"], "x", "<= 1.0"),
            _row("mlp: page faults per gradtest.vjp call (default environment)", d["ours faults"], "faults")]
    if "torch" in d:
        rows += [_row("mlp: torch, default environment", d["torch"] * 1e3, "ms"),
                 _row("mlp: gradtest.vjp / torch (default environment)", d["ours"] / d["torch"], "x", "<= 1.2")]
    else:
        rows.append(_row("mlp: torch not installed (pip install \".[bench]\")", float("nan"), "x"))
    if "autograd" in d:
        rows.append(_row("mlp: HIPS autograd, default environment", d["autograd"] * 1e3, "ms"))
    if not quick:
        g = run_child(HERE, ["gemm-threads", str(calls)], env={"OPENBLAS_NUM_THREADS": None})
        for key in sorted({k.rsplit(",", 1)[0] for k in g}):
            label = key if key.startswith("isolated") else f"mlp {key}"
            rows.append(_row(f"{label}: core GEMMs on 2 threads / 1 thread", g[f"{key}, 2"] / g[f"{key}, 1"], "x"))
    return rows


def bench_hvp(min_time: float) -> list[dict[str, Any]]:
    """Hessian-vector product of a small MLP loss (reverse over reverse) against autograd's."""
    from gradtest.reverse import hvp

    params, x, y = mlp_problem(32, 64, 32)
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
    ag = optional("autograd")
    if ag is not None:
        import autograd.numpy as anp

        ahvp = ag.hessian_vector_product(lambda th: loss(th, anp))
        np.testing.assert_allclose(ahvp(theta, v), fns["ours"]()[1][0], rtol=1e-8, atol=1e-12)
        fns["autograd"] = lambda: ahvp(theta, v)
    t = best_interleaved(fns, min_time * len(fns), rounds=5)
    rows = [_row("mlp hvp: gradtest.reverse.hvp", t["ours"] * 1e6, "us")]
    if "autograd" in t:
        rows.append(_row("mlp hvp: HIPS autograd / ours", t["autograd"] / t["ours"], "x"))
    return rows


def page_fault_cost() -> float:
    """Seconds per 4 KiB page of writing one byte into each page of a fresh anonymous mapping
    (median of 20 mappings of 8 MiB): what a buffer in fresh memory costs before any arithmetic,
    the reason the sweep asks for huge pages and hands its adjoints over instead of copying."""
    import mmap

    size, times = 8 << 20, []
    for _ in range(20):
        t0 = time.perf_counter()
        region = mmap.mmap(-1, size)
        np.frombuffer(region, dtype=np.uint8)[::4096] = 1
        times.append(time.perf_counter() - t0)
        region.close()
    times.sort()
    return times[len(times) // 2] / (size // 4096)


def run(quick: bool = False) -> list[dict[str, Any]]:
    """All rows; ``quick`` shortens the timings, the large chain and the MLP runs (smoke runs)."""
    min_time = 0.05 if quick else 0.4
    rows = [_row(f"machine: {load_line()}", float("nan"), ""),
            _row("machine: first write to a fresh 4 KiB page", page_fault_cost() * 1e6, "us")]
    rows += bench_small(min_time)
    rows += bench_large(min_time, 100_000 if quick else 1_000_000, peak=not quick)
    rows += bench_mlp(quick)
    rows += bench_hvp(min_time)
    return rows


def child(args: list[str]) -> dict[str, float]:
    kind = args[0]
    if kind == "peak":
        name, n = args[1], int(args[2])
        x = np.linspace(0.1, 0.8, n)
        fn = chain_contenders(x, check=False)[name]
        return {"ratio": peak_bytes_of(fn) / x.nbytes}
    if kind == "mlp":
        return mlp_child(int(args[1]))
    if kind == "gemm-threads":
        return gemm_threads_child(int(args[1]))
    raise SystemExit(f"unknown child {kind}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        print(json.dumps(child(argv[1:])))
        return 0
    for r in run("--quick" in argv):
        target = f"  (target {r['target']})" if r["target"] else ""
        print(f"{r['case']:<60} {r['value']:>10.3f} {r['unit']}{target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
