/* ckernel.c: stages of a C-kernel check, threads and the forked variant (see ckernel.h). */
#define _POSIX_C_SOURCE 200809L
#include "ckernel.h"

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "gradtest.h" /* python/gradtest/include: on the include path (setup.py) */
#include "guardbuf.h"

const char *gt_ck_stage_name(gt_ck_stage stage)
{
    switch (stage) {
    case GT_CK_FUNCTION: return "function";
    case GT_CK_GRADIENT: return "gradient";
    case GT_CK_VJP: return "vjp";
    case GT_CK_JVP: return "jvp";
    case GT_CK_EVALUATE: return "evaluate";
    }
    return "?";
}

/* ---- typed calls ------------------------------------------------------------------------ */

/* The output size of f: 1 for a scalar function. */
static size_t out_size(const gt_ck_kernel *k) { return k->m ? k->m : 1; }

/* The name of f's output in gradtest.h: reports say "wrote past the end of f". */
static const char *f_out_name(const gt_ck_kernel *k) { return k->m ? "y" : "f"; }

/* A guard buffer (guardbuf.h) of count elements of k's dtype, or NULL (out of memory). */
static gt_guardbuf *kbuf(const gt_ck_kernel *k, size_t count, gt_gb_place place, const char *name,
                         int output)
{
    return gt_gb_new(count * gt_dtype_size(k->dtype), place, name, output);
}

/* After a kernel call: the canaries of the buffers it was given (span: see gt_gb_check). GT_OK,
 * or GT_EOVERRUN with the first damage described in msg (64 bytes). NULL entries are skipped. */
static int check_span(gt_guardbuf *a, gt_guardbuf *b, gt_guardbuf *c, size_t span, char *msg)
{
    gt_guardbuf *bufs[3] = {a, b, c};
    for (size_t i = 0; i < 3; i++)
        if (gt_gb_check(bufs[i], span, msg, 64) != GT_OK)
            return GT_EOVERRUN;
    return GT_OK;
}

/* Every canary byte: after a single call, and at the end of a loop of calls. */
static int check_bufs(gt_guardbuf *a, gt_guardbuf *b, gt_guardbuf *c, char *msg)
{
    return check_span(a, b, c, 0, msg);
}

/* The bytes next to the data only: after each call of a loop, where a full check of a page of
 * canary per buffer and call would dominate the cost of a fast kernel. */
#define NEAR_SPAN 64
static int check_near(gt_guardbuf *a, gt_guardbuf *b, gt_guardbuf *c, char *msg)
{
    return check_span(a, b, c, NEAR_SPAN, msg);
}

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
    gt_gb_place place;
    /* private: guard buffers and their data */
    gt_guardbuf *xb, *yb, *db;
    void *x;    /* n elements: this worker's working copy */
    void *ybuf; /* out_size elements */
    void *dir;  /* n elements (JVP: the unit vector) */
    size_t calls, nonfinite;
    int status, kernel_status;
    char overrun[64]; /* when the kernel wrote outside a buffer: what it did */
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
    if (check_near(w->xb, w->yb, NULL, w->overrun) != GT_OK) {
        atomic_store(w->stop, 1);
        return -1;
    }
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
        if (!w->overrun[0])
            check_bufs(w->xb, w->yb, NULL, w->overrun);
        if (w->overrun[0])
            w->status = GT_EOVERRUN;
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
        if (check_near(w->xb, w->db, w->yb, w->overrun) != GT_OK) {
            w->status = GT_EOVERRUN;
            atomic_store(w->stop, 1);
            return;
        }
        if (ks) {
            w->kernel_status = ks;
            w->status = GT_ECALLBACK;
            atomic_store(w->stop, 1);
            return;
        }
        w->out[i] = reduce(k, w->u, w->ybuf);
    }
    w->status = check_bufs(w->xb, w->db, w->yb, w->overrun);
}

static void *worker_thread(void *arg)
{
    worker_run(arg);
    return NULL;
}

static void worker_free(worker *w)
{
    gt_gb_free(w->xb);
    gt_gb_free(w->yb);
    gt_gb_free(w->db);
}

/* Allocates the worker's private buffers and copies x. Returns GT_OK or GT_ENOMEM. */
static int worker_init(worker *w, const void *x)
{
    const gt_ck_kernel *k = w->k;
    size_t es = gt_dtype_size(k->dtype);
    int jvp = w->stage == GT_CK_JVP;
    w->xb = kbuf(k, k->n, w->place, "x", 0);
    w->yb = kbuf(k, out_size(k), w->place, jvp ? "ydot" : f_out_name(k), 1);
    w->db = jvp ? kbuf(k, k->n, w->place, "xdot", 0) : NULL;
    if (!w->xb || !w->yb || (jvp && !w->db))
        return GT_ENOMEM;
    w->x = gt_gb_data(w->xb);
    w->ybuf = gt_gb_data(w->yb);
    w->dir = gt_gb_data(w->db);
    memcpy(w->x, x, k->n * es);
    fill_nan(k->dtype, w->ybuf, out_size(k));
    return GT_OK;
}

