/* dispatch_walk.c: the call-graph walk of the dispatch analysis (see dispatch.h).
 *
 * Functions are decoded by recursive descent, one at a time, into summaries (their events and
 * outgoing calls); the summaries are then joined breadth first into the call graph of the result.
 * What one instruction means comes from the instruction-set tables (dispatch_isa.h); where a named
 * symbol resolves in this process comes from the loaded-object view (dispatch_load.h). */
#include "dispatch.h"
#include "dispatch_containers.h"
#include "dispatch_isa.h"
#include "dispatch_load.h"

#include <fnmatch.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define MAX_BLOCK_WALK 200000 /* instructions per function: a guard against runaway decoding */
#define PROBE_LEN 256         /* straight-line instructions a noreturn probe looks at */
#define PROBE_DEPTH 3

typedef struct edge {
    size_t caller, callee;
    int error_site;
} edge;

/* What decoding one function found, independent of where in the call graph it was reached: its
 * events and its outgoing calls in order. Cached across analyses (gt_dispatch_cache). */
/* a cached event: its `function` field is unused (set when the summary is joined to a result) */
typedef gt_dispatch_event fsum_event;

typedef struct fsum_edge {
    int module;
    uint64_t entry, site;
    int error_site;
} fsum_edge;

typedef struct fsum {
    fsum_event *events;
    size_t n_events, cap_events;
    fsum_edge *edges;
    size_t n_edges, cap_edges;
    size_t instructions, jump_tables, plt_calls;
    int noreturn;
} fsum;

/* Releases n events and the array holding them. */
static void events_free(gt_dispatch_event *events, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        gt_free(events[i].callee);
        gt_free(events[i].provider);
        gt_free(events[i].text);
    }
    gt_free(events);
}

static void fsum_free(fsum *f)
{
    if (!f)
        return;
    events_free(f->events, f->n_events);
    gt_free(f->edges);
    gt_free(f);
}

struct gt_dispatch_cache {
    gt_u64map index; /* (entry << 6 | module) -> index into sums */
    fsum **sums;
    size_t n, cap;
};

typedef struct ctx {
    fsum *cur; /* the summary of the function being decoded */
    gt_dispatch_cache *cache;
    gt_decoder *dec;
    int machine;
    const gt_dispatch_module *mods;
    size_t nmods;
    gt_loaded rt[GT_DISPATCH_MAX_MODULES];
    const gt_dispatch_options *opt;
    gt_dispatch_result *res;
    size_t cap_events, cap_funcs, cap_edges, cap_work;
    gt_u64map fmap;     /* (entry << 6 | module) -> function index */
    gt_u64map visited;  /* instruction addresses of the function being decoded */
    gt_u64map noreturn; /* (addr << 6 | module) -> 1 dies / 0 returns, probe memo */
    gt_u64map resolved_at; /* relocation address -> index into `resolved_cache` */
    struct resolved *resolved_cache;
    size_t n_resolved, cap_resolved;
    edge *edges;
    size_t nedges;
    uint64_t *work;
    size_t nwork;
    char *err;
    size_t err_cap;
} ctx;

static void classify(const ctx *c, const gt_insn *in, tracker *t, action *a)
{
    if (c->machine == GT_EM_X86_64)
        gt_isa_x86_classify(in, t, a);
    else
        gt_isa_a64_classify(in, t, a);
}

static uint64_t fkey(int module, uint64_t addr) { return addr << 6 | (uint64_t)module; }

static int named_noreturn_pattern(const ctx *c, const char *name)
{
    for (size_t i = 0; i < c->opt->n_noreturn; i++)
        if (c->opt->noreturn[i] && fnmatch(c->opt->noreturn[i], name, 0) == 0)
            return 1;
    return 0;
}

/* Where a named symbol referenced by module m resolves. */
typedef struct resolved {
    int internal;         /* 1: code in target module `module` at `vaddr` */
    int module;
    uint64_t vaddr;
    const char *provider; /* external: the providing object's path (ld.so-owned) or NULL */
} resolved;

