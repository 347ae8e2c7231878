/* Tests of the C-kernel runner (csrc/core/ckernel.c) alone, from C: stage results against closed
 * forms, threads, the forked variant, every injected allocation failure (no leak, a clean
 * GT_ENOMEM). Built and run by tests/test_ckernel_c.py through tests/_cbuild.py, under ASan/UBSan
 * where available. Prints "N checks, M failed" and exits non-zero on any failure. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <gradtest.h>
#include "ckernel.h"

#include "check.h"


/* f = sum x_i^3 / 3 ; grad = x^2 */
static int cube(void *ctx, size_t n, const double *x, double *f)
{ (void)ctx; double a = 0; for (size_t i = 0; i < n; i++) a += x[i] * x[i] * x[i] / 3.0; *f = a; return 0; }
static int cube_grad(void *ctx, size_t n, const double *x, double *g)
{ (void)ctx; for (size_t i = 0; i < n; i++) g[i] = x[i] * x[i]; return 0; }
/* y_i = x_i^2 (m == n) */
static int sq(void *ctx, size_t n, const double *x, size_t m, double *y)
{ (void)ctx; if (m != n) return 1; for (size_t i = 0; i < n; i++) y[i] = x[i] * x[i]; return 0; }
static int sq_vjp(void *ctx, size_t n, const double *x, size_t m, const double *yb, double *xb)
{ (void)ctx; (void)m; for (size_t i = 0; i < n; i++) xb[i] = 2 * x[i] * yb[i]; return 0; }
static int sq_jvp(void *ctx, size_t n, const double *x, const double *xd, size_t m, double *yd)
{ (void)ctx; (void)m; for (size_t i = 0; i < n; i++) yd[i] = 2 * x[i] * xd[i]; return 0; }
static int fail_at_2(void *ctx, size_t n, const double *x, const double *xd, size_t m, double *yd)
{ (void)ctx; (void)x; (void)m; for (size_t i = 0; i < n; i++) { if (i == 2 && xd[i] == 1.0) return 4; yd[i] = 0; } return 0; }
static int cube32(void *ctx, size_t n, const float *x, float *f)
{ (void)ctx; float a = 0; for (size_t i = 0; i < n; i++) a += x[i] * x[i] * x[i] / 3.0f; *f = a; return 0; }

#define N 37

