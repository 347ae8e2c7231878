/* fd.c: finite differences over a caller-owned working vector (see fd.h). */
#include "fd.h"

#include <float.h>
#include <math.h>
#include <string.h>

/* The adaptive rule's constants (calibrated by tests/test_fd_calibration.py). */
enum { MAX_ROWS = 48, MAX_ORDER = 4, STOP_AFTER = 3, WARM_ROWS = 3, WARM_STOP_AFTER = 2 };
static const double STEP_RATIO = 2.0;  /* h_{j+1} = h_j / STEP_RATIO (the tables in sweep assume 2) */
static const double TOP_STEP = 0.1;    /* h_0 = TOP_STEP * s_i */
static const double SAFETY = 1.5;      /* on the tableau differences */
static const double CONVERGED = 1e-11; /* a best bound this small (relative) may stop the sweep */
static const int NOISE_POINTS = 12;

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

static double component_scale(const double *scale, double xi, size_t i)
{
    double s = scale ? scale[i] : fabs(xi);
    return s > 0.0 && isfinite(s) ? s : 1.0;
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
           opts->method >= GT_FD_CENTRAL && opts->method <= GT_FD_BACKWARD && opts->noise >= 0.0;
}

static int adaptive(const gt_fd_options *opts) { return opts->richardson && !(opts->rel_step > 0); }

/* ---- probes: one difference quotient at step h -------------------------------------------- */

/* What is perturbed: one component i (dir == NULL) or the whole vector along dir. */
typedef struct probe {
    const gt_fd_problem *p;
    gt_fd_method method;
    double f0;
    size_t i;
    double xi;
    const double *x_saved, *dir; /* direction mode: n elements each */
} probe;

/* x = x_saved + t dir, rounded to the working dtype; one loop per dtype so that it vectorises
 * (at 10^6 elements it runs twice per quotient). */
static void shift_along(const gt_fd_problem *p, const double *x_saved, const double *dir, double t)
{
    if (p->dtype == GT_FLOAT32) {
        float *x = p->x;
        for (size_t i = 0; i < p->n; i++)
            x[i] = (float)(x_saved[i] + t * dir[i]);
    } else {
        double *x = p->x;
        for (size_t i = 0; i < p->n; i++)
            x[i] = x_saved[i] + t * dir[i];
    }
}

static void probe_restore(const probe *pr)
{
    if (pr->dir) {
        for (size_t i = 0; i < pr->p->n; i++)
            set_x(pr->p, i, pr->x_saved[i]);
    } else {
        set_x(pr->p, pr->i, pr->xi);
    }
}

/* Moves to offset t (the step actually taken is returned) and evaluates f. */
static int probe_at(const probe *pr, double t, double *f, double *taken)
{
    if (pr->dir) {
        shift_along(pr->p, pr->x_saved, pr->dir, t);
        *taken = t;
    } else {
        *taken = set_x(pr->p, pr->i, pr->xi + t) - pr->xi;
    }
    return pr->p->eval(pr->p->ctx, f) ? GT_ECALLBACK : GT_OK;
}

/* The quotient at nominal step h: *q, the step between its two points *span (0: underflow),
 * and the largest |f| it saw. A component is restored; in direction mode the caller restores. */
static int quotient(const probe *pr, double h, double *q, double *span, double *fbig)
{
    double fp = pr->f0, fm = pr->f0, tp = 0.0, tm = 0.0;
    int status = GT_OK;
    *q = NAN, *span = 0.0, *fbig = 0.0;
    if (pr->method != GT_FD_BACKWARD && (status = probe_at(pr, h, &fp, &tp)))
        goto done;
    if (pr->method != GT_FD_FORWARD && (status = probe_at(pr, -h, &fm, &tm)))
        goto done;
    *span = tp - tm;
    *q = *span != 0.0 ? (fp - fm) / *span : NAN;
    *fbig = fmax(fmax(fabs(fp), fabs(fm)), fabs(pr->f0));
done:
    /* a direction's next point is computed from x_saved, so only its caller restores x (once,
     * at the end); a component is restored at once */
    if (!pr->dir)
        probe_restore(pr);
    return status;
}

/* ---- the adaptive tableau ----------------------------------------------------------------- */

typedef struct fd_value {
    double value, err, step; /* step: the nominal h of the row the value came from */
    size_t evals;
} fd_value;


/* Ridders' sweep from h_top down (see fd.h). Writes *out; value NaN (err inf) when no row gave
 * a finite quotient. Returns GT_OK or GT_ECALLBACK (x restored). */