static resolved resolve_name_uncached(const ctx *c, int m, const gt_elf_reloc *rel)
{
    resolved r = {0, m, 0, NULL};
    uint64_t addr;
    uintptr_t fbase;
    const char *fname;
    if (c->rt[m].handle && gt_loaded_lookup(c->rt[m].handle, rel->name, &addr, &fbase, &fname)) {
        if (fbase) {
            for (size_t j = 0; j < c->nmods; j++) {
                if (c->rt[j].handle && c->rt[j].base == fbase) {
                    r.internal = 1;
                    r.module = (int)j;
                    r.vaddr = addr - c->rt[j].bias;
                    return r;
                }
            }
            r.provider = fname;
        }
        return r;
    }
    if (rel->defined) {
        r.internal = 1;
        r.vaddr = rel->value;
    }
    return r;
}

/* resolve_name_uncached, memoised per relocation: dlsym/dladdr are the costly part. */
static resolved resolve_name(ctx *c, int m, const gt_elf_reloc *rel)
{
    long idx;
    uint64_t key = (uint64_t)(uintptr_t)rel;
    if (gt_map_get(&c->resolved_at, key, &idx))
        return c->resolved_cache[idx];
    resolved r = resolve_name_uncached(c, m, rel);
    if (gt_grow((void **)&c->resolved_cache, &c->cap_resolved, c->n_resolved, sizeof *c->resolved_cache) == GT_OK &&
        gt_map_put(&c->resolved_at, key, (long)c->n_resolved) == GT_OK)
        c->resolved_cache[c->n_resolved++] = r;
    return r;
}

static int decode_at(const ctx *c, int m, uint64_t addr, gt_insn *in)
{
    const uint8_t *code;
    size_t avail;
    if (gt_elf_code(c->mods[m].elf, addr, &code, &avail) != GT_OK)
        return GT_EINVAL;
    return gt_decode(c->dec, code, avail, addr, in);
}

/* Finds the GOT slot a PLT stub jumps through; 1 on success. */
static int plt_slot(const ctx *c, int m, uint64_t stub, uint64_t *slot)
{
    tracker t;
    gt_tracker_reset(&t);
    uint64_t a = stub;
    for (int k = 0; k < 8; k++) {
        gt_insn in;
        action act;
        if (decode_at(c, m, a, &in) != GT_OK)
            return 0;
        classify(c, &in, &t, &act);
        if (act.type == A_IJMP && act.via == VIA_SLOT) {
            *slot = act.slot;
            return 1;
        }
        if (act.type != A_OTHER)
            return 0;
        a += in.size;
    }
    return 0;
}

static int probe_dies(ctx *c, int m, uint64_t a, int depth);

static int slot_noreturn(ctx *c, int m, uint64_t slot, int depth)
{
    const gt_elf_reloc *rel = gt_elf_reloc_at(c->mods[m].elf, slot);
    if (!rel || !rel->name)
        return 0;
    if (named_noreturn_pattern(c, rel->name))
        return 1;
    resolved r = resolve_name(c, m, rel);
    return r.internal && depth < PROBE_DEPTH ? probe_dies(c, r.module, r.vaddr, depth + 1) : 0;
}

/* 1 when a call to `target` (direct, in module m) never returns. */
static int callee_noreturn(ctx *c, int m, uint64_t target, int depth)
{
    uint64_t slot;
    if (gt_elf_in_plt(c->mods[m].elf, target))
        return plt_slot(c, m, target, &slot) ? slot_noreturn(c, m, slot, depth) : 0;
    if (depth >= PROBE_DEPTH)
        return 0;
    return probe_dies(c, m, target, depth + 1);
}

/* 1 when the straight-line code from `a` ends in a noreturn call or a trap. Memoised: every
 * return point of a call met on the way shares the walk's fate (the code between is straight),
 * so a run of calls costs one walk instead of one per call. */
