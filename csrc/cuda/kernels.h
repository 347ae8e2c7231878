/* kernels.h: the bodies of gradtest's device kernels and their launchers (contracts in
 * gt_device.h). Included once by gt_cuda.cu (nvcc: real kernels) and once by emulation.c (a C
 * compiler: plain loops over host memory, for tests). Every body is a grid-stride loop, so the
 * two builds run the same arithmetic and indexing.
 *
 * This file must stay valid C11 and CUDA C++ at once: explicit casts from void *, no
 * designated initializers, no C++-only features. */
#ifndef GT_KERNELS_H
#define GT_KERNELS_H

#include <string.h>

#include "gt_device.h"

#ifdef __CUDACC__
#define GTD_KERNEL static __global__ void
#define GTD_LOOP(i, n) \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (size_t)(n); \
         i += (size_t)blockDim.x * gridDim.x)
#define GTD_ATOMIC_ADD_F64(p, v) atomicAdd((p), (v))
#define GTD_ATOMIC_ADD_F32(p, v) atomicAdd((p), (v))
#define GTD_THREADS 256
/* enough blocks to cover n once, capped: the grid-stride loop covers the rest */
#define GTD_BLOCKS(n) ((unsigned)((n) / GTD_THREADS + 1 < 65536 ? (n) / GTD_THREADS + 1 : 65536))
#define GTD_LAUNCH(kernel, n, stream, ...) \
    do { \
        if ((n) == 0) \
            return 0; \
        kernel<<<GTD_BLOCKS(n), GTD_THREADS, 0, (cudaStream_t)(stream)>>>(__VA_ARGS__); \
        return (int)cudaGetLastError(); \
    } while (0)
/* block-cooperative kernels: a loop over the work items of whole blocks, a loop that each thread
 * of the block runs once, a barrier, and the block's shared scratch */
#define GTD_BLOCKS_LOOP(b, count) for (size_t b = blockIdx.x; b < (size_t)(count); b += gridDim.x)
#define GTD_THREADS_LOOP(t) for (unsigned t = threadIdx.x, t##_once = 1; t##_once; t##_once = 0)
#define GTD_SYNC() __syncthreads()
#define GTD_SHARED __shared__
#define GTD_RUN_BLOCKS(status, kernel, count, stream, ...) \
    do { \
        kernel<<<(unsigned)((count) < 65535 ? (count) : 65535), GTD_BLOCK_THREADS, 0, \
                 (cudaStream_t)(stream)>>>(__VA_ARGS__); \
        status = (int)cudaGetLastError(); \
    } while (0)
#else
#define GTD_KERNEL static void
#define GTD_LOOP(i, n) for (size_t i = 0; i < (size_t)(n); i++)
#define GTD_ATOMIC_ADD_F64(p, v) (*(p) += (v))
#define GTD_ATOMIC_ADD_F32(p, v) (*(p) += (v))
#define GTD_LAUNCH(kernel, n, stream, ...) \
    do { \
        (void)(stream); \
        if ((n) == 0) \
            return 0; \
        kernel(__VA_ARGS__); \
        return 0; \
    } while (0)
/* the block's threads run one after the other, each phase to its end before the next, which
 * is what the barrier guarantees on the device: the same sums in the same order */
#define GTD_BLOCKS_LOOP(b, count) for (size_t b = 0; b < (size_t)(count); b++)
#define GTD_THREADS_LOOP(t) for (unsigned t = 0; t < GTD_BLOCK_THREADS; t++)
#define GTD_SYNC() ((void)0)
#define GTD_SHARED
#define GTD_RUN_BLOCKS(status, kernel, count, stream, ...) \
    do { \
        (void)(stream); \
        kernel(__VA_ARGS__); \
        status = 0; \
    } while (0)
#endif

/* threads per block of the block-cooperative reductions (a power of two) */
#define GTD_BLOCK_THREADS 256

/* element i of a buffer of `dtype`, as double */
GT_HD double gtd_load(const void *p, int dtype, long long i)
{
    return dtype == GT_DEVICE_F64 ? ((const double *)p)[i] : (double)((const float *)p)[i];
}

/* stores v (rounded once to float for float32) */
GT_HD void gtd_store(void *p, int dtype, long long i, double v)
{
    if (dtype == GT_DEVICE_F64)
        ((double *)p)[i] = v;
    else
        ((float *)p)[i] = (float)v;
}

