/* test_fd_batch.c: the batched finite-difference driver (csrc/cuda/fd_batch.c) over the CPU
 * emulation of the device kernels, under the sanitizers: results, launch counts, every
 * allocation failing in turn (no leak, a clean GT_ENOMEM), a failing kernel and bad arguments.
 * Built and run by tests/test_cuda_emulation.py through tests/_cbuild.py. */
#include <math.h>
#include <stdio.h>

#include "../../csrc/cuda/fd_batch.h"
#include "fd.h"
#include "gt_common.h"

static int checks, failures;
#define CHECK(cond) \
    do { \
        checks++; \
        if (!(cond)) { \
            failures++; \
            printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); \
        } \
    } while (0)

static long calls;

/* f(x) = sum_i (i + 1) x_i^2 + x_0 x_{n-1}, for every point of the batch (host memory here) */
static int quad(void *ctx, void *stream, size_t batch, size_t n, const double *x, double *f)
{
    (void)ctx;
    (void)stream;
    calls++;
    for (size_t p = 0; p < batch; p++) {
        const double *xp = x + p * n;
        double s = xp[0] * xp[n - 1];
        for (size_t i = 0; i < n; i++)
            s += (double)(i + 1) * xp[i] * xp[i];
        f[p] = s;
    }
    return 0;
}

static int quad32(void *ctx, void *stream, size_t batch, size_t n, const float *x, float *f)
{
    (void)ctx;
    (void)stream;
    for (size_t p = 0; p < batch; p++) {
        float s = 0.0f;
        for (size_t i = 0; i < n; i++)
            s += (float)(i + 1) * x[p * n + i] * x[p * n + i];
        f[p] = s;
    }
    return 0;
}

static int quad_grad(void *ctx, void *stream, size_t n, const double *x, double *g)
{
    (void)ctx;
    (void)stream;
    for (size_t i = 0; i < n; i++)
        g[i] = 2.0 * (double)(i + 1) * x[i];
    g[0] += x[n - 1];
    g[n - 1] += x[0];
    return 0;
}

static int failing(void *ctx, void *stream, size_t batch, size_t n, const double *x, double *f)
{
    (void)ctx;
    (void)stream;
    (void)batch;
    (void)n;
    (void)x;
    (void)f;
    return 700;
}

#define N 9

int main(void)
{
    double x[N], grad[N], err[N], f0 = 0.0;
    for (size_t i = 0; i < N; i++)
        x[i] = 0.1 * (double)(i + 1) - 0.35; /* away from 0: with no scale given the step follows |x_i| */
    gtd_fd_kernel k = {(void *)quad, NULL, NULL, GT_DEVICE_F64, N, 4, NULL, 0, NULL};
    gtd_fd_stats st;

    calls = 0;
    CHECK(gtd_fd_batched(&k, x, GT_FD_CENTRAL, 1, 0.0, &f0, grad, err, &st) == GT_OK);
    double expect[N];
    CHECK(quad_grad(NULL, NULL, N, x, expect) == 0);
    for (size_t i = 0; i < N; i++) {
        CHECK(fabs(grad[i] - expect[i]) < 1e-9);
        CHECK(err[i] >= 0.0 && err[i] < 1e-4);
    }
    CHECK((long)st.launches == calls);
    CHECK(st.launches < st.evaluations);
    CHECK(st.rounds > 1 && st.cuda_status == 0 && st.nonfinite == 0);
    CHECK(gt_alloc_live() == 0);

    /* the classic rules and the one-sided ones */
    for (int method = 0; method < 3; method++) {
        CHECK(gtd_fd_batched(&k, x, method, 0, 0.0, &f0, grad, err, &st) == GT_OK);
        for (size_t i = 0; i < N; i++)
            CHECK(fabs(grad[i] - expect[i]) < 1e-4);
    }

    /* float32 */
    float x32[N];
    for (size_t i = 0; i < N; i++)
        x32[i] = (float)x[i];
    gtd_fd_kernel k32 = {(void *)quad32, NULL, NULL, GT_DEVICE_F32, N, 3, NULL, 0, NULL};
    CHECK(gtd_fd_batched(&k32, x32, GT_FD_CENTRAL, 1, 0.0, &f0, grad, err, &st) == GT_OK);
    for (size_t i = 0; i < N; i++)
        CHECK(fabs(grad[i] - 2.0 * (double)(i + 1) * (double)x32[i]) < 1e-2);

    /* every host allocation failing in turn: GT_ENOMEM, nothing leaked, then success */
    int succeeded = 0;
    for (long a = 1; a < 400 && !succeeded; a++) {
        gt_alloc_fail_after(a);
        int s = gtd_fd_batched(&k, x, GT_FD_CENTRAL, 1, 0.0, &f0, grad, err, &st);
        gt_alloc_fail_after(0);
        CHECK(s == GT_OK || s == GT_ENOMEM);
        CHECK(gt_alloc_live() == 0);
        succeeded = s == GT_OK;
    }
    CHECK(succeeded);

    /* a kernel that fails: GT_ECALLBACK with its status, nothing leaked */
    gtd_fd_kernel bad = k;
    bad.fn = (void *)failing;
    CHECK(gtd_fd_batched(&bad, x, GT_FD_CENTRAL, 1, 0.0, &f0, grad, err, &st) == GT_ECALLBACK);
    CHECK(st.cuda_status == 700);
    CHECK(gt_alloc_live() == 0);

    /* bad arguments */
    gtd_fd_kernel zero = k;
    zero.batch = 0;
    CHECK(gtd_fd_batched(&zero, x, GT_FD_CENTRAL, 1, 0.0, &f0, grad, err, &st) == GT_EINVAL);
    CHECK(gtd_fd_batched(&k, x, 3, 1, 0.0, &f0, grad, err, &st) == GT_EINVAL);
    CHECK(gtd_fd_batched(NULL, x, GT_FD_CENTRAL, 1, 0.0, &f0, grad, err, &st) == GT_EINVAL);

    /* the gradient kernel through device copies */
    double g[N];
    int cs = -1;
    CHECK(gtd_call_gradient((void *)quad_grad, NULL, NULL, GT_DEVICE_F64, N, x, g, &cs) == GT_OK && cs == 0);
    for (size_t i = 0; i < N; i++)
        CHECK(g[i] == expect[i]);
    CHECK(gtd_call_gradient(NULL, NULL, NULL, GT_DEVICE_F64, N, x, g, &cs) == GT_EINVAL);

    printf("test_fd_batch: %d checks, %d failed\n", checks, failures);
    return failures != 0;
}