static int sweep(const probe *pr, const gt_fd_options *opts, double h_top, int stop_after, fd_value *out)
{
    double A[MAX_ROWS][MAX_ORDER + 1], R[MAX_ROWS][MAX_ORDER + 1];
    int width[MAX_ROWS]; /* entries in each row; 0 for a row whose quotient was not finite */
    const double out_eps = opts->out_eps > 0 ? opts->out_eps : DBL_EPSILON;
    /* the factor column k's error shrinks by per row, the steps halving: central differences have
     * error c2 h^2 + c4 h^4 + ..., so 4^(k+1); one-sided ones c1 h + c2 h^2 + ..., so 2^(k+1) */
    static const double central_fac[MAX_ORDER + 2] = {4, 16, 64, 256, 1024, 4096};
    static const double onesided_fac[MAX_ORDER + 2] = {2, 4, 8, 16, 32, 64};
    const double *fac = pr->method == GT_FD_CENTRAL ? central_fac : onesided_fac;
    double step[MAX_ROWS];
    const double rate = fac[0];
    double best = NAN, best_err = INFINITY, best_step = NAN, best_round = INFINITY;
    double fallback = NAN, fallback_err = INFINITY, fallback_step = NAN;
    int best_row = -1, first_row = 0;
    out->evals = 0;
    for (int j = 0; j < MAX_ROWS; j++) {
        double h = step[j] = j ? 0.5 * step[j - 1] : h_top, q = NAN, span = 0.0, fbig = 0.0;
        int status = quotient(pr, h, &q, &span, &fbig);
        out->evals += pr->method == GT_FD_CENTRAL ? 2 : 1;
        if (status)
            return status;
        if (span == 0.0)
            break; /* the step underflowed: smaller ones will too */
        width[j] = 0;
        if (!isfinite(q))
            continue;
        /* each f value errs by at most max(out_eps |f|, noise); a quotient by twice that / span */
        double r = 2.0 * fmax(out_eps * fbig, opts->noise) / fabs(span);
        A[j][0] = q;
        R[j][0] = r;
        width[j] = 1;
        if (j > 0 && width[j - 1]) {
            int w = width[j - 1] + 1 < MAX_ORDER + 1 ? width[j - 1] + 1 : MAX_ORDER + 1;
            for (int k = 1; k < w; k++) {
                A[j][k] = A[j][k - 1] + (A[j][k - 1] - A[j - 1][k - 1]) / (fac[k - 1] - 1.0);
                R[j][k] = (fac[k - 1] * R[j][k - 1] + R[j - 1][k - 1]) / (fac[k - 1] - 1.0);
            }
            width[j] = w;
        }
        /* a later quotient that contradicts the best (beyond what its own truncation and
         * rounding allow) means the larger steps straddled something: start afresh */
        if (best_row >= 0 && fabs(A[j][0] - best) > fabs(A[best_row][0] - best) + 2.0 * best_err + 4.0 * r) {
            best = NAN, best_err = INFINITY, best_round = INFINITY;
            best_row = -1;
            first_row = j;
        }
        /* row c = j - 2 now has neighbours above (c - 1) and below (c + 1, j) */
        int c = j - 2;
        if (c >= 1 && c >= first_row && width[c] && width[c - 1] && width[c + 1] && width[j]) {
            /* converging at the predicted rate, or already at rounding level */
            double d1 = A[c][0] - A[c - 1][0], d2 = A[c + 1][0] - A[c][0];
            double level = 4.0 * (R[c - 1][0] + R[c][0] + R[c + 1][0]);
            int asymptotic = fabs(d1) <= level || fabs(d2) <= level ||
                             (d1 / d2 >= 0.5 * rate && d1 / d2 <= 2.0 * rate * rate);
            for (int k = 0; k < width[c]; k++) {
                if (k >= width[c - 1] || k >= width[c + 1])
                    break;
                double t = fabs(A[c][k] - A[c + 1][k]);
                if (k < width[j])
                    t = fmax(t, fabs(A[c][k] - A[j][k]));
                t = fmax(t, fabs(A[c][k] - A[c - 1][k]) / fac[k]);
                double e = fmax(SAFETY * t, R[c][k]);
                if (asymptotic && e < best_err) {
                    best = A[c][k], best_err = e, best_step = step[c];
                    best_round = R[c][k];
                    best_row = c;
                }
                if (e < fallback_err)
                    fallback = A[c][k], fallback_err = e, fallback_step = step[c];
            }
        }
        if (best_row >= 0 && j - best_row >= 2 && r > best_err)
            break; /* rounding alone now exceeds the best bound: no later row can do better */
        int converged = best_row >= 0 && (best_err <= CONVERGED * fabs(best) || best_err <= 2.0 * best_round);
        if (converged && j - best_row >= stop_after)
            break;
    }
    if (best_row < 0) {
        /* no row converged at the predicted rate: the least bad candidate, or the last quotient */
        best = fallback, best_err = fallback_err, best_step = fallback_step;
    }
    out->value = best;
    out->err = best_err;
    out->step = best_step;
    if (!isfinite(best) || !isfinite(best_err)) {
        out->value = NAN;
        out->err = INFINITY;
    }
    return GT_OK;
}

