"""How sharp the verdict is: the smallest single-element error each checker catches, and the cost of
a default check at scale.

(a) For a suite of analytic functions (well-scaled, ill-scaled, a large offset, tiny x, high
frequency, float32 inside f), one element of the hand-written gradient is made wrong by a relative
10^-k (k = 12, 11, ..., 0, then 10x); the row is the smallest such error the checker reports,
for the element with the largest, the median and the smallest |g_i|. Side by side, where they are
installed: ``torch.autograd.gradcheck`` (a custom ``autograd.Function`` whose backward returns the
same hand-written gradient) and ``jax.test_util.check_grads`` (a ``custom_vjp`` with the same
rule), each at its default tolerances. A checker that rejects the *correct* gradient gets a
"false alarm" row instead (value 1).

(b) A default ``check_gradients`` (mode="auto", the hand-written gradient and the reverse
backend) of f = sum(sin(x) * x) at n = 10^4, 10^5, 10^6, in a fresh process each: its time, its
peak memory as a multiple of the input's, whether it caught and named one element wrong by 1e-5,
and whether the correct gradient passed.

Run alone: ``python benchmarks/bench_verdicts.py [--quick]``; or through ``benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
try:
    import gradtest
except ImportError:  # a source checkout without PYTHONPATH=python
    sys.path.insert(0, str(HERE.parent / "python"))
    import gradtest

LEVELS = [10.0**-k for k in range(12, -1, -1)] + [10.0]
N = 20


def _suite(rng: np.random.Generator) -> list[tuple[str, Callable, Callable, np.ndarray]]:
    s = np.logspace(-6, 6, N)

    def lse(x):
        m = np.max(x)
        return m + np.log(np.sum(np.exp(x - m)))

    def softmax(x):
        e = np.exp(x - np.max(x))
        return e / np.sum(e)

    def rosen(x):
        return np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)

    def rosen_der(x):
        g = np.zeros_like(x)
        g[:-1] = -400 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2 * (1 - x[:-1])
        g[1:] += 200 * (x[1:] - x[:-1] ** 2)
        return g

    return [
        ("well-scaled: Rosenbrock", rosen, rosen_der, rng.uniform(-1.5, 1.5, N)),
        ("well-scaled: sum sin(x) cos(2x)", lambda x: np.sum(np.sin(x) * np.cos(2 * x)),
         lambda x: np.cos(x) * np.cos(2 * x) - 2 * np.sin(x) * np.sin(2 * x), rng.uniform(-3, 3, N)),
        ("ill-scaled: sum s x^2, s = 1e-6..1e6", lambda x: np.sum(s * x**2), lambda x: 2 * s * x,
         rng.uniform(0.5, 2, N)),
        ("large offset: log-sum-exp at 1000", lse, softmax, 1000 + rng.standard_normal(N)),
        ("tiny x: sum exp(x) x at 1e-5", lambda x: np.sum(np.exp(x) * x), lambda x: np.exp(x) * (1 + x),
         rng.uniform(-1, 1, N) * 1e-5),
        ("high frequency: sum sin(50 x)", lambda x: np.sum(np.sin(50 * x)), lambda x: 50 * np.cos(50 * x),
         rng.uniform(5, 10, N)),
        ("float32 inside f: sum x^2", lambda x: np.sum(x.astype(np.float32) ** 2), lambda x: 2 * x,
         rng.uniform(0.5, 2, N)),
    ]


def _wrong(grad: Callable, i: int, rel: float) -> Callable:
    def g(x):
        out = np.array(grad(np.asarray(x, dtype=np.float64)), dtype=np.float64)
        out[i] *= 1 + rel
        return out
    return g


# ---- the checkers: each returns True when it reports the gradient as wrong ------------------

def _gradtest_rejects(f, g, x) -> bool:
    report = gradtest.check_gradients(f, x, gradient=lambda x: (g(x),), backends=["user"])
    return report.outcomes["user"].status != "pass"


def _torch_checker():
    try:
        import torch
    except ImportError:
        return None

    def rejects(f, g, x) -> bool:
        class Custom(torch.autograd.Function):
            @staticmethod
            def forward(ctx, t):
                ctx.save_for_backward(t)
                return torch.tensor(float(f(t.detach().numpy())), dtype=torch.float64)

            @staticmethod
            def backward(ctx, grad_out):
                (t,) = ctx.saved_tensors
                return grad_out * torch.from_numpy(np.asarray(g(t.detach().numpy()), dtype=np.float64))

        t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        return not torch.autograd.gradcheck(Custom.apply, (t,), raise_exception=False)

    return rejects


def _jax_checker():
    try:
        import jax
        import jax.numpy as jnp
        from jax.test_util import check_grads
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)

    def rejects(f, g, x) -> bool:
        shape = jax.ShapeDtypeStruct((), jnp.float64)
        gshape = jax.ShapeDtypeStruct(x.shape, jnp.float64)

        @jax.custom_vjp
        def fj(v):
            return jax.pure_callback(lambda a: np.float64(f(np.asarray(a))), shape, v)

        def fwd(v):
            return fj(v), v

        def bwd(v, ct):
            return (ct * jax.pure_callback(lambda a: np.asarray(g(np.asarray(a)), np.float64), gshape, v),)

        fj.defvjp(fwd, bwd)
        try:
            check_grads(fj, (jnp.asarray(x),), order=1, modes=("rev",))
        except AssertionError:
            return True
        return False

    return rejects


def _smallest_caught(rejects, f, grad, x, i) -> float:
    for rel in LEVELS:
        if rejects(f, _wrong(grad, i, rel), x):
            return rel
    return math.inf


def part_a(quick: bool) -> list[dict]:
    checkers = {"gradtest": _gradtest_rejects}
    missing = []
    for name, make in (("torch gradcheck", _torch_checker), ("jax check_grads", _jax_checker)):
        checker = make()
        if checker is None:
            missing.append(name)
        else:
            checkers[name] = checker
    rows = []
    suite = _suite(np.random.default_rng(0))
    if quick:
        suite = suite[::2]
    for fname, f, grad, x in suite:
        g = np.abs(grad(x))
        order = np.argsort(g)
        positions = {"largest |g_i|": int(order[-1]), "median |g_i|": int(order[len(order) // 2]),
                     "smallest |g_i|": int(order[0])}
        for cname, rejects in checkers.items():
            if rejects(f, grad, x):
                rows.append({"benchmark": "verdicts", "case": f"{cname}: {fname}: FALSE ALARM on the correct gradient",
                             "value": 1.0, "unit": "false alarm", "target": "< 1"})
                continue
            for pname, i in positions.items():
                caught = _smallest_caught(rejects, f, grad, x, i)
                rows.append({"benchmark": "verdicts", "case": f"{cname}: {fname}: {pname}",
                             "value": caught, "unit": "smallest relative error caught",
                             "target": _target(cname, fname)})
    for name in missing:
        rows.append({"benchmark": "verdicts", "case": f"{name}: not installed, skipped", "value": math.nan,
                     "unit": "", "target": ""})
    return rows


def _target(checker: str, fname: str) -> str:
    if checker != "gradtest":
        return ""
    return "<= 1e-7" if fname.startswith("well-scaled") else ""


# ---- (b) scale ---------------------------------------------------------------------------------

def _child(n: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0.5, 2.0, n)
    wrong_at = n // 3 + 7

    def f(x):
        return np.sum(np.sin(x) * x)

    def grad(x, rel=0.0):
        g = np.cos(x) * x + np.sin(x)
        if rel:
            g[wrong_at] *= 1 + rel
        return (g,)

    f(x)
    grad(x)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    bad = gradtest.check_gradients(f, x, gradient=lambda x: grad(x, 1e-5))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    good = gradtest.check_gradients(f, x, gradient=grad)
    user = bad.outcomes["user"]
    print(json.dumps({
        "seconds": seconds, "memory": (peak - base) * 1024 / x.nbytes, "mode": bad.mode,
        "caught": user.status == "fail", "named": user.worst is not None and user.worst.index == (wrong_at,),
        "correct_passes": good.passed,
    }))


def part_b(quick: bool) -> list[dict]:
    rows = []
    for n in ([10**4, 10**5] if quick else [10**4, 10**5, 10**6]):
        out = subprocess.run([sys.executable, __file__, "--child", str(n)], capture_output=True, text=True,
                             check=False, timeout=600)
        if out.returncode:
            raise RuntimeError(f"child n={n} failed:\n{out.stderr}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        big = n == 10**6
        rows += [
            {"benchmark": "verdicts", "case": f"default check at n={n} ({r['mode']} mode): time", "value": r["seconds"],
             "unit": "s", "target": "< 5" if big else ""},
            {"benchmark": "verdicts", "case": f"default check at n={n}: peak memory / input", "value": r["memory"],
             "unit": "x", "target": "< 10" if big else ""},
            {"benchmark": "verdicts", "case": f"default check at n={n}: 1e-5 error in one element caught and named",
             "value": float(r["caught"] and r["named"]), "unit": "yes=1", "target": ">= 1"},
            {"benchmark": "verdicts", "case": f"default check at n={n}: correct gradient passes",
             "value": float(r["correct_passes"]), "unit": "yes=1", "target": ">= 1"},
        ]
    return rows


def run(quick: bool) -> list[dict]:
    return part_a(quick) + part_b(quick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--part", choices=["a", "b"])
    args = parser.parse_args()
    if args.child:
        _child(args.child)
        return
    rows: list[dict[str, Any]] = (part_a(args.quick) if args.part != "b" else []) + \
        (part_b(args.quick) if args.part != "a" else [])
    for row in rows:
        target = f"  (target {row['target']})" if row["target"] else ""
        print(f"{row['case']:<95} {row['value']:>10.3g} {row['unit']}{target}")


if __name__ == "__main__":
    main()