static int probe_dies(ctx *c, int m, uint64_t a, int depth)
{
    long memo;
    uint64_t key = fkey(m, a);
    if (gt_map_get(&c->noreturn, key, &memo))
        return (int)memo;
    /* a cycle through this probe counts as returning */
    if (gt_map_put(&c->noreturn, key, 0) != GT_OK)
        return 0;
    int dies = 0, decided = 0;
    uint64_t shared[PROBE_LEN];
    size_t nshared = 0;
    tracker t;
    gt_tracker_reset(&t);
    uint64_t start = a;
    for (int k = 0; k < PROBE_LEN && !decided; k++) {
        if (a != start && gt_map_get(&c->noreturn, fkey(m, a), &memo)) {
            dies = (int)memo;
            break;
        }
        gt_insn in;
        action act;
        if (decode_at(c, m, a, &in) != GT_OK)
            break;
        classify(c, &in, &t, &act);
        switch (act.type) {
        case A_TRAP:
            dies = decided = 1;
            break;
        case A_RET:
        case A_JCC:
            decided = 1;
            break;
        case A_IJMP:
            dies = act.via == VIA_SLOT ? slot_noreturn(c, m, act.slot, depth) : 0;
            decided = 1;
            break;
        case A_JMP: {
            const gt_elf_symbol *f = gt_elf_function_at(c->mods[m].elf, act.target);
            if ((f && act.target != start) || gt_elf_in_plt(c->mods[m].elf, act.target)) {
                dies = callee_noreturn(c, m, act.target, depth);
                decided = 1;
            } else {
                a = act.target;
            }
            continue;
        }
        case A_CALL:
            if (act.target != in.address + in.size && callee_noreturn(c, m, act.target, depth))
                dies = decided = 1;
            else
                shared[nshared++] = in.address + in.size;
            break;
        case A_ICALL:
            if (act.via == VIA_SLOT && slot_noreturn(c, m, act.slot, depth))
                dies = decided = 1;
            else
                shared[nshared++] = in.address + in.size;
            break;
        default:
            break;
        }
        a += in.size;
    }
    gt_map_put(&c->noreturn, key, dies);
    for (size_t i = 0; i < nshared; i++)
        gt_map_put(&c->noreturn, fkey(m, shared[i]), dies);
    return dies;
}

static int fail_msg(ctx *c, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail_msg(ctx *c, int status, const char *fmt, ...)
{
    if (c->err && c->err_cap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err, c->err_cap, fmt, ap);
        va_end(ap);
    }
    return status;
}

/* Fills *e (its storage uninitialised) and copies its strings; GT_ENOMEM when a copy failed, with
 * the copies that succeeded set so that the event's owner releases them. */
static int event_init(gt_dispatch_event *e, int kind, int m, uint64_t addr, size_t func, int tail, int error_path,
                      const char *callee, const char *provider, const char *text)
{
    *e = (gt_dispatch_event){kind, m, addr, func, tail, error_path, NULL, NULL, NULL};
    e->callee = callee ? gt_dup_str(callee) : NULL;
    e->provider = provider ? gt_dup_str(provider) : NULL;
    e->text = gt_dup_str(text ? text : "");
    if ((callee && !e->callee) || (provider && !e->provider) || !e->text)
        return GT_ENOMEM;
    return GT_OK;
}

/* Appends an event of function `func` to the result (strings copied). */
static int add_event(ctx *c, int kind, int m, uint64_t addr, size_t func, int tail, int error_path,
                     const char *callee, const char *provider, const char *text)
{
    gt_dispatch_result *r = c->res;
    if (gt_grow((void **)&r->events, &c->cap_events, r->n_events, sizeof *r->events) != GT_OK)
        return GT_ENOMEM;
    int status = event_init(&r->events[r->n_events], kind, m, addr, func, tail, error_path, callee, provider, text);
    r->n_events++; /* counted before the check so that free releases what was allocated */
    return status;
}

