/* dispatch.h: finds dynamic dispatch, external calls and allocation in compiled code.
 *
 * gt_dispatch_analyse starts at one function of one object (ELF file read by elf_reader.h), decodes it
 * by recursive descent with capstone (disasm.h) and follows direct calls, tail calls, calls
 * through the object's own PLT/GOT and, through the dynamic linker's view of the process, calls
 * into the other target modules. Each function is analysed once; functions are visited breadth
 * first, so the call chain recorded for each one (its parent) is a shortest one.
 *
 * It reports raw events (a named call leaving the target modules, an indirect call or jump, a
 * place it could not follow); naming them "allocation", "python_api" etc. is the caller's policy.
 * Switch jump tables and PLT/GOT stubs are recognised and not reported as indirect. A call is
 * flagged as on an error path when the straight-line code after it ends in a noreturn call.
 *
 * Implemented one concern per file: dispatch_walk.c (the analysis and its cache), dispatch_isa.h
 * with dispatch_x86.c and dispatch_a64.c (what an instruction means), dispatch_load.c (the loaded
 * objects), dispatch_containers.c, and dispatch_call.c (the call check and the load probe). */
#ifndef GT_DISPATCH_H
#define GT_DISPATCH_H

#include <stddef.h>
#include <stdint.h>

#include "disasm.h"
#include "elf_reader.h"

#define GT_DISPATCH_MAX_MODULES 64

typedef enum gt_dispatch_kind {
    GT_DK_EXTERNAL_CALL = 1, /* a (tail) call to a named function outside the target modules */
    GT_DK_INDIRECT_CALL = 2, /* a call through a register or a memory operand */
    GT_DK_INDIRECT_JUMP = 3, /* an indirect jump that is neither a jump table nor a PLT/GOT stub */
    GT_DK_UNRESOLVED = 4     /* a transfer the analysis could not follow (reason in text) */
} gt_dispatch_kind;

/* One object to analyse. `elf` is borrowed. `path` names it in messages and is used to find the
 * object among the loaded ones (dlopen RTLD_NOLOAD); when it is not loaded in this process the
 * analysis is static: undefined symbols stay external with an unknown provider. */
typedef struct gt_dispatch_module {
    const char *path;
    gt_elf *elf;
} gt_dispatch_module;

typedef struct gt_dispatch_options {
    int max_depth;                    /* call depth below the target that is followed (>= 0) */
    const char *const *noreturn;      /* fnmatch patterns of external functions that never return */
    size_t n_noreturn;
} gt_dispatch_options;

typedef struct gt_dispatch_event {
    int kind;         /* gt_dispatch_kind */
    int module;       /* index of the module holding the instruction */
    uint64_t address; /* the instruction's virtual address in that module's file */
    size_t function;  /* index into result.functions of the function holding it */
    int tail;         /* 1 for a jump (tail call), 0 for a call */
    int error_path;   /* 1 when the straight-line code from here ends in a noreturn call */
    char *callee;     /* the called symbol's name (EXTERNAL_CALL), else NULL */
    char *provider;   /* the library that provides callee at run time, NULL when unknown */
    char *text;       /* the instruction or the reason, e.g. "call qword ptr [rax + 8]" */
} gt_dispatch_event;

typedef struct gt_dispatch_function {
    int module;
    uint64_t entry;
    char *name;         /* symbol name, or "sub_<hex>" in stripped code */
    long parent;        /* index of the function whose call reached it first, -1 for the target */
    uint64_t callsite;  /* the call instruction's address in the parent */
    int depth;
    int noreturn;       /* 1 when its straight-line entry path ends in a noreturn call */
    size_t instructions;
} gt_dispatch_function;

typedef struct gt_dispatch_result {
    gt_dispatch_event *events;
    size_t n_events;
    gt_dispatch_function *functions;
    size_t n_functions;
    size_t instructions; /* decoded in all */
    size_t jump_tables;  /* switch jump tables recognised */
    size_t plt_calls;    /* calls resolved through a PLT stub or a GOT slot */
    int depth_limited;   /* 1 when a function was not followed because of max_depth */
} gt_dispatch_result;

/* Per-function summaries (events and outgoing calls of each decoded function), reused by later
 * analyses so that each function is decoded once per cache. A cache is valid for one module list
 * (same objects, same order) and one set of noreturn patterns; it is not thread-safe: callers
 * serialise analyses that share it. */
typedef struct gt_dispatch_cache gt_dispatch_cache;

/* Creates an empty cache owned by the caller (gt_dispatch_cache_free). */
int gt_dispatch_cache_new(gt_dispatch_cache **out);
void gt_dispatch_cache_free(gt_dispatch_cache *cache);
/* Functions summarised in the cache. */
size_t gt_dispatch_cache_size(const gt_dispatch_cache *cache);

