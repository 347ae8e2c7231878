/* rosenbrock.c: the n-dimensional Rosenbrock function with a correct and a subtly wrong gradient.
 *
 *     f(x) = sum_{i<n-1} [ 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2 ]
 *
 * The wrong gradient has the factor 400 of the x_i term written as 200 (the derivative of the
 * square taken, its chain factor 2 x_i kept, but the outer 2 lost) -- right at x_i = 0.
 *
 * Build: cc -shared -fPIC -O2 -I<gradtest include> rosenbrock.c -o librosen.so */
#include <gradtest.h>

int rosen_f(void *ctx, size_t n, const double *x, double *f)
{
    (void)ctx;
    double acc = 0.0;
    for (size_t i = 0; i + 1 < n; i++) {
        double a = x[i + 1] - x[i] * x[i], b = 1.0 - x[i];
        acc += 100.0 * a * a + b * b;
    }
    *f = acc;
    return 0;
}

static void gradient(size_t n, const double *x, double *g, double c)
{
    for (size_t i = 0; i < n; i++)
        g[i] = 0.0;
    for (size_t i = 0; i + 1 < n; i++) {
        double a = x[i + 1] - x[i] * x[i];
        g[i] += -c * a * x[i] - 2.0 * (1.0 - x[i]);
        g[i + 1] += 200.0 * a;
    }
}

int rosen_grad(void *ctx, size_t n, const double *x, double *g)
{
    (void)ctx;
    gradient(n, x, g, 400.0);
    return 0;
}

int rosen_grad_wrong(void *ctx, size_t n, const double *x, double *g)
{
    (void)ctx;
    gradient(n, x, g, 200.0);
    return 0;
}

/* Fails (returns 1) outside the domain -1e3 < x_i < 1e3, to show how a kernel's error status
 * is reported. */
int rosen_f_checked(void *ctx, size_t n, const double *x, double *f)
{
    for (size_t i = 0; i < n; i++)
        if (!(x[i] > -1e3 && x[i] < 1e3))
            return 1;
    return rosen_f(ctx, n, x, f);
}
