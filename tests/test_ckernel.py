"""CKernel: C kernels compiled here with the system C compiler, checked with finite differences
computed in C, in-process and in forked children, against NumPy references."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import gradtest
from gradtest._finite_diff import GroundTruthError
from gradtest.ckernel import CKernel, KernelCrash, KernelError, KernelLoadError, KernelTimeout

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "kernels"
CC = os.environ.get("CC", "cc")

pytestmark = pytest.mark.skipif(shutil.which(CC) is None, reason="no C compiler")

# Kernels that misbehave on purpose, one way per function, to test isolation and error reports.
BAD_SOURCE = r"""
#define _GNU_SOURCE
#include <fenv.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <gradtest.h>

int sq_f(void *ctx, size_t n, const double *x, double *f)
{
    (void)ctx;
    double acc = 0.0;
    for (size_t i = 0; i < n; i++)
        acc += x[i] * x[i];
    *f = acc;
    return 0;
}
int sq_grad(void *ctx, size_t n, const double *x, double *g)
{
    (void)ctx;
    for (size_t i = 0; i < n; i++)
        g[i] = 2.0 * x[i];
    return 0;
}
int grad_segv(void *ctx, size_t n, const double *x, double *g)
{
    (void)ctx; (void)n; (void)x; (void)g;
    volatile double *volatile p = NULL;
    *p = 1.0;
    return 0;
}
int grad_abort(void *ctx, size_t n, const double *x, double *g)
{
    (void)ctx; (void)n; (void)x; (void)g;
    abort();
}
/* a real floating-point trap where the C library can enable one (glibc), else the signal */
int grad_fpe(void *ctx, size_t n, const double *x, double *g)
{
    (void)ctx;
#ifdef __GLIBC__
    if (feenableexcept(FE_DIVBYZERO) != -1) {
        volatile double zero = 0.0;
        for (size_t i = 0; i < n; i++)
            g[i] = x[i] / zero;
        return 0;
    }
#endif
    (void)n; (void)x; (void)g;
    raise(SIGFPE);
    return 0;
}
int grad_bus(void *ctx, size_t n, const double *x, double *g)
{
    (void)ctx; (void)n; (void)x; (void)g;
    raise(SIGBUS);
    return 0;
}
int grad_hang(void *ctx, size_t n, const double *x, double *g)
{
    (void)ctx; (void)n; (void)x; (void)g;
    for (;;)
        pause();
}
int grad_exit(void *ctx, size_t n, const double *x, double *g)
{
    (void)ctx; (void)n; (void)x; (void)g;
    exit(3);
}
int grad_status(void *ctx, size_t n, const double *x, double *g)
{
    (void)ctx; (void)n; (void)x; (void)g;
    return 42;
}
/* writes every element but the last: the NaN fill shows it */
int grad_partial(void *ctx, size_t n, const double *x, double *g)
{
    (void)ctx;
    for (size_t i = 0; i + 1 < n; i++)
        g[i] = 2.0 * x[i];
    return 0;
}
/* f fails (status 5) once x[0] exceeds 10: a perturbation near the edge of the domain */
int f_domain(void *ctx, size_t n, const double *x, double *f)
{
    if (x[0] > 10.0)
        return 5;
    return sq_f(ctx, n, x, f);
}
int f_segv_late(void *ctx, size_t n, const double *x, double *f)
{
    /* crashes when a perturbation moves x[n-1] above 1: only during finite differences */
    if (x[n - 1] > 1.0) {
        volatile double *volatile p = NULL;
        *p = 1.0;
    }
    return sq_f(ctx, n, x, f);
}
int f_nan(void *ctx, size_t n, const double *x, double *f)
{
    (void)ctx; (void)n;
    *f = x[0] > 0.5 ? 0.0 / 0.0 : x[0];
    return 0;
}
/* tries to write its input: gradtest's copy must absorb it */
int f_writes_x(void *ctx, size_t n, const double *x, double *f)
{
    ((double *)x)[0] += 0.0;
    return sq_f(ctx, n, x, f);
}
/* a vector function that forgets ctx checks: y = x * scale[0] */
int scaled(void *ctx, size_t n, const double *x, size_t m, double *y)
{
    const double *scale = ctx;
    if (m != n)
        return 1;
    for (size_t i = 0; i < n; i++)
        y[i] = scale[0] * x[i] * x[i];
    return 0;
}
int scaled_vjp(void *ctx, size_t n, const double *x, size_t m, const double *ybar, double *xbar)
{
    const double *scale = ctx;
    if (m != n)
        return 1;
    for (size_t i = 0; i < n; i++)
        xbar[i] = 2.0 * scale[0] * x[i] * ybar[i];
    return 0;
}
int grad_prints(void *ctx, size_t n, const double *x, double *g)
{
    printf("grad_prints: n = %zu\n", n);
    return sq_grad(ctx, n, x, g);
}
/* 20 ms per call: long enough to see whether Python runs meanwhile */
int slow_f(void *ctx, size_t n, const double *x, double *f)
{
    struct timespec ts = {0, 20000000};
    nanosleep(&ts, NULL);
    return sq_f(ctx, n, x, f);
}
/* writes 64 doubles past the end of g (reading only x[0..n)) */
int grad_overrun(void *ctx, size_t n, const double *x, double *g)
{
    (void)ctx;
    for (size_t i = 0; i < n + 64; i++)
        g[i] = i < n ? 2.0 * x[i] : 0.0;
    return 0;
}
/* one element past the end: the smallest overrun */
int grad_overrun1(void *ctx, size_t n, const double *x, double *g)
{
    sq_grad(ctx, n, x, g);
    g[n] = 1.0;
    return 0;
}
int grad_underrun(void *ctx, size_t n, const double *x, double *g)
{
    sq_grad(ctx, n, x, g);
    g[-1] = 1.0;
    return 0;
}
/* a scalar function that writes a second output value */
int f_overrun(void *ctx, size_t n, const double *x, double *f)
{
    sq_f(ctx, n, x, f);
    f[1] = 0.0;
    return 0;
}
/* writes its pid to $GT_SPIN_PIDFILE, then spins at 100% CPU for ever */
int grad_spin(void *ctx, size_t n, const double *x, double *g)
{
    (void)ctx; (void)n; (void)x; (void)g;
    const char *path = getenv("GT_SPIN_PIDFILE");
    if (path) {
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s.tmp", path);
        FILE *fp = fopen(tmp, "w");
        if (fp) {
            fprintf(fp, "%d", (int)getpid());
            fclose(fp);
            rename(tmp, path);
        }
    }
    for (volatile unsigned long spin = 0;; spin++)
        ;
}
int jvp_hang_at_3(void *ctx, size_t n, const double *x, const double *xdot, size_t m, double *ydot)
{
    const double *scale = ctx;
    (void)m;
    if (xdot[3 % n] == 1.0)
        for (;;)
            pause();
    for (size_t i = 0; i < n; i++)
        ydot[i] = 2.0 * scale[0] * x[i] * xdot[i];
    return 0;
}
"""


def _build(source: Path, out: Path) -> Path:
    cmd = [CC, "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", f"-I{gradtest.get_include()}",
           str(source), "-o", str(out), "-lm"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return out


@pytest.fixture(scope="module")
def libs(tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("kernels")
    bad = tmp / "bad.c"
    bad.write_text(BAD_SOURCE)
    return {
        "stencil": str(_build(EXAMPLES / "stencil.c", tmp / "libstencil.so")),
        "ls": str(_build(EXAMPLES / "least_squares.c", tmp / "libls.so")),
        "rosen": str(_build(EXAMPLES / "rosenbrock.c", tmp / "librosen.so")),
        "bad": str(_build(bad, tmp / "libbad.so")),
    }


@pytest.fixture(params=[True, False], ids=["isolated", "in-process"])
def isolate(request) -> bool:
    return request.param


# ---- NumPy references ---------------------------------------------------------------------


def stencil_ref(x):
    return float(np.sum(0.5 * (np.roll(x, -1) - x) ** 2 + 0.25 * x**4))


def stencil_grad_ref(x):
    return 2 * x - np.roll(x, 1) - np.roll(x, -1) + x**3


def rosen_grad_ref(x):
    g = np.zeros_like(x)
    a = x[1:] - x[:-1] ** 2
    g[:-1] += -400 * a * x[:-1] - 2 * (1 - x[:-1])
    g[1:] += 200 * a
    return g


# ---- the check through check_gradients -------------------------------------------------------


def test_correct_gradient_passes(libs, rng, isolate):
    k = CKernel(f"{libs['stencil']}:stencil_f", gradient="stencil_grad")
    x = rng.standard_normal(17)
    report = gradtest.check_gradients(k, x, isolate=isolate)
    assert report.passed, str(report)
    assert report.outcomes["user"].status == "pass"
    assert np.allclose(report.ground_truth[0], stencil_grad_ref(x), rtol=1e-7, atol=1e-8)


def test_wrong_gradient_fails_at_the_boundary(libs, rng, isolate):
    k = CKernel(f"{libs['stencil']}:stencil_f", gradient="stencil_grad_wrong")
    x = rng.standard_normal(12)
    report = gradtest.check_gradients(k, x, isolate=isolate)
    assert not report.passed
    outcome = report.outcomes["user"]
    assert outcome.status == "fail"
    assert "args[0][0]" in str(report) or "args[0][11]" in str(report)


def test_test_gradients_raises_and_broken_is_xfail(libs, rng):
    k = CKernel(f"{libs['rosen']}:rosen_f", gradient="rosen_grad_wrong")
    x = rng.uniform(-1.0, 1.0, 6)
    with pytest.raises(AssertionError, match="user"):
        gradtest.test_gradients(k, x)
    report = gradtest.test_gradients(k, x, broken_backends=["user"])
    assert report.outcomes["user"].status == "broken"
    good = CKernel(f"{libs['rosen']}:rosen_f", gradient="rosen_grad")
    gradtest.test_gradients(good, x)


def test_fd_matches_numpy_reference(libs, rng):
    k = CKernel(f"{libs['rosen']}:rosen_f", gradient="rosen_grad")
    x = rng.uniform(-1.5, 1.5, 9)
    for method in ("central", "forward", "backward"):
        for richardson in (True, False):
            res = k.run_stage("function", x, method=method, richardson=richardson, isolate=False)
            tol = 1e-5 if method == "central" or richardson else 1e-3
            np.testing.assert_allclose(res.gradient, rosen_grad_ref(x), rtol=tol, atol=tol)
            assert np.all(res.errors > 0)
            per = 2 if method == "central" else 1
            if richardson:  # adaptive: at least three steps a component, plus the noise probe
                assert res.evaluations >= 1 + 3 * per * x.size
            else:
                assert res.evaluations == 1 + per * x.size
    grad = k.run_stage("gradient", x, isolate=False).gradient
    np.testing.assert_allclose(grad, rosen_grad_ref(x), rtol=1e-14)


def test_same_ground_truth_as_the_python_path(libs, rng):
    """The C finite differences and gradtest's Python ones (calling the kernel from Python) use
    the same steps, zero components included."""
    k = CKernel(f"{libs['rosen']}:rosen_f", gradient="rosen_grad")
    x = rng.uniform(-2.0, 2.0, 8) * 100.0
    x[[2, 5]] = 0.0
    for options in ({}, {"richardson": False}, {"method": "forward"}):
        c_report = gradtest.check_gradients(k, x, isolate=False, **options)
        py_report = gradtest.check_gradients(lambda v: k(v), x, gradient=lambda v: k.run_stage(
            "gradient", v, isolate=False).gradient, mode="full", backends=["user"], **options)
        np.testing.assert_allclose(c_report.ground_truth[0], py_report.ground_truth[0], rtol=1e-12)
        assert c_report.passed and py_report.passed


def test_vector_function_vjp_jvp_with_ctx(libs, rng, isolate):
    lib = ctypes.CDLL(libs["ls"])
    lib.ls_data_new.restype = ctypes.c_void_p
    lib.ls_data_new.argtypes = [ctypes.c_size_t]
    lib.ls_data_free.argtypes = [ctypes.c_void_p]
    data = lib.ls_data_new(25)
    try:
        k = CKernel(lib.ls_residual, vjp=lib.ls_residual_vjp, jvp=lib.ls_residual_jvp, ctx=data, n_out=25)
        assert k.__gradtest_backends__ == ("user_vjp", "user_jvp")
        x = np.array([2.0, 1.0, 0.5, 3.0]) + 0.1 * rng.standard_normal(4)
        report = gradtest.check_gradients(k, x, isolate=isolate)
        assert report.passed, str(report)
        # the ground truth is the gradient of <u, r(x)> with the seeded cotangent
        u = k.cotangent(4, seed=0)
        t = np.arange(25) / 25
        jac = np.stack([np.exp(-x[1] * t), -t * x[0] * np.exp(-x[1] * t),
                        np.exp(-x[3] * t), -t * x[2] * np.exp(-x[3] * t)], axis=1)
        np.testing.assert_allclose(report.ground_truth[0], jac.T @ u, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(k(x), jac[:, 0] * x[0] + jac[:, 2] * x[2]
                                   - (2 * np.exp(-t) + 0.5 * np.exp(-3 * t)), atol=1e-12)
        wrong = CKernel(lib.ls_residual, vjp=lib.ls_residual_vjp_wrong, ctx=data, n_out=25)
        bad = gradtest.check_gradients(wrong, x, isolate=isolate)
        assert bad.outcomes["user_vjp"].status == "fail"
        # another seed, another cotangent: the wrong VJP still fails
        assert gradtest.check_gradients(wrong, x, seed=3).outcomes["user_vjp"].status == "fail"
    finally:
        lib.ls_data_free(data)


def test_stencil_vector_and_threads_agree(libs, rng):
    x = rng.standard_normal(64)
    path = libs["stencil"]
    single = CKernel(f"{path}:stencil_apply", vjp="stencil_apply_vjp", jvp="stencil_apply_jvp",
                     n_out=lambda n: n)
    multi = CKernel(f"{path}:stencil_apply", vjp="stencil_apply_vjp", jvp="stencil_apply_jvp",
                    n_out=lambda n: n, thread_safe=True)
    for isolate in (False, True):
        a = single.run_stage("function", x, isolate=isolate)
        b = multi.run_stage("function", x, isolate=isolate, threads=4)
        np.testing.assert_array_equal(a.gradient, b.gradient)  # same formula per component
        np.testing.assert_array_equal(a.errors, b.errors)
        assert a.evaluations == b.evaluations
        ja = single.run_stage("jvp", x, isolate=isolate)
        jb = multi.run_stage("jvp", x, isolate=isolate, threads=3)
        np.testing.assert_array_equal(ja.gradient, jb.gradient)
        assert jb.evaluations == x.size
    report = gradtest.check_gradients(multi, x)
    assert report.passed, str(report)
    assert any("threads" in note for note in report.notes)
    wrong = CKernel(f"{path}:stencil_apply", vjp="stencil_apply_vjp_wrong", jvp="stencil_apply_jvp",
                    n_out=lambda n: n, thread_safe=True)
    report = gradtest.check_gradients(wrong, x)
    assert report.outcomes["user_vjp"].status == "fail"
    assert report.outcomes["user_jvp"].status == "pass"


def test_float32_kernel(libs, rng, isolate):
    k = CKernel(f"{libs['stencil']}:stencil_f32", gradient="stencil_grad_f32", dtype="float32")
    x = rng.standard_normal(11).astype(np.float32)
    report = gradtest.check_gradients(k, x, isolate=isolate)
    assert report.passed, str(report)
    assert any("float32" in note for note in report.notes)
    assert abs(k(x) - stencil_ref(x.astype(np.float64))) < 1e-4
    res = k.run_stage("function", x, isolate=False)
    np.testing.assert_allclose(res.gradient, stencil_grad_ref(x.astype(np.float64)), rtol=1e-2, atol=1e-2)


def test_mode_notes(libs, rng):
    k = CKernel(f"{libs['bad']}:slow_f", gradient="sq_grad")
    x = rng.standard_normal(2)
    report = gradtest.check_gradients(k, x, isolate=False, time_budget=0.01, richardson=False)
    assert report.passed and report.mode == "full"
    assert any("over time_budget" in note for note in report.notes)
    report = gradtest.check_gradients(k, x, isolate=False, mode="directional", richardson=False)
    assert any("directional mode is not offered" in note for note in report.notes)


def test_multidimensional_x_keeps_its_shape(libs, rng):
    k = CKernel(f"{libs['stencil']}:stencil_f", gradient="stencil_grad")
    x = rng.standard_normal((3, 4))
    report = gradtest.check_gradients(k, x, isolate=False)
    assert report.passed
    assert report.ground_truth[0].shape == (3, 4)
    np.testing.assert_allclose(report.ground_truth[0].ravel(), stencil_grad_ref(x.ravel()), rtol=1e-7)


def test_callers_array_is_not_modified(libs, rng):
    k = CKernel(f"{libs['bad']}:f_writes_x", gradient="sq_grad")
    x = rng.standard_normal(5)
    before = x.copy()
    report = gradtest.check_gradients(k, x, isolate=False)
    assert report.passed
    np.testing.assert_array_equal(x, before)
    gradtest.check_gradients(CKernel(f"{libs['stencil']}:stencil_f", gradient="stencil_grad"), x)
    np.testing.assert_array_equal(x, before)


# ---- pointer kinds -----------------------------------------------------------------------------


def test_ctypes_int_and_string_pointers_agree(libs, rng):
    lib = ctypes.CDLL(libs["stencil"])
    address = ctypes.cast(lib.stencil_f, ctypes.c_void_p).value
    grad_address = ctypes.cast(lib.stencil_grad, ctypes.c_void_p).value
    x = rng.standard_normal(6)
    kernels = [
        CKernel(lib.stencil_f, gradient=lib.stencil_grad),
        CKernel(address, gradient=grad_address),
        CKernel(ctypes.c_void_p(address), gradient=np.uint64(grad_address)),
        CKernel(f"{libs['stencil']}:stencil_f", gradient=f"{libs['stencil']}:stencil_grad"),
    ]
    values = [k(x) for k in kernels]
    assert values == [values[0]] * 4
    assert abs(values[0] - stencil_ref(x)) < 1e-12
    for k in kernels:
        assert gradtest.check_gradients(k, x, isolate=False).passed


def test_cffi_pointers(libs, rng):
    cffi = pytest.importorskip("cffi")
    ffi = cffi.FFI()
    ffi.cdef("int stencil_f(void *, size_t, const double *, double *);"
             "int stencil_grad(void *, size_t, const double *, double *);")
    lib = ffi.dlopen(libs["stencil"])
    k = CKernel(lib.stencil_f, gradient=ffi.addressof(lib, "stencil_grad"))
    x = rng.standard_normal(5)
    assert abs(k(x) - stencil_ref(x)) < 1e-12
    assert gradtest.check_gradients(k, x).passed
    with pytest.raises(ValueError, match="gradient: NULL"):
        CKernel(lib.stencil_f, gradient=ffi.NULL)


def test_numpy_ctx(libs, rng):
    scale = np.array([3.0])
    k = CKernel(f"{libs['bad']}:scaled", vjp="scaled_vjp", ctx=scale, n_out=lambda n: n)
    x = rng.standard_normal(4)
    np.testing.assert_allclose(k(x), 3.0 * x**2)
    assert gradtest.check_gradients(k, x).passed


# ---- crashes, failures and time-outs -------------------------------------------------------------


@pytest.mark.parametrize(
    "symbol, signal_name",
    [("grad_segv", "SIGSEGV"), ("grad_abort", "SIGABRT"), ("grad_fpe", "SIGFPE"), ("grad_bus", "SIGBUS")],
)
def test_crash_becomes_an_error_outcome(libs, rng, symbol, signal_name):
    k = CKernel(f"{libs['bad']}:sq_f", gradient=symbol)
    x = rng.standard_normal(4)
    report = gradtest.check_gradients(k, x)
    outcome = report.outcomes["user"]
    assert outcome.status == "error"
    assert isinstance(outcome.exception, KernelCrash)
    assert outcome.exception.signal_name == signal_name
    assert outcome.exception.stage == "gradient"
    assert signal_name in str(report) and "gradient" in str(report)
    # the process survived and works on
    assert gradtest.check_gradients(CKernel(f"{libs['bad']}:sq_f", gradient="sq_grad"), x).passed


def test_crash_in_one_backend_leaves_the_others(libs, rng):
    scale = np.array([2.0])
    k = CKernel(f"{libs['bad']}:scaled", vjp="scaled_vjp", jvp="jvp_hang_at_3", ctx=scale,
                n_out=lambda n: n)
    x = rng.standard_normal(6)
    report = gradtest.check_gradients(k, x, timeout=1.0)
    assert report.outcomes["user_vjp"].status == "pass"
    jvp = report.outcomes["user_jvp"]
    assert jvp.status == "error"
    assert isinstance(jvp.exception, KernelTimeout)
    assert jvp.exception.stage == "jvp"
    assert "timed out" in str(jvp.exception)
    # broken_backends turns the expected error into broken
    report = gradtest.check_gradients(k, x, timeout=0.5, broken_backends=["user_jvp"])
    assert report.outcomes["user_jvp"].status == "broken"
    assert report.passed


def test_exit_and_status_are_reported(libs, rng, isolate):
    x = rng.standard_normal(3)
    k = CKernel(f"{libs['bad']}:sq_f", gradient="grad_status")
    outcome = gradtest.check_gradients(k, x, isolate=isolate).outcomes["user"]
    assert outcome.status == "error"
    assert type(outcome.exception) is KernelError
    assert outcome.exception.status == 42
    assert "status 42" in str(outcome.exception)
    if isolate:
        k = CKernel(f"{libs['bad']}:sq_f", gradient="grad_exit")
        outcome = gradtest.check_gradients(k, x).outcomes["user"]
        assert isinstance(outcome.exception, KernelCrash)
        assert outcome.exception.exit_code == 3
        assert "exit" in str(outcome.exception)


def test_kernel_output_survives_isolation(libs):
    """A kernel's printf reaches stdout from the forked child, also when stdout is buffered."""
    import sys

    code = ("import numpy as np, gradtest; "
            f"k = gradtest.CKernel({libs['bad']!r} + ':sq_f', gradient='grad_prints'); "
            "print(gradtest.check_gradients(k, np.ones(3)).passed, flush=True)")
    env = {key: v for key, v in os.environ.items() if key != "PYTHONUNBUFFERED"}
    # the gradtest this process imported: the source tree's or an installed one
    env["PYTHONPATH"] = str(Path(gradtest.__file__).resolve().parent.parent) + os.pathsep + env.get("PYTHONPATH", "")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "grad_prints: n = 3" in run.stdout
    assert "True" in run.stdout


