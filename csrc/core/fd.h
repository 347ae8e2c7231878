/* fd.h: the finite-difference engine, the ground truth of every gradient check.
 *
 * The engine owns no function: it perturbs a caller-owned working vector x in place, one
 * component (or one direction) at a time, and calls `eval` to read f at the perturbed point.
 * The Python glue passes a callback that calls a Python function on NumPy views of x; the C-kernel
 * runner passes one that calls a C kernel directly, so the same loop serves both. x is restored
 * bit for bit after every component, also when eval fails.
 *
 * Step rule: h_i = h0 * s_i with s_i = |x_i| (or scale[i] when x_i == 0 and a scale is given,
 * else 1), and h0 = eps^(1/3) for central differences, eps^(1/2) for one-sided ones, eps being
 * the working dtype's machine epsilon; with Richardson extrapolation h0 is eps^(1/5) (central) and
 * eps^(1/3) (one-sided), since the extrapolated formula's truncation error is of higher order.
 * The step actually used is the representable one, (x_i + h) - x_i.
 *
 * Error estimate per component: with Richardson, |D(h/2) - D(h)| / 3 (central) or |D(h/2) - D(h)|
 * (one-sided), which bounds the truncation error of the extrapolated value from above for smooth f;
 * always plus a rounding term 4 eps max|f| / h. Without Richardson, the rounding term alone. */
#ifndef GT_FD_H
#define GT_FD_H

#include <stddef.h>

#include "gt_common.h"

/* Reads f at the current working vector into *value. Returns 0 on success; any non-zero value
 * stops the engine, which then restores x and returns GT_ECALLBACK (the callback keeps its own
 * error state, e.g. a pending Python exception). */
typedef int (*gt_eval_fn)(void *ctx, double *value);

typedef enum gt_fd_method { GT_FD_CENTRAL = 0, GT_FD_FORWARD = 1, GT_FD_BACKWARD = 2 } gt_fd_method;

typedef struct gt_fd_options {
    gt_fd_method method;
    int richardson;  /* non-zero: combine steps h and h/2 (twice the evaluations) */
    double rel_step; /* h0; 0 selects the rule above */
} gt_fd_options;

typedef struct gt_fd_problem {
    void *x;             /* working vector of n elements of `dtype`; caller-owned, perturbed in place */
    gt_dtype dtype;
    size_t n;
    gt_eval_fn eval;
    void *ctx;           /* passed to eval unchanged */
    const double *scale; /* optional, n elements: step scale where x_i == 0; caller-owned */
} gt_fd_problem;

/* Number of f evaluations gt_fd_gradient_range makes per component. */
size_t gt_fd_evals_per_component(const gt_fd_options *opts);

/* The step base h0 that `opts` selects for `dtype`. */
double gt_fd_base_step(const gt_fd_options *opts, gt_dtype dtype);

/* Evaluates f once at the unperturbed x. Returns GT_OK or GT_ECALLBACK. */
int gt_fd_eval(const gt_fd_problem *p, double *value);

/* Gradient components i0 <= i < i1 of f at x. f0 must be f(x) (gt_fd_eval), used by one-sided
 * methods and the rounding estimate. grad and err (err may be NULL) are caller-owned arrays of
 * length p->n; only [i0, i1) is written. A non-finite f value makes that component NaN (err =
 * +inf) and the loop goes on; *nonfinite (may be NULL) counts such components.
 * Returns GT_OK, GT_EINVAL (bad arguments) or GT_ECALLBACK (eval failed; x is restored). */
int gt_fd_gradient_range(const gt_fd_problem *p, const gt_fd_options *opts, double f0,
                         size_t i0, size_t i1, double *grad, double *err, size_t *nonfinite);

/* Directional derivatives along k directions: d[j] ~ <grad f(x), dirs[j]>, with dirs a
 * caller-owned k x n row-major float64 array whose rows already carry the step scale (the
 * engine steps x + t * dirs[j] with t = h0). d and err (may be NULL) have k elements.
 * Allocates one n-element copy of x to restore it between evaluations.
 * Returns GT_OK, GT_EINVAL, GT_ENOMEM or GT_ECALLBACK (x restored in every case). */
int gt_fd_directional(const gt_fd_problem *p, const gt_fd_options *opts, double f0,
                      const double *dirs, size_t k, double *d, double *err);

#endif /* GT_FD_H */
