/* guardbuf.c: fenced buffers with guard pages and canaries (see guardbuf.h). */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE
#include "guardbuf.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "guard.h"

#define CANARY 0xCB

struct gt_guardbuf {
    unsigned char *map; /* the whole mapping, guards included */
    size_t map_len;
    unsigned char *data;
    size_t len;
    unsigned char *head, *tail; /* canary regions: [head, data) and [data + len, tail) */
    int watch_lo, watch_hi;     /* gt_guard_watch slots of the two guard pages, or -1 */
    char name[24];
};

static size_t page_size(void)
{
    long p = sysconf(_SC_PAGESIZE);
    return p > 0 ? (size_t)p : 4096;
}

static size_t round_up(size_t v, size_t to) { return (v + to - 1) / to * to; }

/* The alignment the data gets: the largest power of two <= 16 dividing len. */
static size_t alignment_of(size_t len)
{
    size_t a = 16;
    while (a > 1 && len % a)
        a /= 2;
    return a;
}

gt_guardbuf *gt_gb_new(size_t len, gt_gb_place place, const char *name, int output)
{
    if (len == 0 || (place != GT_GB_END && place != GT_GB_PADDED))
        return NULL;
    const size_t page = page_size();
    if (len > SIZE_MAX / 2 - 8 * page)
        return NULL;
    gt_guardbuf *b = gt_malloc(sizeof *b);
    if (!b)
        return NULL;
    memset(b, 0, sizeof *b);
    b->watch_lo = b->watch_hi = -1;
    snprintf(b->name, sizeof b->name, "%s", name ? name : "a buffer");
    size_t inner; /* bytes between the two guard pages */
    if (place == GT_GB_END)
        inner = round_up(len, page);
    else
        inner = page + round_up(len + page, page);
    b->map_len = inner + 2 * page;
    void *map = mmap(NULL, b->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED) {
        gt_free(b);
        return NULL;
    }
    b->map = map;
    unsigned char *lo_guard = b->map, *hi_guard = b->map + page + inner;
    if (mprotect(lo_guard, page, PROT_NONE) != 0 || mprotect(hi_guard, page, PROT_NONE) != 0) {
        munmap(b->map, b->map_len);
        gt_free(b);
        return NULL;
    }
    b->len = len;
    b->head = lo_guard + page;
    if (place == GT_GB_END) {
        /* against the guard when len's alignment allows; else as close as the alignment lets */
        b->data = hi_guard - round_up(len, alignment_of(len));
    } else {
        b->data = b->head + page;
    }
    b->tail = hi_guard;
    memset(b->head, CANARY, (size_t)(b->data - b->head));
    memset(b->data + len, CANARY, (size_t)(b->tail - (b->data + len)));
    if (gt_guard_in_child()) {
        char what[64];
        snprintf(what, sizeof what, "%s before the start of %s", output ? "wrote" : "accessed memory",
                 b->name);
        b->watch_lo = gt_guard_watch(lo_guard, page, what);
        snprintf(what, sizeof what, "%s past the end of %s", output ? "wrote" : "accessed memory",
                 b->name);
        b->watch_hi = gt_guard_watch(hi_guard, page, what);
    }
    return b;
}

void *gt_gb_data(const gt_guardbuf *b) { return b ? b->data : NULL; }

/* The first byte in [p, end) that is not the canary, or NULL. Word-wise over the aligned middle. */
static const unsigned char *first_damage(const unsigned char *p, const unsigned char *end)
{
    while (p < end && ((uintptr_t)p % sizeof(uint64_t))) {
        if (*p != CANARY)
            return p;
        p++;
    }
    uint64_t word;
    memset(&word, CANARY, sizeof word);
    while ((size_t)(end - p) >= sizeof(uint64_t)) {
        uint64_t v;
        memcpy(&v, p, sizeof v);
        if (v != word)
            break;
        p += sizeof v;
    }
    for (; p < end; p++)
        if (*p != CANARY)
            return p;
    return NULL;
}

int gt_gb_check(gt_guardbuf *b, size_t span, char *msg, size_t cap)
{
    if (!b)
        return GT_OK;
    const char *where = NULL;
    const unsigned char *head = b->head, *tail = b->tail;
    if (span && (size_t)(b->data - head) > span)
        head = b->data - span;
    if (span && (size_t)(tail - (b->data + b->len)) > span)
        tail = b->data + b->len + span;
    if (first_damage(head, b->data)) {
        where = "before the start of";
        memset(b->head, CANARY, (size_t)(b->data - b->head));
    }
    if (first_damage(b->data + b->len, tail)) {
        where = "past the end of";
        memset(b->data + b->len, CANARY, (size_t)(b->tail - (b->data + b->len)));
    }
    if (!where)
        return GT_OK;
    if (msg && cap)
        snprintf(msg, cap, "wrote %s %s", where, b->name);
    return GT_EOVERRUN;
}

void gt_gb_free(gt_guardbuf *b)
{
    if (!b)
        return;
    gt_guard_unwatch(b->watch_lo);
    gt_guard_unwatch(b->watch_hi);
    munmap(b->map, b->map_len);
    gt_free(b);
}
