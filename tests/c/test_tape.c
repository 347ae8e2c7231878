/* Tests of the reverse-mode tape (csrc/core/tape.c) alone, from C: results of each node kind, owner
 * handles released exactly once, and allocation failures at every point of recording and sweeping
 * without leaks. Built and run by tests/test_reverse_c.py through tests/_cbuild.py, under
 * ASan/UBSan where available. Prints "N checks, M failed" and exits non-zero on any failure. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "tape.h"

static long released = 0;
#define NEAR(a, b) CHECK(fabs((a) - (b)) <= 1e-12 * (1.0 + fabs(b)))

static void count_release(void *owner) { (void)owner; released++; }
static gt_buf borrow(const void *data, size_t n) { gt_buf b = {data, n, (void *)data}; return b; }
static const gt_buf none = {NULL, 0, NULL};

/* y = sum(sin(x * b)) with x (2,3) and b (3,) broadcast; checks both adjoints. */
static int elementwise_broadcast(int check)
{
    gt_tape *t = NULL;
    int st = gt_tape_new(count_release, &t);
    if (st) return st;
    double x[6] = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6}, b[3] = {1.5, -2.0, 0.5};
    double bb[6], p[6], s[6], total = 0, one = 1.0;
    for (int i = 0; i < 6; i++) { bb[i] = b[i % 3]; p[i] = x[i] * bb[i]; s[i] = sin(p[i]); total += s[i]; }
    long sx[2] = {2, 3}, sb[1] = {3}, ix, ib, ip, is, iy;
    long in[2];
    if ((st = gt_tape_leaf(t, GT_FLOAT64, 2, sx, &ix))) goto out;
    if ((st = gt_tape_leaf(t, GT_FLOAT64, 1, sb, &ib))) goto out;
    in[0] = ix; in[1] = ib;
    if ((st = gt_tape_elementwise(t, gt_op_lookup("multiply"), GT_FLOAT64, 2, sx, in, borrow(x, 6), borrow(bb, 6), borrow(p, 6), &ip))) goto out;
    in[0] = ip; in[1] = -1;
    if ((st = gt_tape_elementwise(t, gt_op_lookup("sin"), GT_FLOAT64, 2, sx, in, borrow(p, 6), none, borrow(s, 6), &is))) goto out;
    long k[2] = {1, 1};
    if ((st = gt_tape_reduce(t, 0, NULL, k, is, 1.0, none, &iy))) goto out;
    if ((st = gt_tape_backward(t, iy, &one))) goto out;
    if (check) {
        const double *gx, *gb;
        CHECK(gt_tape_adjoint(t, ix, (const void **)&gx) == GT_OK && gx);
        CHECK(gt_tape_adjoint(t, ib, (const void **)&gb) == GT_OK && gb);
        double eb[3] = {0, 0, 0};
        for (int i = 0; i < 6; i++) { NEAR(gx[i], cos(p[i]) * bb[i]); eb[i % 3] += cos(p[i]) * x[i]; }
        for (int j = 0; j < 3; j++) NEAR(gb[j], eb[j]);
        (void)total;
    }
out:
    gt_tape_free(t);
    return st;
}

