/* dual.c: forward-mode kernels (see dual.h). */
#include "dual.h"
#include "gt_blas.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <threads.h>

/* Elements per block: the partials of one block (5 double buffers, 40 KiB) stay in L1/L2 while every
 * tangent direction is combined with them. */
#define GT_DUAL_BLOCK 1024
/* Elements per block of the contiguous kernel on large arrays: 2 partial buffers of 128 KiB stay in
 * L2 while each direction streams through 128 KiB runs of its tangents. */
#define GT_DUAL_BIG_BLOCK 16384

/* A zero tangent contributes zero even where the partial is infinite or NaN (sqrt'(0) = inf):
 * with one-hot seeding every other direction has a zero tangent at that element, and 0 * inf
 * must not turn their derivatives into NaN (ForwardDiff's "NaN-safe" rule). The guarded form,
 * gt_chain (ops.h, the rule the reverse sweep applies too), runs on blocks whose partials are not
 * all finite; the others take the plain, vectorized loop (the select costs 1.5x on large binary
 * ops) and are redone with gt_chain only when their result is not finite, which is where a zero
 * partial can have met an infinite or NaN tangent. Both engines then agree on 0 * inf = 0. */
#define GT_TERM(d, t) gt_chain_f64(d, t)
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

/* The sum of v[i] * 0 over a block: 0 when every v[i] is finite, NaN otherwise. Summed in 8
 * independent lanes: one running sum was a chain of dependent additions, 4 cycles an element,
 * which cost a one-tangent JVP over 10^6 elements more than its multiplications did. */
#define GT_DEFINE_PROBE(NAME, T)                                                                    \
    static T NAME(size_t n, const T *v)                                                            \
    {                                                                                              \
        T s[8] = {0, 0, 0, 0, 0, 0, 0, 0};                                                         \
        size_t i = 0;                                                                              \
        for (; i + 8 <= n; i += 8)                                                                 \
            for (int j = 0; j < 8; j++)                                                            \
                s[j] += v[i + j] * (T)0;                                                           \
        for (; i < n; i++)                                                                         \
            s[0] += v[i] * (T)0;                                                                   \
        return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));                  \
    }
GT_DEFINE_PROBE(nonfinite_probe_f64, double)
GT_DEFINE_PROBE(nonfinite_probe_f32, float)

/* One block through the plain loop when `safe` is 0 and its result is finite, else through
 * gt_chain (see above). */
#define GT_DEFINE_COMBINE_BLOCK(NAME, T)                                                            \
    static void NAME(int safe, size_t n, T *out, const char *at, ptrdiff_t as, const double *da,   \
                     const char *bt, ptrdiff_t bs, const double *db)                               \
    {                                                                                              \
        if (!safe) {                                                                               \
            NAME##_plain(n, out, at, as, da, bt, bs, db);                                          \
            if (nonfinite_probe_##NAME(n, out) == 0) /* NaN when some out[i] is not finite */     \
                return;                                                                            \
        }                                                                                          \
        NAME##_safe(n, out, at, as, da, bt, bs, db);                                               \
    }
#define nonfinite_probe_combine_f64 nonfinite_probe_f64
#define nonfinite_probe_combine_f32 nonfinite_probe_f32
GT_DEFINE_COMBINE_BLOCK(combine_f64, double)
GT_DEFINE_COMBINE_BLOCK(combine_f32, float)

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
    /* x * 0 is NaN exactly for infinite or NaN x: one vectorizable pass instead of a branch each */
    return (da ? nonfinite_probe_f64(n, da) : 0.0) + (db ? nonfinite_probe_f64(n, db) : 0.0) == 0.0;
}

/* Per-thread scratch for gt_dual_matmul and the large-array elementwise kernel, kept between calls: writing into freshly mapped pages
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

/* How one argument is laid out against a C-contiguous output of n elements in nd dimensions. */
enum { LAYOUT_OTHER, LAYOUT_CONTIG, LAYOUT_SCALAR };

/* LAYOUT_CONTIG when the nd strides step through `shape` in C order (size-1 dimensions may have
 * any stride), LAYOUT_SCALAR when every stride of a dimension larger than 1 is 0 (one element
 * broadcast), LAYOUT_OTHER otherwise. */
static int layout(int nd, const size_t *shape, const ptrdiff_t *strides, size_t es)
{
    int contig = 1, scalar = 1;
    ptrdiff_t expect = (ptrdiff_t)es;
    for (int d = nd - 1; d >= 0; d--) {
        if (shape[d] == 1)
            continue;
        if (strides[d] != expect)
            contig = 0;
        if (strides[d] != 0)
            scalar = 0;
        expect *= (ptrdiff_t)shape[d];
    }
    return scalar ? LAYOUT_SCALAR : contig ? LAYOUT_CONTIG : LAYOUT_OTHER;
}

