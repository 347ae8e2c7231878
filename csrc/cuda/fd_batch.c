/* fd_batch.c: batched finite differences of a device kernel (see fd_batch.h). Plain C host code;
 * linked into both the device build and the CPU emulation. */
#include "fd_batch.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include "fd.h"
#include "gt_common.h"

typedef int (*scalar_fn)(void *ctx, void *stream, size_t count, size_t n, const void *x, void *f);
typedef int (*vector_fn)(void *ctx, void *stream, size_t count, size_t n, const void *x, size_t m, void *y);
typedef int (*gradient_fn)(void *ctx, void *stream, size_t n, const void *x, void *grad);
typedef int (*vjp_fn)(void *ctx, void *stream, size_t n, const void *x, size_t m, const void *ybar, void *xbar);

/* one component's cached f values, in the order they were first asked for */
typedef struct cache {
    double *val;
    double *f;
    size_t count, cap;
} cache;

typedef struct device_bufs {
    void *x0;   /* n: the unperturbed x */
    void *pts;  /* batch x n: perturbed points (row 0 also serves the direct evaluations) */
    void *comp; /* batch long long */
    void *val;  /* batch double */
    void *fout; /* batch of dtype (scalar f), or batch doubles (<u, y> of a vector f) */
    void *y;    /* vector f: batch x m of dtype */
    void *u;    /* vector f: m doubles */
} device_bufs;

typedef struct driver {
    const gtd_fd_kernel *k;
    size_t es;            /* element size */
    device_bufs d;
    double *fhost;        /* batch: the outputs, as double */
    void *fstage;         /* batch of dtype: the outputs as copied back */
    gtd_fd_stats *stats;
} driver;

typedef struct replay {
    const driver *dr;
    const void *x; /* the engine's working vector (host) */
    size_t i;
    cache *c;
    size_t cursor;
    int missed;
    double miss_val;
} replay;

typedef struct direct {
    driver *dr;
    const void *x;
} direct;

static double load(const void *p, int dtype, size_t i)
{
    return dtype == GT_DEVICE_F64 ? ((const double *)p)[i] : (double)((const float *)p)[i];
}

static double round_to(int dtype, double v)
{
    return dtype == GT_DEVICE_F64 ? v : (double)(float)v;
}

