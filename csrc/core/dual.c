/* dual.c: forward-mode kernels (see dual.h). */
#include "dual.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <threads.h>

#include <cblas.h>

/* OpenBLAS from the scipy-openblas32 wheel prefixes its symbols (scipy_cblas_dgemm). */
#ifdef GT_BLAS_PREFIX
#define GT_BLAS_CAT2(p, n) p##n
#define GT_BLAS_CAT(p, n) GT_BLAS_CAT2(p, n)
#define GT_CBLAS(name) GT_BLAS_CAT(GT_BLAS_PREFIX, name)
#else
#define GT_CBLAS(name) name
#endif

/* Elements per block: the partials of one block (5 double buffers, 40 KiB) stay in L1/L2 while every
 * tangent direction is combined with them. */
#define GT_DUAL_BLOCK 1024

/* A zero tangent contributes zero even where the partial is infinite or NaN (sqrt'(0) = inf):
 * with one-hot seeding every other direction has a zero tangent at that element, and 0 * inf
 * must not turn their derivatives into NaN (ForwardDiff's "NaN-safe" rule). The guarded form only
 * runs on blocks whose partials are not all finite; the others take the plain, vectorized loop. */
#define GT_TERM(d, t) ((t) != 0 ? (d) * (t) : 0)
#define GT_PLAIN(d, t) ((d) * (t))

/* One block of one direction: out[i] = da[i] * at[i] + db[i] * bt[i], with byte strides as, bs
 * for the tangents; at or bt NULL means a zero tangent. out is contiguous. */
#define GT_DEFINE_COMBINE_WITH(NAME, T, TERM)                                                       \
    static void NAME(size_t n, T *out, const char *at, ptrdiff_t as, const double *da,             \
                     const char *bt, ptrdiff_t bs, const double *db)                               \
    {                                                                                              \
        if (at && bt) {                                                                            \
            if (as == (ptrdiff_t)sizeof(T) && bs == (ptrdiff_t)sizeof(T)) {                        \
                const T *x = (const T *)at, *z = (const T *)bt;                                    \
                for (size_t i = 0; i < n; i++)                                                     \
                    out[i] = TERM((T)da[i], x[i]) + TERM((T)db[i], z[i]);                          \
            } else {                                                                               \
                for (size_t i = 0; i < n; i++) {                                                   \
                    T x = *(const T *)(at + (ptrdiff_t)i * as);                                    \
                    T z = *(const T *)(bt + (ptrdiff_t)i * bs);                                    \
                    out[i] = TERM((T)da[i], x) + TERM((T)db[i], z);                                \
                }                                                                                  \
            }                                                                                      \
        } else if (at || bt) {                                                                     \
            const char *t = at ? at : bt;                                                          \
            ptrdiff_t ts = at ? as : bs;                                                           \
            const double *d = at ? da : db;                                                        \
            if (ts == (ptrdiff_t)sizeof(T)) {                                                      \
                const T *x = (const T *)t;                                                         \
                for (size_t i = 0; i < n; i++)                                                     \
                    out[i] = TERM((T)d[i], x[i]);                                                  \
            } else {                                                                               \
                for (size_t i = 0; i < n; i++)                                                     \
                    out[i] = TERM((T)d[i], *(const T *)(t + (ptrdiff_t)i * ts));                   \
            }                                                                                      \
        } else {                                                                                   \
            memset(out, 0, n * sizeof(T));                                                         \
        }                                                                                          \
    }