/* offsets into a and b of output element i (row-major over lay.shape) */
GT_HD void gtd_offsets(const gtd_layout *lay, size_t i, long long *oa, long long *ob)
{
    long long ra = 0, rb = 0, rest = (long long)i;
    for (int d = lay->ndim - 1; d >= 0; d--) {
        long long k = rest % lay->shape[d];
        rest /= lay->shape[d];
        ra += k * lay->sa[d];
        rb += k * lay->sb[d];
    }
    *oa = ra;
    *ob = rb;
}

GTD_KERNEL gtk_ew_value(int dtype, int op, size_t n, gtd_layout lay, const void *a, const void *b, void *y)
{
    int binary = gt_rule_arity(op) == 2;
    GTD_LOOP(i, n) {
        long long oa, ob;
        gtd_offsets(&lay, i, &oa, &ob);
        double av = gtd_load(a, dtype, oa), bv = binary ? gtd_load(b, dtype, ob) : 0.0;
        gtd_store(y, dtype, (long long)i, gt_rule_value(op, av, bv));
    }
}

GTD_KERNEL gtk_ew_vjp(int dtype, int op, int k, size_t n, gtd_layout lay, const void *a, const void *b,
                      const void *y, const void *gy, void *g, int accumulate)
{
    int binary = gt_rule_arity(op) == 2, has = gt_rule_has_partial(op, k);
    GTD_LOOP(i, n) {
        long long oa, ob;
        gtd_offsets(&lay, i, &oa, &ob);
        double av = gtd_load(a, dtype, oa), bv = binary ? gtd_load(b, dtype, ob) : 0.0;
        double yv = gtd_load(y, dtype, (long long)i);
        /* the CPU tape's order exactly: the partial rounded to the dtype, then the chain rule in
         * the dtype, then the accumulation in the dtype */
        if (dtype == GT_DEVICE_F64) {
            double p = has ? gt_rule_partial(op, k, av, bv, yv) : 0.0;
            double c = gt_chain_f64(p, ((const double *)gy)[i]);
            double *gp = (double *)g;
            gp[i] = accumulate ? gp[i] + c : c;
        } else {
            float p = has ? (float)gt_rule_partial(op, k, av, bv, yv) : 0.0f;
            float c = gt_chain_f32(p, ((const float *)gy)[i]);
            float *gp = (float *)g;
            gp[i] = accumulate ? gp[i] + c : c;
        }
    }
}

/* The source elements that sum into destination element j are those whose multi-index agrees
 * with j's on the kept dimensions (sa != 0 or extent 1) and takes every value on the reduced
 * ones (sa == 0 and extent > 1). gtd_kept writes j's kept coordinates (-1 on reduced dims) and
 * returns how many source elements map to j; gtd_reduced_offset is the offset, in the source,
 * of the r-th of them in row-major order. */
GT_HD long long gtd_kept(const gtd_layout *lay, size_t j, long long *kept)
{
    long long count = 1, rest = (long long)j;
    for (int d = lay->ndim - 1; d >= 0; d--) {
        if (lay->sa[d] == 0 && lay->shape[d] > 1) {
            kept[d] = -1;
            count *= lay->shape[d];
        } else {
            kept[d] = rest % lay->shape[d];
            rest /= lay->shape[d];
        }
    }
    return count;
}

GT_HD long long gtd_reduced_offset(const gtd_layout *lay, const long long *kept, long long r)
{
    long long off = 0, stride = 1;
    for (int d = lay->ndim - 1; d >= 0; d--) {
        long long coord = kept[d];
        if (coord < 0) {
            coord = r % lay->shape[d];
            r /= lay->shape[d];
        }
        off += coord * stride;
        stride *= lay->shape[d];
    }
    return off;
}

/* One thread per destination element, summing in row-major order: for few source elements per
 * output (bit for bit a sequential sum). */