def test_unwritten_output_element_fails(libs, rng):
    k = CKernel(f"{libs['bad']}:sq_f", gradient="grad_partial")
    x = rng.standard_normal(5)
    report = gradtest.check_gradients(k, x, isolate=False)
    assert report.outcomes["user"].status == "fail"
    res = k.run_stage("gradient", x, isolate=False)
    assert np.isnan(res.gradient[-1]) and np.all(np.isfinite(res.gradient[:-1]))


def _no_ground_truth(report):
    """The single error shared by every backend when f itself failed."""
    assert not report.passed
    outcomes = list(report.outcomes.values())
    assert outcomes and all(o.status == "error" for o in outcomes)
    assert all("no ground truth" in o.message for o in outcomes)
    return outcomes[0].exception


def test_function_failure_is_an_error_outcome(libs, isolate):
    x = np.array([9.99999, 1.0])
    k = CKernel(f"{libs['bad']}:f_domain", gradient="sq_grad")
    report = gradtest.check_gradients(k, x, isolate=isolate, rel_step=1e-3)
    cause = _no_ground_truth(report).__cause__
    assert isinstance(cause, KernelError) and "status 5" in str(cause)
    assert cause.stage == "function" and cause.status == 5
    with pytest.raises(GroundTruthError, match="status 5"):
        gradtest.test_gradients(k, x, isolate=isolate, rel_step=1e-3)
    # a small enough step stays in the domain
    assert gradtest.check_gradients(k, x, isolate=isolate, rel_step=1e-8).passed


