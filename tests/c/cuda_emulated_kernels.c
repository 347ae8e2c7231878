/* Host-memory kernels with the device ABI of gradtest.h, for the CPU emulation tests of
 * gradtest.cuda.CudaKernel (tests/test_cuda_emulation.py). Under the emulation "device memory"
 * is host memory, so these are plain loops; examples/kernels/rosenbrock_cuda.cu is the same
 * function as a CUDA kernel. */
#include <math.h>
#include <stdlib.h>
#include <stddef.h>

#include "gradtest.h"

#define EXPORT __attribute__((visibility("default")))

/* a call counter the tests read, to see how many launches the batched driver makes */
EXPORT long launches;

/* f(x) = sum_i 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2, one value per point of the batch */
EXPORT int rosen_f64(void *ctx, void *stream, size_t batch, size_t n, const double *x, double *f)
{
    (void)ctx;
    (void)stream;
    launches++;
    for (size_t p = 0; p < batch; p++) {
        const double *xp = x + p * n;
        double s = 0.0;
        for (size_t i = 0; i + 1 < n; i++) {
            double a = xp[i + 1] - xp[i] * xp[i], b = 1.0 - xp[i];
            s += 100.0 * a * a + b * b;
        }
        f[p] = s;
    }
    return 0;
}

EXPORT int rosen_grad_f64(void *ctx, void *stream, size_t n, const double *x, double *g)
{
    (void)ctx;
    (void)stream;
    for (size_t i = 0; i < n; i++) {
        double gi = 0.0;
        if (i + 1 < n)
            gi += -400.0 * x[i] * (x[i + 1] - x[i] * x[i]) - 2.0 * (1.0 - x[i]);
        if (i > 0)
            gi += 200.0 * (x[i] - x[i - 1] * x[i - 1]);
        g[i] = gi;
    }
    return 0;
}

/* the same gradient with one element wrong by 1e-6 relative */
EXPORT int rosen_grad_wrong_f64(void *ctx, void *stream, size_t n, const double *x, double *g)
{
    int st = rosen_grad_f64(ctx, stream, n, x, g);
    g[n / 2] *= 1.0 + 1e-6;
    return st;
}

EXPORT int rosen_f32(void *ctx, void *stream, size_t batch, size_t n, const float *x, float *f)
{
    (void)ctx;
    (void)stream;
    launches++;
    for (size_t p = 0; p < batch; p++) {
        const float *xp = x + p * n;
        float s = 0.0f;
        for (size_t i = 0; i + 1 < n; i++) {
            float a = xp[i + 1] - xp[i] * xp[i], b = 1.0f - xp[i];
            s += 100.0f * a * a + b * b;
        }
        f[p] = s;
    }
    return 0;
}

EXPORT int rosen_grad_f32(void *ctx, void *stream, size_t n, const float *x, float *g)
{
    (void)ctx;
    (void)stream;
    for (size_t i = 0; i < n; i++) {
        float gi = 0.0f;
        if (i + 1 < n)
            gi += -400.0f * x[i] * (x[i + 1] - x[i] * x[i]) - 2.0f * (1.0f - x[i]);
        if (i > 0)
            gi += 200.0f * (x[i] - x[i - 1] * x[i - 1]);
        g[i] = gi;
    }
    return 0;
}

/* The same functions in the CPU ABI (gradtest_scalar_f64/f32), for gradtest.CKernel: the
 * batched device check must give exactly the C-kernel check's ground truth. */
EXPORT int rosen_cpu_f64(void *ctx, size_t n, const double *x, double *f)
{
    long saved = launches;
    int st = rosen_f64(ctx, NULL, 1, n, x, f);
    launches = saved;
    return st;
}

EXPORT int rosen_cpu_f32(void *ctx, size_t n, const float *x, float *f)
{
    long saved = launches;
    int st = rosen_f32(ctx, NULL, 1, n, x, f);
    launches = saved;
    return st;
}