/* gather with repeated indices, a cast, cumprod with a zero and a batched matmul. */
static int structural(int check)
{
    gt_tape *t = NULL;
    int st = gt_tape_new(count_release, &t);
    if (st) return st;
    double one = 1.0;
    ptrdiff_t idx[5] = {0, 0, 3, 1, 0};
    long s4[1] = {4}, s5[1] = {5}, ix, ig, ic, ir, iy, in[2];
    if ((st = gt_tape_leaf(t, GT_FLOAT64, 1, s4, &ix))) goto out;
    long sz = 4;
    if ((st = gt_tape_gather(t, GT_FLOAT64, 1, s5, 1, &ix, &sz, borrow(idx, 5), &ig))) goto out;
    if ((st = gt_tape_cumsum(t, ix, &ic))) goto out;
    long k1[1] = {1};
    if ((st = gt_tape_reduce(t, 0, NULL, k1, ig, 1.0, none, &ir))) goto out;
    long ir2;
    if ((st = gt_tape_reduce(t, 0, NULL, k1, ic, 1.0, none, &ir2))) goto out;
    double coef[2] = {1.0, 1.0};
    in[0] = ir; in[1] = ir2;
    if ((st = gt_tape_linear(t, GT_FLOAT64, 0, NULL, 2, in, coef, &iy))) goto out;
    if ((st = gt_tape_backward(t, iy, &one))) goto out;
    if (check) {
        const double *g;
        CHECK(gt_tape_adjoint(t, ix, (const void **)&g) == GT_OK && g);
        /* gather: counts {3, 1, 0, 1}; sum of the cumulative sum: {4, 3, 2, 1} */
        NEAR(g[0], 3.0 + 4.0);
        NEAR(g[1], 1.0 + 3.0);
        NEAR(g[2], 0.0 + 2.0);
        NEAR(g[3], 1.0 + 1.0);
    }
    /* batched matmul (2 batches of (2,3) @ (3,1)) in float32 */
    {
        float a[12], b[6], c[4], seed[4] = {1, 2, 3, 4};
        for (int i = 0; i < 12; i++) a[i] = 0.1f * (float)(i + 1);
        for (int i = 0; i < 6; i++) b[i] = 1.0f - 0.2f * (float)i;
        long sa[3] = {2, 2, 3}, sb[3] = {2, 3, 1}, sc[3] = {2, 2, 1}, ia, ib, im;
        for (int q = 0; q < 2; q++)
            for (int i = 0; i < 2; i++) {
                float acc = 0;
                for (int j = 0; j < 3; j++) acc += a[q * 6 + i * 3 + j] * b[q * 3 + j];
                c[q * 2 + i] = acc;
            }
        (void)c;
        if ((st = gt_tape_leaf(t, GT_FLOAT32, 3, sa, &ia))) goto out;
        if ((st = gt_tape_leaf(t, GT_FLOAT32, 3, sb, &ib))) goto out;
        in[0] = ia; in[1] = ib;
        if ((st = gt_tape_matmul(t, GT_FLOAT32, 3, sc, in, 2, 2, 3, 1, borrow(a, 12), borrow(b, 6), &im))) goto out;
        if ((st = gt_tape_backward(t, im, seed))) goto out;
        if (check) {
            const float *ga, *gb;
            CHECK(gt_tape_adjoint(t, ia, (const void **)&ga) == GT_OK && ga);
            CHECK(gt_tape_adjoint(t, ib, (const void **)&gb) == GT_OK && gb);
            for (int q = 0; q < 2; q++)
                for (int i = 0; i < 2; i++)
                    for (int j = 0; j < 3; j++)
                        CHECK(fabsf(ga[q * 6 + i * 3 + j] - seed[q * 2 + i] * b[q * 3 + j]) < 1e-6f);
            for (int q = 0; q < 2; q++)
                for (int j = 0; j < 3; j++) {
                    float e = 0;
                    for (int i = 0; i < 2; i++) e += a[q * 6 + i * 3 + j] * seed[q * 2 + i];
                    CHECK(fabsf(gb[q * 3 + j] - e) < 1e-5f);
                }
        }
    }
out:
    gt_tape_free(t);
    return st;
}

static void invalid_arguments(void)
{
    gt_tape *t = NULL;
    CHECK(gt_tape_new(count_release, &t) == GT_OK);
    long s[1] = {3}, id, bad[2] = {7, -1};
    double v[3] = {1, 2, 3};
    CHECK(gt_tape_leaf(t, (gt_dtype)9, 1, s, &id) == GT_EINVAL);
    CHECK(gt_tape_leaf(t, GT_FLOAT64, 1, s, &id) == GT_OK);
    CHECK(gt_tape_elementwise(t, gt_op_lookup("sin"), GT_FLOAT64, 1, s, bad, borrow(v, 3), none, borrow(v, 3), &id) == GT_EINVAL);
    ptrdiff_t idx[2] = {0, 3};
    long two[1] = {2}, zero = 0, sz = 3;
    CHECK(gt_tape_gather(t, GT_FLOAT64, 1, two, 1, &zero, &sz, borrow(idx, 2), &id) == GT_EINVAL);
    CHECK(gt_tape_reshape(t, 1, two, 0, &id) == GT_EINVAL);
    CHECK(gt_tape_backward(t, 5, v) == GT_EINVAL);
    CHECK(gt_tape_cast(t, GT_FLOAT32, 0, &id) == GT_OK);
    gt_tape_free(t);
    gt_tape_free(NULL);
}

/* A tape of 0-d nodes only has no shape storage: casting one must not hand memcpy a NULL
 * source (UBSan; reached from Python by a 0-d float32 input plus np.float64(1)). */
