/* dispatch_call.c: the forked call check and the forked load probe (see dispatch.h, guard.h). */
#define _GNU_SOURCE
#include "dispatch.h"
#include "guard.h"

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

/* Runs in the guarded child: spreads the arguments over the two register classes and calls. */
static int guarded_call(void *vctx, void *out, size_t out_cap, size_t *out_len)
{
    const gt_call_spec *spec = vctx;
    int64_t iv[GT_CALL_MAX_INT] = {0};
    double fv[GT_CALL_MAX_FP] = {0};
    int ni = 0, nf = 0;
    for (int k = 0; k < spec->nargs; k++) {
        if (spec->cls[k] == GT_CALL_INT) {
            iv[ni++] = (int64_t)spec->bits[k];
        } else {
            /* a float travels in the low 32 bits of its register: put its bits there */
            uint64_t bits = spec->cls[k] == GT_CALL_F32 ? (spec->bits[k] & 0xffffffffu) : spec->bits[k];
            memcpy(&fv[nf++], &bits, sizeof bits);
        }
    }
    uint64_t ret = 0;
    default_crash_signals();
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
    if (out_cap < sizeof ret)
        return 1;
    memcpy(out, &ret, sizeof ret);
    *out_len = sizeof ret;
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
    uint64_t ret = 0;
    out->status = gt_guard_run(guarded_call, (void *)spec, &ret, sizeof ret, timeout_s, &res);
    if (out->status == GT_EINVAL)
        return GT_EINVAL;
    out->signal = res.signal;
    out->exit_code = res.exit_code;
    memcpy(out->stage, res.stage, sizeof out->stage);
    if (out->status == GT_OK && res.fn_status != 0)
        out->status = GT_ECRASH; /* the child could not send its result */
    out->ret_bits = ret;
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
