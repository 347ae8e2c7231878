/* gt_device.h: the C interface of gradtest's device kernels (csrc/cuda/), and the portability
 * layer that lets one kernel source compile both as CUDA and as plain C.
 *
 * Every kernel body in kernels.h is written once, as a grid-stride loop (GTD_LOOP). Under nvcc
 * the loop is spread over the threads of a grid and each gtd_* launcher below starts the kernel
 * on the caller's stream; compiled by a C compiler (the CPU emulation, for tests only) the loop
 * is a plain for loop over host memory, atomics are plain adds and the launcher calls the body
 * directly. So CI, which has no GPU, runs every kernel's arithmetic and indexing.
 *
 * The emulation is never GPU support: gradtest.cuda reports the device path unavailable unless
 * the nvcc build loaded and a device is visible.
 *
 * Contracts shared by every gtd_* launcher:
 *  - pointers are device memory (host memory in the emulation), owned by the caller, valid until
 *    the stream has run the kernel; the launcher only enqueues (it returns before the work ends);
 *  - dtype is GT_DEVICE_F64 (double) or GT_DEVICE_F32 (float); values are computed in double and
 *    float32 results are rounded once on store, as the CPU op table does;
 *  - stream is a cudaStream_t (NULL: the legacy default stream); ignored by the emulation;
 *  - the return value is 0 or a cudaError_t code (gtd_error_string names it); n == 0 launches
 *    nothing and returns 0. A launcher never allocates.
 */
#ifndef GT_DEVICE_H
#define GT_DEVICE_H

#include <stddef.h>

#include "op_rules.h"

#define GT_DEVICE_F64 0
#define GT_DEVICE_F32 1
/* The most dimensions a broadcast layout describes. */
#define GTD_MAXDIM 16

#ifdef __CUDACC__
#define GTD_EXTERN extern "C"
#else
#define GTD_EXTERN
#endif

#if defined(__GNUC__)
#define GTD_API GTD_EXTERN __attribute__((visibility("default")))
#else
#define GTD_API GTD_EXTERN
#endif

/* How an elementwise op reads its operands: the output has `ndim` dimensions of `shape`
 * (row-major, contiguous); operand a (b) element for output multi-index k is at
 * sum_d k_d sa[d] (sb[d]), in elements; a stride of 0 broadcasts that dimension. */
typedef struct gtd_layout {
    int ndim;
    long long shape[GTD_MAXDIM];
    long long sa[GTD_MAXDIM];
    long long sb[GTD_MAXDIM];
} gtd_layout;

/* y = op(a, b) over the n = prod(shape) elements of the output (contiguous). b is ignored by
 * unary ops (may be NULL). Returns 0, a CUDA error code, or -1 for an unknown op. */
GTD_API int gtd_ew_value(void *stream, int dtype, int op, size_t n, const gtd_layout *lay,
                         const void *a, const void *b, void *y);

/* The VJP of argument k of that op, at output size: g[i] (+)= chain(dy/d(arg k), gy[i]), with
 * the chain rule of op_rules.h (a zero factor gives 0); y = op(a, b) as computed above.
 * accumulate != 0 adds into g, else overwrites it. An argument in which the op is not
 * differentiable (sign) contributes exactly 0. The sum back to the argument's own shape is
 * gtd_unbroadcast's. Returns 0, a CUDA error code, or -1 for an unknown op or k. */
GTD_API int gtd_ew_vjp(void *stream, int dtype, int op, int k, size_t n, const gtd_layout *lay,
                       const void *a, const void *b, const void *y, const void *gy, void *g,
                       int accumulate);

/* Sums src (contiguous, lay->shape, n elements) back to an operand's shape: dst has m elements
 * and receives, for each of its elements j, the sum of the src elements whose lay->sa offset
 * is j (lay->sa: the operand's contiguous strides, 0 on broadcast dimensions); a full sum is
 * m = 1. The order of the additions is fixed, so the result is deterministic (no atomics):
 * under 64 source elements per output, one thread per output sums them in row-major order;
 * from 64 on, a block of 256 threads per output, each thread a strided sequential sum, then a
 * binary tree; from 16384 on, when scratch is given (device memory of scratch_len elements of
 * dtype, caller-owned, >= m * 2 to be used), the same over up to scratch_len / m chunks of 8192
 * per output, in two launches. accumulate != 0 adds into dst. */
