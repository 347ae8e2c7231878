/* least_squares.c: the residual of a nonlinear least-squares fit, with its VJP and JVP.
 *
 * Model: y(t) = sum_k p_k exp(-q_k t), with n = 2K parameters x = (p_0, q_0, p_1, q_1, ...), fitted
 * to m samples (t_j, d_j) held in a context struct:
 *
 *     r_j(x) = sum_k p_k exp(-q_k t_j) - d_j
 *
 * dr_j/dp_k = exp(-q_k t_j),  dr_j/dq_k = -t_j p_k exp(-q_k t_j).
 * The VJP (xbar = J^T rbar) is what a Gauss-Newton or adjoint code needs; the wrong one drops the
 * minus sign of dr/dq -- a classic slip that still lets an optimiser "converge" on easy data.
 *
 * Build: cc -shared -fPIC -O2 -I<gradtest include> least_squares.c -o libls.so -lm */
#include <math.h>
#include <stdlib.h>

#include <gradtest.h>

/* The data the residual is fitted to; the kernel reads it through ctx and never writes it. */
typedef struct ls_data {
    size_t m;
    const double *t; /* m sample times */
    const double *d; /* m observations */
} ls_data;

/* A context with m samples of a two-term decay, for tests and the notebook: t_j = j / m,
 * d_j = 2 exp(-t_j) + 0.5 exp(-3 t_j). Returns NULL when out of memory; free with ls_data_free. */
ls_data *ls_data_new(size_t m)
{
    ls_data *data = malloc(sizeof *data);
    double *t = malloc(m * sizeof *t), *d = malloc(m * sizeof *d);
    if (!data || !t || !d) {
        free(data);
        free(t);
        free(d);
        return NULL;
    }
    for (size_t j = 0; j < m; j++) {
        t[j] = (double)j / (double)m;
        d[j] = 2.0 * exp(-t[j]) + 0.5 * exp(-3.0 * t[j]);
    }
    data->m = m;
    data->t = t;
    data->d = d;
    return data;
}

void ls_data_free(ls_data *data)
{
    if (!data)
        return;
    free((void *)data->t);
    free((void *)data->d);
    free(data);
}

static int check_sizes(const ls_data *data, size_t n, size_t m)
{
    return data && n % 2 == 0 && m == data->m ? 0 : 1;
}

int ls_residual(void *ctx, size_t n, const double *x, size_t m, double *r)
{
    const ls_data *data = ctx;
    if (check_sizes(data, n, m))
        return 1;
    for (size_t j = 0; j < m; j++) {
        double acc = -data->d[j];
        for (size_t k = 0; k < n; k += 2)
            acc += x[k] * exp(-x[k + 1] * data->t[j]);
        r[j] = acc;
    }
    return 0;
}

int ls_residual_jvp(void *ctx, size_t n, const double *x, const double *xdot, size_t m,
                    double *rdot)
{
    const ls_data *data = ctx;
    if (check_sizes(data, n, m))
        return 1;
    for (size_t j = 0; j < m; j++) {
        double t = data->t[j], acc = 0.0;
        for (size_t k = 0; k < n; k += 2) {
            double e = exp(-x[k + 1] * t);
            acc += e * xdot[k] - t * x[k] * e * xdot[k + 1];
        }
        rdot[j] = acc;
    }
    return 0;
}

static int vjp(const ls_data *data, size_t n, const double *x, size_t m, const double *rbar,
               double *xbar, double sign_q)
{
    if (check_sizes(data, n, m))
        return 1;
    for (size_t k = 0; k < n; k++)
        xbar[k] = 0.0;
    for (size_t j = 0; j < m; j++) {
        double t = data->t[j];
        for (size_t k = 0; k < n; k += 2) {
            double e = exp(-x[k + 1] * t);
            xbar[k] += e * rbar[j];
            xbar[k + 1] += sign_q * t * x[k] * e * rbar[j];
        }
    }
    return 0;
}

int ls_residual_vjp(void *ctx, size_t n, const double *x, size_t m, const double *rbar,
                    double *xbar)
{
    return vjp(ctx, n, x, m, rbar, xbar, -1.0);
}

/* Wrong: d r / d q_k taken as +t p_k exp(-q_k t). */
int ls_residual_vjp_wrong(void *ctx, size_t n, const double *x, size_t m, const double *rbar,
                          double *xbar)
{
    return vjp(ctx, n, x, m, rbar, xbar, +1.0);
}