/* Splits [0, n) over up to `threads` workers, runs them and merges their counters. */
static int run_split(const gt_ck_kernel *k, gt_ck_stage stage, const void *x, const double *u,
                     const gt_fd_options *opts, const double *scale, double f0, int threads,
                     double *out, double *err, gt_ck_result *res, gt_gb_place place)
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
        w->place = place;
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
        if (ws[t].overrun[0] && !res->overrun[0])
            memcpy(res->overrun, ws[t].overrun, sizeof res->overrun);
    }
    /* a worker stopped by another's failure reports GT_ECALLBACK without a status of its own;
     * a write outside a buffer outranks everything: the values that followed it mean nothing */
    if (res->kernel_status)
        status = GT_ECALLBACK;
    if (res->overrun[0])
        status = GT_EOVERRUN;
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

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* One timed call of f on a private copy of x: res->value = s(x), res->seconds its duration. */
static int evaluate_once(const gt_ck_kernel *k, const void *x, const double *u, gt_ck_result *res,
                         gt_gb_place place)
{
    int status = GT_OK;
    size_t es = gt_dtype_size(k->dtype);
    gt_guardbuf *xb = kbuf(k, k->n, place, "x", 0), *yb = kbuf(k, out_size(k), place, f_out_name(k), 1);
    if (!xb || !yb) {
        status = GT_ENOMEM;
        goto cleanup;
    }
    memcpy(gt_gb_data(xb), x, k->n * es);
    fill_nan(k->dtype, gt_gb_data(yb), out_size(k));
    res->evaluations++;
    double start = now_seconds();
    int ks = call_f(k, gt_gb_data(xb), gt_gb_data(yb));
    res->seconds = now_seconds() - start;
    if (check_bufs(xb, yb, NULL, res->overrun) != GT_OK) {
        status = GT_EOVERRUN;
        goto cleanup;
    }
    if (ks) {
        res->kernel_status = ks;
        status = GT_ECALLBACK;
        goto cleanup;
    }
    res->value = reduce(k, u, gt_gb_data(yb));
cleanup:
    gt_gb_free(xb);
    gt_gb_free(yb);
    return status;
}

/* The FD stage: f0 on the calling thread, then the components split over threads. */
static int stage_function(const gt_ck_kernel *k, const void *x, const double *u,
                          const gt_fd_options *opts, const double *scale, int threads, double *out,
                          double *err, gt_ck_result *res, gt_gb_place place)
{
    int status = evaluate_once(k, x, u, res, place);
    if (status != GT_OK)
        return status;
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
        probe_worker.place = place;
        status = worker_init(&probe_worker, x);
        double sigma = 0.0;
        if (!status) {
            gt_fd_problem p = {probe_worker.x, k->dtype, k->n, worker_eval, &probe_worker, scale};
            status = gt_fd_noise(&p, 3, &sigma, NULL);
            if (status && probe_worker.overrun[0]) {
                memcpy(res->overrun, probe_worker.overrun, sizeof res->overrun);
                status = GT_EOVERRUN;
            } else if (status && probe_worker.kernel_status) {
                res->kernel_status = probe_worker.kernel_status;
            }
        }
        res->evaluations += probe_worker.calls;
        worker_free(&probe_worker);
        if (status)
            return status;
        tuned.noise = GT_FD_NOISE_FACTOR * sigma;
    }
    return run_split(k, GT_CK_FUNCTION, x, u, &tuned, scale, res->value, threads, out, err, res,
                     place);
}

/* The evaluate stage: one timed call of f; out gets zeros. */
static int stage_evaluate(const gt_ck_kernel *k, const void *x, const double *u, double *out,
                          gt_ck_result *res, gt_gb_place place)
{
    memset(out, 0, k->n * sizeof *out);
    return evaluate_once(k, x, u, res, place);
}

/* The gradient or VJP stage: one call on a private copy of x. */
static int stage_reverse(const gt_ck_kernel *k, gt_ck_stage stage, const void *x, const double *u,
                         double *out, gt_ck_result *res, gt_gb_place place)
{
    int status = GT_OK;
    size_t es = gt_dtype_size(k->dtype), mo = out_size(k);
    gt_guardbuf *xb = kbuf(k, k->n, place, "x", 0), *ybb = kbuf(k, mo, place, "ybar", 0),
                *gb = kbuf(k, k->n, place, stage == GT_CK_GRADIENT ? "grad" : "xbar", 1);
    if (!xb || !gb || !ybb) {
        status = GT_ENOMEM;
        goto cleanup;
    }
    void *xc = gt_gb_data(xb), *g = gt_gb_data(gb), *ybar = gt_gb_data(ybb);
    memcpy(xc, x, k->n * es);
    fill_nan(k->dtype, g, k->n);
    for (size_t j = 0; j < mo; j++)
        set_elem(k->dtype, ybar, j, k->m ? u[j] : 1.0);
    res->evaluations++;
    int ks = stage == GT_CK_GRADIENT ? call_gradient(k, xc, g) : call_vjp(k, xc, ybar, g);
    if (check_bufs(xb, gb, ybb, res->overrun) != GT_OK) {
        status = GT_EOVERRUN;
        goto cleanup;
    }
    if (ks) {
        res->kernel_status = ks;
        status = GT_ECALLBACK;
        goto cleanup;
    }
    for (size_t i = 0; i < k->n; i++)
        out[i] = get_elem(k->dtype, g, i);
cleanup:
    gt_gb_free(xb);
    gt_gb_free(gb);
    gt_gb_free(ybb);
    return status;
}