/* Appends an event to the summary of the function being decoded (strings copied). */
static int record_event(ctx *c, int kind, int m, uint64_t addr, int tail, int error_path, const char *callee,
                        const char *provider, const char *text)
{
    fsum *f = c->cur;
    if (gt_grow((void **)&f->events, &f->cap_events, f->n_events, sizeof *f->events) != GT_OK)
        return GT_ENOMEM;
    int status = event_init(&f->events[f->n_events], kind, m, addr, 0, tail, error_path, callee, provider, text);
    f->n_events++; /* counted before the check so that fsum_free releases what was allocated */
    return status;
}

/* Appends a call edge (to the function at (m, entry), from `site`) to the current summary. */
static int record_edge(ctx *c, int m, uint64_t entry, uint64_t site, int error_site)
{
    fsum *f = c->cur;
    if (gt_grow((void **)&f->edges, &f->cap_edges, f->n_edges, sizeof *f->edges) != GT_OK)
        return GT_ENOMEM;
    f->edges[f->n_edges++] = (fsum_edge){m, entry, site, error_site};
    return GT_OK;
}

/* Adds (or finds) the function at (m, entry) reached from `caller` at `site`. */
static int reach_function(ctx *c, int m, uint64_t entry, size_t caller, uint64_t site, int error_site)
{
    gt_dispatch_result *r = c->res;
    long idx;
    if (gt_map_get(&c->fmap, fkey(m, entry), &idx)) {
        if (gt_grow((void **)&c->edges, &c->cap_edges, c->nedges, sizeof *c->edges) != GT_OK)
            return GT_ENOMEM;
        c->edges[c->nedges++] = (edge){caller, (size_t)idx, error_site};
        return GT_OK;
    }
    int depth = r->functions[caller].depth + 1;
    if (depth > c->opt->max_depth) {
        r->depth_limited = 1;
        char text[128];
        const gt_elf_symbol *s = gt_elf_function_at(c->mods[m].elf, entry);
        snprintf(text, sizeof text, "not followed (max_depth=%d): %s", c->opt->max_depth, s ? s->name : "code");
        return add_event(c, GT_DK_UNRESOLVED, r->functions[caller].module, site, caller, 0, error_site, NULL, NULL,
                         text);
    }
    if (gt_grow((void **)&r->functions, &c->cap_funcs, r->n_functions, sizeof *r->functions) != GT_OK)
        return GT_ENOMEM;
    gt_dispatch_function *f = &r->functions[r->n_functions];
    memset(f, 0, sizeof *f);
    f->module = m;
    f->entry = entry;
    f->parent = (long)caller;
    f->callsite = site;
    f->depth = depth;
    const gt_elf_symbol *s = gt_elf_function_at(c->mods[m].elf, entry);
    char buf[40];
    if (!s)
        snprintf(buf, sizeof buf, "sub_%llx", (unsigned long long)entry);
    f->name = gt_dup_str(s ? s->name : buf);
    r->n_functions++;
    if (!f->name)
        return GT_ENOMEM;
    if (gt_map_put(&c->fmap, fkey(m, entry), (long)(r->n_functions - 1)) != GT_OK)
        return GT_ENOMEM;
    if (gt_grow((void **)&c->edges, &c->cap_edges, c->nedges, sizeof *c->edges) != GT_OK)
        return GT_ENOMEM;
    c->edges[c->nedges++] = (edge){caller, r->n_functions - 1, error_site};
    return GT_OK;
}

static int push_work(ctx *c, uint64_t a)
{
    if (gt_grow((void **)&c->work, &c->cap_work, c->nwork, sizeof *c->work) != GT_OK)
        return GT_ENOMEM;
    c->work[c->nwork++] = a;
    return GT_OK;
}

static void insn_text(const gt_insn *in, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s%s%s", in->mnemonic, in->op_str[0] ? " " : "", in->op_str);
}