GTD_KERNEL gtk_unbroadcast(int dtype, size_t n, size_t m, gtd_layout lay, const void *src, void *dst,
                           int accumulate)
{
    (void)n;
    GTD_LOOP(j, m) {
        long long kept[GTD_MAXDIM];
        long long count = gtd_kept(&lay, j, kept);
        /* the sum, in double for float64 and in float for float32 (as the CPU's sum of float32) */
        double acc64 = 0.0;
        float acc32 = 0.0f;
        for (long long r = 0; r < count; r++) {
            long long off = gtd_reduced_offset(&lay, kept, r);
            if (dtype == GT_DEVICE_F64)
                acc64 += ((const double *)src)[off];
            else
                acc32 += ((const float *)src)[off];
        }
        if (dtype == GT_DEVICE_F64) {
            double *dp = (double *)dst;
            dp[j] = accumulate ? dp[j] + acc64 : acc64;
        } else {
            float *dp = (float *)dst;
            dp[j] = accumulate ? dp[j] + acc32 : acc32;
        }
    }
}

/* One block per (destination element j, chunk c): thread t sums the chunk's elements t, t + T,
 * ... (T = GTD_BLOCK_THREADS) in order, then the block adds its T partial sums as a binary tree
 * (t += t + s for s = T/2, T/4, ..., 1). Work item b = j * chunks + c writes dst[b]: with one
 * chunk that is the destination itself (accumulate applies); with several, a scratch row that a
 * second launch reduces. The order is fixed, so the result is deterministic, and the emulation
 * computes exactly the device's sums. */
GTD_KERNEL gtk_reduce_blocks(int dtype, size_t m, size_t chunks, long long per_chunk, gtd_layout lay,
                             const void *src, void *dst, int accumulate)
{
    GTD_SHARED double p64[GTD_BLOCK_THREADS];
    GTD_SHARED float p32[GTD_BLOCK_THREADS];
    GTD_BLOCKS_LOOP(b, m * chunks) {
        size_t j = b / chunks, c = b % chunks;
        long long kept[GTD_MAXDIM];
        long long count = gtd_kept(&lay, j, kept);
        long long r0 = (long long)c * per_chunk, r1 = r0 + per_chunk < count ? r0 + per_chunk : count;
        GTD_THREADS_LOOP(t) {
            double a64 = 0.0;
            float a32 = 0.0f;
            for (long long r = r0 + (long long)t; r < r1; r += GTD_BLOCK_THREADS) {
                long long off = gtd_reduced_offset(&lay, kept, r);
                if (dtype == GT_DEVICE_F64)
                    a64 += ((const double *)src)[off];
                else
                    a32 += ((const float *)src)[off];
            }
            p64[t] = a64;
            p32[t] = a32;
        }
        GTD_SYNC();
        for (unsigned s = GTD_BLOCK_THREADS / 2; s > 0; s >>= 1) {
            GTD_THREADS_LOOP(t) {
                if (t < s) {
                    p64[t] += p64[t + s];
                    p32[t] += p32[t + s];
                }
            }
            GTD_SYNC();
        }
        GTD_THREADS_LOOP(t) {
            if (t == 0) {
                if (dtype == GT_DEVICE_F64) {
                    double *dp = (double *)dst;
                    dp[b] = accumulate ? dp[b] + p64[0] : p64[0];
                } else {
                    float *dp = (float *)dst;
                    dp[b] = accumulate ? dp[b] + p32[0] : p32[0];
                }
            }
        }
        GTD_SYNC(); /* the next work item reuses the partial sums */
    }
}

GTD_KERNEL gtk_batched_dot(int dtype, size_t count, size_t m, const void *y, const double *u, double *out)
{
    GTD_SHARED double part[GTD_BLOCK_THREADS];
    GTD_BLOCKS_LOOP(p, count) {
        GTD_THREADS_LOOP(t) {
            double acc = 0.0;
            for (size_t j = t; j < m; j += GTD_BLOCK_THREADS)
                acc += u[j] * gtd_load(y, dtype, (long long)(p * m + j));
            part[t] = acc;
        }
        GTD_SYNC();
        for (unsigned s = GTD_BLOCK_THREADS / 2; s > 0; s >>= 1) {
            GTD_THREADS_LOOP(t) {
                if (t < s)
                    part[t] += part[t + s];
            }
            GTD_SYNC();
        }
        GTD_THREADS_LOOP(t) {
            if (t == 0)
                out[p] = part[0];
        }
        GTD_SYNC();
    }
}

GTD_KERNEL gtk_gather(int dtype, size_t n, const long long *idx, const void *src, void *dst)
{
    GTD_LOOP(i, n) {
        if (dtype == GT_DEVICE_F64)
            ((double *)dst)[i] = ((const double *)src)[idx[i]];
        else
            ((float *)dst)[i] = ((const float *)src)[idx[i]];
    }
}

