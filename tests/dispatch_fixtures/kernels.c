/* kernels.c: the C test library of the dispatch checks (tests/test_dispatch.py builds it).
 *
 * Each exported kernel holds one of the patterns the opt check must tell apart; the expected
 * findings are listed in the test. Built at -O0 and -O2, with -fno-plt, with -fcf-protection and
 * stripped, so nothing here may depend on the optimisation level for its findings. */
#include <assert.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

/* The Python C API function the python_api kernel calls; resolved at load time from the
 * interpreter (the test loads this library into a Python process). */
typedef struct _object PyObject;
extern double PyFloat_AsDouble(PyObject *);

#define EXPORT __attribute__((visibility("default")))

/* A pure loop: no calls at all. */
EXPORT double gt_pure_dot(const double *x, const double *y, size_t n)
{
    double acc = 0.0;
    for (size_t i = 0; i < n; i++)
        acc += x[i] * y[i];
    return acc;
}

/* Allocates a scratch buffer: malloc and free. */
EXPORT double gt_alloc_sum(const double *x, size_t n)
{
    double *tmp = malloc(n * sizeof *tmp);
    if (!tmp)
        return -1.0;
    double acc = 0.0;
    for (size_t i = 0; i < n; i++) {
        tmp[i] = 2.0 * x[i];
        acc += tmp[i];
    }
    free(tmp);
    return acc;
}

/* Calls through a function pointer in the loop: dynamic dispatch. */
EXPORT double gt_callback_sum(double (*f)(double), const double *x, size_t n)
{
    double acc = 0.0;
    for (size_t i = 0; i < n; i++)
        acc += f(x[i]);
    return acc;
}

/* Calls back into the interpreter. */
EXPORT double gt_python_value(PyObject *obj)
{
    return PyFloat_AsDouble(obj) * 2.0;
}

/* A static helper calling exp (libm: allowed by default). noinline keeps it a separate function
 * at -O2 so the chain goes through it. */
static __attribute__((noinline)) double softplus(double v)
{
    return v > 30.0 ? v : log1p(exp(v));
}

EXPORT double gt_softplus_sum(const double *x, size_t n)
{
    double acc = 0.0;
    for (size_t i = 0; i < n; i++)
        acc += softplus(x[i]);
    return acc;
}

/* A dense switch: compiled to a jump table at -O2, which is no dispatch. */
EXPORT double gt_switch_op(int op, double a, double b)
{
    switch (op) {
    case 0: return a + b;
    case 1: return a - b;
    case 2: return a * b;
    case 3: return a / b;
    case 4: return a > b ? a : b;
    case 5: return a < b ? a : b;
    case 6: return -a;
    case 7: return a * a + b;
    case 8: return a * b + b;
    case 9: return 0.5 * (a + b);
    default: return 0.0;
    }
}

/* Allocating helper reached by a tail call (a jmp at -O2). */
static __attribute__((noinline)) double *fresh_buffer(size_t n)
{
    return calloc(n, sizeof(double));
}

EXPORT double *gt_tail_alloc(size_t n)
{
    return fresh_buffer(n + 1);
}

/* An exported sibling: called through the PLT when built with -fPIC (interposable). */
EXPORT __attribute__((noinline)) double gt_sibling_scale(double v)
{
    return 3.0 * v;
}

EXPORT double gt_calls_sibling(const double *x, size_t n)
{
    double acc = 0.0;
    for (size_t i = 0; i < n; i++)
        acc += gt_sibling_scale(x[i]);
    return acc;
}

/* An error path ending in abort: the fprintf is listed, not failed. */
EXPORT double gt_checked_mean(const double *x, size_t n)
{
    if (n == 0) {
        fprintf(stderr, "gt_checked_mean: empty input\n");
        abort();
    }
    double acc = 0.0;
    for (size_t i = 0; i < n; i++)
        acc += x[i];
    return acc / (double)n;
}

/* A plain external call on the hot path (not libm, not allocation). */
EXPORT double gt_prints(double v)
{
    printf("%g\n", v);
    return v;
}

/* Crashes when called with a NULL pointer or n > 0 and a bad pointer: the call check's target. */
EXPORT double gt_deref(const double *x, size_t n)
{
    double acc = 0.0;
    for (size_t i = 0; i < n; i++)
        acc += x[i];
    return acc;
}

/* Never returns: the call check's time-out. */
EXPORT void gt_spin(volatile int *flag)
{
    while (*flag == 0)
        ;
}

/* Dies with abort: a call finding naming SIGABRT. */
EXPORT int gt_abort_if(int v)
{
    if (v)
        abort();
    return 7;
}

/* Writes into its argument: the call check runs it in a child, so the caller's array is unchanged. */
EXPORT double gt_scale_inplace(double *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] *= 2.0;
    return n ? x[0] : 0.0;
}

/* Mixed integer and floating arguments, float return: exercises the register classes. */
EXPORT float gt_mixed(int a, double b, long c, float d)
{
    return (float)((double)a * b + (double)c * (double)d);
}

/* A larger integer switch: a jump table on aarch64 too (gcc needs more cases there). */
EXPORT long gt_switch_big(int op, long a)
{
    switch (op) {
    case 0: return a + 1;
    case 1: return a * 3;
    case 2: return a - 7;
    case 3: return a << 2;
    case 4: return a >> 1;
    case 5: return a ^ 0x55;
    case 6: return a | 0x100;
    case 7: return a & 0xff;
    case 8: return -a;
    case 9: return a * a;
    case 10: return a % 7;
    case 11: return a / 3;
    case 12: return a + 100;
    case 13: return a * 11;
    case 14: return ~a;
    case 15: return a - 1000;
    case 16: return a * 5 + 1;
    case 17: return a / 9;
    case 18: return a % 13;
    case 19: return a + 19;
    default: return 0;
    }
}

/* A switch over all values of op & 7: the compiler drops the bounds check, so the analysis finds
 * no bound for the jump table and sweeps the function's symbol range instead. */
EXPORT long gt_switch_masked(unsigned op, long a)
{
    switch (op & 7u) {
    case 0: return a + 3;
    case 1: return a * 7;
    case 2: return a - 11;
    case 3: return a << 3;
    case 4: return a >> 2;
    case 5: return a ^ 0x33;
    case 6: return a * a;
    case 7: return a / 5;
    default: __builtin_unreachable();
    }
}

/* assert(): its failure path calls __assert_fail, which never returns. */
EXPORT double gt_asserting(const double *x, size_t n)
{
    assert(n > 0);
    double acc = 0.0;
    for (size_t i = 0; i < n; i++)
        acc += x[i];
    return acc;
}

/* A static noreturn helper: the calls inside it, and the call to it, are on error paths. */
static __attribute__((noinline)) void fatal(const char *msg)
{
    fputs(msg, stderr);
    exit(3);
}

EXPORT double gt_calls_fatal(const double *x, size_t n)
{
    if (n > 1000000)
        fatal("gt_calls_fatal: too large\n");
    double acc = 0.0;
    for (size_t i = 0; i < n; i++)
        acc += x[i] * x[i];
    return acc;
}
