/* dispatch_load.h: the dispatch analysis's view of the objects loaded in this process, through
 * dlopen(RTLD_NOLOAD), dlsym and dladdr (internal to csrc/core/dispatch_*.c; the public entry points
 * gt_dispatch_is_loaded and gt_dispatch_locate, declared in dispatch.h, live in dispatch_load.c too).
 * Nothing here loads an object that was not loaded already. */
#ifndef GT_DISPATCH_LOAD_H
#define GT_DISPATCH_LOAD_H

#include <stdint.h>

#include "elf_reader.h"

/* Where one target module sits in the process. */
typedef struct gt_loaded {
    void *handle;   /* dlopen(RTLD_NOLOAD) handle, NULL when the module is not loaded */
    uintptr_t base; /* dladdr's dli_fbase: identifies the object among the loaded ones */
    uint64_t bias;  /* runtime address - file virtual address */
} gt_loaded;

/* Fills *out when the object at `path` (read as `elf`) is loaded in this process; out->handle is
 * a new dlopen handle that gt_loaded_release closes. Leaves *out zeroed (handle NULL) otherwise. */
void gt_loaded_attach(const char *path, const gt_elf *elf, gt_loaded *out);
/* Closes what gt_loaded_attach opened and zeroes *l; safe on a zeroed one. */
void gt_loaded_release(gt_loaded *l);

/* Resolves the symbol `name` as the dynamic linker does for the object behind `handle` (global
 * scope first, then the object's own). Returns 1 with *addr set when it is found, else 0. *fbase
 * and *fname are the providing object's base and path from dladdr (*fname owned by the dynamic
 * linker), or 0 and NULL when dladdr cannot place the address. */
int gt_loaded_lookup(void *handle, const char *name, uint64_t *addr, uintptr_t *fbase, const char **fname);

#endif /* GT_DISPATCH_LOAD_H */