static void zero_d_cast(void)
{
    gt_tape *t = NULL;
    long id = -1, cast = -1;
    CHECK(gt_tape_new(count_release, &t) == GT_OK);
    CHECK(gt_tape_leaf(t, GT_FLOAT32, 0, NULL, &id) == GT_OK);
    CHECK(gt_tape_cast(t, GT_FLOAT64, id, &cast) == GT_OK && cast == id + 1);
    gt_tape_free(t);
}

/* Order 2: f = sum(sin(x * b)), x (2,3), b (3,) broadcast. The recorded sweep's gradient nodes hold
 * the gradient; a sweep from <g_x, v> gives H v: for x, -sin(p) b^2 v; for b, the column sums of
 * (cos(p) - sin(p) x b) v. */
static int order2_elementwise(int check)
{
    gt_tape *t = NULL;
    int st = gt_tape_new(count_release, &t);
    if (st) return st;
    gt_tape_set_order2(t, 1); /* sin's second partial reads its output, which one sweep does not */
    double x[6] = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6}, b[3] = {1.5, -2.0, 0.5};
    double v[6] = {1.0, -0.5, 0.25, 2.0, 0.0, -1.0};
    double bb[6], p[6], s[6], one = 1.0;
    for (int i = 0; i < 6; i++) { bb[i] = b[i % 3]; p[i] = x[i] * bb[i]; s[i] = sin(p[i]); }
    long sx[2] = {2, 3}, sb[1] = {3}, ix, ib, ip, is, iy, in[2], k[2] = {1, 1}, leaves[2], g[2] = {-9, -9}, ih;
    if ((st = gt_tape_leaf(t, GT_FLOAT64, 2, sx, &ix))) goto out;
    if ((st = gt_tape_leaf(t, GT_FLOAT64, 1, sb, &ib))) goto out;
    in[0] = ix; in[1] = ib;
    if ((st = gt_tape_elementwise(t, gt_op_lookup("multiply"), GT_FLOAT64, 2, sx, in, borrow(x, 6), borrow(bb, 6), borrow(p, 6), &ip))) goto out;
    in[0] = ip; in[1] = -1;
    if ((st = gt_tape_elementwise(t, gt_op_lookup("sin"), GT_FLOAT64, 2, sx, in, borrow(p, 6), none, borrow(s, 6), &is))) goto out;
    if ((st = gt_tape_reduce(t, 0, NULL, k, is, 1.0, none, &iy))) goto out;
    leaves[0] = ix; leaves[1] = ib;
    long before = gt_tape_size(t);
    if ((st = gt_tape_backward_graph(t, iy, &one, 2, leaves, g))) {
        CHECK(gt_tape_size(t) == before); /* a failed recording leaves the tape as it was */
        goto out;
    }
    if (check) {
        const double *gx, *gb;
        CHECK(g[0] > iy && g[1] > iy);
        CHECK(gt_tape_value(t, g[0], (const void **)&gx) == GT_OK && gx);
        CHECK(gt_tape_value(t, g[1], (const void **)&gb) == GT_OK && gb);
        double eb[3] = {0, 0, 0};
        for (int i = 0; i < 6; i++) { NEAR(gx[i], cos(p[i]) * bb[i]); eb[i % 3] += cos(p[i]) * x[i]; }
        for (int j = 0; j < 3; j++) NEAR(gb[j], eb[j]);
        const void *none_val;
        CHECK(gt_tape_value(t, ix, &none_val) == GT_OK && none_val == NULL);
    }
    if ((st = gt_tape_reduce(t, 0, NULL, k, g[0], 1.0, borrow(v, 6), &ih))) goto out;
    if ((st = gt_tape_backward(t, ih, &one))) goto out;
    if (check) {
        const double *hx, *hb;
        CHECK(gt_tape_adjoint(t, ix, (const void **)&hx) == GT_OK && hx);
        CHECK(gt_tape_adjoint(t, ib, (const void **)&hb) == GT_OK && hb);
        double eb[3] = {0, 0, 0};
        for (int i = 0; i < 6; i++) {
            NEAR(hx[i], -sin(p[i]) * bb[i] * bb[i] * v[i]);
            eb[i % 3] += (cos(p[i]) - sin(p[i]) * x[i] * bb[i]) * v[i];
        }
        for (int j = 0; j < 3; j++) NEAR(hb[j], eb[j]);
    }
out:
    gt_tape_free(t);
    return st;
}

