/* ckernel.c: stages of a C-kernel check, threads and the forked variant (see ckernel.h). */
#define _POSIX_C_SOURCE 200809L
#include "ckernel.h"

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "gradtest.h" /* python/gradtest/include: on the include path (setup.py) */

const char *gt_ck_stage_name(gt_ck_stage stage)
{
    switch (stage) {
    case GT_CK_FUNCTION: return "function";
    case GT_CK_GRADIENT: return "gradient";
    case GT_CK_VJP: return "vjp";
    case GT_CK_JVP: return "jvp";
    }
    return "?";
}

/* ---- typed calls ------------------------------------------------------------------------ */

/* The output size of f: 1 for a scalar function. */
static size_t out_size(const gt_ck_kernel *k) { return k->m ? k->m : 1; }

static int call_f(const gt_ck_kernel *k, const void *x, void *y)
{
    if (k->dtype == GT_FLOAT32)
        return k->m ? ((gradtest_vector_f32)k->f)(k->ctx, k->n, x, k->m, y)
                    : ((gradtest_scalar_f32)k->f)(k->ctx, k->n, x, y);
    return k->m ? ((gradtest_vector_f64)k->f)(k->ctx, k->n, x, k->m, y)
                : ((gradtest_scalar_f64)k->f)(k->ctx, k->n, x, y);
}

static int call_gradient(const gt_ck_kernel *k, const void *x, void *g)
{
    if (k->dtype == GT_FLOAT32)
        return ((gradtest_gradient_f32)k->gradient)(k->ctx, k->n, x, g);
    return ((gradtest_gradient_f64)k->gradient)(k->ctx, k->n, x, g);
}

static int call_vjp(const gt_ck_kernel *k, const void *x, const void *ybar, void *xbar)
{
    if (k->dtype == GT_FLOAT32)
        return ((gradtest_vjp_f32)k->vjp)(k->ctx, k->n, x, out_size(k), ybar, xbar);
    return ((gradtest_vjp_f64)k->vjp)(k->ctx, k->n, x, out_size(k), ybar, xbar);
}

static int call_jvp(const gt_ck_kernel *k, const void *x, const void *xdot, void *ydot)
{
    if (k->dtype == GT_FLOAT32)
        return ((gradtest_jvp_f32)k->jvp)(k->ctx, k->n, x, xdot, out_size(k), ydot);
    return ((gradtest_jvp_f64)k->jvp)(k->ctx, k->n, x, xdot, out_size(k), ydot);
}

static double get_elem(gt_dtype dtype, const void *a, size_t i)
{
    return dtype == GT_FLOAT32 ? (double)((const float *)a)[i] : ((const double *)a)[i];
}

static void set_elem(gt_dtype dtype, void *a, size_t i, double v)
{
    if (dtype == GT_FLOAT32)
        ((float *)a)[i] = (float)v;
    else
        ((double *)a)[i] = v;
}

static void fill_nan(gt_dtype dtype, void *a, size_t count)
{
    for (size_t i = 0; i < count; i++)
        set_elem(dtype, a, i, NAN);
}

/* <u, y> with u = 1 for a scalar function. */
static double reduce(const gt_ck_kernel *k, const double *u, const void *y)
{
    if (!k->m)
        return get_elem(k->dtype, y, 0);
    double acc = 0.0;
    for (size_t j = 0; j < k->m; j++)
        acc += u[j] * get_elem(k->dtype, y, j);
    return acc;
}

/* ---- one worker: a range of components with private buffers ------------------------------ */

typedef struct worker {
    const gt_ck_kernel *k;
    gt_ck_stage stage;
    const double *u;
    const gt_fd_options *opts;
    const double *scale;
    double f0;
    size_t i0, i1;
    double *out, *err; /* shared, each worker writes its own range */
    atomic_int *stop;  /* set by the first worker whose kernel fails */
    /* private */
    void *x;    /* n elements: this worker's working copy */
    void *ybuf; /* out_size elements */
    void *dir;  /* n elements (JVP: the unit vector) */
    size_t calls, nonfinite;
    int status, kernel_status;
} worker;

/* fd.h's callback: s at the worker's current x. */
static int worker_eval(void *ctx, double *value)
{
    worker *w = ctx;
    if (atomic_load_explicit(w->stop, memory_order_relaxed))
        return -1; /* another worker failed: stop early, its status is the one reported */
    /* no NaN fill here: the f(x) call before the sweep was made on a NaN-filled buffer, so an
     * element f never writes already showed up as a non-finite s(x); refilling m values per
     * call would tax every evaluation of a vector function */
    w->calls++;
    int ks = call_f(w->k, w->x, w->ybuf);
    if (ks) {
        w->kernel_status = ks;
        atomic_store(w->stop, 1);
        return -1;
    }
    *value = reduce(w->k, w->u, w->ybuf);
    return 0;
}