#define GT_DEFINE_COMBINE(NAME, T)                                                                  \
    GT_DEFINE_COMBINE_WITH(NAME##_plain, T, GT_PLAIN)                                              \
    GT_DEFINE_COMBINE_WITH(NAME##_safe, T, GT_TERM)

GT_DEFINE_COMBINE(combine_f64, double)
GT_DEFINE_COMBINE(combine_f32, float)

/* Copies n strided elements of `dtype` starting at p (byte stride s) into dst as doubles. */
static void gather(gt_dtype dtype, size_t n, const char *p, ptrdiff_t s, double *dst)
{
    if (dtype == GT_FLOAT64) {
        for (size_t i = 0; i < n; i++)
            dst[i] = *(const double *)(p + (ptrdiff_t)i * s);
    } else {
        for (size_t i = 0; i < n; i++)
            dst[i] = (double)*(const float *)(p + (ptrdiff_t)i * s);
    }
}

/* 1 when every one of the n partials (in the buffers that are used) is finite. */
static int all_finite(size_t n, const double *da, const double *db)
{
    double acc = 0.0;
    /* x * 0 is NaN exactly for infinite or NaN x: one vectorizable pass instead of a branch each */
    for (size_t i = 0; i < n; i++)
        acc += (da ? da[i] * 0.0 : 0.0) + (db ? db[i] * 0.0 : 0.0);
    return acc == 0.0;
}

int gt_dual_elementwise(const gt_op *op, gt_dtype dtype, int nd, const size_t *shape, size_t k,
                        const gt_dual_arg *a, const gt_dual_arg *b, const void *y, void *yt)
{
    size_t es = gt_dtype_size(dtype);
    if (!op || !a || !a->value || !y || !yt || !es || nd < 0 || (nd > 0 && !shape))
        return GT_EINVAL;
    if ((op->arity == 2) != (b != NULL) || (b && !b->value))
        return GT_EINVAL;
    if ((nd > 0 && !a->value_strides) || (a->tangent && !a->tangent_strides))
        return GT_EINVAL;
    if (b && ((nd > 0 && !b->value_strides) || (b->tangent && !b->tangent_strides)))
        return GT_EINVAL;

    size_t n = 1;
    for (int d = 0; d < nd; d++)
        n *= shape[d];
    if (n == 0 || k == 0)
        return GT_OK;
    size_t inner = nd ? shape[nd - 1] : 1;
    size_t rows = n / inner;
    const char *at = a->tangent, *bt = b ? b->tangent : NULL;
    ptrdiff_t avs = nd ? a->value_strides[nd - 1] : 0;
    ptrdiff_t bvs = b && nd ? b->value_strides[nd - 1] : 0;
    ptrdiff_t ats = at && nd ? a->tangent_strides[nd] : 0;
    ptrdiff_t bts = bt && nd ? b->tangent_strides[nd] : 0;
    ptrdiff_t atk = at ? a->tangent_strides[0] : 0;
    ptrdiff_t btk = bt ? b->tangent_strides[0] : 0;
    double av[GT_DUAL_BLOCK], bv[GT_DUAL_BLOCK], yv[GT_DUAL_BLOCK];
    double da[GT_DUAL_BLOCK], db[GT_DUAL_BLOCK];

    for (size_t r = 0; r < rows; r++) {
        /* byte offsets of row r (all dimensions but the last) in each strided operand */
        ptrdiff_t ao = 0, bo = 0, ato = 0, bto = 0;
        size_t rem = r;
        for (int d = nd - 2; d >= 0; d--) {
            ptrdiff_t i = (ptrdiff_t)(rem % shape[d]);
            rem /= shape[d];
            ao += i * a->value_strides[d];
            if (b)
                bo += i * b->value_strides[d];
            if (at)
                ato += i * a->tangent_strides[d + 1];
            if (bt)
                bto += i * b->tangent_strides[d + 1];
        }
        for (size_t j0 = 0; j0 < inner; j0 += GT_DUAL_BLOCK) {
            size_t bl = inner - j0 < GT_DUAL_BLOCK ? inner - j0 : GT_DUAL_BLOCK;
            ptrdiff_t j = (ptrdiff_t)j0;
            size_t flat = r * inner + j0;
            gather(dtype, bl, a->value + ao + j * avs, avs, av);
            if (b)
                gather(dtype, bl, b->value + bo + j * bvs, bvs, bv);
            gather(dtype, bl, (const char *)y + flat * es, (ptrdiff_t)es, yv);
            int status = gt_op_partials_f64(op, bl, av, b ? bv : NULL, yv, at ? da : NULL,
                                            bt ? db : NULL);
            if (status)
                return status;
            int safe = !all_finite(bl, at ? da : NULL, bt ? db : NULL);
            for (size_t d = 0; d < k; d++) {
                ptrdiff_t dd = (ptrdiff_t)d;
                const char *ap = at ? at + dd * atk + ato + j * ats : NULL;
                const char *bp = bt ? bt + dd * btk + bto + j * bts : NULL;
                if (dtype == GT_FLOAT64) {
                    double *out = (double *)yt + d * n + flat;
                    if (safe)
                        combine_f64_safe(bl, out, ap, ats, da, bp, bts, db);
                    else
                        combine_f64_plain(bl, out, ap, ats, da, bp, bts, db);
                } else {
                    float *out = (float *)yt + d * n + flat;
                    if (safe)
                        combine_f32_safe(bl, out, ap, ats, da, bp, bts, db);
                    else
                        combine_f32_plain(bl, out, ap, ats, da, bp, bts, db);
                }
            }
        }
    }
    return GT_OK;
}

/* C (rows x cols) = A (rows x inner) @ B (inner x cols) [+ C when accumulate], row-major, with the
 * leading dimensions given. */
static void gemm(gt_dtype dtype, size_t rows, size_t cols, size_t inner, const void *a, size_t lda,
                 const void *b, size_t ldb, void *c, size_t ldc, int accumulate)
{
    if (dtype == GT_FLOAT64)
        GT_CBLAS(cblas_dgemm)(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)rows, (blasint)cols,
                              (blasint)inner, 1.0, a, (blasint)lda, b, (blasint)ldb,
                              accumulate ? 1.0 : 0.0, c, (blasint)ldc);
    else
        GT_CBLAS(cblas_sgemm)(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)rows, (blasint)cols,
                              (blasint)inner, 1.0f, a, (blasint)lda, b, (blasint)ldb,
                              accumulate ? 1.0f : 0.0f, c, (blasint)ldc);
}

