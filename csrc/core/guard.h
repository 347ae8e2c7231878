/* guard.h: run a piece of C work in a forked child so that a crash or a hang becomes a report.
 *
 * gt_guard_run forks; the child runs `fn`, sends the bytes it produced back over a pipe and
 * leaves with _exit (never returning into the caller's runtime, e.g. Python). The parent waits
 * with a time limit and reports how the child ended: normally, on a signal (segfault, abort,
 * bus error, floating-point trap...) or killed at the time limit. While it runs, `fn` may name
 * the stage it is in (gt_guard_stage); the name survives a crash and is reported. POSIX only.
 *
 * The child never outlives the parent: it asks the kernel for SIGKILL when the thread that forked
 * it ends (PR_SET_PDEATHSIG on Linux) and then checks getppid(), in case the parent died before the
 * request took effect; it runs in its own process group, so that a terminal's Ctrl-C reaches the
 * parent alone, which decides (gt_guard_options.interrupted) and kills the whole group. */
#ifndef GT_GUARD_H
#define GT_GUARD_H

#include <stddef.h>

#include "gt_common.h"

/* The guarded work. Writes at most out_cap bytes to `out` (the child's private copy of the
 * parent's buffer) and their count to *out_len. Returns 0 on success, non-zero to report failure
 * (passed back as fn_status). */
typedef int (*gt_guarded_fn)(void *ctx, void *out, size_t out_cap, size_t *out_len);

typedef struct gt_guard_result {
    int fn_status;   /* fn's return value, when the child ended normally */
    int signal;      /* the signal that ended the child, or 0 */
    int timed_out;   /* 1 when the parent killed the child at the time limit */
    int exit_code;   /* the child's exit code when it exited without reporting (e.g. exit() in fn) */
    int interrupted; /* 1 when opts->interrupted asked to stop and the child was killed */
    size_t out_len;  /* bytes received into the parent's `out` */
    char stage[64];  /* the last stage fn named, "" if none */
    char fault[64];  /* when the child faulted in a range named by gt_guard_watch: that name */
} gt_guard_result;

typedef struct gt_guard_options {
    double timeout_s; /* <= 0: no limit */
    /* May be NULL. Called in the parent while it waits (about every 50 ms, and when a signal
     * interrupts the wait); a non-zero return kills the child's process group and makes
     * gt_guard_run_opts return GT_EINTR. */
    int (*interrupted)(void *ctx);
    void *interrupt_ctx;
} gt_guard_options;

/* Runs fn(ctx, out, out_cap, &len) in a child. On return the parent's `out` (caller-owned, out_cap
 * bytes) holds what the child sent. timeout_s <= 0 means no limit.
 * Returns GT_OK when the child reported back (res->fn_status says whether fn succeeded),
 * GT_ECRASH when it died on a signal or exited without reporting, GT_ETIMEOUT when it was killed
 * at the limit, GT_EIO when fork/pipe/mmap failed (errno set), GT_EINVAL for bad arguments.
 * *res is filled in every case but GT_EINVAL. */
int gt_guard_run(gt_guarded_fn fn, void *ctx, void *out, size_t out_cap, double timeout_s,
                 gt_guard_result *res);

/* gt_guard_run with options (opts may be NULL: no limit, no interruption). Returns what
 * gt_guard_run returns, or GT_EINTR when opts->interrupted asked to stop (res->interrupted set;
 * the child was killed and reaped). */
int gt_guard_run_opts(gt_guarded_fn fn, void *ctx, void *out, size_t out_cap,
                      const gt_guard_options *opts, gt_guard_result *res);

/* Inside a guarded child: a fault (SIGSEGV/SIGBUS) at an address in [begin, begin + len) is
 * reported in gt_guard_result.fault as `what` (truncated to 63 bytes), e.g. "wrote past the end
 * of grad". Returns a slot (>= 0) for gt_guard_unwatch, or -1 outside a guarded child or when
 * the table of GT_GUARD_MAX_WATCH ranges is full (the fault is then reported as a plain signal).
 * Thread-safe; `what` is copied. */
#define GT_GUARD_MAX_WATCH 64
int gt_guard_watch(const void *begin, size_t len, const char *what);

/* Frees a slot returned by gt_guard_watch; slot < 0 does nothing. */
void gt_guard_unwatch(int slot);

/* 1 inside a guarded child (where gt_guard_watch works), 0 elsewhere. */
int gt_guard_in_child(void);

/* Inside a guarded fn: records the current stage name (truncated to 63 bytes). Outside a guarded
 * run it does nothing. Async-signal-safe enough for use from kernels' callers. */
void gt_guard_stage(const char *stage);

/* The name of a signal ("SIGSEGV"), or "signal N" written into buf for unknown ones. */
const char *gt_signal_name(int sig, char *buf, size_t buf_size);

#endif /* GT_GUARD_H */