/* 1 when a tangent (k directions of n elements) is one C-contiguous (k, n) block over a value of
 * layout lv (a broadcast value cannot have a contiguous tangent of n > 1 elements). */
static int tangent_contig(int lv, int nd, const size_t *shape, size_t n, size_t k,
                          const ptrdiff_t *strides, size_t es)
{
    if (k > 1 && strides[0] != (ptrdiff_t)(n * es))
        return 0;
    return n == 1 || (lv == LAYOUT_CONTIG && layout(nd, shape, strides + 1, es) == LAYOUT_CONTIG);
}

/* The linear ops whose partials are the constants 1 or -1, as a sign per argument: the tangent
 * is a plain sum or difference, computed in one streaming pass over k * n elements (no partials,
 * no multiplications, bit-identical to 1 * x + (-1) * z). Returns 0 for other ops. */
static int linear_signs(const gt_op *op, int *sa, int *sb)
{
    switch (op->id) {
    case GT_OP_ADD: *sa = 1; *sb = 1; return 1;
    case GT_OP_SUBTRACT: *sa = 1; *sb = -1; return 1;
    case GT_OP_POSITIVE: *sa = 1; *sb = 0; return 1;
    case GT_OP_NEGATIVE: *sa = -1; *sb = 0; return 1;
    default: return 0;
    }
}

#define GT_DEFINE_LINEAR(NAME, T)                                                                   \
    static void NAME(size_t len, T *out, const T *x, int sa, const T *z, int sb)                   \
    {                                                                                              \
        if (x && z) {                                                                              \
            if (sb > 0)                                                                            \
                for (size_t i = 0; i < len; i++)                                                   \
                    out[i] = x[i] + z[i];                                                          \
            else                                                                                   \
                for (size_t i = 0; i < len; i++)                                                   \
                    out[i] = x[i] - z[i];                                                          \
        } else if (x || z) {                                                                       \
            const T *t = x ? x : z;                                                                \
            if ((x ? sa : sb) > 0)                                                                 \
                memcpy(out, t, len * sizeof(T));                                                   \
            else                                                                                   \
                for (size_t i = 0; i < len; i++)                                                   \
                    out[i] = -t[i];                                                                \
        } else {                                                                                   \
            memset(out, 0, len * sizeof(T));                                                       \
        }                                                                                          \
    }

GT_DEFINE_LINEAR(linear_f64, double)
GT_DEFINE_LINEAR(linear_f32, float)

/* The same-shape case: every value C-contiguous (or one broadcast element) and every tangent one
 * contiguous (k, n) block, as NumPy gives for operands of equal shape or an array and a scalar.
 * Values are read in place (no gathering for float64), partials are computed once per block and
 * combined with each direction, and add/subtract/negative/positive skip the partials. Returns
 * GT_OK, or -1 when the layout does not qualify (the caller takes the strided path). */
