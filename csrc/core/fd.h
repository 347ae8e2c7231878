/* fd.h: the finite-difference engine, the ground truth of every gradient check.
 *
 * The engine owns no function: it perturbs a caller-owned working vector x in place, one
 * component (or one direction) at a time, and calls `eval` to read f at the perturbed point.
 * The Python glue passes a callback that calls a Python function on NumPy views of x; the C-kernel
 * runner passes one that calls a C kernel directly, so the same loop serves both. x is restored
 * bit for bit after every component, also when eval fails.
 *
 * The default rule (richardson != 0 and rel_step == 0) is adaptive, per component: a Neville
 * tableau of difference quotients (Ridders' method) over steps h_j = h_top / 2^j, h_top = 0.1 s_i
 * with s_i the component's scale (scale[i], or |x_i|, or 1). Each tableau entry gets an error
 * bound: the larger of its distance to the entries of the same order one and two steps down and
 * to the entry one step up (divided by the ratio its error shrinks by), times a safety factor,
 * and the rounding the entry carries from f's noise. The returned value is the entry with the
 * smallest bound among rows where the quotients converge at the rate the formula predicts; a
 * candidate that later rows contradict (a kink or aliasing straddled by the larger steps) is
 * dropped. The sweep stops once rounding alone exceeds the best bound, or three rows after a
 * converged best. So the step follows the function's own scale, not |x_i| alone, and the
 * estimate bounds the error of the value returned.
 *
 * f's noise: at each quotient the engine assumes |error of an f value| <= max(out_eps |f|,
 * noise) (out_eps: the relative precision of the values f returns, e.g. FLT_EPSILON for a
 * float32 result; noise: an absolute level, e.g. from gt_fd_noise).
 *
 * The classic fixed-step rule (richardson == 0, or rel_step > 0) is kept: h_i = h0 s_i with
 * h0 = rel_step or eps^(1/3) (central), eps^(1/2) (one-sided), and, with richardson, one
 * extrapolation over h and h/2, the estimate being |D(h/2) - D(h)| / 3 (central) plus
 * 4 eps max|f| / h. */
#ifndef GT_FD_H
#define GT_FD_H

#include <stddef.h>
#include <stdint.h>

#include "gt_common.h"

/* Reads f at the current working vector into *value. Returns 0 on success; any non-zero value
 * stops the engine, which then restores x and returns GT_ECALLBACK (the callback keeps its own
 * error state, e.g. a pending Python exception). */
typedef int (*gt_eval_fn)(void *ctx, double *value);

typedef enum gt_fd_method { GT_FD_CENTRAL = 0, GT_FD_FORWARD = 1, GT_FD_BACKWARD = 2 } gt_fd_method;

/* The noise bound the callers assume, in standard deviations of gt_fd_noise's estimate. */
#define GT_FD_NOISE_FACTOR 3.0

typedef struct gt_fd_options {
    gt_fd_method method;
    int richardson;  /* non-zero: extrapolate (adaptively, unless rel_step > 0) */
    double rel_step; /* > 0: the classic fixed step base h0; 0: adaptive (or eps^(1/3)) */
    double noise;    /* absolute noise level of f's values (>= 0); 0: out_eps |f| alone */
    double out_eps;  /* relative precision of f's values; <= 0 selects DBL_EPSILON */
} gt_fd_options;

typedef struct gt_fd_problem {
    void *x;             /* working vector of n elements of `dtype`; caller-owned, perturbed in place */
    gt_dtype dtype;
    size_t n;
    gt_eval_fn eval;
    void *ctx;           /* passed to eval unchanged */
    const double *scale; /* optional, n elements > 0: each component's scale s_i; caller-owned.
                          * NULL: s_i = |x_i|, or 1 where x_i == 0 */
} gt_fd_problem;

/* Number of f evaluations the classic rule makes per component (the adaptive one varies: about
 * 10 to 40). */
size_t gt_fd_evals_per_component(const gt_fd_options *opts);

/* The classic step base h0 that `opts` selects for `dtype`. */
double gt_fd_base_step(const gt_fd_options *opts, gt_dtype dtype);