static int same_bits(double a, double b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

static int cache_push(cache *c, double val, double f)
{
    if (c->count == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 16;
        double *nv = (double *)gt_malloc(cap * sizeof *nv), *nf = (double *)gt_malloc(cap * sizeof *nf);
        if (!nv || !nf) {
            gt_free(nv);
            gt_free(nf);
            return GT_ENOMEM;
        }
        if (c->count) {
            memcpy(nv, c->val, c->count * sizeof *nv);
            memcpy(nf, c->f, c->count * sizeof *nf);
        }
        gt_free(c->val);
        gt_free(c->f);
        c->val = nv;
        c->f = nf;
        c->cap = cap;
    }
    c->val[c->count] = val;
    c->f[c->count] = f;
    c->count++;
    return GT_OK;
}

static int cache_has(const cache *c, double val)
{
    for (size_t j = 0; j < c->count; j++)
        if (same_bits(c->val[j], val))
            return 1;
    return 0;
}

/* The engine's eval: the cached value of the point it asks for (component i at x[i]); a miss
 * stops this component's run for the round. Requests come in the order of the first run, so
 * the cursor usually finds them at once. */
static int replay_eval(void *ctx, double *value)
{
    replay *r = (replay *)ctx;
    double xv = load(r->x, r->dr->k->dtype, r->i);
    const cache *c = r->c;
    if (r->cursor < c->count && same_bits(c->val[r->cursor], xv)) {
        *value = c->f[r->cursor++];
        return 0;
    }
    for (size_t j = 0; j < c->count; j++) {
        if (same_bits(c->val[j], xv)) {
            *value = c->f[j];
            r->cursor = j + 1;
            return 0;
        }
    }
    r->missed = 1;
    r->miss_val = xv;
    return 1;
}

/* Reads `count` outputs of the kernel from the device into dr->fhost (waits for the stream). */
static int fetch_outputs(driver *dr, size_t count)
{
    const gtd_fd_kernel *k = dr->k;
    if (k->m) { /* the dots are doubles already */
        int cs = gtd_memcpy_sync(k->stream, dr->fhost, dr->d.fout, count * sizeof(double), 0);
        if (cs) {
            dr->stats->cuda_status = cs;
            return GT_ECALLBACK;
        }
        return GT_OK;
    }
    int cs = gtd_memcpy_sync(k->stream, dr->fstage, dr->d.fout, count * dr->es, 0);
    if (cs) {
        dr->stats->cuda_status = cs;
        return GT_ECALLBACK;
    }
    for (size_t j = 0; j < count; j++)
        dr->fhost[j] = load(dr->fstage, k->dtype, j);
    return GT_OK;
}

static int launch(driver *dr, size_t count)
{
    const gtd_fd_kernel *k = dr->k;
    int cs;
    if (k->m) {
        cs = ((vector_fn)k->fn)(k->ctx, k->stream, count, k->n, dr->d.pts, k->m, dr->d.y);
        if (!cs)
            cs = gtd_batched_dot(k->stream, k->dtype, count, k->m, dr->d.y, (const double *)dr->d.u,
                                 (double *)dr->d.fout);
    } else {
        cs = ((scalar_fn)k->fn)(k->ctx, k->stream, count, k->n, dr->d.pts, dr->d.fout);
    }
    dr->stats->launches++;
    dr->stats->evaluations += count;
    if (cs) {
        dr->stats->cuda_status = cs;
        return GT_ECALLBACK;
    }
    return fetch_outputs(dr, count);
}

/* The eval of f(x) and of the noise estimate: the whole working vector, one launch. */
static int direct_eval(void *ctx, double *value)
{
    direct *d = (direct *)ctx;
    driver *dr = d->dr;
    int cs = gtd_memcpy_sync(dr->k->stream, dr->d.pts, d->x, dr->k->n * dr->es, 1);
    if (cs) {
        dr->stats->cuda_status = cs;
        return 1;
    }
    if (launch(dr, 1))
        return 1;
    *value = dr->fhost[0];
    return 0;
}

/* Evaluates points (comp[j], val[j]), j < count, in launches of at most k->batch, and caches
 * each value in its component's cache. comp and val are host arrays. */
static int evaluate_points(driver *dr, size_t count, const long long *comp, const double *val, cache *caches)
{
    const gtd_fd_kernel *k = dr->k;
    for (size_t start = 0; start < count; start += k->batch) {
        size_t cnt = count - start < k->batch ? count - start : k->batch;
        int cs = gtd_memcpy_sync(k->stream, dr->d.comp, comp + start, cnt * sizeof *comp, 1);
        if (!cs)
            cs = gtd_memcpy_sync(k->stream, dr->d.val, val + start, cnt * sizeof *val, 1);
        if (!cs)
            cs = gtd_fd_points(k->stream, k->dtype, cnt, k->n, dr->d.x0, (const long long *)dr->d.comp,
                               (const double *)dr->d.val, dr->d.pts);
        if (cs) {
            dr->stats->cuda_status = cs;
            return GT_ECALLBACK;
        }
        int st = launch(dr, cnt);
        if (st)
            return st;
        for (size_t j = 0; j < cnt; j++) {
            st = cache_push(&caches[comp[start + j]], val[start + j], dr->fhost[j]);
            if (st)
                return st;
        }
    }
    return GT_OK;
}

static int alloc_device(driver *dr)
{
    const gtd_fd_kernel *k = dr->k;
    int cs = gtd_malloc(k->n * dr->es, &dr->d.x0);
    if (!cs)
        cs = gtd_malloc(k->batch * k->n * dr->es, &dr->d.pts);
    if (!cs)
        cs = gtd_malloc(k->batch * sizeof(long long), &dr->d.comp);
    if (!cs)
        cs = gtd_malloc(k->batch * sizeof(double), &dr->d.val);
    if (!cs)
        cs = gtd_malloc(k->batch * (k->m ? sizeof(double) : dr->es), &dr->d.fout);
    if (!cs && k->m)
        cs = gtd_malloc(k->batch * k->m * dr->es, &dr->d.y);
    if (!cs && k->m)
        cs = gtd_malloc(k->m * sizeof(double), &dr->d.u);
    if (!cs && k->m)
        cs = gtd_memcpy_sync(k->stream, dr->d.u, k->u, k->m * sizeof(double), 1);
    if (cs)
        dr->stats->cuda_status = cs;
    return cs ? GT_ENOMEM : GT_OK;
}

static void free_device(driver *dr)
{
    gtd_free(dr->d.x0);
    gtd_free(dr->d.pts);
    gtd_free(dr->d.comp);
    gtd_free(dr->d.val);
    gtd_free(dr->d.fout);
    gtd_free(dr->d.y);
    gtd_free(dr->d.u);
}

int gtd_fd_batched(const gtd_fd_kernel *k, const void *x, int method, int richardson, double rel_step,
                   double *f0, double *grad, double *err, gtd_fd_stats *stats)
{
    if (!k || !k->fn || !x || !f0 || !grad || !err || !stats || k->n == 0 || k->batch == 0 ||
        (k->dtype != GT_DEVICE_F64 && k->dtype != GT_DEVICE_F32) || method < 0 || method > 2 || (k->m && !k->u))
        return GT_EINVAL;
    memset(stats, 0, sizeof *stats);
    driver dr;
    memset(&dr, 0, sizeof dr);
    dr.k = k;
    dr.es = k->dtype == GT_DEVICE_F64 ? sizeof(double) : sizeof(float);
    dr.stats = stats;
    size_t n = k->n;
    void *work = NULL;
    cache *caches = NULL;
    size_t *pending = NULL;
    long long *pcomp = NULL;
    double *pval = NULL;
    int status = GT_ENOMEM;
    work = gt_malloc(n * dr.es);
    caches = (cache *)gt_calloc(n, sizeof *caches);
    pending = (size_t *)gt_malloc(n * sizeof *pending);
    pcomp = (long long *)gt_malloc(2 * n * sizeof *pcomp);
    pval = (double *)gt_malloc(2 * n * sizeof *pval);
    dr.fhost = (double *)gt_malloc(k->batch * sizeof *dr.fhost);
    dr.fstage = gt_malloc(k->batch * dr.es);
    if (!work || !caches || !pending || !pcomp || !pval || !dr.fhost || !dr.fstage)
        goto done;
    status = alloc_device(&dr);
    if (status)
        goto done;
    memcpy(work, x, n * dr.es);
    {
        int cs = gtd_memcpy_sync(k->stream, dr.d.x0, x, n * dr.es, 1);
        if (cs) {
            stats->cuda_status = cs;
            status = GT_ECALLBACK;
            goto done;
        }
    }

    gt_fd_options opts;
    memset(&opts, 0, sizeof opts);
    opts.method = (gt_fd_method)method;
    opts.richardson = richardson;
    opts.rel_step = rel_step;
    /* the rounding bound of the adaptive rule: the kernel's precision and its measured noise,
     * as the C-kernel check sets them */
    opts.out_eps = k->dtype == GT_DEVICE_F32 ? (double)FLT_EPSILON : DBL_EPSILON;
    direct dctx = {&dr, work};
    gt_fd_problem pd = {work, k->dtype == GT_DEVICE_F32 ? GT_FLOAT32 : GT_FLOAT64, n, direct_eval, &dctx, k->scale};
    status = gt_fd_eval(&pd, f0);
    if (status)
        goto done;
    if (opts.richardson && !(opts.rel_step > 0)) {
        double sigma = 0.0;
        status = gt_fd_noise(&pd, 3, &sigma, NULL);
        if (status)
            goto done;
        opts.noise = GT_FD_NOISE_FACTOR * sigma;
    }

    size_t npend = n;
    for (size_t i = 0; i < n; i++)
        pending[i] = i;
    while (npend) {
        size_t keep = 0, npts = 0;
        stats->rounds++;
        for (size_t q = 0; q < npend; q++) {
            size_t i = pending[q];
            replay r;
            memset(&r, 0, sizeof r);
            r.dr = &dr;
            r.x = work;
            r.i = i;
            r.c = &caches[i];
            gt_fd_problem p = {work, pd.dtype, n, replay_eval, &r, k->scale};
            size_t nonfinite = 0;
            int st = gt_fd_gradient_indices(&p, &opts, *f0, &i, 1, &grad[i], &err[i], &nonfinite);
            if (st == GT_OK) {
                stats->nonfinite += nonfinite;
                continue;
            }
            if (st != GT_ECALLBACK || !r.missed) {
                status = st;
                goto done;
            }
            pending[keep++] = i;
            pcomp[npts] = (long long)i;
            pval[npts++] = r.miss_val;
            /* the mirror point, which the central rule asks for next */
            double x0 = load(x, k->dtype, i);
            double mirror = round_to(k->dtype, x0 - (r.miss_val - x0));
            if (method == GT_FD_CENTRAL && !same_bits(mirror, r.miss_val) && !cache_has(&caches[i], mirror)) {
                pcomp[npts] = (long long)i;
                pval[npts++] = mirror;
            }
        }
        npend = keep;
        status = evaluate_points(&dr, npts, pcomp, pval, caches);
        if (status)
            goto done;
    }
    status = GT_OK;
done:
    if (caches)
        for (size_t i = 0; i < n; i++) {
            gt_free(caches[i].val);
            gt_free(caches[i].f);
        }
    free_device(&dr);
    gt_free(caches);
    gt_free(work);
    gt_free(pending);
    gt_free(pcomp);
    gt_free(pval);
    gt_free(dr.fhost);
    gt_free(dr.fstage);
    return status;
}

int gtd_call_gradient(void *gfn, void *ctx, void *stream, int dtype, size_t n, const void *x, void *grad,
                      int *cuda_status)
{
    if (!gfn || !x || !grad || !cuda_status || n == 0 || (dtype != GT_DEVICE_F64 && dtype != GT_DEVICE_F32))
        return GT_EINVAL;
    *cuda_status = 0;
    size_t es = dtype == GT_DEVICE_F64 ? sizeof(double) : sizeof(float);
    void *dx = NULL, *dg = NULL;
    int status = GT_ENOMEM;
    int cs = gtd_malloc(n * es, &dx);
    if (!cs)
        cs = gtd_malloc(n * es, &dg);
    if (cs)
        goto done;
    status = GT_ECALLBACK;
    cs = gtd_memcpy_sync(stream, dx, x, n * es, 1);
    if (!cs)
        cs = gtd_fill(stream, dtype, n, NAN, dg);
    if (!cs)
        cs = ((gradient_fn)gfn)(ctx, stream, n, dx, dg);
    if (!cs)
        cs = gtd_memcpy_sync(stream, grad, dg, n * es, 0);
    if (!cs)
        status = GT_OK;
done:
    *cuda_status = cs;
    gtd_free(dx);
    gtd_free(dg);
    return status;
}

int gtd_call_vjp(void *vfn, void *ctx, void *stream, int dtype, size_t n, const void *x, size_t m, const double *u,
                 void *xbar, int *cuda_status)
{
    if (!vfn || !x || !u || !xbar || !cuda_status || n == 0 || m == 0 ||
        (dtype != GT_DEVICE_F64 && dtype != GT_DEVICE_F32))
        return GT_EINVAL;
    *cuda_status = 0;
    size_t es = dtype == GT_DEVICE_F64 ? sizeof(double) : sizeof(float);
    void *dx = NULL, *dy = NULL, *dg = NULL, *ybar = gt_malloc(m * es);
    if (!ybar)
        return GT_ENOMEM;
    for (size_t j = 0; j < m; j++) {
        if (dtype == GT_DEVICE_F64)
            ((double *)ybar)[j] = u[j];
        else
            ((float *)ybar)[j] = (float)u[j];
    }
    int status = GT_ENOMEM;
    int cs = gtd_malloc(n * es, &dx);
    if (!cs)
        cs = gtd_malloc(m * es, &dy);
    if (!cs)
        cs = gtd_malloc(n * es, &dg);
    if (cs)
        goto done;
    status = GT_ECALLBACK;
    cs = gtd_memcpy_sync(stream, dx, x, n * es, 1);
    if (!cs)
        cs = gtd_memcpy_sync(stream, dy, ybar, m * es, 1);
    if (!cs)
        cs = gtd_fill(stream, dtype, n, NAN, dg);
    if (!cs)
        cs = ((vjp_fn)vfn)(ctx, stream, n, dx, m, dy, dg);
    if (!cs)
        cs = gtd_memcpy_sync(stream, xbar, dg, n * es, 0);
    if (!cs)
        status = GT_OK;
done:
    *cuda_status = cs;
    gtd_free(dx);
    gtd_free(dy);
    gtd_free(dg);
    gt_free(ybar);
    return status;
}
