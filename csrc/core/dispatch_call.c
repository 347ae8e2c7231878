/* dispatch_call.c: the forked call check and the forked load probe (see dispatch.h, guard.h). */
#define _GNU_SOURCE
#include "dispatch.h"
#include "guard.h"
#include "guardbuf.h"

#include <dlfcn.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

/* In the guarded child: handlers inherited from the parent (Python's faulthandler, pytest's) would
 * print the parent's traceback for the child's crash; let the crash end the child plainly. */
static void default_crash_signals(void)
{
    static const int crash_signals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGTRAP, SIGSYS};
    for (size_t k = 0; k < sizeof crash_signals / sizeof crash_signals[0]; k++)
        signal(crash_signals[k], SIG_DFL);
}

typedef int64_t (*call_int_fn)(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, double, double, double, double,
                               double, double, double, double);
typedef double (*call_fp_fn)(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, double, double, double, double,
                             double, double, double, double);

/* What the guarded child sends back: the result, and what it did outside a buffer argument. */
typedef struct call_message {
    uint64_t ret;
    char overrun[64];
} call_message;

static void free_bufs(gt_guardbuf **bufs, int n)
{
    for (int k = 0; k < n; k++)
        gt_gb_free(bufs[k]);
}

/* Runs in the guarded child: spreads the arguments over the two register classes and calls.
 * Buffer arguments are first copied into guard buffers (checked after the call; a fault on a
 * guard page is named by the guard). */
static int guarded_call(void *vctx, void *out, size_t out_cap, size_t *out_len)
{
    const gt_call_spec *spec = vctx;
    int64_t iv[GT_CALL_MAX_INT] = {0};
    double fv[GT_CALL_MAX_FP] = {0};
    gt_guardbuf *bufs[GT_CALL_MAX_ARGS] = {NULL};
    call_message msg;
    memset(&msg, 0, sizeof msg);
    int ni = 0, nf = 0;
    for (int k = 0; k < spec->nargs; k++) {
        if (spec->cls[k] == GT_CALL_INT) {
            uint64_t v = spec->bits[k];
            if (spec->buf_len[k]) {
                bufs[k] = gt_gb_new(spec->buf_len[k], GT_GB_END, spec->buf_name[k], !spec->buf_const[k]);
                if (!bufs[k]) {
                    free_bufs(bufs, k);
                    return 1; /* no memory for the copy: reported as a child that could not report */
                }
                memcpy(gt_gb_data(bufs[k]), (const void *)(uintptr_t)v, spec->buf_len[k]);
                v = (uint64_t)(uintptr_t)gt_gb_data(bufs[k]);
            }
            iv[ni++] = (int64_t)v;
        } else {
            /* a float travels in the low 32 bits of its register: put its bits there */
            uint64_t bits = spec->cls[k] == GT_CALL_F32 ? (spec->bits[k] & 0xffffffffu) : spec->bits[k];
            memcpy(&fv[nf++], &bits, sizeof bits);
        }
    }
    uint64_t ret = 0;
    /* the guard has already reset the handlers inherited from the parent (Python's faulthandler,
     * pytest's) and named the guard pages' faults */
    gt_guard_stage("calling the target");
    /* calling through a prototype other than the function's own is the ABI-level contract
     * explained above gt_call_spec; extra register arguments are ignored by the callee */
    if (spec->ret == GT_CALL_F64 || spec->ret == GT_CALL_F32) {
        double r = ((call_fp_fn)spec->fn)(iv[0], iv[1], iv[2], iv[3], iv[4], iv[5], fv[0], fv[1], fv[2], fv[3], fv[4],
                                          fv[5], fv[6], fv[7]);
        memcpy(&ret, &r, sizeof ret);
    } else {
        ret = (uint64_t)((call_int_fn)spec->fn)(iv[0], iv[1], iv[2], iv[3], iv[4], iv[5], fv[0], fv[1], fv[2], fv[3],
                                                fv[4], fv[5], fv[6], fv[7]);
    }
    gt_guard_stage("returned");
    msg.ret = ret;
    for (int k = 0; k < spec->nargs; k++)
        if (!msg.overrun[0])
            gt_gb_check(bufs[k], 0, msg.overrun, sizeof msg.overrun);
    free_bufs(bufs, spec->nargs);
    if (out_cap < sizeof msg)
        return 1;
    memcpy(out, &msg, sizeof msg);
    *out_len = sizeof msg;
    return 0;
}