static void worker_run(worker *w)
{
    const gt_ck_kernel *k = w->k;
    if (w->stage == GT_CK_FUNCTION) {
        gt_fd_problem p = {w->x, k->dtype, k->n, worker_eval, w, w->scale};
        w->status = gt_fd_gradient_range(&p, w->opts, w->f0, w->i0, w->i1, w->out, w->err,
                                         &w->nonfinite);
        return;
    }
    /* GT_CK_JVP: (J e_i) . u for each i of the range */
    memset(w->dir, 0, k->n * gt_dtype_size(k->dtype));
    for (size_t i = w->i0; i < w->i1; i++) {
        if (atomic_load_explicit(w->stop, memory_order_relaxed)) {
            w->status = GT_ECALLBACK;
            return;
        }
        set_elem(k->dtype, w->dir, i, 1.0);
        fill_nan(k->dtype, w->ybuf, out_size(k));
        w->calls++;
        int ks = call_jvp(k, w->x, w->dir, w->ybuf);
        set_elem(k->dtype, w->dir, i, 0.0);
        if (ks) {
            w->kernel_status = ks;
            w->status = GT_ECALLBACK;
            atomic_store(w->stop, 1);
            return;
        }
        w->out[i] = reduce(k, w->u, w->ybuf);
    }
    w->status = GT_OK;
}

static void *worker_thread(void *arg)
{
    worker_run(arg);
    return NULL;
}

static void worker_free(worker *w)
{
    gt_free(w->x);
    gt_free(w->ybuf);
    gt_free(w->dir);
}

/* Allocates the worker's private buffers and copies x. Returns GT_OK or GT_ENOMEM. */
static int worker_init(worker *w, const void *x)
{
    const gt_ck_kernel *k = w->k;
    size_t es = gt_dtype_size(k->dtype);
    w->x = gt_malloc(k->n * es);
    w->ybuf = gt_malloc(out_size(k) * es);
    w->dir = w->stage == GT_CK_JVP ? gt_malloc(k->n * es) : NULL;
    if (!w->x || !w->ybuf || (w->stage == GT_CK_JVP && !w->dir))
        return GT_ENOMEM;
    memcpy(w->x, x, k->n * es);
    fill_nan(k->dtype, w->ybuf, out_size(k));
    return GT_OK;
}

/* Splits [0, n) over up to `threads` workers, runs them and merges their counters. */
static int run_split(const gt_ck_kernel *k, gt_ck_stage stage, const void *x, const double *u,
                     const gt_fd_options *opts, const double *scale, double f0, int threads,
                     double *out, double *err, gt_ck_result *res)
{
    size_t nt = threads > 1 ? (size_t)threads : 1;
    if (nt > k->n)
        nt = k->n;
    int status = GT_OK;
    atomic_int stop;
    atomic_init(&stop, 0);
    worker *ws = gt_calloc(nt, sizeof *ws);
    pthread_t *tids = gt_calloc(nt, sizeof *tids);
    char *started = gt_calloc(nt, 1);
    if (!ws || !tids || !started) {
        status = GT_ENOMEM;
        goto cleanup;
    }
    for (size_t t = 0; t < nt; t++) {
        worker *w = &ws[t];
        w->k = k;
        w->stage = stage;
        w->u = u;
        w->opts = opts;
        w->scale = scale;
        w->f0 = f0;
        w->i0 = k->n * t / nt;
        w->i1 = k->n * (t + 1) / nt;
        w->out = out;
        w->err = err;
        w->stop = &stop;
        status = worker_init(w, x);
        if (status)
            goto cleanup;
    }
    /* workers 1.. on their own threads; worker 0, and any whose thread failed to start, here */
    for (size_t t = 1; t < nt; t++)
        started[t] = pthread_create(&tids[t], NULL, worker_thread, &ws[t]) == 0;
    worker_run(&ws[0]);
    for (size_t t = 1; t < nt; t++) {
        if (started[t])
            pthread_join(tids[t], NULL);
        else
            worker_run(&ws[t]);
    }
    for (size_t t = 0; t < nt; t++) {
        res->evaluations += ws[t].calls;
        res->nonfinite += ws[t].nonfinite;
        if (ws[t].kernel_status && !res->kernel_status)
            res->kernel_status = ws[t].kernel_status;
        if (ws[t].status && (status == GT_OK || status == GT_ECALLBACK))
            status = ws[t].status;
    }
    /* a worker stopped by another's failure reports GT_ECALLBACK without a status of its own */
    if (res->kernel_status)
        status = GT_ECALLBACK;
cleanup:
    if (ws)
        for (size_t t = 0; t < nt; t++)
            worker_free(&ws[t]);
    gt_free(ws);
    gt_free(tids);
    gt_free(started);
    return status;
}

