/* ckernel.h: checks of native C kernels (the ABI of python/gradtest/include/gradtest.h) with no
 * Python in the loop.
 *
 * A check runs in stages, one per function of the kernel: GT_CK_FUNCTION computes the
 * finite-difference gradient of the checked scalar s(x) (f(x) for a scalar function, <u, f(x)>
 * for a vector one, u a caller-given cotangent) by calling f directly from the engine of fd.h;
 * GT_CK_GRADIENT, GT_CK_VJP and GT_CK_JVP compute the same gradient from the kernel's own
 * derivative functions (the gradient; xbar = J^T u; and (J e_i) . u for each unit vector e_i).
 * Every stage writes n float64 values, whatever the kernel's dtype, so the caller compares like
 * with like. The finite differences and the JVP sweep may be split over threads, each with its own
 * copy of x and its own output buffers (the kernel must then be safe to call concurrently).
 *
 * gt_ck_stage_guarded runs one stage in a forked child (guard.h), so that a kernel that crashes
 * or hangs becomes a reported outcome naming the signal and the stage. POSIX only. */
#ifndef GT_CKERNEL_H
#define GT_CKERNEL_H

#include <stddef.h>

#include "fd.h"
#include "gt_common.h"
#include "guard.h"

/* A generic function pointer; the kernel's functions are stored as this and called through the
 * gradtest.h type that matches the kernel's dtype and kind. */
typedef void (*gt_ck_fnptr)(void);

typedef enum gt_ck_stage {
    GT_CK_FUNCTION = 0, /* f, under finite differences (the ground truth) */
    GT_CK_GRADIENT = 1, /* the kernel's gradient (scalar functions) */
    GT_CK_VJP = 2,      /* the kernel's VJP with ybar = u */
    GT_CK_JVP = 3,      /* the kernel's JVP with xdot = e_i, i = 0..n-1 */
    GT_CK_EVALUATE = 4  /* one call of f at x, timed: what a check's time limits derive from */
} gt_ck_stage;

/* The stage's name as reported ("function", "gradient", "vjp", "jvp", "evaluate"); "?" if out
 * of range. */
const char *gt_ck_stage_name(gt_ck_stage stage);

typedef struct gt_ck_kernel {
    gt_dtype dtype;  /* element type of every array the kernel sees */
    size_t n;        /* number of inputs, >= 1 */
    size_t m;        /* outputs of a vector function; 0 for a scalar function */
    gt_ck_fnptr f;   /* gradtest_scalar_* (m == 0) or gradtest_vector_* (m > 0); required */
    gt_ck_fnptr gradient, vjp, jvp; /* optional (NULL); gradient only for scalar functions */
    void *ctx;       /* passed to every call unchanged; not owned */
} gt_ck_kernel;

typedef struct gt_ck_result {
    double value;       /* GT_CK_FUNCTION, GT_CK_EVALUATE: s(x) at the unperturbed x; else NaN */
    double seconds;     /* GT_CK_FUNCTION, GT_CK_EVALUATE: how long the call of f at x took */
    size_t nonfinite;   /* GT_CK_FUNCTION: components whose difference was not finite */
    size_t evaluations; /* kernel calls made by the stage */
    int kernel_status;  /* when the stage returned GT_ECALLBACK: the kernel's non-zero status */
    char overrun[64];   /* when the stage returned GT_EOVERRUN: "wrote past the end of grad" */
} gt_ck_result;

/* Runs one stage in this process. Every buffer handed to the kernel is a guard buffer
 * (guardbuf.h, GT_GB_PADDED): a write of up to a page outside one is caught by its canaries after
 * the call. x: n elements of k->dtype, caller-owned, read only (the stage
 * works on its own copies). u: the cotangent, k->m float64 values, caller-owned; ignored (taken
 * as 1) for a scalar function. opts: finite-difference options and scale: the step scale of
 * components equal to 0 (n float64, caller-owned, may be NULL: 1; see fd.h), both used by
 * GT_CK_FUNCTION only. threads:
 * how many threads share GT_CK_FUNCTION and GT_CK_JVP (>= 1; 1 runs on the calling thread).
 * out: caller-owned, n float64, receives the gradient of s (GT_CK_EVALUATE: zeros); err: caller-owned n float64 or NULL,
 * receives GT_CK_FUNCTION's error estimates (untouched by other stages). res is filled always.
 * Returns GT_OK; GT_EINVAL (bad arguments, or the stage's function is NULL); GT_ENOMEM;
 * GT_ECALLBACK when a kernel call returned non-zero (res->kernel_status holds it, out is then
 * incomplete); GT_EOVERRUN when the kernel wrote outside a buffer (res->overrun says which and
 * how; out is then meaningless). Blocks until every thread it started has finished. */
int gt_ck_stage_run(const gt_ck_kernel *k, gt_ck_stage stage, const void *x, const double *u,
                    const gt_fd_options *opts, const double *scale, int threads, double *out,
                    double *err, gt_ck_result *res);

/* gt_ck_stage_run in a forked child, the results sent back over a pipe. Same arguments and
 * ownership, plus gopts (the time limit and the interruption check; NULL: neither) and gres,
 * filled with how the child ended. The kernel's buffers end against a guard page (GT_GB_END), so
 * an access past the end is caught at its first byte. Returns what the stage returned when the
 * child reported back; GT_EOVERRUN when it died on a guard page of one of its buffers
 * (res->overrun names it); GT_ECRASH when it died on another signal or exited on its own
 * (gres->signal, gres->exit_code, gres->stage name it); GT_ETIMEOUT when killed at the limit;
 * GT_EINTR when gopts->interrupted stopped it; GT_EIO/GT_ENOMEM/GT_EINVAL when it could not
 * start. */
int gt_ck_stage_guarded(const gt_ck_kernel *k, gt_ck_stage stage, const void *x, const double *u,
                        const gt_fd_options *opts, const double *scale, int threads, double *out,
                        double *err, gt_ck_result *res, const gt_guard_options *gopts,
                        gt_guard_result *gres);

/* Calls f once at x (n elements of k->dtype, caller-owned, read only) and writes its output as
 * float64 to y (caller-owned: 1 element for a scalar function, k->m for a vector one).
 * Returns GT_OK, GT_EINVAL, GT_ENOMEM, GT_EOVERRUN (f wrote outside its buffers; what it did is
 * written to overrun, 64 caller-owned bytes, when it is not NULL) or
 * GT_ECALLBACK (*kernel_status, may be NULL, set). */
int gt_ck_evaluate(const gt_ck_kernel *k, const void *x, double *y, int *kernel_status,
                   char overrun[64]);

#endif /* GT_CKERNEL_H */