static int fits_blas(size_t x) { return x <= (size_t)INT_MAX; }

/* Per-thread scratch for gt_dual_matmul, kept between calls: writing into freshly mapped pages
 * costs one page fault per 4 KiB, which measured as the largest part of the A @ dB term for
 * mid-sized matrices. Bounded by GT_DUAL_SCRATCH_KEEP; larger requests are freed after use. The
 * cache is thread-local, so no lock is needed; a thread frees its own with
 * gt_dual_scratch_release(), and C11 thread-specific storage frees it when a thread exits. */
#define GT_DUAL_SCRATCH_KEEP ((size_t)64 << 20)

typedef struct scratch_cache {
    char *data;
    size_t size;
} scratch_cache;

static once_flag scratch_once = ONCE_FLAG_INIT;
static tss_t scratch_key;
static int scratch_key_ok;

static void scratch_destroy(void *ptr)
{
    scratch_cache *cache = ptr;
    if (cache) {
        gt_free(cache->data);
        free(cache);
    }
}

static void scratch_key_init(void) { scratch_key_ok = tss_create(&scratch_key, scratch_destroy) == thrd_success; }

/* Returns a buffer of at least `size` bytes, or NULL when out of memory. *owned is set to 1 when
 * the caller must gt_free it (too large to keep, or no cache), 0 when it belongs to the cache. */
static char *scratch_get(size_t size, int *owned)
{
    *owned = 1;
    call_once(&scratch_once, scratch_key_init);
    if (!scratch_key_ok || size > GT_DUAL_SCRATCH_KEEP)
        return gt_malloc(size);
    scratch_cache *cache = tss_get(scratch_key);
    if (!cache) {
        cache = calloc(1, sizeof *cache);
        if (!cache || tss_set(scratch_key, cache) != thrd_success) {
            free(cache);
            return gt_malloc(size);
        }
    }
    if (cache->size < size) {
        char *data = gt_malloc(size);
        if (!data)
            return NULL;
        gt_free(cache->data);
        cache->data = data;
        cache->size = size;
    }
    *owned = 0;
    return cache->data;
}

void gt_dual_scratch_release(void)
{
    call_once(&scratch_once, scratch_key_init);
    if (!scratch_key_ok)
        return;
    scratch_cache *cache = tss_get(scratch_key);
    if (cache) {
        gt_free(cache->data);
        cache->data = NULL;
        cache->size = 0;
    }
}

int gt_dual_matmul(gt_dtype dtype, size_t m, size_t n, size_t p, size_t k, const void *a,
                   const void *da, const void *b, const void *db, void *c, void *dc)
{
    size_t es = gt_dtype_size(dtype);
    int status = GT_OK, owned = 0;
    char *scratch = NULL;
    if (!es || !a || !b || !dc)
        return GT_EINVAL;
    if (m && k > SIZE_MAX / m)
        return GT_EINVAL;
    if (!fits_blas(n) || !fits_blas(k * m) || !fits_blas(k * p) || (p && k * p > SIZE_MAX / (n + m + 1) / es))
        return GT_EUNSUPPORTED;
    if (c && m > 0 && p > 0) {
        if (n == 0)
            memset(c, 0, m * p * es);
        else
            gemm(dtype, m, p, n, a, n, b, p, c, p, 0);
    }
    size_t total = k * m * p;
    if (total == 0)
        return GT_OK;
    if (n == 0 || (!da && !db)) {
        memset(dc, 0, total * es);
        return GT_OK;
    }
    int accumulate = 0;
    if (db) {
        /* scratch (n, k, p): row i holds [dB[0][i] .. dB[k-1][i]], so the k directions of A @ dB
         * form one (m, n) @ (n, k*p) product, written to an (m, k, p) scratch and transposed once
         * into dc */
        size_t row = p * es;
        scratch = scratch_get((n + m) * k * row, &owned);
        if (!scratch)
            return GT_ENOMEM;
        char *tb = scratch, *tc = scratch + n * k * row;
        for (size_t d = 0; d < k; d++)
            for (size_t i = 0; i < n; i++)
                memcpy(tb + (i * k + d) * row, (const char *)db + (d * n + i) * row, row);
        gemm(dtype, m, k * p, n, a, n, tb, k * p, tc, k * p, 0);
        for (size_t d = 0; d < k; d++)
            for (size_t i = 0; i < m; i++)
                memcpy((char *)dc + (d * m + i) * row, tc + (i * k + d) * row, row);
        accumulate = 1;
    }
    if (da) /* all k directions of dA @ B at once, added to the A @ dB term */
        gemm(dtype, k * m, p, n, da, n, b, p, dc, p, accumulate);
    if (owned)
        gt_free(scratch);
    return status;
}

int gt_dual_blas_threads(int n)
{
    int previous = GT_CBLAS(openblas_get_num_threads)();
    if (n > 0)
        GT_CBLAS(openblas_set_num_threads)(n);
    return previous;
}