def test_function_crash_during_finite_differences(libs):
    k = CKernel(f"{libs['bad']}:f_segv_late", gradient="sq_grad")
    report = gradtest.check_gradients(k, np.array([0.5, 0.99999999]), rel_step=1e-3)
    cause = _no_ground_truth(report).__cause__
    assert isinstance(cause, KernelCrash) and "SIGSEGV" in str(cause)
    assert cause.stage == "function"


def test_nonfinite_function_values(libs):
    k = CKernel(f"{libs['bad']}:f_nan", gradient="sq_grad")
    report = gradtest.check_gradients(k, np.array([0.49999999, 1.0]), rel_step=1e-3)
    assert "non-finite" in str(_no_ground_truth(report))


def test_hanging_kernel_times_out(libs, rng):
    k = CKernel(f"{libs['bad']}:sq_f", gradient="grad_hang")
    outcome = gradtest.check_gradients(k, rng.standard_normal(3), timeout=0.3).outcomes["user"]
    assert isinstance(outcome.exception, KernelTimeout)
    assert outcome.exception.signal_name == "SIGKILL"


# ---- bad input -------------------------------------------------------------------------------


def test_bad_library_and_symbol(libs, tmp_path):
    with pytest.raises(KernelLoadError, match="f: cannot load library .*nope.so"):
        CKernel(f"{tmp_path}/nope.so:f")
    not_a_lib = tmp_path / "text.so"
    not_a_lib.write_text("not an ELF file")
    with pytest.raises(KernelLoadError, match="cannot load library"):
        CKernel(f"{not_a_lib}:f")
    with pytest.raises(KernelLoadError, match="f: symbol 'no_such' not found"):
        CKernel(f"{libs['stencil']}:no_such")
    with pytest.raises(KernelLoadError, match="gradient: symbol 'no_grad' not found"):
        CKernel(f"{libs['stencil']}:stencil_f", gradient="no_grad")
    with pytest.raises(ValueError, match="lib.so:symbol"):
        CKernel("stencil_f")
    with pytest.raises(ValueError, match="lib.so:symbol"):
        CKernel(f"{libs['stencil']}:")