static int elementwise_contiguous(const gt_op *op, gt_dtype dtype, int nd, const size_t *shape,
                                  size_t n, size_t k, const gt_dual_arg *a, const gt_dual_arg *b,
                                  const void *y, void *yt)
{
    size_t es = gt_dtype_size(dtype);
    int la = nd ? layout(nd, shape, a->value_strides, es) : LAYOUT_CONTIG;
    int lb = !b ? LAYOUT_CONTIG : nd ? layout(nd, shape, b->value_strides, es) : LAYOUT_CONTIG;
    const char *at = a->tangent, *bt = b ? b->tangent : NULL;
    if (la == LAYOUT_OTHER || lb == LAYOUT_OTHER)
        return -1;
    if (at && !tangent_contig(la, nd, shape, n, k, a->tangent_strides, es))
        return -1;
    if (bt && !tangent_contig(lb, nd, shape, n, k, b->tangent_strides, es))
        return -1;
    int sa, sb;
    if (linear_signs(op, &sa, &sb)) {
        if (dtype == GT_FLOAT64)
            linear_f64(k * n, yt, (const double *)at, sa, (const double *)bt, sb);
        else
            linear_f32(k * n, yt, (const float *)at, sa, (const float *)bt, sb);
        return GT_OK;
    }
    /* Small arrays use stack buffers. Large ones use blocks of GT_DUAL_BIG_BLOCK from the thread's
     * scratch: with 1024-element blocks each direction was read and written in 8 KiB pieces, too
     * short for the hardware prefetcher across 3k streams (multiply ran 1.4x slower) */
    double stack[5 * GT_DUAL_BLOCK];
    double *buf = stack;
    size_t block = GT_DUAL_BLOCK;
    int owned = 0;
    if (n > GT_DUAL_BLOCK) {
        block = GT_DUAL_BIG_BLOCK;
        buf = (double *)scratch_get(5 * block * sizeof(double), &owned);
        if (!buf)
            return GT_ENOMEM;
    }
    double *av = buf, *bv = buf + block, *yv = buf + 2 * block, *da = buf + 3 * block, *db = buf + 4 * block;
    size_t fill = n < block ? n : block;
    int status = GT_OK;
    if (la == LAYOUT_SCALAR)
        gather(dtype, fill, a->value, 0, av);
    if (b && lb == LAYOUT_SCALAR)
        gather(dtype, fill, b->value, 0, bv);
    for (size_t j0 = 0; j0 < n; j0 += block) {
        size_t bl = n - j0 < block ? n - j0 : block;
        const double *ap = av, *bp = b ? bv : NULL, *yp = yv;
        if (dtype == GT_FLOAT64) { /* read float64 values where they are */
            if (la == LAYOUT_CONTIG)
                ap = (const double *)a->value + j0;
            if (b && lb == LAYOUT_CONTIG)
                bp = (const double *)b->value + j0;
            yp = (const double *)y + j0;
        } else {
            if (la == LAYOUT_CONTIG)
                gather(dtype, bl, a->value + j0 * es, (ptrdiff_t)es, av);
            if (b && lb == LAYOUT_CONTIG)
                gather(dtype, bl, b->value + j0 * es, (ptrdiff_t)es, bv);
            gather(dtype, bl, (const char *)y + j0 * es, (ptrdiff_t)es, yv);
        }
        status = gt_op_partials_f64(op, bl, ap, bp, yp, at ? da : NULL, bt ? db : NULL);
        if (status)
            goto cleanup;
        int safe = !all_finite(bl, at ? da : NULL, bt ? db : NULL);
        /* a small array (the whole of it in this one block) combines `reps` directions per call:
         * their tangents are adjacent, so the partials are tiled reps times and the k directions
         * run as k / reps loops of reps * n elements instead of k short ones */
        size_t reps = 1;
        if (n == bl && 2 * n <= block && k > 1) {
            reps = block / n < k ? block / n : k;
            for (size_t have = 1; have < reps; have *= 2) { /* doubling: log2(reps) copies */
                size_t more = (reps - have < have ? reps - have : have) * n;
                if (at)
                    memcpy(da + have * n, da, more * sizeof(double));
                if (bt)
                    memcpy(db + have * n, db, more * sizeof(double));
            }
        }
        for (size_t d = 0; d < k; d += reps) {
            size_t len = (k - d < reps ? k - d : reps) * bl;
            const char *x = at ? at + (d * n + j0) * es : NULL;
            const char *z = bt ? bt + (d * n + j0) * es : NULL;
            ptrdiff_t s = (ptrdiff_t)es;
            if (dtype == GT_FLOAT64) {
                double *out = (double *)yt + d * n + j0;
                combine_f64(safe, len, out, x, s, da, z, s, db);
            } else {
                float *out = (float *)yt + d * n + j0;
                combine_f32(safe, len, out, x, s, da, z, s, db);
            }
        }
    }
cleanup:
    if (owned)
        gt_free(buf);
    return status;
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
    int fast = elementwise_contiguous(op, dtype, nd, shape, n, k, a, b, y, yt);
    if (fast >= 0)
        return fast;
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
                    combine_f64(safe, bl, out, ap, ats, da, bp, bts, db);
                } else {
                    float *out = (float *)yt + d * n + flat;
                    combine_f32(safe, bl, out, ap, ats, da, bp, bts, db);
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
        GT_BLAS(cblas_dgemm)(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)rows, (blasint)cols,
                              (blasint)inner, 1.0, a, (blasint)lda, b, (blasint)ldb,
                              accumulate ? 1.0 : 0.0, c, (blasint)ldc);
    else
        GT_BLAS(cblas_sgemm)(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)rows, (blasint)cols,
                              (blasint)inner, 1.0f, a, (blasint)lda, b, (blasint)ldb,
                              accumulate ? 1.0f : 0.0f, c, (blasint)ldc);
}

static int fits_blas(size_t x) { return x <= (size_t)INT_MAX; }

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
    int previous = GT_BLAS(openblas_get_num_threads)();
    if (n > 0)
        GT_BLAS(openblas_set_num_threads)(n);
    return previous;
}