GTD_KERNEL gtk_scatter_add(int dtype, size_t n, const long long *idx, const void *src, void *dst)
{
    GTD_LOOP(i, n) {
        if (dtype == GT_DEVICE_F64)
            GTD_ATOMIC_ADD_F64(&((double *)dst)[idx[i]], ((const double *)src)[i]);
        else
            GTD_ATOMIC_ADD_F32(&((float *)dst)[idx[i]], ((const float *)src)[i]);
    }
}

GTD_KERNEL gtk_cumsum(int dtype, size_t outer, size_t len, size_t inner, const void *src, void *dst,
                      int reverse, int accumulate)
{
    GTD_LOOP(line, outer * inner) {
        size_t o = line / inner, in = line % inner;
        double acc64 = 0.0;
        float acc32 = 0.0f;
        for (size_t t = 0; t < len; t++) {
            size_t s = reverse ? len - 1 - t : t;
            size_t at = (o * len + s) * inner + in;
            if (dtype == GT_DEVICE_F64) {
                acc64 += ((const double *)src)[at];
                double *dp = (double *)dst;
                dp[at] = accumulate ? dp[at] + acc64 : acc64;
            } else {
                acc32 += ((const float *)src)[at];
                float *dp = (float *)dst;
                dp[at] = accumulate ? dp[at] + acc32 : acc32;
            }
        }
    }
}

GTD_KERNEL gtk_copy(int dtype, size_t n, const void *src, void *dst, int accumulate)
{
    GTD_LOOP(i, n) {
        if (dtype == GT_DEVICE_F64) {
            double *dp = (double *)dst;
            dp[i] = accumulate ? dp[i] + ((const double *)src)[i] : ((const double *)src)[i];
        } else {
            float *dp = (float *)dst;
            dp[i] = accumulate ? dp[i] + ((const float *)src)[i] : ((const float *)src)[i];
        }
    }
}

GTD_KERNEL gtk_fill(int dtype, size_t n, double value, void *dst)
{
    GTD_LOOP(i, n)
        gtd_store(dst, dtype, (long long)i, value);
}

GTD_KERNEL gtk_fd_points(int dtype, size_t count, size_t n, const void *x0, const long long *comp,
                         const double *val, void *out)
{
    GTD_LOOP(e, count * n) {
        size_t p = e / n, i = e % n;
        if ((long long)i == comp[p])
            gtd_store(out, dtype, (long long)e, val[p]);
        else
            gtd_store(out, dtype, (long long)e, gtd_load(x0, dtype, (long long)i));
    }
}

/* ---- launchers ---- */

/* below this many source elements per output, one thread per output sums them; from it on, a
 * block cooperates on each output, and from 2 * GTD_REDUCE_CHUNK on, given scratch, several
 * blocks do (two launches) */
#define GTD_REDUCE_BLOCK_MIN 64
#define GTD_REDUCE_CHUNK 8192

static int gtd_bad_dtype(int dtype) { return dtype != GT_DEVICE_F64 && dtype != GT_DEVICE_F32; }

GTD_API int gtd_ew_value(void *stream, int dtype, int op, size_t n, const gtd_layout *lay,
                         const void *a, const void *b, void *y)
{
    if (gt_rule_arity(op) == 0 || gtd_bad_dtype(dtype) || !lay || lay->ndim < 0 || lay->ndim > GTD_MAXDIM)
        return -1;
    GTD_LAUNCH(gtk_ew_value, n, stream, dtype, op, n, *lay, a, b, y);
}

GTD_API int gtd_ew_vjp(void *stream, int dtype, int op, int k, size_t n, const gtd_layout *lay,
                       const void *a, const void *b, const void *y, const void *gy, void *g,
                       int accumulate)
{
    if (gt_rule_arity(op) == 0 || k < 0 || k >= gt_rule_arity(op) || gtd_bad_dtype(dtype) || !lay ||
        lay->ndim < 0 || lay->ndim > GTD_MAXDIM)
        return -1;
    GTD_LAUNCH(gtk_ew_vjp, n, stream, dtype, op, k, n, *lay, a, b, y, gy, g, accumulate);
}