/* gt_ck_stage_run with the placement of the buffers handed to the kernel: GT_GB_PADDED in this
 * process, GT_GB_END in a guarded child (whose guard-page faults are reported by name). */
static int stage_run(const gt_ck_kernel *k, gt_ck_stage stage, const void *x, const double *u,
                     const gt_fd_options *opts, const double *scale, int threads, double *out,
                     double *err, gt_ck_result *res, gt_gb_place place)
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
        return stage_function(k, x, u, opts, scale, threads, out, err, res, place);
    case GT_CK_GRADIENT:
        if (!k->gradient)
            return GT_EINVAL;
        return stage_reverse(k, stage, x, u, out, res, place);
    case GT_CK_VJP:
        if (!k->vjp)
            return GT_EINVAL;
        return stage_reverse(k, stage, x, u, out, res, place);
    case GT_CK_JVP:
        if (!k->jvp)
            return GT_EINVAL;
        return run_split(k, GT_CK_JVP, x, u, NULL, NULL, NAN, threads, out, NULL, res, place);
    case GT_CK_EVALUATE:
        return stage_evaluate(k, x, u, out, res, place);
    }
    return GT_EINVAL;
}

int gt_ck_stage_run(const gt_ck_kernel *k, gt_ck_stage stage, const void *x, const double *u,
                    const gt_fd_options *opts, const double *scale, int threads, double *out,
                    double *err, gt_ck_result *res)
{
    return stage_run(k, stage, x, u, opts, scale, threads, out, err, res, GT_GB_PADDED);
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
    /* every byte of the message is defined, whatever the stage fills in (no uninitialised bytes
     * through the pipe: err of a stage other than 'function', the struct's padding) */
    memset(buf, 0, need);
    gt_ck_result *res = buf;
    double *out = (double *)((char *)buf + sizeof(gt_ck_result));
    double *err = out + n;
    int status = stage_run(c->k, c->stage, c->x, c->u, c->opts, c->scale, c->threads, out,
                           c->want_err ? err : NULL, res, GT_GB_END);
    *len = need;
    return status;
}

int gt_ck_stage_guarded(const gt_ck_kernel *k, gt_ck_stage stage, const void *x, const double *u,
                        const gt_fd_options *opts, const double *scale, int threads, double *out,
                        double *err, gt_ck_result *res, const gt_guard_options *gopts,
                        gt_guard_result *gres)
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
    status = gt_guard_run_opts(guarded_stage, &call, buf, cap, gopts, gres);
    if (status == GT_ECRASH && gres->fault[0]) {
        /* it died on a guard page of a buffer it was given: say which, in the user's terms */
        memcpy(res->overrun, gres->fault, sizeof res->overrun);
        res->overrun[sizeof res->overrun - 1] = '\0';
        status = GT_EOVERRUN;
    }
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

int gt_ck_evaluate(const gt_ck_kernel *k, const void *x, double *y, int *kernel_status,
                   char overrun[64])
{
    if (!valid_kernel(k) || !x || !y)
        return GT_EINVAL;
    int status = GT_OK;
    size_t es = gt_dtype_size(k->dtype), mo = out_size(k);
    gt_guardbuf *xg = kbuf(k, k->n, GT_GB_PADDED, "x", 0), *yg = kbuf(k, mo, GT_GB_PADDED, f_out_name(k), 1);
    if (!xg || !yg) {
        status = GT_ENOMEM;
        goto cleanup;
    }
    void *xc = gt_gb_data(xg), *yb = gt_gb_data(yg);
    memcpy(xc, x, k->n * es);
    fill_nan(k->dtype, yb, mo);
    int ks = call_f(k, xc, yb);
    if (kernel_status)
        *kernel_status = ks;
    char msg[64];
    if (check_bufs(xg, yg, NULL, overrun ? overrun : msg) != GT_OK) {
        status = GT_EOVERRUN;
        goto cleanup;
    }
    if (ks) {
        status = GT_ECALLBACK;
        goto cleanup;
    }
    for (size_t j = 0; j < mo; j++)
        y[j] = get_elem(k->dtype, yb, j);
cleanup:
    gt_gb_free(xg);
    gt_gb_free(yg);
    return status;
}