/* Evaluates f once at the unperturbed x. Returns GT_OK or GT_ECALLBACK. */
int gt_fd_eval(const gt_fd_problem *p, double *value);

/* Gradient components i0 <= i < i1 of f at x. f0 must be f(x) (gt_fd_eval), used by one-sided
 * methods and the rounding bound. grad and err (err may be NULL) are caller-owned arrays of
 * length p->n; only [i0, i1) is written. A component whose quotients are never finite, or
 * whose step underflows (h == 0), is NaN with err = +inf, and the loop goes on; *nonfinite (may
 * be NULL) counts such components.
 * Returns GT_OK, GT_EINVAL (bad arguments) or GT_ECALLBACK (eval failed; x is restored). */
int gt_fd_gradient_range(const gt_fd_problem *p, const gt_fd_options *opts, double f0,
                         size_t i0, size_t i1, double *grad, double *err, size_t *nonfinite);

/* The same for the k components listed in idx (each < p->n; caller-owned), written to out[j]
 * and err[j] (caller-owned, k elements; err may be NULL). Used to confirm suspects and, with
 * opts->method GT_FD_FORWARD/GT_FD_BACKWARD, for one-sided derivatives at kinks. */
int gt_fd_gradient_indices(const gt_fd_problem *p, const gt_fd_options *opts, double f0,
                           const size_t *idx, size_t k, double *out, double *err, size_t *nonfinite);

/* Direction j of the family `seed`: v_i = s_i z_ji with z_ji = +-(0.5 + u), random sign and u
 * uniform in [0, 1) (s_i as for the step scale), written to v (caller-owned, n elements).
 * Deterministic in (seed, j), so a direction can be regenerated instead of stored. */
void gt_fd_direction(uint64_t seed, uint64_t j, size_t n, const double *scale, const double *x,
                     gt_dtype dtype, double *v);

/* z_ji, component i of direction j before scaling, in O(1). */
double gt_fd_direction_component(uint64_t seed, uint64_t j, size_t i);

/* For the directions 0..k-1 of family `seed` over n components with scales `scale` (n finite
 * values > 0, caller-owned, used as they are): dots[j] = <g, v_j>, norms[j] = ||g * v_j||_2, abssum[j] = sum |g_i v_ji|
 * (caller-owned, k each). No allocation: each direction is regenerated as it is read. */
void gt_fd_direction_products(uint64_t seed, size_t k, size_t n, const double *scale, const double *g,
                              double *dots, double *norms, double *abssum);

/* out[i] = sum_j r[j] v_ji and, when sq is not NULL, sq[i] = sum_j v_ji^2, over the directions
 * 0..k-1 (out, sq: caller-owned, n each). No allocation. */
void gt_fd_direction_combine(uint64_t seed, size_t k, size_t n, const double *scale, const double *r,
                             double *out, double *sq);

/* Directional derivatives along the k directions 0..k-1 of family `seed`: d[j] ~ <grad f(x), v_j>,
 * with err[j] (may be NULL) their error bounds and the adaptive rule (the sweep of direction j
 * starts a few rows above direction j-1's best step). d, err: caller-owned, k elements.
 * Allocates two n-element buffers. Returns GT_OK, GT_EINVAL, GT_ENOMEM or GT_ECALLBACK (x
 * restored in every case). A direction whose derivative is not finite gets NaN and err = inf. */
int gt_fd_directional(const gt_fd_problem *p, const gt_fd_options *opts, double f0, uint64_t seed,
                      size_t k, double *d, double *err);

/* Noise level of f near x (in the style of More and Wild): f at 12 points x + t u_j v along the
 * direction v = gt_fd_direction(seed, UINT64_MAX), u_j uniform in [-1, 1], at two scales t; the
 * residual of a cubic least-squares fit, its standard deviation, the smaller over the scales at
 * which f takes enough distinct values (0 when none does). *evals (may be NULL) gets the number
 * of calls of f. Allocates two n-element buffers. Returns GT_OK, GT_EINVAL, GT_ENOMEM or
 * GT_ECALLBACK (x restored). */
int gt_fd_noise(const gt_fd_problem *p, uint64_t seed, double *sigma, size_t *evals);

#endif /* GT_FD_H */