/* The classic rule: one step (and, with Richardson, h/2). */
static int classic(const probe *pr, const gt_fd_options *opts, double h, double eps, fd_value *out)
{
    double q1 = NAN, span1 = 0.0, fbig1 = 0.0;
    int status = quotient(pr, h, &q1, &span1, &fbig1);
    out->evals = gt_fd_evals_per_component(opts);
    if (status)
        return status;
    double value = q1, e = 0.0, fbig = fbig1, span = fabs(span1);
    if (opts->richardson) {
        double q2 = NAN, span2 = 0.0, fbig2 = 0.0;
        status = quotient(pr, 0.5 * h, &q2, &span2, &fbig2);
        if (status)
            return status;
        double order_factor = pr->method == GT_FD_CENTRAL ? 3.0 : 1.0;
        value = q2 + (q2 - q1) / order_factor;
        e = fabs(q2 - q1) / order_factor;
        fbig = fmax(fbig, fbig2);
        span = fabs(span2);
    }
    e += 4.0 * fmax(eps * fbig, opts->noise) / (span > 0 ? span : 1.0);
    out->value = value;
    out->err = e;
    out->step = h;
    if (!isfinite(value) || !isfinite(fbig) || span == 0.0) {
        out->value = NAN;
        out->err = INFINITY;
    }
    return GT_OK;
}

/* One component: the adaptive sweep or the classic rule. */
static int component(const gt_fd_problem *p, const gt_fd_options *opts, double f0, size_t i, fd_value *out)
{
    probe pr = {p, opts->method, f0, i, get_x(p, i), NULL, NULL};
    double s = component_scale(p->scale, pr.xi, i);
    if (adaptive(opts))
        return sweep(&pr, opts, TOP_STEP * s, STOP_AFTER, out);
    return classic(&pr, opts, gt_fd_base_step(opts, p->dtype) * s, dtype_eps(p->dtype), out);
}

/* Components idx[j] (or i0 + j when idx is NULL), j < count, written to out[at] and err[at] with
 * at = j when idx is given, i0 + j otherwise. */
static int components(const gt_fd_problem *p, const gt_fd_options *opts, double f0, const size_t *idx,
                      size_t i0, size_t count, double *out, double *err, size_t *nonfinite)
{
    size_t bad = 0;
    for (size_t j = 0; j < count; j++) {
        size_t i = idx ? idx[j] : i0 + j, at = idx ? j : i;
        fd_value v;
        int status = component(p, opts, f0, i, &v);
        if (status)
            return status;
        bad += !isfinite(v.value);
        out[at] = v.value;
        if (err)
            err[at] = v.err;
    }
    if (nonfinite)
        *nonfinite = bad;
    return GT_OK;
}

int gt_fd_gradient_range(const gt_fd_problem *p, const gt_fd_options *opts, double f0,
                         size_t i0, size_t i1, double *grad, double *err, size_t *nonfinite)
{
    if (!valid_problem(p, opts) || !grad || i0 > i1 || i1 > p->n)
        return GT_EINVAL;
    return components(p, opts, f0, NULL, i0, i1 - i0, grad, err, nonfinite);
}

int gt_fd_gradient_indices(const gt_fd_problem *p, const gt_fd_options *opts, double f0,
                           const size_t *idx, size_t k, double *out, double *err, size_t *nonfinite)
{
    if (!valid_problem(p, opts) || (k && (!idx || !out)))
        return GT_EINVAL;
    for (size_t j = 0; j < k; j++)
        if (idx[j] >= p->n)
            return GT_EINVAL;
    return components(p, opts, f0, idx, 0, k, out, err, nonfinite);
}

