/* fd.c: finite differences over a caller-owned working vector (see fd.h). */
#include "fd.h"

#include <float.h>
#include <math.h>
#include <string.h>

static double dtype_eps(gt_dtype dtype) { return dtype == GT_FLOAT32 ? (double)FLT_EPSILON : DBL_EPSILON; }

static double get_x(const gt_fd_problem *p, size_t i)
{
    return p->dtype == GT_FLOAT32 ? (double)((const float *)p->x)[i] : ((const double *)p->x)[i];
}

/* Stores v (rounded to the working dtype) and returns the value actually stored. */
static double set_x(const gt_fd_problem *p, size_t i, double v)
{
    if (p->dtype == GT_FLOAT32) {
        float *x = p->x;
        x[i] = (float)v;
        return (double)x[i];
    }
    ((double *)p->x)[i] = v;
    return v;
}

size_t gt_fd_evals_per_component(const gt_fd_options *opts)
{
    size_t per_step = opts->method == GT_FD_CENTRAL ? 2 : 1;
    return opts->richardson ? 2 * per_step : per_step;
}

double gt_fd_base_step(const gt_fd_options *opts, gt_dtype dtype)
{
    if (opts->rel_step > 0)
        return opts->rel_step;
    double eps = dtype_eps(dtype);
    if (opts->method == GT_FD_CENTRAL)
        return opts->richardson ? pow(eps, 0.2) : cbrt(eps);
    return opts->richardson ? cbrt(eps) : sqrt(eps);
}

int gt_fd_eval(const gt_fd_problem *p, double *value)
{
    if (!p || !p->eval || !value)
        return GT_EINVAL;
    return p->eval(p->ctx, value) ? GT_ECALLBACK : GT_OK;
}

static int valid_problem(const gt_fd_problem *p, const gt_fd_options *opts)
{
    return p && opts && p->x && p->eval && (p->dtype == GT_FLOAT64 || p->dtype == GT_FLOAT32) &&
           opts->method >= GT_FD_CENTRAL && opts->method <= GT_FD_BACKWARD;
}

/* One difference quotient of component i with nominal step h. Writes the quotient, the largest
 * |f| seen (*fbig) and the step actually taken. Restores x_i on every path. */
static int quotient(const gt_fd_problem *p, gt_fd_method method, size_t i, double xi, double h,
                    double f0, double *q, double *fbig, double *h_used)
{
    double fp = f0, fm = f0, xp = xi, xm = xi;
    int status = GT_OK;
    if (method != GT_FD_BACKWARD) {
        xp = set_x(p, i, xi + h);
        if (p->eval(p->ctx, &fp)) {
            status = GT_ECALLBACK;
            goto done;
        }
    }
    if (method != GT_FD_FORWARD) {
        xm = set_x(p, i, xi - h);
        if (p->eval(p->ctx, &fm)) {
            status = GT_ECALLBACK;
            goto done;
        }
    }
    *q = (fp - fm) / (xp - xm);
    *fbig = fmax(fabs(fp), fabs(fm));
    *h_used = xp - xm;
done:
    set_x(p, i, xi);
    return status;
}

int gt_fd_gradient_range(const gt_fd_problem *p, const gt_fd_options *opts, double f0,
                         size_t i0, size_t i1, double *grad, double *err, size_t *nonfinite)
{
    if (!valid_problem(p, opts) || !grad || i0 > i1 || i1 > p->n)
        return GT_EINVAL;
    const double eps = dtype_eps(p->dtype);
    const double h0 = gt_fd_base_step(opts, p->dtype);
    size_t bad = 0;
    for (size_t i = i0; i < i1; i++) {
        const double xi = get_x(p, i);
        double s = fabs(xi);
        if (s == 0.0)
            s = p->scale ? p->scale[i] : 1.0;
        if (!(s > 0.0) || !isfinite(s))
            s = 1.0;
        double q1, fmax1, hu1;
        int status = quotient(p, opts->method, i, xi, h0 * s, f0, &q1, &fmax1, &hu1);
        if (status)
            return status;
        double value = q1, e = 0.0, fmax_all = fmax(fmax1, fabs(f0)), h_small = fabs(hu1);
        if (opts->richardson) {
            double q2, fmax2, hu2;
            status = quotient(p, opts->method, i, xi, 0.5 * h0 * s, f0, &q2, &fmax2, &hu2);
            if (status)
                return status;
            /* Central differences have error c2 h^2 + c4 h^4..., one-sided ones c1 h + c2 h^2...;
             * the extrapolation cancels the leading term. */
            double order_factor = opts->method == GT_FD_CENTRAL ? 3.0 : 1.0;
            value = q2 + (q2 - q1) / order_factor;
            e = fabs(q2 - q1) / order_factor;
            fmax_all = fmax(fmax_all, fmax2);
            h_small = fabs(hu2);
        }
        e += 4.0 * eps * fmax_all / (h_small > 0 ? h_small : 1.0);
        if (!isfinite(value) || !isfinite(fmax_all)) {
            value = NAN;
            e = INFINITY;
            bad++;
        }
        grad[i] = value;
        if (err)
            err[i] = e;
    }
    if (nonfinite)
        *nonfinite = bad;
    return GT_OK;
}

