"""Benchmark: the finite-difference gradient of a C kernel, computed by gradtest in C.

For n = 10^3 and 10^4 inputs, the full central-difference gradient (2n kernel calls) of the
stencil energy of examples/kernels/stencil.c, timed as:

- ``raw C loop``: the same 2n perturbed calls and quotients in a plain C loop (the floor);
- ``CKernel, in-process``: ``run_stage("function", isolate=False)`` -- target within 1.10x of raw;
- ``whole check_gradients``: ``check_gradients(kernel, x, isolate=False)`` with the default
  (adaptive) rule, against a raw C loop making as many kernel calls -- target within 1.10x;
- ``CKernel, isolated``: the same in a forked child (the default of checks);
- ``CKernel, threads``: in-process, split over all usable CPUs (thread_safe=True);
- ``Python loop over ctypes``: a Python loop calling the kernel through ctypes 2n times;
- ``torch gradcheck``: torch.autograd.gradcheck on the same function written in torch, when
  torch is installed.

Each time is the best of several interleaved runs (wall clock; the in-process ratio is also given
in CPU time of the calling thread, which other load on the machine does not inflate); the rows
report times and ratios to the raw C loop.
Run alone: ``python benchmarks/bench_ckernel.py [--quick]``.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "python"))

import gradtest  # noqa: E402
from gradtest.ckernel import CKernel  # noqa: E402

# The floor: the same step rule as gradtest (h = eps^(1/3) |x_i|, 1 when x_i == 0) and the same
# calls through a function pointer, with nothing else around them.
RAW_LOOP = r"""
#include <float.h>
#include <math.h>
#include <stddef.h>
typedef int (*scalar_fn)(void *, size_t, const double *, double *);
int raw_fd(scalar_fn f, size_t n, double *x, double *g)
{
    const double h0 = cbrt(DBL_EPSILON);
    for (size_t i = 0; i < n; i++) {
        double xi = x[i], s = fabs(xi) > 0 ? fabs(xi) : 1.0, fp, fm;
        double xp = xi + h0 * s, xm = xi - h0 * s;
        x[i] = xp;
        if (f(NULL, n, x, &fp)) return 1;
        x[i] = xm;
        if (f(NULL, n, x, &fm)) return 1;
        x[i] = xi;
        g[i] = (fp - fm) / (xp - xm);
    }
    return 0;
}
/* `count` perturbed calls cycling over the components: the floor of any check that makes as
 * many evaluations, whatever its step rule */