/* ---- stages ------------------------------------------------------------------------------ */

static int valid_kernel(const gt_ck_kernel *k)
{
    return k && k->f && k->n > 0 && (k->dtype == GT_FLOAT64 || k->dtype == GT_FLOAT32) &&
           !(k->m && k->gradient);
}

/* The FD stage: f0 on the calling thread, then the components split over threads. */
static int stage_function(const gt_ck_kernel *k, const void *x, const double *u,
                          const gt_fd_options *opts, const double *scale, int threads, double *out,
                          double *err, gt_ck_result *res)
{
    int status = GT_OK;
    size_t es = gt_dtype_size(k->dtype);
    void *y = gt_malloc(out_size(k) * es);
    if (!y)
        return GT_ENOMEM;
    fill_nan(k->dtype, y, out_size(k));
    res->evaluations++;
    int ks = call_f(k, x, y);
    if (ks) {
        res->kernel_status = ks;
        status = GT_ECALLBACK;
        goto cleanup;
    }
    res->value = reduce(k, u, y);
    /* the adaptive rule's rounding bound: the kernel's own precision and its measured noise */
    gt_fd_options tuned = *opts;
    if (!(tuned.out_eps > 0))
        tuned.out_eps = k->dtype == GT_FLOAT32 ? (double)FLT_EPSILON : DBL_EPSILON;
    if (tuned.richardson && !(tuned.rel_step > 0)) {
        worker probe_worker = {0};
        atomic_int stop;
        atomic_init(&stop, 0);
        probe_worker.k = k;
        probe_worker.u = u;
        probe_worker.stop = &stop;
        probe_worker.stage = GT_CK_FUNCTION;
        status = worker_init(&probe_worker, x);
        double sigma = 0.0;
        size_t noise_calls = 0;
        if (!status) {
            gt_fd_problem p = {probe_worker.x, k->dtype, k->n, worker_eval, &probe_worker, scale};
            status = gt_fd_noise(&p, 3, &sigma, &noise_calls);
        }
        res->evaluations += probe_worker.calls;
        if (probe_worker.kernel_status)
            res->kernel_status = probe_worker.kernel_status;
        worker_free(&probe_worker);
        if (status)
            goto cleanup;
        tuned.noise = GT_FD_NOISE_FACTOR * sigma;
    }
    status = run_split(k, GT_CK_FUNCTION, x, u, &tuned, scale, res->value, threads, out, err, res);
cleanup:
    gt_free(y);
    return status;
}

/* The gradient or VJP stage: one call on a private copy of x. */
static int stage_reverse(const gt_ck_kernel *k, gt_ck_stage stage, const void *x, const double *u,
                         double *out, gt_ck_result *res)
{
    int status = GT_OK;
    size_t es = gt_dtype_size(k->dtype), mo = out_size(k);
    void *xc = gt_malloc(k->n * es), *g = gt_malloc(k->n * es), *ybar = gt_malloc(mo * es);
    if (!xc || !g || !ybar) {
        status = GT_ENOMEM;
        goto cleanup;
    }
    memcpy(xc, x, k->n * es);
    fill_nan(k->dtype, g, k->n);
    for (size_t j = 0; j < mo; j++)
        set_elem(k->dtype, ybar, j, k->m ? u[j] : 1.0);
    res->evaluations++;
    int ks = stage == GT_CK_GRADIENT ? call_gradient(k, xc, g) : call_vjp(k, xc, ybar, g);
    if (ks) {
        res->kernel_status = ks;
        status = GT_ECALLBACK;
        goto cleanup;
    }
    for (size_t i = 0; i < k->n; i++)
        out[i] = get_elem(k->dtype, g, i);
cleanup:
    gt_free(xc);
    gt_free(g);
    gt_free(ybar);
    return status;
}