/* A call or jump through the pointer slot `slot` of module m (GOT entry or PLT stub's slot). */
static int transfer_via_slot(ctx *c, int m, const gt_insn *in, uint64_t slot, int tail, int *noreturn,
                             int *handled)
{
    *handled = 0;
    const gt_elf_reloc *rel = gt_elf_reloc_at(c->mods[m].elf, slot);
    if (!rel || !rel->name)
        return GT_OK;
    *handled = 1;
    c->cur->plt_calls++;
    uint64_t next = in->address + in->size;
    int named_nr = named_noreturn_pattern(c, rel->name);
    resolved r = resolve_name(c, m, rel);
    if (r.internal) {
        if (gt_elf_machine(c->mods[r.module].elf) != c->machine)
            return record_event(c, GT_DK_UNRESOLVED, m, in->address, tail, 0, NULL, NULL,
                                "callee in a module of another machine");
        int dies = named_nr || probe_dies(c, r.module, r.vaddr, 0);
        *noreturn = dies;
        int err_site = dies || (!tail && probe_dies(c, m, next, 0));
        return record_edge(c, r.module, r.vaddr, in->address, err_site);
    }
    *noreturn = named_nr;
    int err_site = named_nr || (!tail && probe_dies(c, m, next, 0));
    char text[256];
    insn_text(in, text, sizeof text);
    return record_event(c, GT_DK_EXTERNAL_CALL, m, in->address, tail, err_site, rel->name, r.provider, text);
}

/* A direct call or tail call from function f to `target` in module m. */
static int transfer_direct(ctx *c, int m, const gt_insn *in, uint64_t target, int tail, int *noreturn)
{
    *noreturn = 0;
    uint64_t slot;
    char text[256];
    if (gt_elf_in_plt(c->mods[m].elf, target)) {
        int handled = 0;
        if (plt_slot(c, m, target, &slot)) {
            int status = transfer_via_slot(c, m, in, slot, tail, noreturn, &handled);
            if (status != GT_OK || handled)
                return status;
        }
        insn_text(in, text, sizeof text);
        return record_event(c, GT_DK_UNRESOLVED, m, in->address, tail, 0, NULL, NULL, "PLT stub not understood");
    }
    const uint8_t *code;
    size_t avail;
    if (gt_elf_code(c->mods[m].elf, target, &code, &avail) != GT_OK) {
        snprintf(text, sizeof text, "target 0x%llx is not code of the object", (unsigned long long)target);
        return record_event(c, GT_DK_UNRESOLVED, m, in->address, tail, 0, NULL, NULL, text);
    }
    int dies = callee_noreturn(c, m, target, 0);
    *noreturn = dies;
    int err_site = dies || (!tail && probe_dies(c, m, in->address + in->size, 0));
    return record_edge(c, m, target, in->address, err_site);
}

/* Reads the jump table of `a` and queues its targets; 1 when its size was known. */
static int queue_table(ctx *c, int m, const action *a, int *status)
{
    *status = GT_OK;
    if (a->count <= 0 || a->count > MAX_TABLE)
        return 0;
    const gt_elf *e = c->mods[m].elf;
    for (long i = 0; i < a->count; i++) {
        uint8_t b[8] = {0};
        size_t w = (size_t)a->width;
        if (w == 0 || w > 8 || gt_elf_read(e, a->table + (uint64_t)i * w, b, w) != GT_OK)
            return 0;
        uint64_t raw = 0;
        for (size_t k = 0; k < w; k++)
            raw |= (uint64_t)b[k] << (8 * k);
        int64_t val = (int64_t)raw;
        if (a->sign && w < 8 && (raw >> (8 * w - 1)) & 1)
            val = (int64_t)(raw | (~(uint64_t)0 << (8 * w)));
        uint64_t target;
        if (a->absolute)
            target = raw;
        else if (c->machine == GT_EM_X86_64)
            target = a->table + (uint64_t)val;
        else
            target = a->label + (uint64_t)(val * ((int64_t)1 << a->shift));
        const uint8_t *code;
        size_t avail;
        if (gt_elf_code(e, target, &code, &avail) != GT_OK)
            return 0;
        if ((*status = push_work(c, target)) != GT_OK)
            return 0;
    }
    return 1;
}