int raw_calls(scalar_fn f, size_t n, double *x, size_t count, double *sink)
{
    const double h0 = cbrt(DBL_EPSILON);
    double acc = 0.0, v;
    for (size_t c = 0; c < count; c++) {
        size_t i = c % n;
        double xi = x[i];
        x[i] = xi + h0 * (c & 1 ? 1.0 : -1.0);
        if (f(NULL, n, x, &v)) return 1;
        x[i] = xi;
        acc += v;
    }
    *sink = acc;
    return 0;
}
"""


def _build(tmp: Path) -> tuple[str, ctypes.CDLL]:
    cc = os.environ.get("CC", "cc")
    stencil = tmp / "libstencil.so"
    raw_src = tmp / "raw.c"
    raw_src.write_text(RAW_LOOP)
    raw = tmp / "libraw.so"
    for src, out in ((ROOT / "examples" / "kernels" / "stencil.c", stencil), (raw_src, raw)):
        subprocess.run([cc, "-shared", "-fPIC", "-O2", f"-I{gradtest.get_include()}", str(src), "-o", str(out),
                        "-lm"], check=True)
    return str(stencil), ctypes.CDLL(str(raw))


def _best(fn, repeats: int, clock=time.perf_counter) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        fn()
        best = min(best, clock() - start)
    return best


def _python_loop(f, n: int, x: np.ndarray) -> np.ndarray:
    """What users hand-roll today: 2n ctypes calls from Python."""
    h0 = np.finfo(np.float64).eps ** (1 / 3)
    g = np.empty(n)
    out = ctypes.c_double()
    xp = x.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
    for i in range(n):
        xi = x[i]
        s = abs(xi) or 1.0
        x[i] = xi + h0 * s
        f(None, n, xp, ctypes.byref(out))
        fp = out.value
        x[i] = xi - h0 * s
        f(None, n, xp, ctypes.byref(out))
        fm = out.value
        x[i] = xi
        g[i] = (fp - fm) / (2 * h0 * s)
    return g


def _torch_case(n: int, x: np.ndarray, repeats: int) -> float | None:
    try:
        import torch
    except ImportError:
        return None

    def energy(t):
        return torch.sum(0.5 * (torch.roll(t, -1) - t) ** 2 + 0.25 * t**4)

    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    # gradcheck compares the numerical and analytical Jacobians: the same check as ours
    return _best(lambda: torch.autograd.gradcheck(energy, (xt,), eps=1e-6, atol=1e-4, fast_mode=False), repeats)


def run(quick: bool = False) -> list[dict]:
    rows: list[dict] = []
    sizes = (1000, 10000)
    with tempfile.TemporaryDirectory() as tmpdir:
        stencil, raw = _build(Path(tmpdir))
        lib = ctypes.CDLL(stencil)
        address = ctypes.cast(lib.stencil_f, ctypes.c_void_p).value
        raw.raw_fd.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p]
        raw.raw_calls.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        grad_address = ctypes.cast(lib.stencil_grad, ctypes.c_void_p).value
        kernel = CKernel(address, gradient=grad_address, name="stencil_f")
        threaded = CKernel(address, name="stencil_f", thread_safe=True)
        nthreads = threaded._threads(None)
        ctypes_f = lib.stencil_f
        ctypes_f.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_double),
                             ctypes.POINTER(ctypes.c_double)]
        ctypes_f.restype = ctypes.c_int
        in_process: dict[int, tuple[np.ndarray, float]] = {}
        for n in sizes:
            repeats = (3 if n > 1000 else 7) if quick else (7 if n > 1000 else 21)
            x = np.random.default_rng(0).standard_normal(n)
            xw = x.copy()
            g = np.empty(n)

            def raw_call():
                raw.raw_fd(address, n, xw.ctypes.data, g.ctypes.data)

            def ck(isolate, k=kernel):
                return lambda: k.run_stage("function", x, richardson=False, isolate=isolate)

            # interleave the contenders so that load changes hit them alike
            t_raw = t_in = t_iso = t_thr = c_raw = c_in = float("inf")
            for _ in range(repeats):
                t_raw = min(t_raw, _best(raw_call, 1))
                t_in = min(t_in, _best(ck(False), 1))
                t_iso = min(t_iso, _best(ck(True), 1))
                t_thr = min(t_thr, _best(ck(False, threaded), 1))
                # CPU time of this thread (both run on it): insensitive to other load on the machine
                c_raw = min(c_raw, _best(raw_call, 1, time.thread_time))
                c_in = min(c_in, _best(ck(False), 1, time.thread_time))
            # the fixed price of a fork per stage, on a stage that is one cheap call
            t_g_in = _best(lambda: kernel.run_stage("gradient", x, isolate=False), repeats * 3)
            t_g_iso = _best(lambda: kernel.run_stage("gradient", x, isolate=True), repeats * 3)
            classic = kernel.run_stage("function", x, richardson=False, isolate=False)
            # the raw loop is a timing floor (its steps, eps^(1/3) |x_i|, are poor at tiny x_i);
            # gradtest's classic rule is checked against the kernel's analytic gradient
            exact = kernel.run_stage("gradient", x, isolate=False).gradient
            assert np.all(np.abs(classic.gradient - exact) <= 3 * classic.errors), "FD beyond its error estimate"
            # a whole check_gradients (in-process), against a raw loop making its evaluations
            report = gradtest.check_gradients(kernel, x, isolate=False)
            assert report.passed, str(report)
            evaluations = report.evaluations + 1  # plus the gradient stage's one call
            sink = ctypes.c_double()

            def raw_same():
                raw.raw_calls(address, n, xw.ctypes.data, evaluations, ctypes.byref(sink))

            t_check = t_same = float("inf")
            for _ in range(repeats):
                t_same = min(t_same, _best(raw_same, 1, time.thread_time))
                t_check = min(t_check, _best(lambda: gradtest.check_gradients(kernel, x, isolate=False), 1,
                                             time.thread_time))
            py_repeats = 1 if (quick or n > 1000) else 3
            t_py = _best(lambda: _python_loop(ctypes_f, n, x.copy()), py_repeats)
            case = f"n={n}"
            rows += [
                {"benchmark": "ckernel_fd", "case": f"{case} raw C loop (2n calls)", "value": t_raw * 1e3,
                 "unit": "ms", "target": "floor"},
                {"benchmark": "ckernel_fd", "case": f"{case} in-process / raw C loop", "value": t_in / t_raw,
                 "unit": "x", "target": "<= 1.10"},
                {"benchmark": "ckernel_fd", "case": f"{case} in-process / raw C loop (thread CPU time)",
                 "value": c_in / c_raw, "unit": "x", "target": "<= 1.10"},
                {"benchmark": "ckernel_fd",
                 "case": f"{case} whole check_gradients (in-process, {evaluations} evaluations) / raw C loop "
                         "making as many (thread CPU time)",
                 "value": t_check / t_same, "unit": "x", "target": "<= 1.10"},
                {"benchmark": "ckernel_fd", "case": f"{case} isolated (fork) / raw C loop", "value": t_iso / t_raw,
                 "unit": "x", "target": "report"},
                {"benchmark": "ckernel_fd", "case": f"{case} isolation cost per stage (fork + pipe)",
                 "value": (t_g_iso - t_g_in) * 1e3, "unit": "ms", "target": "report"},
                {"benchmark": "ckernel_fd", "case": f"{case} {nthreads} threads / raw C loop",
                 "value": t_thr / t_raw, "unit": "x", "target": f"~1/{nthreads}"},
                {"benchmark": "ckernel_fd", "case": f"{case} Python loop over ctypes / in-process",
                 "value": t_py / t_in, "unit": "x", "target": "report (speed-up of CKernel)"},
            ]
            in_process[n] = (x, t_in)
        # torch last: importing it grows this process, and with it the price of every fork
        for n, (x, t_in) in in_process.items():
            t_torch = _torch_case(n, x, 1 if quick else 3)
            if t_torch is not None:
                rows.append({"benchmark": "ckernel_fd", "case": f"n={n} torch gradcheck / in-process",
                             "value": t_torch / t_in, "unit": "x", "target": "report"})
            else:
                rows.append({"benchmark": "ckernel_fd", "case": f"n={n} torch gradcheck", "value": float("nan"),
                             "unit": "x", "target": "torch not installed"})
    return rows


def main() -> None:
    quick = "--quick" in sys.argv
    rows = run(quick)
    width = max(len(r["case"]) for r in rows)
    for r in rows:
        print(f"{r['case']:<{width}}  {r['value']:>10.3f} {r['unit']:<3} (target {r['target']})")


if __name__ == "__main__":
    main()
