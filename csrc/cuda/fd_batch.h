/* fd_batch.h: batched finite differences of a device kernel (the device ABI of gradtest.h), with
 * the CPU engine's own rules.
 *
 * The step sequence, the tableau, the error bounds and the noise estimate are fd.c's: this
 * driver runs gt_fd_gradient_indices, one component at a time, over an eval callback that
 * answers from a cache of f values. When the engine asks for a point the cache lacks, that
 * component's run stops there (the engine restores x); once every pending component has
 * stopped, the driver evaluates all the missing points of the round on the device in batches:
 * gtd_fd_points builds each batch of perturbed inputs on the device from x and a list of
 * (component, value) pairs, the user's kernel evaluates the whole batch in one launch, and the
 * values are cached. Each round also evaluates the mirror point x_i - h of a requested x_i + h,
 * which the central rule asks for next. The runs then replay from their start, now with more
 * cached values, so each component's values are exactly those the sequential engine would
 * have used: the batching changes when f is evaluated, never what is computed. A round costs
 * ceil(points / batch) launches; the adaptive rule needs a few tens of rounds.
 *
 * f(x) and the noise estimate (gt_fd_noise, perturbing every component) are evaluated directly,
 * one launch per point. */
#ifndef GT_FD_BATCH_H
#define GT_FD_BATCH_H

#include <stddef.h>

#include "gt_device.h"

/* The kernel: with m == 0, fn is a gradtest_device_scalar_f64/_f32 (by dtype), called as
 * fn(ctx, stream, count, n, x, f) with x a device array of count x n inputs and f of count
 * outputs; with m > 0, a gradtest_device_vector_f64/_f32, fn(ctx, stream, count, n, x, m, y),
 * and the differentiated scalar of point p is <u, y_p> (gtd_batched_dot; u: m host doubles).
 * batch: the most points one launch evaluates (>= 1). scale: NULL or n step scales (host, > 0),
 * as gt_fd_problem's. */
typedef struct gtd_fd_kernel {
    void *fn;
    void *ctx;
    void *stream;
    int dtype;
    size_t n;
    size_t batch;
    const double *scale;
    size_t m;
    const double *u;
} gtd_fd_kernel;

/* Counters and the kernel's failure, filled by gtd_fd_batched. */
typedef struct gtd_fd_stats {
    size_t evaluations;  /* points evaluated (batched and direct) */
    size_t launches;     /* calls of the kernel */
    size_t rounds;       /* replay rounds */
    size_t nonfinite;    /* components whose quotients were never finite */
    int cuda_status;     /* non-zero: the kernel or the CUDA runtime failed with this code */
} gtd_fd_stats;

/* f0 = f(x) and grad, err (host, n elements each; caller-owned) by fd.c's rule for (method,
 * richardson, rel_step) as gt_fd_options reads them; x is host memory of n elements of dtype
 * (read only). Returns a gt_status: GT_OK, GT_EINVAL, GT_ENOMEM (host or device memory), or
 * GT_ECALLBACK when the kernel returned non-zero or a CUDA call failed (stats->cuda_status,
 * named by gtd_error_string). Device memory is freed on every path. */
GTD_API int gtd_fd_batched(const gtd_fd_kernel *k, const void *x, int method, int richardson,
                           double rel_step, double *f0, double *grad, double *err,
                           gtd_fd_stats *stats);

/* grad (host, n elements) = the gradient kernel gfn (gradtest_device_gradient_f64/_f32) at x
 * (host), through device copies; the device output is filled with NaN before the call so an
 * element left unwritten shows. Returns GT_OK, GT_ENOMEM or GT_ECALLBACK (*cuda_status set). */
GTD_API int gtd_call_gradient(void *gfn, void *ctx, void *stream, int dtype, size_t n, const void *x,
                              void *grad, int *cuda_status);

/* xbar (host, n elements) = the VJP kernel vfn (gradtest_device_vjp_f64/_f32) at x (host) with
 * ybar = u (host, m doubles, rounded to dtype), through device copies (xbar's device copy
 * NaN-filled first). Returns GT_OK, GT_EINVAL, GT_ENOMEM or GT_ECALLBACK (*cuda_status set). */
GTD_API int gtd_call_vjp(void *vfn, void *ctx, void *stream, int dtype, size_t n, const void *x, size_t m,
                         const double *u, void *xbar, int *cuda_status);

#endif /* GT_FD_BATCH_H */