/* Decodes the function at (m, entry) by recursive descent into the summary c->cur. */
static int decode_function(ctx *c, int m, uint64_t entry)
{
    const gt_elf *e = c->mods[m].elf;
    int status = GT_OK, need_sweep = 0;
    size_t decoded = 0;
    gt_map_clear(&c->visited);
    c->nwork = 0;
    if ((status = push_work(c, entry)) != GT_OK)
        return status;
    for (int sweep = 0; sweep < 2; sweep++) {
        while (c->nwork > 0 && status == GT_OK) {
            uint64_t a = c->work[--c->nwork];
            tracker t;
            gt_tracker_reset(&t);
            for (;;) {
                if (gt_map_get(&c->visited, a, NULL))
                    break;
                if (a != entry && gt_elf_function_at(e, a) && decoded > 0) {
                    /* running into another function's first byte: a shared tail */
                    gt_insn pseudo = {a, 0, "fallthrough", ""};
                    int nr;
                    status = transfer_direct(c, m, &pseudo, a, 1, &nr);
                    break;
                }
                gt_insn in;
                if (decode_at(c, m, a, &in) != GT_OK) {
                    char text[96];
                    snprintf(text, sizeof text, "no instruction at 0x%llx", (unsigned long long)a);
                    status = record_event(c, GT_DK_UNRESOLVED, m, a, 0, 0, NULL, NULL, text);
                    break;
                }
                if ((status = gt_map_put(&c->visited, a, 1)) != GT_OK)
                    break;
                if (++decoded > MAX_BLOCK_WALK) {
                    status = record_event(c, GT_DK_UNRESOLVED, m, a, 0, 0, NULL, NULL, "function too large: stopped");
                    break;
                }
                action act;
                classify(c, &in, &t, &act);
                uint64_t next = a + in.size;
                int nr = 0, handled = 0;
                char text[256];
                if (act.type == A_OTHER) {
                    a = next;
                    continue;
                }
                if (act.type == A_RET || act.type == A_TRAP)
                    break;
                if (act.type == A_JCC || act.type == A_JMP) {
                    /* into another function: a tail call; else a branch inside this one */
                    const gt_elf_symbol *s = gt_elf_function_at(e, act.target);
                    if ((s && act.target != entry) || gt_elf_in_plt(e, act.target))
                        status = transfer_direct(c, m, &in, act.target, 1, &nr);
                    else
                        status = push_work(c, act.target);
                    if (status != GT_OK || act.type == A_JMP)
                        break;
                    a = next; /* a conditional branch falls through */
                    continue;
                }
                if (act.type == A_CALL) {
                    if (act.target == next) { /* call next; pop: reads the program counter */
                        a = next;
                        continue;
                    }
                    status = transfer_direct(c, m, &in, act.target, 0, &nr);
                    if (status != GT_OK || nr)
                        break;
                    a = next;
                    continue;
                }
                /* indirect call or jump */
                int tail = act.type == A_IJMP;
                if (act.via == VIA_SLOT) {
                    status = transfer_via_slot(c, m, &in, act.slot, tail, &nr, &handled);
                    if (status != GT_OK)
                        break;
                } else if (act.via == VIA_ADDR) {
                    status = transfer_direct(c, m, &in, act.target, tail, &nr);
                    handled = 1;
                    if (status != GT_OK)
                        break;
                } else if (act.via == VIA_JT) {
                    c->cur->jump_tables++;
                    if (!queue_table(c, m, &act, &status))
                        need_sweep = 1;
                    if (status != GT_OK)
                        break;
                    handled = 1;
                }
                if (!handled) {
                    insn_text(&in, text, sizeof text);
                    int err_site = !tail && probe_dies(c, m, next, 0);
                    status = record_event(c, tail ? GT_DK_INDIRECT_JUMP : GT_DK_INDIRECT_CALL, m, a, tail, err_site,
                                       NULL, NULL, text);
                    if (status != GT_OK)
                        break;
                }
                if (tail || nr)
                    break;
                a = next;
            }
        }
        if (status != GT_OK || sweep == 1 || !need_sweep)
            break;
        /* a jump table of unknown size: sweep the rest of the function's symbol range */
        const gt_elf_symbol *s = gt_elf_function_at(e, entry);
        if (!s || !s->size)
            break;
        uint64_t a = entry;
        while (a < entry + s->size && status == GT_OK) {
            gt_insn in;
            if (decode_at(c, m, a, &in) != GT_OK)
                break;
            if (!gt_map_get(&c->visited, a, NULL))
                status = push_work(c, a);
            a += in.size;
        }
    }
    c->cur->instructions = decoded;
    return status;
}