GTD_API int gtd_unbroadcast(void *stream, int dtype, size_t n, size_t m, const gtd_layout *lay,
                            const void *src, void *dst, int accumulate, void *scratch, size_t scratch_len);

/* dst[i] = src[idx[i]], i < n; idx: device array of n int64 indices, each valid for src. */
GTD_API int gtd_gather(void *stream, int dtype, size_t n, const long long *idx, const void *src,
                       void *dst);

/* dst[idx[i]] += src[i], i < n, with atomic adds on the device (repeated indices accumulate;
 * the order of the adds, and so the last bits of a float sum, is not fixed on the device). */
GTD_API int gtd_scatter_add(void *stream, int dtype, size_t n, const long long *idx,
                            const void *src, void *dst);

/* Cumulative sum along the middle axis of a contiguous (outer, len, inner) array: one thread
 * per line, in order, as NumPy's cumsum. reverse != 0 sums from the end (the VJP of cumsum:
 * g_x[i] = sum_{j >= i} g_y[j]). accumulate != 0 adds the result into dst. */
GTD_API int gtd_cumsum(void *stream, int dtype, size_t outer, size_t len, size_t inner,
                       const void *src, void *dst, int reverse, int accumulate);

/* dst[i] += src[i] (accumulate != 0) or dst[i] = src[i], i < n. */
GTD_API int gtd_copy(void *stream, int dtype, size_t n, const void *src, void *dst, int accumulate);

/* dst[i] = value, i < n (the seed of a sweep, zeroed gradients). */
GTD_API int gtd_fill(void *stream, int dtype, size_t n, double value, void *dst);

/* The perturbed points of a batch of finite differences: for p < count, row p of out (count x n,
 * contiguous) is x0 with component comp[p] replaced by val[p] (val in double, rounded once to
 * dtype). comp and val are device arrays of count elements. */
GTD_API int gtd_fd_points(void *stream, int dtype, size_t count, size_t n, const void *x0,
                          const long long *comp, const double *val, void *out);

/* out[p] = sum_j u[j] y[p * m + j] for p < count (y: count x m of dtype; u: m doubles; out:
 * count doubles): one block per point, in the order of the block reductions (see
 * gtd_unbroadcast), in double. The checked scalar <u, f> of a batch of vector outputs. */
GTD_API int gtd_batched_dot(void *stream, int dtype, size_t count, size_t m, const void *y, const double *u,
                            double *out);

/* ---- memory and streams (what the batched finite differences need; the device tape gets its
 * buffers from the caller's array library instead) ---- */

/* *ptr = device allocation of `bytes` (> 0). Returns 0 or a CUDA error code; *ptr NULL on error. */
GTD_API int gtd_malloc(size_t bytes, void **ptr);
/* Frees a gtd_malloc allocation; NULL is a no-op. */
GTD_API int gtd_free(void *ptr);
/* Copies on the stream: to_device != 0 host -> device, else device -> host; then waits for it. */
GTD_API int gtd_memcpy_sync(void *stream, void *dst, const void *src, size_t bytes, int to_device);
/* Waits for the stream and returns the first error it met (a kernel's fault shows up here). */
GTD_API int gtd_stream_synchronize(void *stream);
/* Number of visible devices in *count; a CUDA error code (e.g. no driver) otherwise. */
GTD_API int gtd_device_count(int *count);

/* A short description of a code returned by a launcher (cudaGetErrorString on the device). */
GTD_API const char *gtd_error_string(int code);

/* 1 in the nvcc build, 0 in the emulation: what this library is, asked before it is used. */
GTD_API int gtd_is_device_build(void);

#endif /* GT_DEVICE_H */