/* ---- directions and the noise probe ------------------------------------------------------- */

/* splitmix64: a small, fast, well-mixed generator; one stream per (seed, direction). */
static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t stream(uint64_t seed, uint64_t j)
{
    uint64_t s = seed ^ 0x5851F42D4C957F2Dull;
    uint64_t a = splitmix64(&s);
    s = a ^ (j * 0xD1B54A32D192ED03ull);
    return splitmix64(&s);
}

/* z for component i, when the stream is read in order (as gt_fd_direction does). */
static double next_component(uint64_t *state)
{
    uint64_t z = splitmix64(state);
    double u = (double)(z >> 11) * 0x1.0p-53;
    return z & 1u ? 0.5 + u : -(0.5 + u);
}

/* Component i of direction j, before scaling: +-(0.5 + u), u uniform in [0, 1). splitmix64 is
 * counter based, so any component is reachable without the ones before it; continuous
 * magnitudes (not just signs) keep k directions from giving two elements the same pattern. */
double gt_fd_direction_component(uint64_t seed, uint64_t j, size_t i)
{
    uint64_t state = stream(seed, j) + (uint64_t)i * 0x9E3779B97F4A7C15ull;
    return next_component(&state);
}

void gt_fd_direction(uint64_t seed, uint64_t j, size_t n, const double *scale, const double *x,
                     gt_dtype dtype, double *v)
{
    uint64_t state = stream(seed, j);
    for (size_t i = 0; i < n; i++) {
        double xi = x ? (dtype == GT_FLOAT32 ? (double)((const float *)x)[i] : ((const double *)x)[i]) : 0.0;
        double s = scale ? component_scale(scale, xi, i) : (x ? component_scale(NULL, xi, i) : 1.0);
        v[i] = s * next_component(&state); /* the same sequence as gt_fd_direction_component */
    }
}

void gt_fd_direction_products(uint64_t seed, size_t k, size_t n, const double *scale, const double *g,
                              double *dots, double *norms, double *abssum)
{
    for (size_t j = 0; j < k; j++) {
        uint64_t state = stream(seed, j);
        double dot = 0.0, sq = 0.0, ab = 0.0;
        for (size_t i = 0; i < n; i++) {
            double t = g[i] * scale[i] * next_component(&state);
            dot += t;
            sq += t * t;
            ab += fabs(t);
        }
        dots[j] = dot;
        norms[j] = sqrt(sq);
        abssum[j] = ab;
    }
}

void gt_fd_direction_combine(uint64_t seed, size_t k, size_t n, const double *scale, const double *r,
                             double *out, double *sq)
{
    memset(out, 0, n * sizeof *out);
    if (sq)
        memset(sq, 0, n * sizeof *sq);
    for (size_t j = 0; j < k; j++) {
        uint64_t state = stream(seed, j);
        for (size_t i = 0; i < n; i++) {
            double v = scale[i] * next_component(&state);
            out[i] += r[j] * v;
            if (sq)
                sq[i] += v * v;
        }
    }
}

/* The direction-mode probe's buffers: x_saved and the direction, both n doubles. */
static int direction_buffers(const gt_fd_problem *p, double **x_saved, double **dir)
{
    size_t n = p->n ? p->n : 1;
    *x_saved = gt_malloc(n * sizeof **x_saved);
    *dir = gt_malloc(n * sizeof **dir);
    if (!*x_saved || !*dir) {
        gt_free(*x_saved);
        gt_free(*dir);
        *x_saved = *dir = NULL;
        return GT_ENOMEM;
    }
    for (size_t i = 0; i < p->n; i++)
        (*x_saved)[i] = get_x(p, i);
    return GT_OK;
}