/* Analyses function fi: its summary from the cache or by decoding it, then its events and its
 * callees (queued breadth first) into the result. */
static int analyse_function(ctx *c, size_t fi)
{
    const int m = c->res->functions[fi].module;
    const uint64_t entry = c->res->functions[fi].entry;
    fsum *sum = NULL;
    int status = GT_OK, owned = 0;
    long idx;
    if (c->cache && gt_map_get(&c->cache->index, fkey(m, entry), &idx)) {
        sum = c->cache->sums[idx];
    } else {
        sum = gt_calloc(1, sizeof *sum);
        if (!sum)
            return GT_ENOMEM;
        owned = 1;
        c->cur = sum;
        status = decode_function(c, m, entry);
        c->cur = NULL;
        sum->noreturn = probe_dies(c, m, entry, 0);
        if (status == GT_OK && c->cache) {
            gt_dispatch_cache *k = c->cache;
            if (gt_grow((void **)&k->sums, &k->cap, k->n, sizeof *k->sums) == GT_OK &&
                gt_map_put(&k->index, fkey(m, entry), (long)k->n) == GT_OK) {
                k->sums[k->n++] = sum;
                owned = 0;
            }
        }
    }
    for (size_t i = 0; i < sum->n_events && status == GT_OK; i++) {
        const fsum_event *ev = &sum->events[i];
        status = add_event(c, ev->kind, ev->module, ev->address, fi, ev->tail, ev->error_path, ev->callee,
                           ev->provider, ev->text);
    }
    c->res->functions[fi].instructions = sum->instructions;
    c->res->functions[fi].noreturn = sum->noreturn;
    c->res->instructions += sum->instructions;
    c->res->jump_tables += sum->jump_tables;
    c->res->plt_calls += sum->plt_calls;
    for (size_t i = 0; i < sum->n_edges && status == GT_OK; i++) {
        const fsum_edge *ed = &sum->edges[i];
        status = reach_function(c, ed->module, ed->entry, fi, ed->site, ed->error_site);
    }
    if (owned)
        fsum_free(sum);
    return status;
}

int gt_dispatch_cache_new(gt_dispatch_cache **out)
{
    if (!out)
        return GT_EINVAL;
    *out = gt_calloc(1, sizeof **out);
    return *out ? GT_OK : GT_ENOMEM;
}

void gt_dispatch_cache_free(gt_dispatch_cache *k)
{
    if (!k)
        return;
    for (size_t i = 0; i < k->n; i++)
        fsum_free(k->sums[i]);
    gt_free(k->sums);
    gt_map_free(&k->index);
    gt_free(k);
}

size_t gt_dispatch_cache_size(const gt_dispatch_cache *k) { return k ? k->n : 0; }

/* Marks events whose function is reached only from error-path call sites. */
static void propagate_error_paths(ctx *c)
{
    gt_dispatch_result *r = c->res;
    if (r->n_functions == 0)
        return;
    unsigned char *only_err = gt_malloc(r->n_functions);
    if (!only_err)
        return;
    memset(only_err, 1, r->n_functions);
    only_err[0] = 0;
    for (int changed = 1; changed;) {
        changed = 0;
        for (size_t i = 0; i < c->nedges; i++) {
            const edge *ed = &c->edges[i];
            if (only_err[ed->callee] && !ed->error_site && !only_err[ed->caller]) {
                only_err[ed->callee] = 0;
                changed = 1;
            }
        }
    }
    for (size_t i = 0; i < r->n_events; i++)
        if (only_err[r->events[i].function])
            r->events[i].error_path = 1;
    gt_free(only_err);
}

