/* dispatch_load.c: loaded objects seen through dlopen/dlsym/dladdr (see dispatch_load.h, dispatch.h). */
#define _GNU_SOURCE
#include "dispatch_load.h"
#include "dispatch.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* The dynamic linker's own structures (link.h) are not used: dladdr is enough. The mapping is
 * found from one of the object's exported functions. */
static void *loaded_module(const char *path, const gt_elf *elf, uintptr_t *base, uint64_t *bias)
{
    void *h = dlopen(path, RTLD_LAZY | RTLD_NOLOAD);
    if (!h)
        return NULL;
    size_t n = gt_elf_symbol_count(elf);
    for (size_t i = 0; i < n; i++) {
        const gt_elf_symbol *s = gt_elf_symbol_get(elf, i);
        if (!s->dynamic || !s->global)
            continue;
        void *addr = dlsym(h, s->name);
        Dl_info info;
        if (!addr || !dladdr(addr, &info) || !info.dli_fbase)
            continue;
        /* an IFUNC resolves elsewhere: accept only a symbol that maps back to this address */
        uint64_t b = (uint64_t)(uintptr_t)addr - s->value;
        if ((uint64_t)(uintptr_t)info.dli_fbase != b + gt_elf_base_vaddr(elf))
            continue;
        *base = (uintptr_t)info.dli_fbase;
        *bias = b;
        return h;
    }
    dlclose(h);
    return NULL;
}

void gt_loaded_attach(const char *path, const gt_elf *elf, gt_loaded *out)
{
    memset(out, 0, sizeof *out);
    uintptr_t base;
    uint64_t bias;
    void *h = path ? loaded_module(path, elf, &base, &bias) : NULL;
    if (h) {
        out->handle = h;
        out->base = base;
        out->bias = bias;
    }
}

void gt_loaded_release(gt_loaded *l)
{
    if (l->handle)
        dlclose(l->handle);
    memset(l, 0, sizeof *l);
}

int gt_loaded_lookup(void *handle, const char *name, uint64_t *addr, uintptr_t *fbase, const char **fname)
{
    void *a = dlsym(RTLD_DEFAULT, name);
    if (!a)
        a = dlsym(handle, name);
    if (!a)
        return 0;
    *addr = (uint64_t)(uintptr_t)a;
    *fbase = 0;
    *fname = NULL;
    Dl_info info;
    if (dladdr(a, &info) && info.dli_fbase) {
        *fbase = (uintptr_t)info.dli_fbase;
        *fname = info.dli_fname;
    }
    return 1;
}

int gt_dispatch_is_loaded(const char *path)
{
    void *h = path ? dlopen(path, RTLD_LAZY | RTLD_NOLOAD) : NULL;
    if (!h)
        return 0;
    dlclose(h);
    return 1;
}

int gt_dispatch_locate(uint64_t addr, char *path_buf, size_t path_cap, uint64_t *base)
{
    Dl_info info;
    if (!path_buf || !path_cap || !base)
        return GT_EINVAL;
    if (!dladdr((void *)(uintptr_t)addr, &info) || !info.dli_fbase)
        return GT_EINVAL;
    const char *name = info.dli_fname;
    if (!name || !strchr(name, '/')) {
        /* the main program is reported by its argv[0] name (or not at all) */
        ssize_t n = readlink("/proc/self/exe", path_buf, path_cap - 1);
        if (n <= 0)
            return GT_EINVAL;
        path_buf[n] = '\0';
    } else {
        snprintf(path_buf, path_cap, "%s", name);
    }
    *base = (uint64_t)(uintptr_t)info.dli_fbase;
    return GT_OK;
}