/* Sets x = x_saved + t * dir (rounded to the dtype). */
static void shift_along(const gt_fd_problem *p, const double *x_saved, const double *dir, double t)
{
    for (size_t i = 0; i < p->n; i++)
        set_x(p, i, x_saved[i] + t * dir[i]);
}

static void restore(const gt_fd_problem *p, const double *x_saved)
{
    for (size_t i = 0; i < p->n; i++)
        set_x(p, i, x_saved[i]);
}

/* f(x + t dir) - f(x - t dir) style quotient along one direction, in units of t. */
static int dir_quotient(const gt_fd_problem *p, gt_fd_method method, const double *x_saved,
                        const double *dir, double t, double f0, double *q, double *fmaxv)
{
    double fp = f0, fm = f0, tp = 0.0, tm = 0.0;
    if (method != GT_FD_BACKWARD) {
        shift_along(p, x_saved, dir, t);
        tp = t;
        if (p->eval(p->ctx, &fp))
            return GT_ECALLBACK;
    }
    if (method != GT_FD_FORWARD) {
        shift_along(p, x_saved, dir, -t);
        tm = -t;
        if (p->eval(p->ctx, &fm))
            return GT_ECALLBACK;
    }
    *q = (fp - fm) / (tp - tm);
    *fmaxv = fmax(fabs(fp), fabs(fm));
    return GT_OK;
}

int gt_fd_directional(const gt_fd_problem *p, const gt_fd_options *opts, double f0,
                      const double *dirs, size_t k, double *d, double *err)
{
    if (!valid_problem(p, opts) || !dirs || !d)
        return GT_EINVAL;
    int status = GT_OK;
    double *x_saved = gt_malloc((p->n ? p->n : 1) * sizeof *x_saved);
    if (!x_saved)
        return GT_ENOMEM;
    for (size_t i = 0; i < p->n; i++)
        x_saved[i] = get_x(p, i);
    const double eps = dtype_eps(p->dtype);
    const double t = gt_fd_base_step(opts, p->dtype);
    for (size_t j = 0; j < k; j++) {
        const double *dir = dirs + j * p->n;
        double q1, fmax1;
        status = dir_quotient(p, opts->method, x_saved, dir, t, f0, &q1, &fmax1);
        if (status)
            goto cleanup;
        double value = q1, e = 0.0, fmax_all = fmax(fmax1, fabs(f0)), t_small = t;
        if (opts->richardson) {
            double q2, fmax2;
            status = dir_quotient(p, opts->method, x_saved, dir, 0.5 * t, f0, &q2, &fmax2);
            if (status)
                goto cleanup;
            double order_factor = opts->method == GT_FD_CENTRAL ? 3.0 : 1.0;
            value = q2 + (q2 - q1) / order_factor;
            e = fabs(q2 - q1) / order_factor;
            fmax_all = fmax(fmax_all, fmax2);
            t_small = 0.5 * t;
        }
        e += 4.0 * eps * fmax_all / t_small;
        if (!isfinite(value)) {
            value = NAN;
            e = INFINITY;
        }
        d[j] = value;
        if (err)
            err[j] = e;
    }
cleanup:
    restore(p, x_saved);
    gt_free(x_saved);
    return status;
}
