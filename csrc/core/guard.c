/* guard.c: forked, time-limited execution of C work (see guard.h). */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE
#include "guard.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The stage page of the guarded run in progress in this (child) process; the child is single
 * threaded from fork on, and the variable is thread-local in the parent. */
static _Thread_local char *current_stage = NULL;

void gt_guard_stage(const char *stage)
{
    if (!current_stage || !stage)
        return;
    size_t n = strlen(stage);
    if (n > 63)
        n = 63;
    memcpy(current_stage, stage, n);
    current_stage[n] = '\0';
}

const char *gt_signal_name(int sig, char *buf, size_t buf_size)
{
    switch (sig) {
    case SIGSEGV: return "SIGSEGV";
    case SIGABRT: return "SIGABRT";
    case SIGBUS: return "SIGBUS";
    case SIGFPE: return "SIGFPE";
    case SIGILL: return "SIGILL";
    case SIGKILL: return "SIGKILL";
    case SIGTERM: return "SIGTERM";
    case SIGTRAP: return "SIGTRAP";
    case SIGSYS: return "SIGSYS";
    default:
        snprintf(buf, buf_size, "signal %d", sig);
        return buf;
    }
}

static int write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* In the child: the parent's handlers for crash signals (Python's faulthandler, a sanitizer's)
 * would print the parent's state or swallow the signal; restore the default action so that the
 * child dies on the signal and the parent reports it. SIGINT too, so that Ctrl-C (sent to the
 * whole process group) stops a hanging child instead of being recorded by a Python handler
 * that never runs in it. */
static void reset_child_signals(void)
{
    static const int sigs[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGTRAP, SIGSYS, SIGINT};
    sigset_t set;
    sigemptyset(&set);
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        signal(sigs[i], SIG_DFL);
        sigaddset(&set, sigs[i]);
    }
    sigprocmask(SIG_UNBLOCK, &set, NULL);
}

/* Child side: run fn, send {fn_status, len} then the bytes, and leave. */
static void run_child(int fd, gt_guarded_fn fn, void *ctx, void *out, size_t out_cap)
{
    size_t len = 0;
    reset_child_signals();
    int fn_status = fn(ctx, out, out_cap, &len);
    /* _exit skips stdio's exit flush: what fn printed to a buffered stdout (a kernel's debugging
     * output) would be lost. stdout only: flushing every stream would lock streams that another
     * thread of the parent may have held at fork time. */
    fflush(stdout);
    if (len > out_cap)
        len = out_cap;
    long long header[2] = {fn_status, (long long)len};
    int ok = write_all(fd, header, sizeof header) == 0 && write_all(fd, out, len) == 0;
    _exit(ok ? 0 : 121);
}

int gt_guard_run(gt_guarded_fn fn, void *ctx, void *out, size_t out_cap, double timeout_s,
                 gt_guard_result *res)
{
    if (!fn || !res || (!out && out_cap))
        return GT_EINVAL;
    memset(res, 0, sizeof *res);
    int status = GT_OK, fds[2] = {-1, -1};
    char *stage_page = mmap(NULL, 64, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (stage_page == MAP_FAILED)
        return GT_EIO;
    stage_page[0] = '\0';
    if (pipe(fds) != 0) {
        status = GT_EIO;
        goto cleanup;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        status = GT_EIO;
        goto cleanup;
    }
    if (pid == 0) {
        close(fds[0]);
        current_stage = stage_page;
        run_child(fds[1], fn, ctx, out, out_cap);
    }
    close(fds[1]);
    fds[1] = -1;

    /* Read the header and the payload until EOF, the deadline, or a full buffer. */
    long long header[2] = {0, 0};
    size_t got = 0, want_total = sizeof header;
    const double deadline = timeout_s > 0 ? now_seconds() + timeout_s : 0.0;
    int eof = 0;
    while (!eof) {
        int wait_ms = -1;
        if (timeout_s > 0) {
            double left = deadline - now_seconds();
            if (left <= 0) {
                res->timed_out = 1;
                break;
            }
            wait_ms = (int)(left * 1000.0) + 1;
        }
        struct pollfd pfd = {fds[0], POLLIN, 0};
        int pr = poll(&pfd, 1, wait_ms);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr < 0) {
            status = GT_EIO;
            break;
        }
        if (pr == 0)
            continue;
        char scratch[4096];
        char *dst;
        size_t room;
        if (got < sizeof header) {
            dst = (char *)header + got;
            room = sizeof header - got;
        } else if (got - sizeof header < out_cap) {
            dst = (char *)out + (got - sizeof header);
            room = out_cap - (got - sizeof header);
        } else {
            dst = scratch; /* drain anything beyond the buffer */
            room = sizeof scratch;
        }
        ssize_t r = read(fds[0], dst, room);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            eof = 1;
            break;
        }
        if (dst != scratch)
            got += (size_t)r;
        if (got == sizeof header)
            want_total = sizeof header + (size_t)(header[1] > 0 ? header[1] : 0);
    }
    if (res->timed_out)
        kill(pid, SIGKILL);
    int wstatus = 0;
    while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR)
        ;
    memcpy(res->stage, stage_page, 63);
    res->stage[63] = '\0';
    if (status != GT_OK)
        goto cleanup;
    if (res->timed_out) {
        res->signal = SIGKILL;
        status = GT_ETIMEOUT;
    } else if (WIFSIGNALED(wstatus)) {
        res->signal = WTERMSIG(wstatus);
        status = GT_ECRASH;
    } else if (got < want_total || got < sizeof header || WEXITSTATUS(wstatus) != 0) {
        res->exit_code = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1;
        status = GT_ECRASH;
    } else {
        res->fn_status = (int)header[0];
        res->out_len = got - sizeof header;
    }
cleanup:
    if (fds[0] >= 0)
        close(fds[0]);
    if (fds[1] >= 0)
        close(fds[1]);
    munmap(stage_page, 64);
    return status;
}
