/* gt_common.h: status codes, element types and the allocation hooks shared by the whole core.
 *
 * The core is plain C11 and never includes Python.h. Every function that can fail returns an
 * int status (GT_OK on success); the Python glue turns non-zero codes into exceptions. */
#ifndef GT_COMMON_H
#define GT_COMMON_H

#include <stddef.h>

typedef enum gt_status {
    GT_OK = 0,
    GT_ENOMEM = 1,       /* an allocation failed */
    GT_EINVAL = 2,       /* an argument was out of its documented range */
    GT_ECALLBACK = 3,    /* the evaluated function reported failure; its own error state is kept */
    GT_ENONFINITE = 4,   /* the evaluated function returned NaN or infinity */
    GT_EUNSUPPORTED = 5, /* the request is valid but not implemented for these inputs */
    GT_EFORMAT = 6,      /* malformed input data (e.g. an object file) */
    GT_EIO = 7,          /* an operating-system call failed; errno holds the reason */
    GT_ETIMEOUT = 8,     /* a guarded call ran past its time limit */
    GT_ECRASH = 9,       /* a guarded call died on a signal */
    GT_EINTR = 10,       /* the caller asked a guarded call to stop (e.g. Ctrl-C) */
    GT_EOVERRUN = 11     /* a kernel wrote outside a buffer it was given */
} gt_status;

/* Returns a static, human-readable description of a gt_status value. Never NULL. */
const char *gt_status_string(int status);

/* Element types of the buffers the core works on. */
typedef enum gt_dtype { GT_FLOAT64 = 0, GT_FLOAT32 = 1 } gt_dtype;

/* Size in bytes of one element of `dtype`, or 0 for an unknown type. */
size_t gt_dtype_size(gt_dtype dtype);

/* Allocation goes through these so that tests can count allocations and make the n-th one fail.
 * gt_malloc/gt_calloc return NULL on failure (or when a failure is injected); gt_free(NULL) is a
 * no-op. Memory from gt_malloc/gt_calloc must be released with gt_free. */
void *gt_malloc(size_t size);
void *gt_calloc(size_t count, size_t size);
void gt_free(void *ptr);

/* Test support: make the `n`-th next allocation on this thread fail (n >= 1); 0 disables.
 * The countdown is thread-local, so concurrent users of the core are unaffected. */
void gt_alloc_fail_after(long n);
/* Number of live allocations made through gt_malloc/gt_calloc on this thread. */
long gt_alloc_live(void);

#endif /* GT_COMMON_H */