int gt_fd_directional(const gt_fd_problem *p, const gt_fd_options *opts, double f0, uint64_t seed,
                      size_t k, double *d, double *err)
{
    if (!valid_problem(p, opts) || (k && !d))
        return GT_EINVAL;
    double *x_saved, *dir;
    int status = direction_buffers(p, &x_saved, &dir);
    if (status)
        return status;
    probe pr = {p, opts->method, f0, 0, 0.0, x_saved, dir};
    const double eps = dtype_eps(p->dtype);
    double top = TOP_STEP;
    for (size_t j = 0; j < k; j++) {
        gt_fd_direction(seed, j, p->n, p->scale, x_saved, GT_FLOAT64, dir);
        fd_value v;
        if (adaptive(opts)) {
            /* a warm start has been confirmed by the first direction: a shorter watch suffices */
            status = sweep(&pr, opts, top, j ? WARM_STOP_AFTER : STOP_AFTER, &v);
            /* the next direction has the same scales: start its sweep a few rows above this
             * one's best step rather than at the top */
            if (!status && isfinite(v.value) && v.step > 0)
                top = fmin(TOP_STEP, v.step * pow(STEP_RATIO, WARM_ROWS));
        } else {
            status = classic(&pr, opts, gt_fd_base_step(opts, p->dtype), eps, &v);
        }
        if (status)
            goto cleanup;
        d[j] = v.value;
        if (err)
            err[j] = v.err;
    }
cleanup:
    for (size_t i = 0; i < p->n; i++)
        set_x(p, i, x_saved[i]);
    gt_free(x_saved);
    gt_free(dir);
    return status;
}

/* Residual standard deviation of a least-squares cubic through (t_j, f_j), t in [-1, 1]: the
 * columns 1, t, t^2, t^3 orthonormalised by modified Gram-Schmidt, f projected out. */
static double cubic_residual(const double *t, const double *f, int m)
{
    double q[4][16], r[16];
    for (int j = 0; j < m; j++) {
        r[j] = f[j];
        q[0][j] = 1.0, q[1][j] = t[j], q[2][j] = t[j] * t[j], q[3][j] = t[j] * t[j] * t[j];
    }
    for (int c = 0; c < 4; c++) {
        for (int b = 0; b < c; b++) {
            double dot = 0.0;
            for (int j = 0; j < m; j++)
                dot += q[b][j] * q[c][j];
            for (int j = 0; j < m; j++)
                q[c][j] -= dot * q[b][j];
        }
        double norm = 0.0;
        for (int j = 0; j < m; j++)
            norm += q[c][j] * q[c][j];
        norm = sqrt(norm);
        if (!(norm > 0.0))
            return NAN;
        double dot = 0.0;
        for (int j = 0; j < m; j++) {
            q[c][j] /= norm;
            dot += q[c][j] * r[j];
        }
        for (int j = 0; j < m; j++)
            r[j] -= dot * q[c][j];
    }
    double ss = 0.0;
    for (int j = 0; j < m; j++)
        ss += r[j] * r[j];
    return sqrt(ss / (m - 4));
}

int gt_fd_noise(const gt_fd_problem *p, uint64_t seed, double *sigma, size_t *evals)
{
    if (!p || !p->x || !p->eval || !sigma || (p->dtype != GT_FLOAT64 && p->dtype != GT_FLOAT32))
        return GT_EINVAL;
    double *x_saved, *dir;
    int status = direction_buffers(p, &x_saved, &dir);
    if (status)
        return status;
    gt_fd_direction(seed, UINT64_MAX, p->n, p->scale, x_saved, GT_FLOAT64, dir);
    probe pr = {p, GT_FD_CENTRAL, 0.0, 0, 0.0, x_saved, dir};
    /* scales above the working dtype's resolution, small enough for f to look cubic */
    const double eps = dtype_eps(p->dtype);
    const double scales[2] = {pow(eps, 0.45), pow(eps, 0.3)};
    uint64_t state = stream(seed, UINT64_MAX - 1);
    double best = INFINITY;
    size_t calls = 0;
    for (int s = 0; s < 2 && !status; s++) {
        double t[16], f[16], taken;
        int distinct = 0;
        for (int j = 0; j < NOISE_POINTS; j++) {
            /* random, not on a lattice: on a lattice the rounding inside f (of 50 x, say)
             * repeats from point to point and hides as a smooth function */
            t[j] = 2.0 * ((double)(splitmix64(&state) >> 11) * 0x1.0p-53) - 1.0;
            calls++;
            if ((status = probe_at(&pr, scales[s] * t[j], &f[j], &taken)))
                break;
            int seen = 0;
            for (int i = 0; i < j && !seen; i++)
                seen = f[i] == f[j];
            distinct += !seen;
        }
        if (status)
            break;
        /* too few distinct values: f is quantised at this scale, which says nothing of its noise */
        if (distinct < NOISE_POINTS / 2)
            continue;
        double res = cubic_residual(t, f, NOISE_POINTS);
        if (isfinite(res) && res < best)
            best = res;
    }
    probe_restore(&pr);
    gt_free(x_saved);
    gt_free(dir);
    *sigma = isfinite(best) ? best : 0.0;
    if (evals)
        *evals = calls;
    return status;
}
