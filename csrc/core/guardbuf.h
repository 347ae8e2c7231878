/* guardbuf.h: buffers handed to code under test, fenced so that a write outside them is seen.
 *
 * A guard buffer is its own mapping with an inaccessible (PROT_NONE) page on each side. The data
 * sits against one of them and the bytes between the data and the other (the sub-page
 * remainder) hold a canary pattern, checked after each call (gt_gb_check):
 *
 *   GT_GB_END     [guard][canary ... | data][guard]   an access past the end faults at once
 *   GT_GB_PADDED  [guard][canary page | data | canary, at least a page][guard]
 *
 * GT_GB_END is for code run in a guarded child (guard.h): there the guard pages are watched
 * (gt_guard_watch), so the fault is reported as "wrote past the end of grad" rather than a bare
 * SIGSEGV, and an underrun is caught by the canary or by the leading guard page. GT_GB_PADDED is
 * for code run in this process, where a fault would end it: a stray write of up to a page on
 * either side lands in a canary and becomes a report; a wilder one faults on a guard page (a crash
 * instead of a silently corrupted heap). POSIX only (mmap). */
#ifndef GT_GUARDBUF_H
#define GT_GUARDBUF_H

#include <stddef.h>

#include "gt_common.h"

typedef enum gt_gb_place { GT_GB_END = 0, GT_GB_PADDED = 1 } gt_gb_place;

typedef struct gt_guardbuf gt_guardbuf;

/* A new guard buffer of len bytes (len >= 1; its start is aligned to the largest power of two,
 * up to 16, that divides len), zero-filled. `name` is how reports call it ("grad"), copied;
 * `output` is 1 for a buffer the code writes, 0 for an input (reports then say "accessed").
 * Returns NULL when memory is short (the descriptor is allocated with gt_malloc, so injected
 * allocation failures reach it). The caller owns the result; release it with gt_gb_free. */
gt_guardbuf *gt_gb_new(size_t len, gt_gb_place place, const char *name, int output);

/* The data: len bytes, writable. */
void *gt_gb_data(const gt_guardbuf *b);

/* Checks the canaries: all of them when span == 0, else the span bytes next to the data on each
 * side (a cheap check after every call of a loop, with a full one at its end). Returns GT_OK when
 * intact; otherwise GT_EOVERRUN with "wrote past the end of <name>" or "wrote before the start of
 * <name>" in msg (caller-owned, cap bytes, always NUL-terminated when cap > 0), and restores the
 * canary so that the next check reports only new damage. b == NULL is intact. */
int gt_gb_check(gt_guardbuf *b, size_t span, char *msg, size_t cap);

/* Unmaps the buffer and frees the descriptor; NULL is a no-op. */
void gt_gb_free(gt_guardbuf *b);

#endif /* GT_GUARDBUF_H */
