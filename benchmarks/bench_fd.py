"""The finite-difference ground truth on a Python function: what the engine adds per evaluation.

Every gradient check spends most of its time in the ground truth, which calls the user's f
O(n) times. What matters is the engine's own cost per call on top of f's: perturbing the working
buffer, calling f through the C API, converting its result, restoring the buffer. The target is
under 2 µs per evaluation.

Method, side by side in one run: for each n, time the engine's run (``gradtest._core.fd_gradient``,
N evaluations of f) and time N direct calls of the same f on the same view, made from a C-level
loop (``map``) so that the baseline carries no Python loop overhead the engine does not have
either. overhead = (t_engine - t_direct) / N; each is the best of several repeats. The same is
measured through the public :func:`gradtest.check_gradients` (which adds the argument tree, the
working copy, the backend and the comparison), and, where torch is installed, against
``torch.autograd.gradcheck`` on the same function.

Run alone: ``python benchmarks/bench_fd.py [--quick]``; or through ``benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_interleaved, import_gradtest  # noqa: E402

gradtest = import_gradtest()
from gradtest import _core  # noqa: E402

TARGET_US = 2.0
MIN_EVALUATIONS = 50_000  # per timed block


def f_cheap(x: np.ndarray) -> Any:
    """O(1) work: its cost is dominated by the call itself, the worst case for relative overhead."""
    return x[0] * x[-1]


def f_dot(x: np.ndarray) -> Any:
    """O(n) work: a typical reduction."""
    return np.dot(x, x)


def _cheap_grad(x: np.ndarray) -> np.ndarray:
    g = np.zeros_like(x)
    g[0] += x[-1]
    g[-1] += x[0]
    return g


def _best(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _best_pair(a: Callable[[], Any], b: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """Best times of a and b, run alternately so that both see the same machine load."""
    ta, tb = [], []
    for _ in range(repeat):
        ta.append(_best(a, 1))
        tb.append(_best(b, 1))
    return min(ta), min(tb)


def _direct_calls(f: Callable[[np.ndarray], Any], view: np.ndarray, n_calls: int) -> None:
    collections.deque(map(f, itertools.repeat(view, n_calls)), maxlen=0)


def _engine_case(name: str, f: Callable, n: int, richardson: bool, repeat: int) -> list[dict]:
    x = np.random.default_rng(0).uniform(0.5, 1.5, n)
    args = (x,)  # f sees the working buffer itself, as a view would

    def engine() -> tuple:
        # richardson=True is the adaptive rule (a varying number of steps per component)
        return _core.fd_gradient(f, args, None, x, None, None, "central", richardson, 0.0, 0.0, 0.0, 0.0)

    per_run = engine()[3]
    # Small n: repeat the run inside each timed block so the block is long enough to time.
    loops = max(1, MIN_EVALUATIONS // per_run)
    evaluations = loops * per_run

    def engine_block() -> None:
        for _ in range(loops):
            engine()

    t_engine, t_direct = _best_pair(
        engine_block, lambda: _direct_calls(f, x, evaluations), repeat
    )
    overhead_us = (t_engine - t_direct) / evaluations * 1e6
    label = f"{name}, n={n}, central{' adaptive' if richardson else ''}"
    return [
        {
            "benchmark": "fd",
            "case": f"engine overhead per evaluation, {label}",
            "value": overhead_us,
            "unit": "µs",
            "target": f"< {TARGET_US:g}",
        },
        {
            "benchmark": "fd",
            "case": f"f's own cost per call, {label}",
            "value": t_direct / evaluations * 1e6,
            "unit": "µs",
            "target": "",
        },
        {
            "benchmark": "fd",
            "case": f"engine / direct calls time ratio, {label}",
            "value": t_engine / t_direct,
            "unit": "x",
            "target": "",
        },
    ]


def _check_gradients_case(name: str, f: Callable, grad: Callable, n: int, repeat: int) -> list[dict]:
    x = np.random.default_rng(1).uniform(0.5, 1.5, n)
    holder: dict[str, Any] = {}

    def check() -> None:
        holder["report"] = gradtest.check_gradients(f, x, gradient=grad, mode="full", time_budget=600.0)

    check()
    report = holder["report"]
    if not report.passed:
        raise RuntimeError(f"check_gradients({name}, n={n}) did not pass:\n{report}")
    evaluations = report.evaluations
    t_check, t_direct = _best_pair(check, lambda: _direct_calls(f, x, evaluations), repeat)
    return [
        {
            "benchmark": "fd",
            "case": f"check_gradients overhead per evaluation, {name}, n={n}, {report.method}",
            "value": (t_check - t_direct) / evaluations * 1e6,
            "unit": "µs",
            "target": "",
        },
        {
            "benchmark": "fd",
            "case": f"check_gradients total, {name}, n={n}",
            "value": t_check,
            "unit": "s",
            "target": "",
        },
    ]


def _torch_case(n: int, repeat: int) -> list[dict]:
    try:
        import torch
    except ImportError:
        return []
    x = torch.from_numpy(np.random.default_rng(0).uniform(0.5, 1.5, n)).requires_grad_(True)

    def gradcheck() -> bool:
        return torch.autograd.gradcheck(lambda t: torch.dot(t, t), (x,), fast_mode=False)

    # the first gradcheck pays for torch's lazy initialisation (seconds); keep it out of the timing
    torch.autograd.gradcheck(lambda t: torch.dot(t, t), (x[:3].detach().clone().requires_grad_(True),))
    xn = x.detach().numpy().copy()
    # interleaved rounds, so that both sides of the ratio see the same machine load
    t = best_interleaved({
        "torch": gradcheck,
        "ours": lambda: gradtest.check_gradients(f_dot, xn, gradient=lambda v: 2 * v, mode="full",
                                                 time_budget=600.0),
    }, min_time=0.0, rounds=repeat)
    t_torch, t_ours = t["torch"], t["ours"]
    return [
        {
            "benchmark": "fd",
            "case": f"torch gradcheck / check_gradients time ratio, dot(x,x), n={n}",
            "value": t_torch / t_ours,
            "unit": "x",
            "target": "",
        }
    ]


def run(quick: bool) -> list[dict]:
    """Rows of measurements (see benchmarks/README.md)."""
    repeat = 5 if quick else 9
    rows: list[dict] = []
    sizes = [10, 100, 1_000, 10_000, 100_000]
    for n in sizes:
        rows += _engine_case("x[0]*x[-1]", f_cheap, n, richardson=False, repeat=repeat)
    rows += _engine_case("x[0]*x[-1]", f_cheap, 10_000, richardson=True, repeat=repeat)
    for n in [10, 1_000] if quick else [10, 1_000, 10_000]:
        rows += _engine_case("dot(x,x)", f_dot, n, richardson=False, repeat=repeat)
    for n in [10, 1_000] if quick else [10, 1_000, 10_000, 100_000]:
        rows += _check_gradients_case("x[0]*x[-1]", f_cheap, _cheap_grad, n, repeat)
    torch_rows = []
    for n in [1_000] if quick else [1_000, 3_000]:
        torch_rows += _torch_case(n, 3)
    if not torch_rows:
        print("bench_fd: torch is not installed; skipping the torch.autograd.gradcheck comparison",
              file=sys.stderr)
    return rows + torch_rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    options = parser.parse_args(argv)
    for row in run(options.quick):
        target = f"  (target {row['target']} {row['unit']})" if row["target"] else ""
        print(f"{row['case']:<75} {row['value']:>12.4g} {row['unit']}{target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
