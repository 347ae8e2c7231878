/* stencil.c: a 1-d periodic stencil energy, with a correct gradient and a subtly wrong one.
 *
 *     f(x) = sum_i [ 0.5 (x_{i+1} - x_i)^2 + 0.25 x_i^4 ],   indices mod n
 *
 * df/dx_i = (x_i - x_{i-1}) - (x_{i+1} - x_i) + x_i^3. The wrong gradient forgets that the
 * stencil wraps around: it treats x_{-1} and x_n as absent, so only the first and last
 * components are wrong -- the kind of bug that a check on a few interior points never sees.
 *
 * Build: cc -shared -fPIC -O2 -I$(python -c "import gradtest; print(gradtest.get_include())") \
 *            stencil.c -o libstencil.so -lm */
#include <gradtest.h>

int stencil_f(void *ctx, size_t n, const double *x, double *f)
{
    (void)ctx;
    double acc = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = x[(i + 1) % n] - x[i];
        acc += 0.5 * d * d + 0.25 * x[i] * x[i] * x[i] * x[i];
    }
    *f = acc;
    return 0;
}

int stencil_grad(void *ctx, size_t n, const double *x, double *g)
{
    (void)ctx;
    for (size_t i = 0; i < n; i++) {
        double left = x[(i + n - 1) % n], right = x[(i + 1) % n];
        g[i] = 2.0 * x[i] - left - right + x[i] * x[i] * x[i];
    }
    return 0;
}

/* Wrong at i = 0 and i = n - 1: the wrap-around neighbours are dropped. */
int stencil_grad_wrong(void *ctx, size_t n, const double *x, double *g)
{
    (void)ctx;
    for (size_t i = 0; i < n; i++) {
        double left = i > 0 ? x[i - 1] : 0.0, right = i + 1 < n ? x[i + 1] : 0.0;
        g[i] = 2.0 * x[i] - left - right + x[i] * x[i] * x[i];
    }
    return 0;
}

/* float32: the same function and gradient on float. */
int stencil_f32(void *ctx, size_t n, const float *x, float *f)
{
    (void)ctx;
    float acc = 0.0f;
    for (size_t i = 0; i < n; i++) {
        float d = x[(i + 1) % n] - x[i];
        acc += 0.5f * d * d + 0.25f * x[i] * x[i] * x[i] * x[i];
    }
    *f = acc;
    return 0;
}

int stencil_grad_f32(void *ctx, size_t n, const float *x, float *g)
{
    (void)ctx;
    for (size_t i = 0; i < n; i++) {
        float left = x[(i + n - 1) % n], right = x[(i + 1) % n];
        g[i] = 2.0f * x[i] - left - right + x[i] * x[i] * x[i];
    }
    return 0;
}

/* The stencil as a vector function y_i = x_{i-1} - 2 x_i + x_{i+1} - x_i^3 (m == n), with its
 * JVP (correct) and a VJP that applies the stencil's transpose at the wrong offset: correct
 * for the symmetric interior, wrong where the nonlinear term meets the neighbours. */
int stencil_apply(void *ctx, size_t n, const double *x, size_t m, double *y)
{
    (void)ctx;
    if (m != n)
        return 1;
    for (size_t i = 0; i < n; i++)
        y[i] = x[(i + n - 1) % n] - 2.0 * x[i] + x[(i + 1) % n] - x[i] * x[i] * x[i];
    return 0;
}

int stencil_apply_jvp(void *ctx, size_t n, const double *x, const double *xdot, size_t m,
                      double *ydot)
{
    (void)ctx;
    if (m != n)
        return 1;
    for (size_t i = 0; i < n; i++)
        ydot[i] = xdot[(i + n - 1) % n] - 2.0 * xdot[i] + xdot[(i + 1) % n] -
                  3.0 * x[i] * x[i] * xdot[i];
    return 0;
}

int stencil_apply_vjp(void *ctx, size_t n, const double *x, size_t m, const double *ybar,
                      double *xbar)
{
    (void)ctx;
    if (m != n)
        return 1;
    /* J^T ybar: the linear part is symmetric; the diagonal nonlinear part uses x_i for ybar_i */
    for (size_t i = 0; i < n; i++)
        xbar[i] = ybar[(i + n - 1) % n] - 2.0 * ybar[i] + ybar[(i + 1) % n] -
                  3.0 * x[i] * x[i] * ybar[i];
    return 0;
}

/* Wrong: takes the nonlinear term's derivative at the neighbour's x. */
int stencil_apply_vjp_wrong(void *ctx, size_t n, const double *x, size_t m, const double *ybar,
                            double *xbar)
{
    (void)ctx;
    if (m != n)
        return 1;
    for (size_t i = 0; i < n; i++) {
        double xn = x[(i + 1) % n];
        xbar[i] = ybar[(i + n - 1) % n] - 2.0 * ybar[i] + ybar[(i + 1) % n] - 3.0 * xn * xn * ybar[i];
    }
    return 0;
}