/* Analyses the function at `entry` (a virtual address of modules[entry_module]'s file), reusing
 * and filling `cache` (may be NULL).
 * `out` is filled on GT_OK and owned by the caller: release with gt_dispatch_result_free.
 * Returns GT_EINVAL for bad arguments (message in err), GT_EUNSUPPORTED for an unsupported machine,
 * GT_EFORMAT when entry is not code of the module, GT_ENOMEM. On failure *out is empty. */
int gt_dispatch_analyse(gt_cs *cs, const gt_dispatch_module *modules, size_t n_modules, size_t entry_module,
                        uint64_t entry, const gt_dispatch_options *options, gt_dispatch_cache *cache,
                        gt_dispatch_result *out, char *err, size_t err_cap);

/* Releases what a result owns and empties it; safe on an empty (zeroed) result. */
void gt_dispatch_result_free(gt_dispatch_result *res);

/* 1 when the object at `path` is loaded in this process (dlopen with RTLD_NOLOAD), else 0. */
int gt_dispatch_is_loaded(const char *path);

/* Finds the loaded object holding the runtime address `addr`: copies its path into path_buf
 * (path_cap bytes) and sets *base to the address it is mapped at (dladdr's dli_fbase); the
 * address's virtual address in the file is addr - *base + gt_elf_base_vaddr(file). GT_EINVAL
 * when no loaded object holds it. The main program's path is read from /proc/self/exe. */
int gt_dispatch_locate(uint64_t addr, char *path_buf, size_t path_cap, uint64_t *base);

/* ---------- the call check ---------- */

/* Argument and return classes of a C call made through gt_dispatch_call. Integer and pointer
 * arguments travel in general registers, float and double ones in floating-point registers; both
 * ABIs served here (x86-64 System V, AAPCS64) assign each class its registers in order,
 * independently of the other class, which is what lets one fixed prototype call them all. */
enum { GT_CALL_INT = 0, GT_CALL_F64 = 1, GT_CALL_F32 = 2, GT_CALL_VOID = 3 };
#define GT_CALL_MAX_INT 6
#define GT_CALL_MAX_FP 8
#define GT_CALL_MAX_ARGS (GT_CALL_MAX_INT + GT_CALL_MAX_FP)

typedef struct gt_call_spec {
    void *fn;                        /* the function to call */
    int nargs;
    int cls[GT_CALL_MAX_ARGS];       /* GT_CALL_INT / F64 / F32 per argument, in order */
    uint64_t bits[GT_CALL_MAX_ARGS]; /* the value: an integer (sign-extended) or the IEEE bits */
    int ret;                         /* GT_CALL_* class of the result */
    /* Pointer arguments to buffers: buf_len[k] > 0 says bits[k] is the address of buf_len[k]
     * caller-owned bytes. The callee then gets a copy in a guard buffer (guardbuf.h), so that an
     * access outside it is reported (gt_call_outcome.overrun) instead of passing unseen.
     * buf_name[k] is how reports call it; buf_const[k] is 1 for a pointer to const. */
    size_t buf_len[GT_CALL_MAX_ARGS];
    char buf_name[GT_CALL_MAX_ARGS][24];
    int buf_const[GT_CALL_MAX_ARGS];
} gt_call_spec;

typedef struct gt_call_outcome {
    int status;        /* GT_OK returned, GT_ECRASH died, GT_ETIMEOUT killed at the limit, GT_EIO,
                        * GT_EOVERRUN it accessed memory outside a buffer argument */
    int signal;        /* the signal that ended it (SIGKILL for a time-out), or 0 */
    int exit_code;     /* when it left through exit() instead of returning */
    char stage[64];
    uint64_t ret_bits; /* the result: integer in rax/x0 or the IEEE bits (float in the low 32) */
    char overrun[64];  /* GT_EOVERRUN: what it did, e.g. "wrote past the end of grad" */
} gt_call_outcome;

/* Calls spec->fn with its arguments in a forked child (guard.h) under a time limit
 * (timeout_s <= 0: none). The caller's memory is never written: the child works on its copy.
 * Returns GT_EINVAL (message in err) for more than GT_CALL_MAX_INT integer or GT_CALL_MAX_FP
 * floating arguments, else GT_OK with *out describing how the call ended. */
int gt_dispatch_call(const gt_call_spec *spec, double timeout_s, gt_call_outcome *out, char *err, size_t err_cap);

/* Loads the object at `path` with dlopen in a forked child (guard.h) to learn whether loading it
 * is safe: the dynamic loader itself can crash on a damaged file. *loadable is set to 1 when the
 * child loaded it, 0 when dlopen refused it (a message in err); GT_ECRASH/GT_ETIMEOUT with
 * out->signal when loading killed the child. */
int gt_dispatch_probe_load(const char *path, double timeout_s, int *loadable, gt_call_outcome *out, char *err,
                           size_t err_cap);

#endif /* GT_DISPATCH_H */
