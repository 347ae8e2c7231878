/* Tests of the forward-mode kernels (csrc/core/dual.c) alone, from C: results against naive loops,
 * argument checks, allocation failures, and the per-thread matmul scratch (no leaks, including at
 * thread exit). Built and run by tests/test_forward_c.py through tests/_cbuild.py, under ASan/UBSan
 * where available. Prints "N checks, M failed" and exits non-zero on any failure. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <threads.h>

#include "dual.h"
#include "ops.h"

#include "check.h"


static double rnd(void) { return (double)rand() / RAND_MAX + 0.5; }

/* broadcasting (3, 4) with (4,) and a strided, transposed tangent, against a naive loop */
static void test_elementwise(void)
{
    const gt_op *op = gt_op_lookup("multiply");
    enum { K = 3, R = 3, C = 4 };
    double a[R * C], b[C], y[R * C], at[C * R * K], bt[K * C], yt[K * R * C];
    for (int i = 0; i < R * C; i++) a[i] = rnd();
    for (int i = 0; i < C; i++) b[i] = rnd();
    for (int i = 0; i < K * R * C; i++) at[i] = rnd() - 1.0;
    for (int i = 0; i < K * C; i++) bt[i] = rnd() - 1.0;
    for (int i = 0; i < R; i++) for (int j = 0; j < C; j++) y[i * C + j] = a[i * C + j] * b[j];
    size_t shape[2] = {R, C};
    ptrdiff_t as[2] = {C * 8, 8}, bs[2] = {0, 8};
    /* at stored as (C, R, K): element (d, i, j) at j*R*K + i*K + d */
    ptrdiff_t ats[3] = {8, K * 8, R * K * 8}, bts[3] = {C * 8, 0, 8};
    gt_dual_arg A = {(const char *)a, as, (const char *)at, ats};
    gt_dual_arg B = {(const char *)b, bs, (const char *)bt, bts};
    CHECK(gt_dual_elementwise(op, GT_FLOAT64, 2, shape, K, &A, &B, y, yt) == GT_OK);
    double worst = 0.0;
    for (int d = 0; d < K; d++)
        for (int i = 0; i < R; i++)
            for (int j = 0; j < C; j++) {
                double want = b[j] * at[j * R * K + i * K + d] + a[i * C + j] * bt[d * C + j];
                worst = fmax(worst, fabs(yt[(d * R + i) * C + j] - want));
            }
    CHECK(worst < 1e-14);
    /* argument checks */
    CHECK(gt_dual_elementwise(NULL, GT_FLOAT64, 2, shape, K, &A, &B, y, yt) == GT_EINVAL);
    CHECK(gt_dual_elementwise(op, GT_FLOAT64, 2, shape, K, &A, NULL, y, yt) == GT_EINVAL);
    CHECK(gt_dual_elementwise(op, (gt_dtype)7, 2, shape, K, &A, &B, y, yt) == GT_EINVAL);
    CHECK(gt_dual_elementwise(gt_op_lookup("sin"), GT_FLOAT64, 2, shape, K, &A, &B, y, yt) == GT_EINVAL);
    /* NaN-safe: sqrt'(0) = inf times a zero tangent is zero */
    double x0[2] = {0.0, 4.0}, y0[2] = {0.0, 2.0}, t0[2] = {0.0, 1.0}, out[2];
    size_t n2 = 2;
    ptrdiff_t s1[1] = {8}, st[2] = {16, 8};
    gt_dual_arg X = {(const char *)x0, s1, (const char *)t0, st};
    CHECK(gt_dual_elementwise(gt_op_lookup("sqrt"), GT_FLOAT64, 1, &n2, 1, &X, NULL, y0, out) == GT_OK);
    CHECK(out[0] == 0.0 && out[1] == 0.25);
}

/* the same-shape kernel: large (scratch blocks) and small (tiled partials) arrays, an array with
 * a scalar, add as a plain sum; exact against the naive formula; allocation failure reported */
static void test_elementwise_contiguous(void)
{
    enum { K = 3 };
    size_t sizes[3] = {5, 3000, 40000};
    for (int si = 0; si < 3; si++) {
        size_t n = sizes[si];
        double *a = malloc(n * 8), *b = malloc(n * 8), *y = malloc(n * 8), *at = malloc(K * n * 8),
               *bt = malloc(K * n * 8), *yt = malloc(K * n * 8);
        for (size_t i = 0; i < n; i++) { a[i] = rnd(); b[i] = rnd(); y[i] = a[i] * b[i]; }
        for (size_t i = 0; i < K * n; i++) { at[i] = rnd() - 1.0; bt[i] = rnd() - 1.0; }
        ptrdiff_t vs[1] = {8}, ts[2] = {(ptrdiff_t)(n * 8), 8}, zero[1] = {0};
        gt_dual_arg A = {(const char *)a, vs, (const char *)at, ts};
        gt_dual_arg B = {(const char *)b, vs, (const char *)bt, ts};
        int exact = 1;
        CHECK(gt_dual_elementwise(gt_op_lookup("multiply"), GT_FLOAT64, 1, &n, K, &A, &B, y, yt) == GT_OK);
        for (size_t d = 0; d < K; d++)
            for (size_t i = 0; i < n; i++)
                exact &= yt[d * n + i] == b[i] * at[d * n + i] + a[i] * bt[d * n + i];
        CHECK(exact);
        CHECK(gt_dual_elementwise(gt_op_lookup("subtract"), GT_FLOAT64, 1, &n, K, &A, &B, y, yt) == GT_OK);
        for (size_t i = 0; i < K * n; i++)
            exact &= yt[i] == at[i] - bt[i];
        CHECK(exact);
        double c = 2.5;
        gt_dual_arg S = {(const char *)&c, zero, NULL, NULL};
        for (size_t i = 0; i < n; i++) y[i] = a[i] / c;
        CHECK(gt_dual_elementwise(gt_op_lookup("divide"), GT_FLOAT64, 1, &n, K, &A, &S, y, yt) == GT_OK);
        for (size_t i = 0; i < K * n; i++)
            exact &= yt[i] == (1.0 / c) * at[i];
        CHECK(exact);
        if (n > 1024) { /* the block buffers come from the scratch: a failed allocation is reported */
            gt_dual_scratch_release();
            long live = gt_alloc_live();
            gt_alloc_fail_after(1);
            CHECK(gt_dual_elementwise(gt_op_lookup("multiply"), GT_FLOAT64, 1, &n, K, &A, &B, y, yt) == GT_ENOMEM);
            gt_alloc_fail_after(0);
            CHECK(gt_alloc_live() == live);
        }
        free(a); free(b); free(y); free(at); free(bt); free(yt);
    }
    gt_dual_scratch_release();
}