/* Order 2 where sin's cotangent depends on x: f = sum(sin(x) * x). The recorded sweep keeps sin's
 * partial cos(x) for its own sweep (node.part); g = cos(x) x + sin(x), H v = (2 cos(x) - x sin(x)) v. */
static int order2_kept_partial(int check)
{
    gt_tape *t = NULL;
    int st = gt_tape_new(count_release, &t);
    if (st) return st;
    gt_tape_set_order2(t, 1);
    double x[3] = {0.3, -1.2, 2.0}, v[3] = {1.0, 0.5, -2.0}, s[3], y[3], one = 1.0;
    for (int i = 0; i < 3; i++) { s[i] = sin(x[i]); y[i] = s[i] * x[i]; }
    long sx[1] = {3}, ix, is, im, iy, ih, in[2], k[1] = {1}, g[1] = {-9};
    if ((st = gt_tape_leaf(t, GT_FLOAT64, 1, sx, &ix))) goto out;
    in[0] = ix; in[1] = -1;
    if ((st = gt_tape_elementwise(t, gt_op_lookup("sin"), GT_FLOAT64, 1, sx, in, borrow(x, 3), none, borrow(s, 3), &is))) goto out;
    in[0] = is; in[1] = ix;
    if ((st = gt_tape_elementwise(t, gt_op_lookup("multiply"), GT_FLOAT64, 1, sx, in, borrow(s, 3), borrow(x, 3), borrow(y, 3), &im))) goto out;
    if ((st = gt_tape_reduce(t, 0, NULL, k, im, 1.0, none, &iy))) goto out;
    if ((st = gt_tape_backward_graph(t, iy, &one, 1, &ix, g))) goto out;
    if (check) {
        const double *gx;
        CHECK(gt_tape_value(t, g[0], (const void **)&gx) == GT_OK && gx);
        for (int i = 0; i < 3; i++) NEAR(gx[i], cos(x[i]) * x[i] + s[i]);
    }
    if ((st = gt_tape_reduce(t, 0, NULL, k, g[0], 1.0, borrow(v, 3), &ih))) goto out;
    if ((st = gt_tape_backward(t, ih, &one))) goto out;
    if (check) {
        const double *hx;
        CHECK(gt_tape_adjoint(t, ix, (const void **)&hx) == GT_OK && hx);
        for (int i = 0; i < 3; i++) NEAR(hx[i], (2.0 * cos(x[i]) - x[i] * s[i]) * v[i]);
    }
out:
    gt_tape_free(t);
    return st;
}

/* The recorded sweep through gather (two inputs, one a constant), cumsum, reshape, cast and a
 * float32 matmul gives the same gradient as gt_tape_backward; a third order is refused. */
static int order2_structural(int check)
{
    gt_tape *t = NULL;
    int st = gt_tape_new(count_release, &t);
    if (st) return st;
    float w[6] = {1, 2, 3, 4, 5, 6};
    double seed[4] = {1.0, -2.0, 0.5, 3.0};
    ptrdiff_t idx[6] = {5, 0, 6, 2, 0, 7}; /* 6 and 7 index the constant second input */
    long s6[1] = {6}, s23[2] = {2, 3}, s22[2] = {2, 2}, ia, ig, ic, ir, im, id, in[2];
    long sizes[2] = {6, 2}, leaf[1], g[1] = {-9};
    if ((st = gt_tape_leaf(t, GT_FLOAT32, 1, s6, &ia))) goto out;
    in[0] = ia; in[1] = -1;
    if ((st = gt_tape_gather(t, GT_FLOAT32, 1, s6, 2, in, sizes, borrow(idx, 6), &ig))) goto out;
    if ((st = gt_tape_cumsum(t, ig, &ic))) goto out;
    if ((st = gt_tape_reshape(t, 2, s23, ic, &ir))) goto out;
    in[0] = ir; in[1] = -1; /* a constant right operand: only its values are saved */
    if ((st = gt_tape_matmul(t, GT_FLOAT32, 2, s22, in, 1, 2, 3, 2, none, borrow(w, 6), &im))) goto out;
    if ((st = gt_tape_cast(t, GT_FLOAT64, im, &id))) goto out;
    leaf[0] = ia;
    if ((st = gt_tape_backward_graph(t, id, seed, 1, leaf, g))) goto out;
    if ((st = gt_tape_backward(t, id, seed))) goto out;
    if (check) {
        const float *gv, *adj;
        CHECK(gt_tape_value(t, g[0], (const void **)&gv) == GT_OK && gv);
        CHECK(gt_tape_adjoint(t, ia, (const void **)&adj) == GT_OK && adj);
        for (int i = 0; i < 6; i++)
            CHECK(fabsf(gv[i] - adj[i]) <= 1e-6f * (1.0f + fabsf(adj[i])));
        /* the recorded gradient's nodes are of a recorded sweep: a sweep through them (third
         * order) is refused, and the tape is left as it was */
        long ip = g[0], before = gt_tape_size(t);
        float fseed[6] = {1, 1, 1, 1, 1, 1};
        CHECK(gt_tape_backward_graph(t, ip, fseed, 1, leaf, g) == GT_EUNSUPPORTED);
        CHECK(gt_tape_size(t) == before);
        CHECK(gt_tape_backward_graph(t, ip, fseed, 1, (long[]){99}, g) == GT_EINVAL);
        CHECK(gt_tape_backward_graph(t, -1, fseed, 1, leaf, g) == GT_EINVAL);
    }
out:
    gt_tape_free(t);
    return st;
}

