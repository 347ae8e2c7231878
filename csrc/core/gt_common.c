#include "gt_common.h"

#include <stdlib.h>

static _Thread_local long fail_countdown = 0;
static _Thread_local long live_allocations = 0;

const char *gt_status_string(int status)
{
    switch (status) {
    case GT_OK: return "success";
    case GT_ENOMEM: return "out of memory";
    case GT_EINVAL: return "invalid argument";
    case GT_ECALLBACK: return "the evaluated function reported an error";
    case GT_ENONFINITE: return "the evaluated function returned a non-finite value";
    case GT_EUNSUPPORTED: return "unsupported operation";
    case GT_EFORMAT: return "malformed input data";
    case GT_EIO: return "operating-system error";
    case GT_ETIMEOUT: return "time limit exceeded";
    case GT_ECRASH: return "the guarded call crashed";
    case GT_EINTR: return "interrupted";
    case GT_EOVERRUN: return "a buffer was written outside its bounds";
    default: return "unknown status";
    }
}

size_t gt_dtype_size(gt_dtype dtype)
{
    switch (dtype) {
    case GT_FLOAT64: return sizeof(double);
    case GT_FLOAT32: return sizeof(float);
    default: return 0;
    }
}

static int injected_failure(void)
{
    if (fail_countdown > 0 && --fail_countdown == 0)
        return 1;
    return 0;
}

void *gt_malloc(size_t size)
{
    if (injected_failure())
        return NULL;
    void *p = malloc(size ? size : 1);
    if (p)
        live_allocations++;
    return p;
}

void *gt_calloc(size_t count, size_t size)
{
    if (injected_failure())
        return NULL;
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (p)
        live_allocations++;
    return p;
}

void gt_free(void *ptr)
{
    if (ptr) {
        live_allocations--;
        free(ptr);
    }
}

void gt_alloc_fail_after(long n) { fail_countdown = n > 0 ? n : 0; }

long gt_alloc_live(void) { return live_allocations; }