int gt_ck_stage_run(const gt_ck_kernel *k, gt_ck_stage stage, const void *x, const double *u,
                    const gt_fd_options *opts, const double *scale, int threads, double *out,
                    double *err, gt_ck_result *res)
{
    if (!res)
        return GT_EINVAL;
    memset(res, 0, sizeof *res);
    res->value = NAN;
    if (!valid_kernel(k) || !x || !out || (k->m && !u))
        return GT_EINVAL;
    gt_guard_stage(gt_ck_stage_name(stage));
    switch (stage) {
    case GT_CK_FUNCTION:
        if (!opts)
            return GT_EINVAL;
        return stage_function(k, x, u, opts, scale, threads, out, err, res);
    case GT_CK_GRADIENT:
        if (!k->gradient)
            return GT_EINVAL;
        return stage_reverse(k, stage, x, u, out, res);
    case GT_CK_VJP:
        if (!k->vjp)
            return GT_EINVAL;
        return stage_reverse(k, stage, x, u, out, res);
    case GT_CK_JVP:
        if (!k->jvp)
            return GT_EINVAL;
        return run_split(k, GT_CK_JVP, x, u, NULL, NULL, NAN, threads, out, NULL, res);
    }
    return GT_EINVAL;
}

/* ---- the forked variant ------------------------------------------------------------------- */

typedef struct guarded_call {
    const gt_ck_kernel *k;
    gt_ck_stage stage;
    const void *x;
    const double *u;
    const gt_fd_options *opts;
    const double *scale;
    int threads;
    int want_err;
} guarded_call;

/* The child's side: runs the stage straight into the message buffer, laid out as
 * [gt_ck_result][out: n doubles][err: n doubles]. */
static int guarded_stage(void *ctx, void *buf, size_t cap, size_t *len)
{
    const guarded_call *c = ctx;
    size_t n = c->k->n;
    size_t need = sizeof(gt_ck_result) + 2 * n * sizeof(double);
    if (cap < need)
        return GT_EINVAL;
    gt_ck_result *res = buf;
    double *out = (double *)((char *)buf + sizeof(gt_ck_result));
    double *err = out + n;
    int status = gt_ck_stage_run(c->k, c->stage, c->x, c->u, c->opts, c->scale, c->threads, out,
                                 c->want_err ? err : NULL, res);
    *len = need;
    return status;
}

int gt_ck_stage_guarded(const gt_ck_kernel *k, gt_ck_stage stage, const void *x, const double *u,
                        const gt_fd_options *opts, const double *scale, int threads, double *out,
                        double *err, gt_ck_result *res, double timeout_s, gt_guard_result *gres)
{
    if (!res || !gres || !valid_kernel(k) || !x || !out)
        return GT_EINVAL;
    memset(res, 0, sizeof *res);
    res->value = NAN;
    size_t n = k->n;
    if (n > (SIZE_MAX - sizeof(gt_ck_result)) / (2 * sizeof(double)))
        return GT_EINVAL;
    size_t cap = sizeof(gt_ck_result) + 2 * n * sizeof(double);
    int status;
    /* double-aligned: gt_malloc's memory suits any type */
    char *buf = gt_malloc(cap);
    if (!buf)
        return GT_ENOMEM;
    guarded_call call = {k, stage, x, u, opts, scale, threads, err != NULL};
    status = gt_guard_run(guarded_stage, &call, buf, cap, timeout_s, gres);
    if (status != GT_OK)
        goto cleanup;
    if (gres->out_len != cap) {
        /* the child reported back without a full message: only a failure before the stage ran
         * (its status says which) */
        status = gres->fn_status ? gres->fn_status : GT_EIO;
        goto cleanup;
    }
    memcpy(res, buf, sizeof *res);
    memcpy(out, buf + sizeof(gt_ck_result), n * sizeof(double));
    if (err)
        memcpy(err, buf + sizeof(gt_ck_result) + n * sizeof(double), n * sizeof(double));
    status = gres->fn_status;
cleanup:
    gt_free(buf);
    return status;
}

int gt_ck_evaluate(const gt_ck_kernel *k, const void *x, double *y, int *kernel_status)
{
    if (!valid_kernel(k) || !x || !y)
        return GT_EINVAL;
    int status = GT_OK;
    size_t es = gt_dtype_size(k->dtype), mo = out_size(k);
    void *xc = gt_malloc(k->n * es), *yb = gt_malloc(mo * es);
    if (!xc || !yb) {
        status = GT_ENOMEM;
        goto cleanup;
    }
    memcpy(xc, x, k->n * es);
    fill_nan(k->dtype, yb, mo);
    int ks = call_f(k, xc, yb);
    if (kernel_status)
        *kernel_status = ks;
    if (ks) {
        status = GT_ECALLBACK;
        goto cleanup;
    }
    for (size_t j = 0; j < mo; j++)
        y[j] = get_elem(k->dtype, yb, j);
cleanup:
    gt_free(xc);
    gt_free(yb);
    return status;
}
