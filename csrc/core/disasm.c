/* disasm.c: capstone loaded with dlopen (see disasm.h). */
#define _GNU_SOURCE
#include "disasm.h"

#include <dlfcn.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* The subset of capstone 5's public API used here (capstone.h, "cs_insn" and the functions
 * below). csh is a size_t handle; the enums are passed as int. */
typedef size_t csh;
typedef struct cs_insn_v5 {
    unsigned int id;
    uint64_t address;
    uint16_t size;
    uint8_t bytes[24];
    char mnemonic[32];
    char op_str[160];
    void *detail;
} cs_insn_v5;

enum { CS_ARCH_ARM64 = 1, CS_ARCH_X86 = 3, CS_MODE_LITTLE_ENDIAN = 0, CS_MODE_64 = 1 << 3 };

typedef int (*cs_open_fn)(int arch, int mode, csh *handle);
typedef int (*cs_close_fn)(csh *handle);
typedef cs_insn_v5 *(*cs_malloc_fn)(csh handle);
typedef void (*cs_free_fn)(cs_insn_v5 *insn, size_t count);
typedef bool (*cs_disasm_iter_fn)(csh handle, const uint8_t **code, size_t *size, uint64_t *address,
                                  cs_insn_v5 *insn);
typedef unsigned int (*cs_version_fn)(int *major, int *minor);

struct gt_cs {
    void *lib;
    cs_open_fn open;
    cs_close_fn close;
    cs_malloc_fn malloc_insn;
    cs_free_fn free_insn;
    cs_disasm_iter_fn iter;
};

struct gt_decoder {
    gt_cs *cs;
    csh handle;
    cs_insn_v5 *insn;
};

int gt_cs_load(const char *path, gt_cs **out, char *err, size_t cap)
{
    if (!path || !out)
        return GT_EINVAL;
    *out = NULL;
    int status = GT_OK;
    gt_cs *cs = gt_calloc(1, sizeof *cs);
    if (!cs)
        return GT_ENOMEM;
    cs->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!cs->lib) {
        if (err && cap)
            snprintf(err, cap, "cannot load capstone from %s: %s", path, dlerror());
        status = GT_EIO;
        goto cleanup;
    }
    cs_version_fn version = (cs_version_fn)dlsym(cs->lib, "cs_version");
    cs->open = (cs_open_fn)dlsym(cs->lib, "cs_open");
    cs->close = (cs_close_fn)dlsym(cs->lib, "cs_close");
    cs->malloc_insn = (cs_malloc_fn)dlsym(cs->lib, "cs_malloc");
    cs->free_insn = (cs_free_fn)dlsym(cs->lib, "cs_free");
    cs->iter = (cs_disasm_iter_fn)dlsym(cs->lib, "cs_disasm_iter");
    if (!version || !cs->open || !cs->close || !cs->malloc_insn || !cs->free_insn || !cs->iter) {
        if (err && cap)
            snprintf(err, cap, "%s does not export the capstone API (cs_open, cs_disasm_iter, ...)", path);
        status = GT_EIO;
        goto cleanup;
    }
    int major = 0, minor = 0;
    version(&major, &minor);
    if (major != 5) {
        if (err && cap)
            snprintf(err, cap, "capstone %d.%d at %s: gradtest needs capstone 5.x", major, minor, path);
        status = GT_EUNSUPPORTED;
        goto cleanup;
    }
    *out = cs;
    cs = NULL;
cleanup:
    if (cs) {
        if (cs->lib)
            dlclose(cs->lib);
        gt_free(cs);
    }
    return status;
}

void gt_cs_unload(gt_cs *cs)
{
    if (!cs)
        return;
    dlclose(cs->lib);
    gt_free(cs);
}

int gt_decoder_open(gt_cs *cs, int machine, gt_decoder **out, char *err, size_t cap)
{
    if (!cs || !out)
        return GT_EINVAL;
    *out = NULL;
    int arch, mode;
    if (machine == 62) {
        arch = CS_ARCH_X86;
        mode = CS_MODE_64;
    } else if (machine == 183) {
        arch = CS_ARCH_ARM64;
        mode = CS_MODE_LITTLE_ENDIAN;
    } else {
        if (err && cap)
            snprintf(err, cap, "machine %d is not supported (x86-64 and aarch64 only)", machine);
        return GT_EUNSUPPORTED;
    }
    gt_decoder *d = gt_calloc(1, sizeof *d);
    if (!d)
        return GT_ENOMEM;
    d->cs = cs;
    if (cs->open(arch, mode, &d->handle) != 0) {
        gt_free(d);
        if (err && cap)
            snprintf(err, cap, "cs_open failed for machine %d", machine);
        return GT_EIO;
    }
    d->insn = cs->malloc_insn(d->handle);
    if (!d->insn) {
        cs->close(&d->handle);
        gt_free(d);
        return GT_ENOMEM;
    }
    *out = d;
    return GT_OK;
}

void gt_decoder_close(gt_decoder *d)
{
    if (!d)
        return;
    d->cs->free_insn(d->insn, 1);
    d->cs->close(&d->handle);
    gt_free(d);
}

int gt_decode(gt_decoder *d, const uint8_t *code, size_t avail, uint64_t address, gt_insn *insn)
{
    const uint8_t *p = code;
    size_t n = avail;
    uint64_t a = address;
    if (!d->cs->iter(d->handle, &p, &n, &a, d->insn))
        return GT_EFORMAT;
    insn->address = d->insn->address;
    insn->size = d->insn->size;
    memcpy(insn->mnemonic, d->insn->mnemonic, sizeof insn->mnemonic);
    insn->mnemonic[sizeof insn->mnemonic - 1] = '\0';
    memcpy(insn->op_str, d->insn->op_str, sizeof insn->op_str);
    insn->op_str[sizeof insn->op_str - 1] = '\0';
    return GT_OK;
}