static void naive(size_t m, size_t n, size_t p, const double *a, const double *b, double *c)
{
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < p; j++) {
            double s = 0.0;
            for (size_t l = 0; l < n; l++) s += a[i * n + l] * b[l * p + j];
            c[i * p + j] = s;
        }
}

static int test_matmul_once(size_t m, size_t n, size_t p, size_t k)
{
    double *a = malloc(m * n * 8), *b = malloc(n * p * 8), *da = malloc(k * m * n * 8),
           *db = malloc(k * n * p * 8), *c = malloc(m * p * 8 + 8), *dc = malloc(k * m * p * 8 + 8),
           *t1 = malloc(m * p * 8 + 8), *t2 = malloc(m * p * 8 + 8);
    for (size_t i = 0; i < m * n; i++) a[i] = rnd();
    for (size_t i = 0; i < n * p; i++) b[i] = rnd();
    for (size_t i = 0; i < k * m * n; i++) da[i] = rnd();
    for (size_t i = 0; i < k * n * p; i++) db[i] = rnd();
    int ok = gt_dual_matmul(GT_FLOAT64, m, n, p, k, a, da, b, db, c, dc) == GT_OK;
    double worst = 0.0;
    naive(m, n, p, a, b, t1);
    for (size_t i = 0; i < m * p; i++) worst = fmax(worst, fabs(c[i] - t1[i]));
    for (size_t d = 0; d < k; d++) {
        naive(m, n, p, da + d * m * n, b, t1);
        naive(m, n, p, a, db + d * n * p, t2);
        for (size_t i = 0; i < m * p; i++) worst = fmax(worst, fabs(dc[d * m * p + i] - t1[i] - t2[i]));
    }
    free(a); free(b); free(da); free(db); free(c); free(dc); free(t1); free(t2);
    return ok && worst < 1e-10;
}

static int thread_main(void *arg)
{
    (void)arg;
    int ok = test_matmul_once(7, 5, 3, 4) && test_matmul_once(3, 9, 2, 2);
    return ok ? 0 : 1; /* the scratch is freed at thread exit (LeakSanitizer checks) */
}

static void test_matmul(void)
{
    CHECK(test_matmul_once(4, 3, 5, 2));
    CHECK(test_matmul_once(1, 7, 1, 5));
    CHECK(test_matmul_once(6, 0, 3, 2)); /* empty inner dimension: zeros */
    CHECK(test_matmul_once(0, 3, 3, 2));
    double a[4] = {1, 2, 3, 4}, dc[8];
    CHECK(gt_dual_matmul(GT_FLOAT64, 2, 2, 2, 2, NULL, a, a, a, NULL, dc) == GT_EINVAL);
    CHECK(gt_dual_matmul((gt_dtype)9, 2, 2, 2, 2, a, a, a, a, NULL, dc) == GT_EINVAL);
    /* allocation failure of the scratch: reported, nothing leaked */
    gt_dual_scratch_release();
    long live = gt_alloc_live();
    double da[8] = {0}, db[8] = {0};
    gt_alloc_fail_after(1);
    CHECK(gt_dual_matmul(GT_FLOAT64, 2, 2, 2, 2, a, da, a, db, NULL, dc) == GT_ENOMEM);
    gt_alloc_fail_after(0);
    CHECK(gt_alloc_live() == live);
    CHECK(gt_dual_matmul(GT_FLOAT64, 2, 2, 2, 2, a, da, a, db, NULL, dc) == GT_OK);
    gt_dual_scratch_release();
    CHECK(gt_alloc_live() == live);
    thrd_t threads[4];
    for (int i = 0; i < 4; i++) CHECK(thrd_create(&threads[i], thread_main, NULL) == thrd_success);
    for (int i = 0; i < 4; i++) { int res = 1; thrd_join(threads[i], &res); CHECK(res == 0); }
}

int main(void)
{
    srand(7);
    test_elementwise();
    test_elementwise_contiguous();
    test_matmul();
    return check_summary();
}
