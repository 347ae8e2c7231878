/* dispatch_containers.c: the map and growable arrays of the dispatch analysis (see dispatch_containers.h). */
#include "dispatch_containers.h"

#include <string.h>

void gt_map_free(gt_u64map *m)
{
    gt_free(m->keys);
    gt_free(m->vals);
    memset(m, 0, sizeof *m);
}

/* Empties the map. A big table is released rather than wiped, so that one large function does
 * not make every later (small) one pay for clearing it. */
void gt_map_clear(gt_u64map *m)
{
    if (m->cap > 4096) {
        gt_map_free(m);
        return;
    }
    if (m->keys)
        memset(m->keys, 0, m->cap * sizeof *m->keys);
    m->n = 0;
}

static size_t map_hash(uint64_t k) { return (size_t)((k + 1) * 0x9E3779B97F4A7C15ull >> 7); }

/* Returns 1 and *val when present, else 0. */
int gt_map_get(const gt_u64map *m, uint64_t key, long *val)
{
    if (!m->cap)
        return 0;
    size_t mask = m->cap - 1;
    for (size_t i = map_hash(key) & mask;; i = (i + 1) & mask) {
        if (m->keys[i] == 0)
            return 0;
        if (m->keys[i] == key + 1) {
            if (val)
                *val = m->vals[i];
            return 1;
        }
    }
}

int gt_map_put(gt_u64map *m, uint64_t key, long val)
{
    if (2 * (m->n + 1) > m->cap) {
        size_t ncap = m->cap ? 2 * m->cap : 256;
        uint64_t *nk = gt_calloc(ncap, sizeof *nk);
        long *nv = gt_malloc(ncap * sizeof *nv);
        if (!nk || !nv) {
            gt_free(nk);
            gt_free(nv);
            return GT_ENOMEM;
        }
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->keys[i])
                continue;
            size_t j = map_hash(m->keys[i] - 1) & (ncap - 1);
            while (nk[j])
                j = (j + 1) & (ncap - 1);
            nk[j] = m->keys[i];
            nv[j] = m->vals[i];
        }
        gt_free(m->keys);
        gt_free(m->vals);
        m->keys = nk;
        m->vals = nv;
        m->cap = ncap;
    }
    size_t mask = m->cap - 1;
    for (size_t i = map_hash(key) & mask;; i = (i + 1) & mask) {
        if (m->keys[i] == key + 1) {
            m->vals[i] = val;
            return GT_OK;
        }
        if (m->keys[i] == 0) {
            m->keys[i] = key + 1;
            m->vals[i] = val;
            m->n++;
            return GT_OK;
        }
    }
}

/* Grows *arr (element size `elem`) so that it holds at least n+1 elements. */
int gt_grow(void **arr, size_t *cap, size_t n, size_t elem)
{
    if (n < *cap)
        return GT_OK;
    size_t ncap = *cap ? 2 * *cap : 16;
    void *p = gt_malloc(ncap * elem);
    if (!p)
        return GT_ENOMEM;
    if (n)
        memcpy(p, *arr, n * elem);
    gt_free(*arr);
    *arr = p;
    *cap = ncap;
    return GT_OK;
}

char *gt_dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = gt_malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}