int main(void)
{
    double x[N], u[N], out[N], err[N];
    float x32[N];
    for (size_t i = 0; i < N; i++) { x[i] = 0.5 + 0.1 * (double)i; x32[i] = (float)x[i]; u[i] = 1.0 - 0.05 * (double)i; }
    gt_fd_options opts = {.method = GT_FD_CENTRAL, .richardson = 1};
    gt_ck_result res;
    gt_guard_result gres;
    gt_guard_options gopts = {30.0, NULL, NULL};

    gt_ck_kernel k = {GT_FLOAT64, N, 0, (gt_ck_fnptr)cube, (gt_ck_fnptr)cube_grad, NULL, NULL, NULL};
    for (int threads = 1; threads <= 5; threads += 2) {
        CHECK(gt_ck_stage_run(&k, GT_CK_FUNCTION, x, NULL, &opts, NULL, threads, out, err, &res) == GT_OK);
        for (size_t i = 0; i < N; i++)
            CHECK(fabs(out[i] - x[i] * x[i]) < 1e-8 && err[i] > 0);
        CHECK(res.evaluations >= 1 + 6 * N); /* adaptive: at least three steps a component */
        CHECK(res.nonfinite == 0);
    }
    CHECK(gt_ck_stage_run(&k, GT_CK_GRADIENT, x, NULL, &opts, NULL, 1, out, NULL, &res) == GT_OK);
    CHECK(out[3] == x[3] * x[3]);
    CHECK(gt_ck_stage_run(&k, GT_CK_VJP, x, NULL, &opts, NULL, 1, out, NULL, &res) == GT_EINVAL);
    CHECK(gt_ck_stage_guarded(&k, GT_CK_FUNCTION, x, NULL, &opts, NULL, 2, out, err, &res, &gopts, &gres) == GT_OK);
    CHECK(fabs(out[5] - x[5] * x[5]) < 1e-8 && res.evaluations >= 1 + 6 * N);

    gt_ck_kernel v = {GT_FLOAT64, N, N, (gt_ck_fnptr)sq, NULL, (gt_ck_fnptr)sq_vjp, (gt_ck_fnptr)sq_jvp, NULL};
    CHECK(gt_ck_stage_run(&v, GT_CK_FUNCTION, x, u, &opts, NULL, 3, out, err, &res) == GT_OK);
    for (size_t i = 0; i < N; i++)
        CHECK(fabs(out[i] - 2 * x[i] * u[i]) < 1e-8);
    CHECK(gt_ck_stage_run(&v, GT_CK_VJP, x, u, &opts, NULL, 1, out, NULL, &res) == GT_OK);
    CHECK(out[7] == 2 * x[7] * u[7]);
    CHECK(gt_ck_stage_run(&v, GT_CK_JVP, x, u, &opts, NULL, 4, out, NULL, &res) == GT_OK);
    CHECK(out[9] == 2 * x[9] * u[9] && res.evaluations == N);
    CHECK(gt_ck_stage_run(&v, GT_CK_FUNCTION, x, NULL, &opts, NULL, 1, out, err, &res) == GT_EINVAL);

    gt_ck_kernel bad = v;
    bad.jvp = (gt_ck_fnptr)fail_at_2;
    for (int threads = 1; threads <= 4; threads += 3) {
        CHECK(gt_ck_stage_run(&bad, GT_CK_JVP, x, u, &opts, NULL, threads, out, NULL, &res) == GT_ECALLBACK);
        CHECK(res.kernel_status == 4);
    }
    CHECK(gt_ck_stage_guarded(&bad, GT_CK_JVP, x, u, &opts, NULL, 2, out, NULL, &res, &gopts, &gres) == GT_ECALLBACK);
    CHECK(res.kernel_status == 4);

    gt_ck_kernel k32 = {GT_FLOAT32, N, 0, (gt_ck_fnptr)cube32, NULL, NULL, NULL, NULL};
    CHECK(gt_ck_stage_run(&k32, GT_CK_FUNCTION, x32, NULL, &opts, NULL, 2, out, err, &res) == GT_OK);
    CHECK(fabs(out[1] - x[1] * x[1]) < 1e-2);
    double y[1];
    int ks = -1;
    CHECK(gt_ck_evaluate(&k32, x32, y, &ks, NULL) == GT_OK && ks == 0 && y[0] > 0);

    /* invalid arguments */
    gt_ck_kernel k0 = k;
    k0.n = 0;
    CHECK(gt_ck_stage_run(&k0, GT_CK_FUNCTION, x, NULL, &opts, NULL, 1, out, err, &res) == GT_EINVAL);
    gt_ck_kernel kg = v;
    kg.gradient = (gt_ck_fnptr)cube_grad; /* a gradient for a vector function */
    CHECK(gt_ck_stage_run(&kg, GT_CK_VJP, x, u, &opts, NULL, 1, out, NULL, &res) == GT_EINVAL);
    CHECK(gt_ck_stage_run(&k, GT_CK_FUNCTION, NULL, NULL, &opts, NULL, 1, out, err, &res) == GT_EINVAL);
    CHECK(strcmp(gt_ck_stage_name(GT_CK_JVP), "jvp") == 0);

    /* every allocation of every stage fails once: clean GT_ENOMEM, nothing leaked */
    const gt_ck_kernel *ks_[] = {&k, &k, &v, &v, &v};
    const gt_ck_stage st[] = {GT_CK_FUNCTION, GT_CK_GRADIENT, GT_CK_FUNCTION, GT_CK_VJP, GT_CK_JVP};
    for (size_t s = 0; s < 5; s++) {
        for (long nth = 1; nth < 40; nth++) {
            long live = gt_alloc_live();
            gt_alloc_fail_after(nth);
            int status = gt_ck_stage_run(ks_[s], st[s], x, u, &opts, NULL, 3, out, err, &res);
            gt_alloc_fail_after(0);
            CHECK(status == GT_OK || status == GT_ENOMEM);
            CHECK(gt_alloc_live() == live);
            if (status == GT_OK)
                break;
        }
    }
    long live = gt_alloc_live();
    gt_alloc_fail_after(1);
    CHECK(gt_ck_stage_guarded(&k, GT_CK_FUNCTION, x, NULL, &opts, NULL, 1, out, err, &res, NULL, &gres) == GT_ENOMEM);
    gt_alloc_fail_after(0);
    CHECK(gt_alloc_live() == live);

    return check_summary();
}