void gt_dispatch_result_free(gt_dispatch_result *r)
{
    if (!r)
        return;
    events_free(r->events, r->n_events);
    for (size_t i = 0; i < r->n_functions; i++)
        gt_free(r->functions[i].name);
    gt_free(r->functions);
    memset(r, 0, sizeof *r);
}

int gt_dispatch_analyse(gt_cs *cs, const gt_dispatch_module *mods, size_t nmods, size_t entry_module, uint64_t entry,
                        const gt_dispatch_options *opt, gt_dispatch_cache *cache, gt_dispatch_result *out, char *err,
                        size_t err_cap)
{
    if (!out)
        return GT_EINVAL;
    memset(out, 0, sizeof *out);
    ctx c;
    memset(&c, 0, sizeof c);
    c.err = err;
    c.err_cap = err_cap;
    c.res = out;
    c.opt = opt;
    c.cache = cache;
    c.mods = mods;
    c.nmods = nmods;
    int status = GT_OK;
    if (!cs || !mods || !opt || nmods == 0 || nmods > GT_DISPATCH_MAX_MODULES || entry_module >= nmods ||
        opt->max_depth < 0) {
        status = fail_msg(&c, GT_EINVAL, "invalid analysis arguments (1 to %d modules, max_depth >= 0)",
                          GT_DISPATCH_MAX_MODULES);
        goto cleanup;
    }
    for (size_t i = 0; i < nmods; i++)
        if (!mods[i].elf) {
            status = fail_msg(&c, GT_EINVAL, "module %zu has no ELF object", i);
            goto cleanup;
        }
    c.machine = gt_elf_machine(mods[entry_module].elf);
    if ((status = gt_decoder_open(cs, c.machine, &c.dec, err, err_cap)) != GT_OK)
        goto cleanup;
    for (size_t i = 0; i < nmods; i++)
        gt_loaded_attach(mods[i].path, mods[i].elf, &c.rt[i]);
    const uint8_t *code;
    size_t avail;
    if (gt_elf_code(mods[entry_module].elf, entry, &code, &avail) != GT_OK) {
        status = fail_msg(&c, GT_EFORMAT, "address 0x%llx is not in the executable code of %s",
                          (unsigned long long)entry, mods[entry_module].path ? mods[entry_module].path : "the object");
        goto cleanup;
    }
    if ((status = gt_grow((void **)&out->functions, &c.cap_funcs, 0, sizeof *out->functions)) != GT_OK)
        goto cleanup;
    gt_dispatch_function *root = &out->functions[0];
    memset(root, 0, sizeof *root);
    root->module = (int)entry_module;
    root->entry = entry;
    root->parent = -1;
    const gt_elf_symbol *s = gt_elf_function_at(mods[entry_module].elf, entry);
    char buf[40];
    snprintf(buf, sizeof buf, "sub_%llx", (unsigned long long)entry);
    root->name = gt_dup_str(s ? s->name : buf);
    out->n_functions = 1;
    if (!root->name || (status = gt_map_put(&c.fmap, fkey((int)entry_module, entry), 0)) != GT_OK) {
        status = GT_ENOMEM;
        goto cleanup;
    }
    for (size_t i = 0; i < out->n_functions && status == GT_OK; i++)
        status = analyse_function(&c, i);
    if (status == GT_OK)
        propagate_error_paths(&c);
cleanup:
    if (status == GT_ENOMEM && err && err_cap)
        snprintf(err, err_cap, "out of memory during the analysis");
    if (status != GT_OK)
        gt_dispatch_result_free(out);
    for (size_t i = 0; i < nmods && i < GT_DISPATCH_MAX_MODULES; i++)
        gt_loaded_release(&c.rt[i]);
    gt_decoder_close(c.dec);
    gt_map_free(&c.fmap);
    gt_map_free(&c.visited);
    gt_map_free(&c.noreturn);
    gt_map_free(&c.resolved_at);
    gt_free(c.resolved_cache);
    gt_free(c.edges);
    gt_free(c.work);
    return status;
}
