/* dispatch_containers.h: the small containers of the dispatch analysis (internal to csrc/core/dispatch_*.c).
 *
 * Memory comes from gt_malloc (gt_common.h), so allocation failures can be injected in tests; every
 * function that allocates returns GT_ENOMEM on failure and leaves its container as it was. */
#ifndef GT_DISPATCH_CONTAINERS_H
#define GT_DISPATCH_CONTAINERS_H

#include <stddef.h>
#include <stdint.h>

#include "gt_common.h"

/* Open-addressing map from non-zero-mapped uint64 keys to long values. */
typedef struct gt_u64map {
    uint64_t *keys; /* key + 1; 0 marks an empty slot */
    long *vals;
    size_t cap, n;
} gt_u64map;

/* Releases the map's storage and empties it; safe on a zeroed map. */
void gt_map_free(gt_u64map *m);
/* Empties the map (a big table is released instead of wiped). */
void gt_map_clear(gt_u64map *m);
/* Returns 1 and *val (when val is not NULL) when key is present, else 0. */
int gt_map_get(const gt_u64map *m, uint64_t key, long *val);
/* Sets key to val. GT_OK or GT_ENOMEM (the map is unchanged). */
int gt_map_put(gt_u64map *m, uint64_t key, long val);

/* Grows *arr (gt_malloc'd, element size `elem`, *cap elements) so that it holds at least n+1
 * elements; the first n are kept. GT_OK or GT_ENOMEM (*arr unchanged). */
int gt_grow(void **arr, size_t *cap, size_t n, size_t elem);
/* A gt_malloc'd copy of s (the caller gt_frees it), NULL when out of memory. */
char *gt_dup_str(const char *s);

#endif /* GT_DISPATCH_CONTAINERS_H */