/* A vector function, m = n: y_j = sin(x_j) x_{j+1} (indices mod n), with its VJP
 * xbar_i = cos(x_i) x_{i+1} ybar_i + sin(x_{i-1}) ybar_{i-1}, and a VJP that forgets the
 * wrap-around term of xbar_0. */
EXPORT int wave_f64(void *ctx, void *stream, size_t batch, size_t n, const double *x, size_t m, double *y)
{
    (void)ctx;
    (void)stream;
    if (m != n)
        return 1;
    for (size_t p = 0; p < batch; p++)
        for (size_t j = 0; j < n; j++)
            y[p * m + j] = sin(x[p * n + j]) * x[p * n + (j + 1) % n];
    return 0;
}

EXPORT int wave_cpu_f64(void *ctx, size_t n, const double *x, size_t m, double *y)
{
    return wave_f64(ctx, NULL, 1, n, x, m, y);
}

static int wave_vjp_impl(size_t n, const double *x, const double *ybar, double *xbar, int wrap)
{
    for (size_t i = 0; i < n; i++) {
        size_t prev = (i + n - 1) % n;
        xbar[i] = cos(x[i]) * x[(i + 1) % n] * ybar[i];
        if (i > 0 || wrap)
            xbar[i] += sin(x[prev]) * ybar[prev];
    }
    return 0;
}

EXPORT int wave_vjp_f64(void *ctx, void *stream, size_t n, const double *x, size_t m, const double *ybar,
                        double *xbar)
{
    (void)ctx;
    (void)stream;
    return m == n ? wave_vjp_impl(n, x, ybar, xbar, 1) : 1;
}

EXPORT int wave_vjp_wrong_f64(void *ctx, void *stream, size_t n, const double *x, size_t m, const double *ybar,
                              double *xbar)
{
    (void)ctx;
    (void)stream;
    return m == n ? wave_vjp_impl(n, x, ybar, xbar, 0) : 1;
}

/* a kernel whose launch fails: 700 is cudaErrorIllegalAddress */
EXPORT int failing_f64(void *ctx, void *stream, size_t batch, size_t n, const double *x, double *f)
{
    (void)ctx;
    (void)stream;
    (void)batch;
    (void)n;
    (void)x;
    (void)f;
    return 700;
}

/* a gradient that leaves its output unwritten (gradtest fills it with NaN first) */
EXPORT int lazy_grad_f64(void *ctx, void *stream, size_t n, const double *x, double *g)
{
    (void)ctx;
    (void)stream;
    (void)n;
    (void)x;
    (void)g;
    return 0;
}

/* kernels that end their process, for the isolation tests: an abort in f after the first
 * launches, a segfault in the gradient, an exit, a hang */
EXPORT int aborting_f64(void *ctx, void *stream, size_t batch, size_t n, const double *x, double *f)
{
    if (batch > 1)
        abort();
    return rosen_f64(ctx, stream, batch, n, x, f);
}

/* NULL, but the compiler cannot know it (another module could set it) */
EXPORT double *volatile segv_target;

EXPORT int segfaulting_grad_f64(void *ctx, void *stream, size_t n, const double *x, double *g)
{
    (void)ctx;
    (void)stream;
    (void)x;
    (void)g;
    for (size_t i = 0; i < n; i++)
        segv_target[i] = 1.0; /* a write through NULL: SIGSEGV */
    return 0;
}

EXPORT int exiting_f64(void *ctx, void *stream, size_t batch, size_t n, const double *x, double *f)
{
    (void)ctx;
    (void)stream;
    (void)batch;
    (void)n;
    (void)x;
    (void)f;
    exit(3);
}

EXPORT int hanging_f64(void *ctx, void *stream, size_t batch, size_t n, const double *x, double *f)
{
    (void)ctx;
    (void)stream;
    (void)batch;
    (void)n;
    (void)x;
    (void)f;
    volatile int spin = 1;
    while (spin) {
    }
    return 0;
}