GTD_API int gtd_unbroadcast(void *stream, int dtype, size_t n, size_t m, const gtd_layout *lay,
                            const void *src, void *dst, int accumulate, void *scratch, size_t scratch_len)
{
    if (gtd_bad_dtype(dtype) || !lay || lay->ndim < 0 || lay->ndim > GTD_MAXDIM)
        return -1;
    if (m == 0 || n == 0)
        return m == 0 ? 0 : gtd_fill(stream, dtype, accumulate ? 0 : m, 0.0, dst);
    size_t per = n / m;
    if (per < GTD_REDUCE_BLOCK_MIN)
        GTD_LAUNCH(gtk_unbroadcast, m, stream, dtype, n, m, *lay, src, dst, accumulate);
    size_t chunks = scratch && per >= 2 * GTD_REDUCE_CHUNK ? per / GTD_REDUCE_CHUNK : 1;
    if (chunks > scratch_len / m)
        chunks = scratch_len / m;
    int st;
    if (chunks <= 1) {
        GTD_RUN_BLOCKS(st, gtk_reduce_blocks, m, stream, dtype, m, 1, (long long)per, *lay, src, dst, accumulate);
        return st;
    }
    long long per_chunk = (long long)((per + chunks - 1) / chunks);
    GTD_RUN_BLOCKS(st, gtk_reduce_blocks, m * chunks, stream, dtype, m, chunks, per_chunk, *lay, src, scratch, 0);
    if (st)
        return st;
    /* the scratch is (m, chunks), row j the partial sums of output j */
    gtd_layout rows;
    memset(&rows, 0, sizeof rows);
    rows.ndim = 2;
    rows.shape[0] = (long long)m;
    rows.shape[1] = (long long)chunks;
    rows.sa[0] = 1;
    rows.sa[1] = 0;
    GTD_RUN_BLOCKS(st, gtk_reduce_blocks, m, stream, dtype, m, 1, (long long)chunks, rows, scratch, dst, accumulate);
    return st;
}

GTD_API int gtd_batched_dot(void *stream, int dtype, size_t count, size_t m, const void *y, const double *u,
                            double *out)
{
    if (gtd_bad_dtype(dtype))
        return -1;
    if (count == 0)
        return 0;
    int st;
    GTD_RUN_BLOCKS(st, gtk_batched_dot, count, stream, dtype, count, m, y, u, out);
    return st;
}

GTD_API int gtd_gather(void *stream, int dtype, size_t n, const long long *idx, const void *src, void *dst)
{
    if (gtd_bad_dtype(dtype))
        return -1;
    GTD_LAUNCH(gtk_gather, n, stream, dtype, n, idx, src, dst);
}

GTD_API int gtd_scatter_add(void *stream, int dtype, size_t n, const long long *idx, const void *src,
                            void *dst)
{
    if (gtd_bad_dtype(dtype))
        return -1;
    GTD_LAUNCH(gtk_scatter_add, n, stream, dtype, n, idx, src, dst);
}

GTD_API int gtd_cumsum(void *stream, int dtype, size_t outer, size_t len, size_t inner, const void *src,
                       void *dst, int reverse, int accumulate)
{
    if (gtd_bad_dtype(dtype))
        return -1;
    GTD_LAUNCH(gtk_cumsum, outer * inner * (len > 0), stream, dtype, outer, len, inner, src, dst, reverse,
               accumulate);
}

GTD_API int gtd_copy(void *stream, int dtype, size_t n, const void *src, void *dst, int accumulate)
{
    if (gtd_bad_dtype(dtype))
        return -1;
    GTD_LAUNCH(gtk_copy, n, stream, dtype, n, src, dst, accumulate);
}

GTD_API int gtd_fill(void *stream, int dtype, size_t n, double value, void *dst)
{
    if (gtd_bad_dtype(dtype))
        return -1;
    GTD_LAUNCH(gtk_fill, n, stream, dtype, n, value, dst);
}

GTD_API int gtd_fd_points(void *stream, int dtype, size_t count, size_t n, const void *x0,
                          const long long *comp, const double *val, void *out)
{
    if (gtd_bad_dtype(dtype))
        return -1;
    GTD_LAUNCH(gtk_fd_points, count * n, stream, dtype, count, n, x0, comp, val, out);
}

#endif /* GT_KERNELS_H */