int gt_dispatch_call(const gt_call_spec *spec, double timeout_s, gt_call_outcome *out, char *err, size_t err_cap)
{
    if (!spec || !out || !spec->fn || spec->nargs < 0 || spec->nargs > GT_CALL_MAX_ARGS) {
        if (err && err_cap)
            snprintf(err, err_cap, "invalid call specification");
        return GT_EINVAL;
    }
    int ni = 0, nf = 0;
    for (int k = 0; k < spec->nargs; k++) {
        if (spec->cls[k] == GT_CALL_INT)
            ni++;
        else if (spec->cls[k] == GT_CALL_F64 || spec->cls[k] == GT_CALL_F32)
            nf++;
        else {
            if (err && err_cap)
                snprintf(err, err_cap, "argument %d has an unknown class %d", k, spec->cls[k]);
            return GT_EINVAL;
        }
    }
    if (ni > GT_CALL_MAX_INT || nf > GT_CALL_MAX_FP) {
        if (err && err_cap)
            snprintf(err, err_cap, "the call check passes at most %d integer/pointer and %d floating-point "
                     "arguments (registers only); this signature has %d and %d", GT_CALL_MAX_INT, GT_CALL_MAX_FP, ni, nf);
        return GT_EINVAL;
    }
    memset(out, 0, sizeof *out);
    gt_guard_result res;
    call_message msg;
    memset(&msg, 0, sizeof msg);
    out->status = gt_guard_run(guarded_call, (void *)spec, &msg, sizeof msg, timeout_s, &res);
    if (out->status == GT_EINVAL)
        return GT_EINVAL;
    out->signal = res.signal;
    out->exit_code = res.exit_code;
    memcpy(out->stage, res.stage, sizeof out->stage);
    if (out->status == GT_OK && res.fn_status != 0)
        out->status = GT_ECRASH; /* the child could not send its result */
    /* a fault on a guard page, or a canary found damaged after the call */
    const char *overrun = out->status == GT_ECRASH && res.fault[0] ? res.fault
                          : out->status == GT_OK && msg.overrun[0] ? msg.overrun : NULL;
    if (overrun) {
        snprintf(out->overrun, sizeof out->overrun, "%s", overrun);
        out->status = GT_EOVERRUN;
    }
    out->ret_bits = msg.ret;
    return GT_OK;
}

typedef struct probe_ctx {
    const char *path;
} probe_ctx;

/* Runs in the guarded child: dlopen, and send back dlerror's message when it fails. */
static int guarded_dlopen(void *vctx, void *out, size_t out_cap, size_t *out_len)
{
    const probe_ctx *p = vctx;
    default_crash_signals();
    gt_guard_stage("dlopen");
    void *h = dlopen(p->path, RTLD_NOW | RTLD_LOCAL);
    if (h)
        return 0; /* the child leaves with _exit: no dlclose needed */
    const char *msg = dlerror();
    size_t n = msg ? strlen(msg) : 0;
    if (n > out_cap)
        n = out_cap;
    if (n)
        memcpy(out, msg, n);
    *out_len = n;
    return 1;
}

int gt_dispatch_probe_load(const char *path, double timeout_s, int *loadable, gt_call_outcome *out, char *err,
                           size_t err_cap)
{
    if (!path || !loadable || !out || !err || err_cap == 0)
        return GT_EINVAL;
    memset(out, 0, sizeof *out);
    *loadable = 0;
    err[0] = '\0';
    probe_ctx p = {path};
    gt_guard_result res;
    int status = gt_guard_run(guarded_dlopen, &p, err, err_cap - 1, timeout_s, &res);
    out->status = status;
    out->signal = res.signal;
    out->exit_code = res.exit_code;
    memcpy(out->stage, res.stage, sizeof out->stage);
    if (status != GT_OK) {
        err[0] = '\0';
        return status;
    }
    err[res.out_len < err_cap ? res.out_len : err_cap - 1] = '\0';
    *loadable = res.fn_status == 0;
    return GT_OK;
}