/* Without gt_tape_set_order2 a node keeps only what one sweep reads: the first-order sweep is
 * unchanged, and recording the sweep (which needs sin's output) is refused, the tape as it was. */
static void trimmed_operands(void)
{
    gt_tape *t = NULL;
    if (gt_tape_new(count_release, &t) != GT_OK)
        return;
    double x[3] = {0.1, 0.2, 0.3}, s[3], one = 1.0;
    for (int i = 0; i < 3; i++)
        s[i] = sin(x[i]);
    long sx[1] = {3}, k[1] = {1}, ix, is, iy, in[2] = {0, -1}, g = -9;
    int before = released;
    CHECK(gt_tape_leaf(t, GT_FLOAT64, 1, sx, &ix) == GT_OK);
    in[0] = ix;
    CHECK(gt_tape_elementwise(t, gt_op_lookup("sin"), GT_FLOAT64, 1, sx, in, borrow(x, 3), none,
                              borrow(s, 3), &is) == GT_OK);
    CHECK(released == before + 1); /* sin's output handle, released at once */
    CHECK(gt_tape_reduce(t, 0, NULL, k, is, 1.0, none, &iy) == GT_OK);
    long size = gt_tape_size(t);
    CHECK(gt_tape_backward_graph(t, iy, &one, 1, &ix, &g) == GT_EUNSUPPORTED);
    CHECK(gt_tape_size(t) == size);
    CHECK(gt_tape_backward(t, iy, &one) == GT_OK);
    const double *gx = NULL;
    CHECK(gt_tape_adjoint(t, ix, (const void **)&gx) == GT_OK && gx);
    for (int i = 0; gx && i < 3; i++)
        NEAR(gx[i], cos(x[i]));
    gt_tape_free(t);
    CHECK(released == before + 2);
}

int main(void)
{
    trimmed_operands();
    zero_d_cast();
    CHECK(elementwise_broadcast(1) == GT_OK);
    CHECK(structural(1) == GT_OK);
    CHECK(order2_elementwise(1) == GT_OK);
    CHECK(order2_structural(1) == GT_OK);
    CHECK(order2_kept_partial(1) == GT_OK);
    released = 0; /* the count below is of the two first-order programs */
    CHECK(elementwise_broadcast(1) == GT_OK);
    CHECK(structural(1) == GT_OK);
    invalid_arguments();
    /* every handle a tape took is released exactly once: 3 + 2 in elementwise_broadcast (the
     * empty b of sin has none), 1 + 2 in structural; rejected calls leave them with the caller */
    CHECK(released == 5 + 3);
    /* allocation failures at every point: an error or success, never a leak or a crash */
    for (long n = 1; n < 160; n++) {
        gt_alloc_fail_after(n);
        int a = elementwise_broadcast(0), b = structural(0);
        gt_alloc_fail_after(n);
        int c = order2_elementwise(0);
        gt_alloc_fail_after(n);
        int d = order2_structural(0);
        gt_alloc_fail_after(n);
        int e = order2_kept_partial(0);
        gt_alloc_fail_after(0);
        CHECK(e == GT_OK || e == GT_ENOMEM);
        CHECK(a == GT_OK || a == GT_ENOMEM);
        CHECK(b == GT_OK || b == GT_ENOMEM);
        CHECK(c == GT_OK || c == GT_ENOMEM);
        CHECK(d == GT_OK || d == GT_ENOMEM);
    }
    CHECK(gt_alloc_live() == 0);
    return check_summary();
}
