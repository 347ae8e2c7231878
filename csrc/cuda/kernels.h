/* kernels.h: the bodies of gradtest's device kernels and their launchers (contracts in
 * gt_device.h). Included once by gt_cuda.cu (nvcc: real kernels) and once by emulation.c (a C
 * compiler: plain loops over host memory, for tests). Every body is a grid-stride loop, so the
 * two builds run the same arithmetic and indexing.
 *
 * This file must stay valid C11 and CUDA C++ at once: explicit casts from void *, no
 * designated initializers, no C++-only features. */
#ifndef GT_KERNELS_H
#define GT_KERNELS_H

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
#endif

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

/* One thread per destination element j: the source elements mapping to j are those whose
 * multi-index agrees with j's on the kept dimensions (sa != 0 or extent 1), with every value on
 * the reduced ones (sa == 0 and extent > 1), visited in row-major order. */
GTD_KERNEL gtk_unbroadcast(int dtype, size_t n, size_t m, gtd_layout lay, const void *src, void *dst,
                           int accumulate)
{
    (void)n;
    GTD_LOOP(j, m) {
        /* the kept coordinates of j: walk the dims from the last, peeling j by the operand's
         * extents (1 where reduced) */
        long long kept[GTD_MAXDIM], reduced_count = 1, rest = (long long)j;
        for (int d = lay.ndim - 1; d >= 0; d--) {
            if (lay.sa[d] == 0 && lay.shape[d] > 1) {
                kept[d] = -1;
                reduced_count *= lay.shape[d];
            } else {
                kept[d] = rest % lay.shape[d];
                rest /= lay.shape[d];
            }
        }
        /* the sum, in double for float64 and in float for float32 (as the CPU's sum of float32) */
        double acc64 = 0.0;
        float acc32 = 0.0f;
        for (long long r = 0; r < reduced_count; r++) {
            long long rr = r, off = 0, stride = 1;
            for (int d = lay.ndim - 1; d >= 0; d--) {
                long long coord;
                if (kept[d] < 0) {
                    coord = rr % lay.shape[d];
                    rr /= lay.shape[d];
                } else {
                    coord = kept[d];
                }
                off += coord * stride;
                stride *= lay.shape[d];
            }
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
                            const void *src, void *dst, int accumulate)
{
    if (gtd_bad_dtype(dtype) || !lay || lay->ndim < 0 || lay->ndim > GTD_MAXDIM)
        return -1;
    GTD_LAUNCH(gtk_unbroadcast, m, stream, dtype, n, m, *lay, src, dst, accumulate);
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