def test_null_and_wrong_pointers(libs):
    with pytest.raises(ValueError, match="f: NULL"):
        CKernel(0)
    with pytest.raises(ValueError, match="f: NULL"):
        CKernel(None)
    null_fn = ctypes.CFUNCTYPE(ctypes.c_int)()
    with pytest.raises(ValueError, match="gradient: NULL"):
        CKernel(f"{libs['stencil']}:stencil_f", gradient=null_fn)
    with pytest.raises(ValueError, match="vjp: NULL"):
        CKernel(f"{libs['stencil']}:stencil_f", vjp=ctypes.c_void_p(None))
    with pytest.raises(ValueError, match="jvp: NULL"):
        CKernel(f"{libs['stencil']}:stencil_f", jvp=0)
    with pytest.raises(TypeError, match="gradient: expected a ctypes or cffi function pointer"):
        CKernel(f"{libs['stencil']}:stencil_f", gradient=lambda x: x)
    with pytest.raises(TypeError, match="f: expected a function pointer, got bool"):
        CKernel(True)
    with pytest.raises(TypeError, match="ctx: expected"):
        CKernel(f"{libs['stencil']}:stencil_f", ctx="context")


def test_bad_options(libs):
    f = f"{libs['stencil']}:stencil_f"
    with pytest.raises(ValueError, match="dtype: expected"):
        CKernel(f, dtype="float16")
    with pytest.raises(ValueError, match="dtype: expected"):
        CKernel(f, dtype="not a dtype")
    with pytest.raises(ValueError, match="n_out: expected"):
        CKernel(f, n_out=0)
    with pytest.raises(ValueError, match="gradient: applies to scalar functions"):
        CKernel(f, gradient="stencil_grad", n_out=3)
    with pytest.raises(ValueError, match="n_in: expected"):
        CKernel(f, n_in=-1)
    k = CKernel(f, gradient="stencil_grad")
    x = np.ones(3)
    with pytest.raises(TypeError, match="unexpected keyword argument.*'isolated'"):
        gradtest.check_gradients(k, x, isolated=False)
    with pytest.raises(ValueError, match="timeout: needs isolate=True"):
        gradtest.check_gradients(k, x, isolate=False, timeout=1.0)
    with pytest.raises(ValueError, match="timeout: expected"):
        gradtest.check_gradients(k, x, timeout=-1)
    with pytest.raises(ValueError, match="timeout: expected"):
        gradtest.check_gradients(k, x, timeout="soon")
    with pytest.raises(ValueError, match="threads: the kernel was not declared thread_safe"):
        gradtest.check_gradients(k, x, threads=2)
    with pytest.raises(ValueError, match="threads: expected"):
        gradtest.check_gradients(CKernel(f, thread_safe=True), x, threads=0)
    with pytest.raises(TypeError, match="isolate: expected"):
        gradtest.check_gradients(k, x, isolate="no")
    with pytest.raises(ValueError, match="method"):
        gradtest.check_gradients(k, x, method="sideways")
    with pytest.raises(ValueError, match="stage: expected"):
        k.run_stage("hessian", x)
    with pytest.raises(ValueError, match="vjp: the kernel has no vjp"):
        k.run_stage("vjp", x)
    bad_m = CKernel(f"{libs['stencil']}:stencil_apply", vjp="stencil_apply_vjp", n_out=lambda n: 0)
    with pytest.raises(ValueError, match="n_out\\(3\\) returned 0"):
        bad_m(x)


