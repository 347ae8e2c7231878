/* guard.c: forked, time-limited execution of C work (see guard.h). */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE
#include "guard.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* What the child leaves for the parent to read after it died: shared memory (MAP_SHARED). */
typedef struct shared_page {
    char stage[64];
    char fault[64];
} shared_page;

/* The stage page of the guarded run in progress in this (child) process; the child is single
 * threaded from fork on, and the variable is thread-local in the parent. */
static _Thread_local char *current_stage = NULL;

/* The ranges named by gt_guard_watch, and the shared page their faults are reported in. Written
 * only in a forked child (child_shared stays NULL in every other process, so gt_guard_watch does
 * nothing there); read by the child's fault handler, on whichever of its threads faults. */
typedef struct watch {
    atomic_int used; /* 0 free, 1 being filled, 2 live */
    uintptr_t begin, end;
    char what[64];
} watch;
static watch watches[GT_GUARD_MAX_WATCH];
static shared_page *volatile child_shared = NULL;

int gt_guard_in_child(void) { return child_shared != NULL; }

int gt_guard_watch(const void *begin, size_t len, const char *what)
{
    if (!child_shared || !begin || !what)
        return -1;
    for (int i = 0; i < GT_GUARD_MAX_WATCH; i++) {
        int expected = 0;
        if (!atomic_compare_exchange_strong(&watches[i].used, &expected, 1))
            continue;
        watches[i].begin = (uintptr_t)begin;
        watches[i].end = (uintptr_t)begin + len;
        snprintf(watches[i].what, sizeof watches[i].what, "%s", what);
        atomic_store(&watches[i].used, 2);
        return i;
    }
    return -1;
}

void gt_guard_unwatch(int slot)
{
    if (slot >= 0 && slot < GT_GUARD_MAX_WATCH)
        atomic_store(&watches[slot].used, 0);
}

/* The child's SIGSEGV/SIGBUS handler: a fault in a watched range writes its name for the parent;
 * then the default action is back (SA_RESETHAND) and returning re-runs the faulting access, which
 * ends the child on the signal as before. Only async-signal-safe work: loads and byte copies. */
static void fault_handler(int sig, siginfo_t *si, void *uctx)
{
    (void)uctx;
    shared_page *sp = child_shared;
    if (!sp || !si || si->si_code <= 0) {
        /* sent by kill/raise, with no faulting address: returning would not repeat it, so send
         * it again; it is delivered, with the default action, once this handler returns */
        raise(sig);
        return;
    }
    uintptr_t a = (uintptr_t)si->si_addr;
    for (int i = 0; i < GT_GUARD_MAX_WATCH; i++) {
        if (atomic_load(&watches[i].used) != 2 || a < watches[i].begin || a >= watches[i].end)
            continue;
        size_t k = 0;
        for (; k < sizeof sp->fault - 1 && watches[i].what[k]; k++)
            sp->fault[k] = watches[i].what[k];
        sp->fault[k] = '\0';
        break;
    }
}

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
 * child dies on the signal and the parent reports it. SIGINT too: a Python handler recording it
 * would never run in the child (the child has its own process group, so a terminal's Ctrl-C goes
 * to the parent, which kills the child; a SIGINT sent to the child itself ends it). SIGSEGV and
 * SIGBUS then get fault_handler, which names a fault on a watched guard page. */
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
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = fault_handler;
    sa.sa_flags = SA_SIGINFO | SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);
}

/* In the child, first thing: die with the parent, and leave its process group. */
static void tie_to_parent(pid_t parent)
{
    setpgid(0, 0);
#ifdef __linux__
    prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
    /* the parent may have died before the request above took effect: then nobody waits for us */
    if (getppid() != parent)
        _exit(122);
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

/* Kills the child's process group (it made itself a group leader; the pid alone as well, should
 * setpgid have failed). */
static void kill_child(pid_t pid)
{
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
}

int gt_guard_run(gt_guarded_fn fn, void *ctx, void *out, size_t out_cap, double timeout_s,
                 gt_guard_result *res)
{
    gt_guard_options opts = {timeout_s, NULL, NULL};
    return gt_guard_run_opts(fn, ctx, out, out_cap, &opts, res);
}

int gt_guard_run_opts(gt_guarded_fn fn, void *ctx, void *out, size_t out_cap,
                      const gt_guard_options *opts, gt_guard_result *res)
{
    if (!fn || !res || (!out && out_cap))
        return GT_EINVAL;
    memset(res, 0, sizeof *res);
    const double timeout_s = opts ? opts->timeout_s : 0.0;
    int (*interrupted)(void *) = opts ? opts->interrupted : NULL;
    int status = GT_OK, fds[2] = {-1, -1};
    shared_page *page = mmap(NULL, sizeof(shared_page), PROT_READ | PROT_WRITE,
                             MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED)
        return GT_EIO;
    memset(page, 0, sizeof *page);
    if (pipe(fds) != 0) {
        status = GT_EIO;
        goto cleanup;
    }
    fflush(NULL);
    const pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        status = GT_EIO;
        goto cleanup;
    }
    if (pid == 0) {
        tie_to_parent(parent);
        close(fds[0]);
        current_stage = page->stage;
        child_shared = page;
        run_child(fds[1], fn, ctx, out, out_cap);
    }
    /* also here, so that the group exists before any kill below, whoever runs first */
    setpgid(pid, pid);
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
        if (interrupted && (wait_ms < 0 || wait_ms > 50))
            wait_ms = 50;
        struct pollfd pfd = {fds[0], POLLIN, 0};
        int pr = poll(&pfd, 1, wait_ms);
        if ((pr == 0 || (pr < 0 && errno == EINTR)) && interrupted &&
            interrupted(opts->interrupt_ctx)) {
            res->interrupted = 1;
            break;
        }
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
    if (res->timed_out || res->interrupted || status != GT_OK)
        kill_child(pid);
    int wstatus = 0;
    while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR)
        ;
    memcpy(res->stage, page->stage, sizeof res->stage - 1);
    res->stage[sizeof res->stage - 1] = '\0';
    memcpy(res->fault, page->fault, sizeof res->fault - 1);
    res->fault[sizeof res->fault - 1] = '\0';
    if (status != GT_OK)
        goto cleanup;
    if (res->interrupted) {
        res->signal = SIGKILL;
        status = GT_EINTR;
    } else if (res->timed_out) {
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
    munmap(page, sizeof(shared_page));
    return status;
}