def test_bad_arrays(libs):
    k = CKernel(f"{libs['stencil']}:stencil_f", gradient="stencil_grad", n_in=4)
    with pytest.raises(TypeError, match="x: expected a numpy.ndarray of float64 .* got float32"):
        k(np.ones(4, np.float32))
    with pytest.raises(TypeError, match="x: expected a numpy.ndarray of float64"):
        k.run_stage("function", np.ones(4, np.int64))
    with pytest.raises(TypeError, match="x: expected a numpy.ndarray"):
        k([1.0, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match="n_in=4 inputs, got an array of size 5"):
        gradtest.check_gradients(k, np.ones(5))
    with pytest.raises(ValueError, match="x: expected at least one element"):
        CKernel(f"{libs['stencil']}:stencil_f")(np.ones(0))
    with pytest.raises(TypeError, match="float32"):
        CKernel(f"{libs['stencil']}:stencil_f32", dtype="float32")(np.ones(3))
    with pytest.raises(TypeError, match="exactly one argument"):
        k.__gradtest_check__((np.ones(4), np.ones(4)), None)
    # a wrongly sized cotangent
    v = CKernel(f"{libs['stencil']}:stencil_apply", vjp="stencil_apply_vjp", n_out=lambda n: n)
    with pytest.raises(ValueError, match="u: expected 4 elements"):
        v.run_stage("vjp", np.ones(4), u=np.ones(3))


def test_kernel_status_in_call(libs):
    k = CKernel(f"{libs['bad']}:f_domain")
    with pytest.raises(KernelError, match="status 5"):
        k(np.array([11.0]))
    v = CKernel(f"{libs['stencil']}:stencil_apply", n_out=2)  # refuses m != n
    with pytest.raises(KernelError, match="status 1"):
        v(np.ones(3))


def test_low_level_glue_validates(libs):
    from gradtest import _ckernel

    addr = ctypes.cast(ctypes.CDLL(libs["stencil"]).stencil_f, ctypes.c_void_p).value
    common = dict(f=addr, gradient=0, vjp=0, jvp=0, ctx=0, dtype=0, m=0, stage=0, u=None, method=0,
                  richardson=True, rel_step=0.0, threads=1, isolate=False, timeout=0.0)
    with pytest.raises(ValueError, match="1-d contiguous"):
        _ckernel.run_stage(x=np.ones((4, 4))[:, 0], **common)
    with pytest.raises(TypeError, match="float64"):
        _ckernel.run_stage(x=np.ones(3, ">f8"), **common)
    with pytest.raises(ValueError, match="gradient: NULL"):
        _ckernel.run_stage(x=np.ones(3), **{**common, "stage": 1})
    with pytest.raises(ValueError, match="stage: expected"):
        _ckernel.run_stage(x=np.ones(3), **{**common, "stage": 9})
    with pytest.raises(ValueError, match="threads"):
        _ckernel.run_stage(x=np.ones(3), **{**common, "threads": 0})
    with pytest.raises(ValueError, match="f: NULL"):
        _ckernel.run_stage(x=np.ones(3), **{**common, "f": 0})
    out = _ckernel.run_stage(x=np.ones(3), **common)
    np.testing.assert_allclose(out["grad"], stencil_grad_ref(np.ones(3)), atol=1e-8)


def test_get_include_has_the_header():
    header = Path(gradtest.get_include()) / "gradtest.h"
    assert header.is_file()
    text = header.read_text()
    for name in ("gradtest_scalar_f64", "gradtest_gradient_f64", "gradtest_vector_f64",
                 "gradtest_vjp_f64", "gradtest_jvp_f64", "gradtest_scalar_f32", "gradtest_vjp_f32"):
        assert name in text


def test_header_compiles_as_cxx(tmp_path):
    cxx = shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    src = tmp_path / "k.cpp"
    src.write_text('#include <gradtest.h>\nextern "C" int f(void *, size_t n, const double *x, double *y)'
                   "{ *y = x[0] * (double)n; return 0; }\n"
                   "static gradtest_scalar_f64 check = f;\nint main() { return check ? 0 : 1; }\n")
    run = subprocess.run([cxx, "-Wall", "-Werror", f"-I{gradtest.get_include()}", str(src), "-o",
                          str(tmp_path / "k")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_gil_is_released_during_the_check(libs):
    import threading

    k = CKernel(f"{libs['bad']}:slow_f", gradient="sq_grad")
    x = np.ones(3)
    for isolate in (False, True):
        result = {}
        thread = threading.Thread(target=lambda: result.update(r=k.run_stage("function", x, isolate=isolate,
                                                                             richardson=False)))
        ticks = 0
        thread.start()
        while thread.is_alive():  # 7 calls x 20 ms: Python runs here only if the GIL is free
            ticks += 1
        thread.join()
        assert result["r"].error is None
        assert ticks > 1000, f"isolate={isolate}: the main thread ran {ticks} times"


def test_glue_keeps_reference_counts(libs):
    import sys

    from gradtest import _ckernel

    addr = ctypes.cast(ctypes.CDLL(libs["stencil"]).stencil_apply, ctypes.c_void_p).value
    x = np.ones(5)
    u = np.ones(5)
    before = (sys.getrefcount(x), sys.getrefcount(u))
    for _ in range(50):
        out = _ckernel.run_stage(f=addr, gradient=0, vjp=0, jvp=0, ctx=0, dtype=0, m=5, stage=0, x=x, u=u,
                                 method=0, richardson=False, rel_step=0.0, threads=1, isolate=False,
                                 timeout=0.0)
        # held by out's dict and getrefcount's argument (some versions count one more, none fewer)
        assert sys.getrefcount(out["grad"]) <= 3
        _ckernel.evaluate(addr, 0, 0, 5, x)
    assert (sys.getrefcount(x), sys.getrefcount(u)) == before


@pytest.mark.needs_capstone
def test_dispatch_check_of_a_ckernel(libs):
    pytest.importorskip("capstone")
    k = CKernel(f"{libs['rosen']}:rosen_f", gradient="rosen_grad")
    report = gradtest.check_dispatch(k)
    assert report.passed, str(report)
    x = np.array([1.0, 2.0, 3.0])
    out = np.zeros(1)
    called = gradtest.check_dispatch(k, np.zeros(1), x.size, x, out)  # rosen_f ignores ctx
    assert called.outcomes["call"].status == "pass", str(called)


# ---- processes: time limits, Ctrl-C, parents that die (issue 12, item 1) ---------------------

_CHILD_SCRIPT = r"""
import sys, numpy as np
import gradtest, gradtest.ckernel as ck
from gradtest.ckernel import CKernel
lib, gradient, timeout = sys.argv[1], sys.argv[2], sys.argv[3]
ck.MIN_TIME_LIMIT = 0.5  # the default limit's floor, lowered so that the test is short
options = {} if timeout == "default" else {"timeout": None}
k = CKernel(lib + ":sq_f", gradient=gradient)
try:
    report = gradtest.check_gradients(k, np.ones(3), **options)
except KeyboardInterrupt:
    print("KeyboardInterrupt raised", flush=True)
    sys.exit(0)
print(report, flush=True)
"""


# the folder holding the gradtest this test imported (the source tree's, or site-packages when
# installed, as in CI): the child processes must run the same one
_PACKAGE_ROOT = str(Path(gradtest.__file__).resolve().parent.parent)


def _python(script: str, *args: str, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [_PACKAGE_ROOT, os.environ.get("PYTHONPATH", "")]), **kwargs.pop("env", {}))
    return subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, **kwargs)


def _wait_for_pid(pidfile: Path, proc: subprocess.Popen) -> int:
    for _ in range(600):
        if pidfile.exists():
            return int(pidfile.read_text())
        if proc.poll() is not None:
            pytest.fail(f"the check ended before the kernel started: {proc.stdout.read()}")
        time.sleep(0.05)
    pytest.fail("the spinning kernel never started")


def _gone(pid: int, seconds: float = 20.0) -> bool:
    """True once pid has exited (a zombie that nobody reaps counts as gone)."""
    for _ in range(int(seconds / 0.05)):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_default_time_limit_is_derived_from_one_evaluation():
    from gradtest import ckernel as ck

    assert ck.default_time_limit("gradient", 10, 0.0) == ck.MIN_TIME_LIMIT
    # 100 x 1 ms x (1 + 1000 x 4) calls
    assert ck.default_time_limit("function", 1000, 1e-3, 4) == pytest.approx(ck.SAFETY_FACTOR * 1e-3 * 4001)
    assert ck.default_time_limit("jvp", 1000, 1e-3) == pytest.approx(ck.SAFETY_FACTOR * 1e-3 * 3000)
    assert ck.default_time_limit("gradient", 10, 1.0) == pytest.approx(ck.SAFETY_FACTOR * 5)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and PR_SET_PDEATHSIG")
def test_a_hanging_kernel_times_out_by_default(libs):
    """No timeout= given: the default limit stops the kernel and the report says so."""
    proc = _python(_CHILD_SCRIPT, libs["bad"], "grad_hang", "default")
    try:
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert "user     error" in out
    assert "KernelTimeout: timed out after 0.5 s: grad_hang in stage 'gradient'" in out
    assert "time limit of each isolated stage derived from one evaluation of f" in out


@contextlib.contextmanager
def _spinning_check(libs, tmp_path):
    """A Python process checking a kernel whose gradient spins for ever; yields it and the pid
    of the kernel's child once the kernel runs. Both are gone afterwards, whatever happened."""
    pidfile = tmp_path / "kernel.pid"
    proc = _python(_CHILD_SCRIPT, libs["bad"], "grad_spin", "none", env={"GT_SPIN_PIDFILE": str(pidfile)})
    kernel_pid = None
    try:
        kernel_pid = _wait_for_pid(pidfile, proc)
        yield proc, kernel_pid
    finally:
        if kernel_pid is not None:
            _kill(kernel_pid)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None and not proc.stdout.closed:
            proc.stdout.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and PR_SET_PDEATHSIG")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_the_kernel_child_dies_with_its_parent(libs, tmp_path, sig):
    """A CI runner or pytest-timeout kills the test process by PID: its kernel child must not
    keep spinning, re-parented to init."""
    with _spinning_check(libs, tmp_path) as (proc, kernel_pid):
        os.kill(proc.pid, sig)
        proc.wait(timeout=60)
        assert _gone(kernel_pid), "the kernel's child process outlived its parent"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_sigint_stops_the_kernel_and_raises_keyboard_interrupt(libs, tmp_path):
    with _spinning_check(libs, tmp_path) as (proc, kernel_pid):
        os.kill(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        assert "KeyboardInterrupt raised" in out, out
        assert _gone(kernel_pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_kernel_child_has_its_own_process_group(libs, tmp_path):
    """A terminal's Ctrl-C goes to the foreground process group: the kernel's child is not in it,
    so the parent alone decides (and raises KeyboardInterrupt)."""
    with _spinning_check(libs, tmp_path) as (proc, kernel_pid):
        assert os.getpgid(kernel_pid) == kernel_pid != os.getpgid(proc.pid)


# ---- buffers: writes outside what the kernel was given (issue 12, item 2) ---------------------


@pytest.mark.parametrize("n", [6, 1000])
@pytest.mark.parametrize("symbol", ["grad_overrun", "grad_overrun1"])
def test_write_past_the_end_of_the_gradient_is_reported(libs, isolate, symbol, n):
    k = CKernel(f"{libs['bad']}:sq_f", gradient=symbol)
    outcome = gradtest.check_gradients(k, np.linspace(0.5, 1.5, n), isolate=isolate).outcomes["user"]
    assert outcome.status == "error"
    assert isinstance(outcome.exception, gradtest.ckernel.KernelOverrun)
    assert str(outcome.exception) == f"{symbol} wrote past the end of grad (n = {n})"
    assert outcome.exception.stage == "gradient"


def test_write_before_the_start_is_reported(libs, isolate):
    k = CKernel(f"{libs['bad']}:sq_f", gradient="grad_underrun")
    outcome = gradtest.check_gradients(k, np.ones(6), isolate=isolate).outcomes["user"]
    assert outcome.status == "error"
    assert str(outcome.exception) == "grad_underrun wrote before the start of grad (n = 6)"


def test_function_overrun_leaves_no_ground_truth(libs, isolate):
    k = CKernel(f"{libs['bad']}:f_overrun", gradient="sq_grad")
    report = gradtest.check_gradients(k, np.ones(6), isolate=isolate)
    assert report.outcomes["user"].status == "error"
    assert "f_overrun wrote past the end of f (n = 6)" in str(report)
    with pytest.raises(gradtest.ckernel.KernelOverrun, match="wrote past the end of f"):
        k(np.ones(6))


def test_in_process_overrun_leaves_the_interpreter_intact(libs):
    """In-process, the 64 stray doubles land in a canary, not in the interpreter's heap: many
    checks in a row, then ordinary work, go on normally."""
    k = CKernel(f"{libs['bad']}:sq_f", gradient="grad_overrun")
    for _ in range(50):
        assert gradtest.check_gradients(k, np.ones(6), isolate=False).outcomes["user"].status == "error"
    assert sum(list(range(1000))) == 499500


@pytest.mark.needs_capstone
def test_dispatch_call_check_sees_a_write_past_the_end(libs):
    report = gradtest.check_dispatch(
        f"{libs['bad']}:grad_overrun", np.zeros(1), 6, np.ones(6), np.zeros(6),
        signature="int(void *ctx, size_t n, const double *x, double *grad)")
    call = report.outcomes["call"]
    assert call.status == "fail"
    assert call.message == "the call failed: grad_overrun wrote past the end of grad (6 elements)"
    # unnamed parameters are named by position; one element past is enough
    report = gradtest.check_dispatch(f"{libs['bad']}:grad_overrun1", np.zeros(1), 6, np.ones(6), np.zeros(6),
                                     signature="int(void*, size_t, const double*, double*)")
    assert report.outcomes["call"].message == \
        "the call failed: grad_overrun1 wrote past the end of args[3] (6 elements)"
    # a correct kernel still passes, and the caller's arrays are untouched
    g = np.zeros(6)
    report = gradtest.check_dispatch(f"{libs['bad']}:sq_grad", np.zeros(1), 6, np.ones(6), g,
                                     signature="int(void *ctx, size_t n, const double *x, double *grad)")
    assert report.outcomes["call"].status == "pass" and not g.any()
