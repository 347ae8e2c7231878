/* dispatch.c: machine-code analysis of calls and dispatch (see dispatch.h).
 *
 * Operands are read from capstone's text (Intel syntax on x86-64, ARM syntax on aarch64). A small
 * per-block register tracker follows the few value shapes that matter:
 *   - an address formed in code (lea [rip+d], adrp/add, adr)          -> RK_ADDR
 *   - a pointer loaded from a known slot (mov r,[rip+d], ldr x,[x,#o]) -> RK_SLOT (GOT entries)
 *   - an entry loaded from a table at a known address                  -> RK_ENTRY
 *   - a table entry added to the table's (or a label's) address        -> RK_JT (jump target)
 * so that "jmp rax" after a switch's table lookup is a jump table, "br x17" in a PLT stub is the
 * GOT slot it loaded, and everything else through a register or memory is dispatch. */
#define _GNU_SOURCE
#include "dispatch.h"
#include "guard.h"
#include "guardbuf.h"

#include <ctype.h>
#include <dlfcn.h>
#include <fnmatch.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_BLOCK_WALK 200000 /* instructions per function: a guard against runaway decoding */
#define PROBE_LEN 256         /* straight-line instructions a noreturn probe looks at */
#define PROBE_DEPTH 3
#define MAX_TABLE 4096

/* ---------- small containers ---------- */

/* Open-addressing map from non-zero-mapped uint64 keys to long values. */
typedef struct u64map {
    uint64_t *keys; /* key + 1; 0 marks an empty slot */
    long *vals;
    size_t cap, n;
} u64map;

static void map_free(u64map *m)
{
    gt_free(m->keys);
    gt_free(m->vals);
    memset(m, 0, sizeof *m);
}

/* Empties the map. A big table is released rather than wiped, so that one large function does
 * not make every later (small) one pay for clearing it. */
static void map_clear(u64map *m)
{
    if (m->cap > 4096) {
        map_free(m);
        return;
    }
    if (m->keys)
        memset(m->keys, 0, m->cap * sizeof *m->keys);
    m->n = 0;
}

static size_t map_hash(uint64_t k) { return (size_t)((k + 1) * 0x9E3779B97F4A7C15ull >> 7); }

/* Returns 1 and *val when present, else 0. */
static int map_get(const u64map *m, uint64_t key, long *val)
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

static int map_put(u64map *m, uint64_t key, long val)
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
static int grow(void **arr, size_t *cap, size_t n, size_t elem)
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

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = gt_malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* ---------- operand text ---------- */

#define MAX_OPS 6
#define OP_LEN 96

/* Splits op_str at commas outside brackets and braces; trims blanks. Returns the count. */
static int split_ops(const char *s, char ops[MAX_OPS][OP_LEN])
{
    int n = 0, depth = 0;
    size_t len = 0;
    if (!*s)
        return 0;
    for (const char *p = s;; p++) {
        char c = *p;
        if (c == '[' || c == '{')
            depth++;
        if (c == ']' || c == '}')
            depth--;
        if (c == '\0' || (c == ',' && depth == 0)) {
            if (n < MAX_OPS) {
                while (len && ops[n][len - 1] == ' ')
                    len--;
                ops[n][len] = '\0';
                n++;
            }
            len = 0;
            if (c == '\0')
                break;
            continue;
        }
        if (n < MAX_OPS && len + 1 < OP_LEN && !(len == 0 && c == ' '))
            ops[n][len++] = c;
    }
    return n;
}

/* Parses a number "0x1f", "31", "-0x10", "#0x10" (the whole string). */
static int parse_num(const char *s, int64_t *v)
{
    if (*s == '#')
        s++;
    int neg = 0;
    if (*s == '-') {
        neg = 1;
        s++;
    }
    if (!isdigit((unsigned char)*s))
        return 0;
    char *end;
    unsigned long long u = strtoull(s, &end, 0);
    if (*end != '\0')
        return 0;
    *v = neg ? -(int64_t)u : (int64_t)u;
    return 1;
}

/* x86-64 general-purpose register number 0..15, 16 for rip, -1 otherwise. Called for most
 * instructions, so it dispatches on the spelling instead of comparing against every name. */
static int x86_reg(const char *s)
{
    static const char legacy[][3] = {"ax", "cx", "dx", "bx", "sp", "bp", "si", "di"};
    size_t n = strlen(s);
    if (n < 2 || n > 4)
        return -1;
    if (s[0] == 'r' && isdigit((unsigned char)s[1])) { /* r8..r15 with d/w/b suffixes */
        int r = s[1] - '0';
        size_t k = 2;
        if (r == 1 && n > 2 && isdigit((unsigned char)s[2])) {
            r = 10 + (s[2] - '0');
            k = 3;
        }
        if (r < 8 || r > 15)
            return -1;
        if (k == n || (k + 1 == n && (s[k] == 'd' || s[k] == 'w' || s[k] == 'b')))
            return r;
        return -1;
    }
    if (!strcmp(s, "rip"))
        return 16;
    const char *base = s;
    if ((s[0] == 'r' || s[0] == 'e') && n == 3)
        base = s + 1; /* rax, eax */
    if (strlen(base) == 2) {
        for (int r = 0; r < 8; r++)
            if (base[0] == legacy[r][0] && base[1] == legacy[r][1])
                return r;
        /* al, cl, dl, bl, ah, ch, dh, bh */
        if (base == s && (s[1] == 'l' || s[1] == 'h')) {
            static const char lo[] = "acdb";
            const char *p = strchr(lo, s[0]);
            if (p)
                return (int)(p - lo);
        }
        return -1;
    }
    /* spl, bpl, sil, dil */
    if (n == 3 && s[2] == 'l') {
        char two[3] = {s[0], s[1], '\0'};
        for (int r = 4; r < 8; r++)
            if (!strcmp(two, legacy[r]))
                return r;
    }
    return -1;
}

/* aarch64 general register number 0..30 (x or w form), -1 otherwise (sp, xzr, vector regs). */
static int a64_reg(const char *s)
{
    if ((s[0] == 'x' || s[0] == 'w') && isdigit((unsigned char)s[1])) {
        char *end;
        long r = strtol(s + 1, &end, 10);
        if (*end == '\0' && r >= 0 && r <= 30)
            return (int)r;
    }
    if (!strcmp(s, "lr"))
        return 30;
    if (!strcmp(s, "fp"))
        return 29;
    return -1;
}

/* An x86 memory operand: [base + index*scale + disp]. */
typedef struct x86_mem {
    int base, index, scale, seg;
    int64_t disp;
} x86_mem;

static int x86_parse_mem(const char *op, x86_mem *m)
{
    const char *lb = strchr(op, '['), *rb = strrchr(op, ']');
    if (!lb || !rb || rb < lb)
        return 0;
    m->base = m->index = -1;
    m->scale = 1;
    m->disp = 0;
    m->seg = strchr(op, ':') != NULL && strchr(op, ':') < lb;
    char buf[OP_LEN];
    size_t len = (size_t)(rb - lb - 1);
    if (len >= sizeof buf)
        return 0;
    memcpy(buf, lb + 1, len);
    buf[len] = '\0';
    int sign = 1;
    char *save = NULL;
    for (char *tok = strtok_r(buf, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        if (!strcmp(tok, "+")) {
            sign = 1;
            continue;
        }
        if (!strcmp(tok, "-")) {
            sign = -1;
            continue;
        }
        char *star = strchr(tok, '*');
        int64_t v;
        if (star) {
            *star = '\0';
            m->index = x86_reg(tok);
            if (m->index < 0 || !parse_num(star + 1, &v))
                return 0;
            m->scale = (int)v;
        } else if (parse_num(tok, &v)) {
            m->disp += sign * v;
        } else {
            int r = x86_reg(tok);
            if (r < 0)
                return 0;
            if (m->base < 0)
                m->base = r;
            else
                m->index = r;
        }
    }
    return 1;
}

/* ---------- register tracker ---------- */

enum { RK_NONE = 0, RK_ADDR, RK_SLOT, RK_ENTRY, RK_JT };

typedef struct rstate {
    uint8_t kind, width, sign, shift;
    uint64_t v;     /* address, slot, or table */
    uint64_t label; /* RK_JT on aarch64: the base the scaled entry is added to */
    long count;     /* values the register can take (from cmp/and); for RK_ENTRY/RK_JT the table's
                     * entries; 0 when unknown */
} rstate;

typedef struct tracker {
    rstate r[32];
    int64_t cmp_imm;
    int have_cmp;
} tracker;

static void tracker_reset(tracker *t) { memset(t, 0, sizeof *t); }

/* A jump table's entry count: the index's bound, else the block's last comparison. */
static long table_count(const rstate *s, const tracker *t)
{
    if (s->count > 0)
        return s->count;
    return t->have_cmp ? (long)(t->cmp_imm + 1) : -1;
}

/* The bound an "and reg, imm" puts on a register: imm + 1 when imm is 2^k - 1 (small). */
static long mask_bound(int64_t imm)
{
    return imm >= 0 && imm < MAX_TABLE && ((imm + 1) & imm) == 0 ? (long)imm + 1 : 0;
}

/* ---------- instruction classes ---------- */

enum { A_OTHER, A_RET, A_TRAP, A_JCC, A_JMP, A_CALL, A_ICALL, A_IJMP };
enum { VIA_UNKNOWN, VIA_SLOT, VIA_JT, VIA_ADDR };

typedef struct action {
    int type;
    uint64_t target;  /* direct target (A_JMP, A_CALL, A_JCC; VIA_ADDR indirect) */
    int via;          /* for A_ICALL/A_IJMP */
    uint64_t slot;    /* VIA_SLOT: the pointer slot's address */
    /* VIA_JT: the table */
    uint64_t table, label;
    int width, sign, shift, absolute;
    long count; /* entries, -1 when unknown */
} action;

static const char *strip_prefixes(const char *mn)
{
    for (;;) {
        if (!strncmp(mn, "notrack ", 8))
            mn += 8;
        else if (!strncmp(mn, "bnd ", 4))
            mn += 4;
        else if (!strncmp(mn, "rep ", 4))
            mn += 4;
        else
            return mn;
    }
}

static void x86_indirect(const char *op, const tracker *t, uint64_t next, int is_jump, action *a)
{
    a->via = VIA_UNKNOWN;
    int r = x86_reg(op);
    if (r >= 0 && r < 16) {
        const rstate *s = &t->r[r];
        if (s->kind == RK_SLOT) {
            a->via = VIA_SLOT;
            a->slot = s->v;
        } else if (s->kind == RK_ADDR) {
            a->via = VIA_ADDR;
            a->target = s->v;
        } else if (s->kind == RK_JT && is_jump) {
            a->via = VIA_JT;
            a->table = s->v;
            a->width = 4;
            a->sign = 1;
            a->count = table_count(s, t);
        }
        return;
    }
    x86_mem m;
    if (!x86_parse_mem(op, &m) || m.seg)
        return;
    if (m.base == 16 && m.index < 0) {
        a->via = VIA_SLOT;
        a->slot = next + (uint64_t)m.disp;
    } else if (m.base < 0 && m.index < 0) {
        a->via = VIA_SLOT;
        a->slot = (uint64_t)m.disp;
    } else if (is_jump && m.index >= 0 && m.index < 16 && m.scale == 8 &&
               (m.base < 0 || (m.base < 16 && t->r[m.base].kind == RK_ADDR))) {
        /* jmp [table + idx*8]: a table of absolute addresses */
        a->via = VIA_JT;
        a->absolute = 1;
        a->width = 8;
        a->table = (uint64_t)m.disp + (m.base >= 0 ? t->r[m.base].v : 0);
        a->count = table_count(&t->r[m.index], t);
    }
}

static void x86_track(const char *mn, char ops[MAX_OPS][OP_LEN], int nops, tracker *t, uint64_t next)
{
    if (nops < 1)
        return;
    int d = x86_reg(ops[0]);
    if (!strcmp(mn, "cmp")) {
        int64_t v;
        if (nops == 2 && parse_num(ops[1], &v)) {
            t->cmp_imm = v;
            t->have_cmp = 1;
            if (d >= 0 && d < 16 && v >= 0 && v < MAX_TABLE)
                t->r[d].count = (long)v + 1;
        }
        return;
    }
    if (!strcmp(mn, "test") || !strcmp(mn, "push") || !strncmp(mn, "bt", 2) || d < 0 || d > 15)
        return;
    rstate out = {0};
    x86_mem m;
    int64_t v;
    if (nops == 2) {
        if (!strcmp(mn, "lea") && x86_parse_mem(ops[1], &m) && m.base == 16 && m.index < 0 && !m.seg) {
            out.kind = RK_ADDR;
            out.v = next + (uint64_t)m.disp;
        } else if (!strcmp(mn, "mov") && !strchr(ops[1], '[') && parse_num(ops[1], &v)) {
            out.kind = RK_ADDR;
            out.v = (uint64_t)v;
        } else if (!strcmp(mn, "mov") && x86_reg(ops[1]) >= 0 && x86_reg(ops[1]) < 16) {
            out = t->r[x86_reg(ops[1])];
        } else if (!strcmp(mn, "mov") && x86_parse_mem(ops[1], &m) && !m.seg && m.index < 0 &&
                   (m.base == 16 || m.base < 0)) {
            out.kind = RK_SLOT;
            out.v = (m.base == 16 ? next : 0) + (uint64_t)m.disp;
        } else if ((!strcmp(mn, "movsxd") || !strcmp(mn, "mov")) && x86_parse_mem(ops[1], &m) && !m.seg &&
                   m.base >= 0 && m.base < 16 && m.index >= 0 && m.index < 16 && m.disp == 0 &&
                   ((t->r[m.base].kind == RK_ADDR && (m.scale == 4 || m.scale == 1)) ||
                    (t->r[m.index].kind == RK_ADDR && m.scale == 1))) {
            /* a 32-bit entry of a table at a known address: [table + i*4], or [i*4 + table] after
             * the index was scaled separately (gcc -O0) */
            out.kind = RK_ENTRY;
            out.v = t->r[m.base].kind == RK_ADDR ? t->r[m.base].v : t->r[m.index].v;
            out.width = 4;
            out.sign = 1;
            out.count = t->r[m.base].kind == RK_ADDR ? t->r[m.index].count : 0;
        } else if (!strcmp(mn, "add") && x86_reg(ops[1]) >= 0 && x86_reg(ops[1]) < 16) {
            const rstate *a = &t->r[d], *b = &t->r[x86_reg(ops[1])];
            if ((a->kind == RK_ENTRY && b->kind == RK_ADDR && a->v == b->v) ||
                (a->kind == RK_ADDR && b->kind == RK_ENTRY && a->v == b->v)) {
                out.kind = RK_JT;
                out.v = a->v;
                out.count = a->kind == RK_ENTRY ? a->count : b->count;
            }
        } else if (!strcmp(mn, "and") && parse_num(ops[1], &v)) {
            out.count = mask_bound(v);
        }
    }
    t->r[d] = out;
}

static void x86_classify(const gt_insn *in, tracker *t, action *a)
{
    memset(a, 0, sizeof *a);
    a->count = -1;
    const char *mn = strip_prefixes(in->mnemonic);
    uint64_t next = in->address + in->size;
    char ops[MAX_OPS][OP_LEN];
    int nops = split_ops(in->op_str, ops);
    int64_t v;
    if (!strcmp(mn, "ret") || !strcmp(mn, "retf") || !strncmp(mn, "iret", 4)) {
        a->type = A_RET;
    } else if (!strcmp(mn, "ud2") || !strcmp(mn, "hlt") || !strcmp(mn, "int3") || !strcmp(mn, "ud1") ||
               !strcmp(mn, "ud0")) {
        a->type = A_TRAP;
    } else if (!strcmp(mn, "jmp") || !strcmp(mn, "call")) {
        int is_jump = mn[0] == 'j';
        if (nops == 1 && parse_num(ops[0], &v)) {
            a->type = is_jump ? A_JMP : A_CALL;
            a->target = (uint64_t)v;
        } else {
            a->type = is_jump ? A_IJMP : A_ICALL;
            if (nops == 1)
                x86_indirect(ops[0], t, next, is_jump, a);
        }
        if (!is_jump) /* the callee may clobber the caller-saved registers */
            for (int r = 0; r < 16; r++)
                if (r == 0 || r == 1 || r == 2 || r == 6 || r == 7 || (r >= 8 && r <= 11))
                    t->r[r].kind = RK_NONE;
    } else if ((mn[0] == 'j' || !strncmp(mn, "loop", 4)) && nops == 1 && parse_num(ops[0], &v)) {
        a->type = A_JCC;
        a->target = (uint64_t)v;
    } else {
        a->type = A_OTHER;
        x86_track(mn, ops, nops, t, next);
    }
}

/* Parses an aarch64 memory operand "[xN]", "[xN, #off]", "[xN, wM, uxtw #2]". */
typedef struct a64_mem {
    int base, index;
    int64_t off;
} a64_mem;

static int a64_parse_mem(const char *op, a64_mem *m)
{
    if (op[0] != '[')
        return 0;
    const char *rb = strchr(op, ']');
    if (!rb)
        return 0;
    char buf[OP_LEN];
    size_t len = (size_t)(rb - op - 1);
    if (len >= sizeof buf)
        return 0;
    memcpy(buf, op + 1, len);
    buf[len] = '\0';
    char parts[MAX_OPS][OP_LEN];
    int n = split_ops(buf, parts);
    m->base = -1;
    m->index = -1;
    m->off = 0;
    if (n < 1)
        return 0;
    m->base = a64_reg(parts[0]);
    if (n >= 2 && !parse_num(parts[1], &m->off))
        m->index = a64_reg(parts[1]);
    return 1;
}

static void a64_track(const char *mn, char ops[MAX_OPS][OP_LEN], int nops, tracker *t)
{
    if (nops < 1)
        return;
    int64_t v;
    if (!strcmp(mn, "cmp")) {
        if (nops == 2 && parse_num(ops[1], &v)) {
            t->cmp_imm = v;
            t->have_cmp = 1;
            int r = a64_reg(ops[0]);
            if (r >= 0 && v >= 0 && v < MAX_TABLE)
                t->r[r].count = (long)v + 1;
        }
        return;
    }
    if (!strncmp(mn, "st", 2) || !strcmp(mn, "cmn") || !strcmp(mn, "tst") || !strncmp(mn, "prfm", 4) ||
        !strcmp(mn, "ccmp") || !strcmp(mn, "ccmn") || !strncmp(mn, "fcmp", 4) || !strcmp(mn, "nop"))
        return;
    int d = a64_reg(ops[0]);
    if (d < 0)
        return;
    rstate out = {0};
    a64_mem m;
    if ((!strcmp(mn, "adrp") || !strcmp(mn, "adr")) && nops == 2 && parse_num(ops[1], &v)) {
        out.kind = RK_ADDR;
        out.v = (uint64_t)v;
    } else if (!strcmp(mn, "mov") && nops == 2 && a64_reg(ops[1]) >= 0) {
        out = t->r[a64_reg(ops[1])];
    } else if (!strcmp(mn, "add") && nops == 3 && a64_reg(ops[1]) >= 0 && parse_num(ops[2], &v)) {
        const rstate *s = &t->r[a64_reg(ops[1])];
        if (s->kind == RK_ADDR) {
            out.kind = RK_ADDR;
            out.v = s->v + (uint64_t)v;
        }
    } else if (!strcmp(mn, "add") && nops >= 3 && a64_reg(ops[1]) >= 0 && a64_reg(ops[2]) >= 0) {
        const rstate *x = &t->r[a64_reg(ops[1])], *y = &t->r[a64_reg(ops[2])];
        int shift = 0;
        if (nops >= 4) {
            const char *hash = strchr(ops[3], '#');
            if (hash && parse_num(hash, &v))
                shift = (int)v;
        }
        const rstate *base = x->kind == RK_ADDR ? x : y, *entry = x->kind == RK_ENTRY ? x : y;
        if (base->kind == RK_ADDR && entry->kind == RK_ENTRY) {
            out.kind = RK_JT;
            out.v = entry->v;
            out.label = base->v;
            out.width = entry->width;
            out.sign = entry->sign;
            out.shift = (uint8_t)shift;
            out.count = entry->count;
        }
    } else if (!strcmp(mn, "and") && nops == 3 && parse_num(ops[2], &v)) {
        out.count = mask_bound(v);
    } else if (!strncmp(mn, "ldr", 3) && nops == 2 && a64_parse_mem(ops[1], &m) && m.base >= 0 &&
               t->r[m.base].kind == RK_ADDR && !strchr(ops[1], '!')) {
        const rstate *s = &t->r[m.base];
        if (m.index < 0 && !strcmp(mn, "ldr") && ops[0][0] == 'x') {
            out.kind = RK_SLOT;
            out.v = s->v + (uint64_t)m.off;
        } else if (m.index >= 0) {
            out.kind = RK_ENTRY;
            out.v = s->v;
            out.sign = !strncmp(mn, "ldrs", 4);
            const char *suffix = mn + (out.sign ? 4 : 3);
            out.width = !strcmp(suffix, "b") ? 1 : !strcmp(suffix, "h") ? 2 : ops[0][0] == 'w' ? 4 : 8;
            if (!strcmp(mn, "ldrsw"))
                out.width = 4;
            out.count = t->r[m.index].count;
        }
    }
    t->r[d] = out;
}

static void a64_classify(const gt_insn *in, tracker *t, action *a)
{
    memset(a, 0, sizeof *a);
    a->count = -1;
    const char *mn = in->mnemonic;
    char ops[MAX_OPS][OP_LEN];
    int nops = split_ops(in->op_str, ops);
    int64_t v;
    if (!strcmp(mn, "ret") || !strcmp(mn, "retaa") || !strcmp(mn, "retab") || !strcmp(mn, "eret")) {
        a->type = A_RET;
    } else if (!strcmp(mn, "brk") || !strcmp(mn, "udf") || !strcmp(mn, "hlt")) {
        a->type = A_TRAP;
    } else if ((!strcmp(mn, "b") || !strcmp(mn, "bl")) && nops == 1 && parse_num(ops[0], &v)) {
        a->type = mn[1] == 'l' ? A_CALL : A_JMP;
        a->target = (uint64_t)v;
    } else if ((!strncmp(mn, "b.", 2) || !strcmp(mn, "cbz") || !strcmp(mn, "cbnz") || !strcmp(mn, "tbz") ||
                !strcmp(mn, "tbnz")) && nops >= 1 && parse_num(ops[nops - 1], &v)) {
        a->type = A_JCC;
        a->target = (uint64_t)v;
    } else if (!strncmp(mn, "br", 2) || !strncmp(mn, "blr", 3)) {
        int is_jump = mn[1] == 'r';
        a->type = is_jump ? A_IJMP : A_ICALL;
        a->via = VIA_UNKNOWN;
        int r = nops >= 1 ? a64_reg(ops[0]) : -1;
        if (r >= 0 && (!strcmp(mn, "br") || !strcmp(mn, "blr"))) {
            const rstate *s = &t->r[r];
            if (s->kind == RK_SLOT) {
                a->via = VIA_SLOT;
                a->slot = s->v;
            } else if (s->kind == RK_ADDR) {
                a->via = VIA_ADDR;
                a->target = s->v;
            } else if (s->kind == RK_JT && is_jump) {
                a->via = VIA_JT;
                a->table = s->v;
                a->label = s->label;
                a->width = s->width;
                a->sign = s->sign;
                a->shift = s->shift;
                a->count = table_count(s, t);
            }
        }
    } else {
        a->type = A_OTHER;
        a64_track(mn, ops, nops, t);
    }
    if (a->type == A_CALL || a->type == A_ICALL) {
        for (int r = 0; r <= 18; r++)
            t->r[r].kind = RK_NONE;
        t->r[30].kind = RK_NONE;
    }
}

/* ---------- analysis context ---------- */

typedef struct modrt {
    void *handle;   /* dlopen(RTLD_NOLOAD) handle, NULL when the module is not loaded */
    uintptr_t base; /* dladdr's dli_fbase: identifies the object among the loaded ones */
    uint64_t bias;  /* runtime address - file virtual address */
} modrt;

typedef struct edge {
    size_t caller, callee;
    int error_site;
} edge;

/* What decoding one function found, independent of where in the call graph it was reached: its
 * events and its outgoing calls in order. Cached across analyses (gt_dispatch_cache). */
typedef struct fsum_event {
    int kind, module, tail, error_path;
    uint64_t address;
    char *callee, *provider, *text;
} fsum_event;

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

static void fsum_free(fsum *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->n_events; i++) {
        gt_free(f->events[i].callee);
        gt_free(f->events[i].provider);
        gt_free(f->events[i].text);
    }
    gt_free(f->events);
    gt_free(f->edges);
    gt_free(f);
}

struct gt_dispatch_cache {
    u64map index; /* (entry << 6 | module) -> index into sums */
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
    modrt rt[GT_DISPATCH_MAX_MODULES];
    const gt_dispatch_options *opt;
    gt_dispatch_result *res;
    size_t cap_events, cap_funcs, cap_edges, cap_work;
    u64map fmap;     /* (entry << 6 | module) -> function index */
    u64map visited;  /* instruction addresses of the function being decoded */
    u64map noreturn; /* (addr << 6 | module) -> 1 dies / 0 returns, probe memo */
    u64map resolved_at; /* relocation address -> index into `resolved_cache` */
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
        x86_classify(in, t, a);
    else
        a64_classify(in, t, a);
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
    if (c->rt[m].handle) {
        void *addr = dlsym(RTLD_DEFAULT, rel->name);
        if (!addr)
            addr = dlsym(c->rt[m].handle, rel->name);
        if (addr) {
            Dl_info info;
            if (dladdr(addr, &info) && info.dli_fbase) {
                for (size_t j = 0; j < c->nmods; j++) {
                    if (c->rt[j].handle && c->rt[j].base == (uintptr_t)info.dli_fbase) {
                        r.internal = 1;
                        r.module = (int)j;
                        r.vaddr = (uint64_t)(uintptr_t)addr - c->rt[j].bias;
                        return r;
                    }
                }
                r.provider = info.dli_fname;
            }
            return r;
        }
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
    if (map_get(&c->resolved_at, key, &idx))
        return c->resolved_cache[idx];
    resolved r = resolve_name_uncached(c, m, rel);
    if (grow((void **)&c->resolved_cache, &c->cap_resolved, c->n_resolved, sizeof *c->resolved_cache) == GT_OK &&
        map_put(&c->resolved_at, key, (long)c->n_resolved) == GT_OK)
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
    tracker_reset(&t);
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
    if (map_get(&c->noreturn, key, &memo))
        return (int)memo;
    /* a cycle through this probe counts as returning */
    if (map_put(&c->noreturn, key, 0) != GT_OK)
        return 0;
    int dies = 0, decided = 0;
    uint64_t shared[PROBE_LEN];
    size_t nshared = 0;
    tracker t;
    tracker_reset(&t);
    uint64_t start = a;
    for (int k = 0; k < PROBE_LEN && !decided; k++) {
        if (a != start && map_get(&c->noreturn, fkey(m, a), &memo)) {
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
    map_put(&c->noreturn, key, dies);
    for (size_t i = 0; i < nshared; i++)
        map_put(&c->noreturn, fkey(m, shared[i]), dies);
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

static int add_event(ctx *c, int kind, int m, uint64_t addr, size_t func, int tail, int error_path,
                     const char *callee, const char *provider, const char *text)
{
    gt_dispatch_result *r = c->res;
    if (grow((void **)&r->events, &c->cap_events, r->n_events, sizeof *r->events) != GT_OK)
        return GT_ENOMEM;
    gt_dispatch_event *e = &r->events[r->n_events];
    memset(e, 0, sizeof *e);
    e->kind = kind;
    e->module = m;
    e->address = addr;
    e->function = func;
    e->tail = tail;
    e->error_path = error_path;
    e->callee = callee ? dup_str(callee) : NULL;
    e->provider = provider ? dup_str(provider) : NULL;
    e->text = dup_str(text ? text : "");
    r->n_events++; /* counted before the checks so that free releases what was allocated */
    if ((callee && !e->callee) || (provider && !e->provider) || !e->text)
        return GT_ENOMEM;
    return GT_OK;
}

/* Appends an event to the summary of the function being decoded (strings copied). */
static int record_event(ctx *c, int kind, int m, uint64_t addr, int tail, int error_path, const char *callee,
                        const char *provider, const char *text)
{
    fsum *f = c->cur;
    if (grow((void **)&f->events, &f->cap_events, f->n_events, sizeof *f->events) != GT_OK)
        return GT_ENOMEM;
    fsum_event *e = &f->events[f->n_events];
    memset(e, 0, sizeof *e);
    e->kind = kind;
    e->module = m;
    e->address = addr;
    e->tail = tail;
    e->error_path = error_path;
    e->callee = callee ? dup_str(callee) : NULL;
    e->provider = provider ? dup_str(provider) : NULL;
    e->text = dup_str(text ? text : "");
    f->n_events++; /* counted before the checks so that fsum_free releases what was allocated */
    if ((callee && !e->callee) || (provider && !e->provider) || !e->text)
        return GT_ENOMEM;
    return GT_OK;
}

/* Appends a call edge (to the function at (m, entry), from `site`) to the current summary. */
static int record_edge(ctx *c, int m, uint64_t entry, uint64_t site, int error_site)
{
    fsum *f = c->cur;
    if (grow((void **)&f->edges, &f->cap_edges, f->n_edges, sizeof *f->edges) != GT_OK)
        return GT_ENOMEM;
    f->edges[f->n_edges++] = (fsum_edge){m, entry, site, error_site};
    return GT_OK;
}

/* Adds (or finds) the function at (m, entry) reached from `caller` at `site`. */
static int reach_function(ctx *c, int m, uint64_t entry, size_t caller, uint64_t site, int error_site)
{
    gt_dispatch_result *r = c->res;
    long idx;
    if (map_get(&c->fmap, fkey(m, entry), &idx)) {
        if (grow((void **)&c->edges, &c->cap_edges, c->nedges, sizeof *c->edges) != GT_OK)
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
    if (grow((void **)&r->functions, &c->cap_funcs, r->n_functions, sizeof *r->functions) != GT_OK)
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
    f->name = dup_str(s ? s->name : buf);
    r->n_functions++;
    if (!f->name)
        return GT_ENOMEM;
    if (map_put(&c->fmap, fkey(m, entry), (long)(r->n_functions - 1)) != GT_OK)
        return GT_ENOMEM;
    if (grow((void **)&c->edges, &c->cap_edges, c->nedges, sizeof *c->edges) != GT_OK)
        return GT_ENOMEM;
    c->edges[c->nedges++] = (edge){caller, r->n_functions - 1, error_site};
    return GT_OK;
}

static int push_work(ctx *c, uint64_t a)
{
    if (grow((void **)&c->work, &c->cap_work, c->nwork, sizeof *c->work) != GT_OK)
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

/* Decodes function fi by recursive descent and records its events and callees. */
/* Decodes the function at (m, entry) by recursive descent into the summary c->cur. */
static int decode_function(ctx *c, int m, uint64_t entry)
{
    const gt_elf *e = c->mods[m].elf;
    int status = GT_OK, need_sweep = 0;
    size_t decoded = 0;
    map_clear(&c->visited);
    c->nwork = 0;
    if ((status = push_work(c, entry)) != GT_OK)
        return status;
    for (int sweep = 0; sweep < 2; sweep++) {
        while (c->nwork > 0 && status == GT_OK) {
            uint64_t a = c->work[--c->nwork];
            tracker t;
            tracker_reset(&t);
            for (;;) {
                if (map_get(&c->visited, a, NULL))
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
                if ((status = map_put(&c->visited, a, 1)) != GT_OK)
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
                if (act.type == A_JCC) {
                    const gt_elf_symbol *s = gt_elf_function_at(e, act.target);
                    if ((s && act.target != entry) || gt_elf_in_plt(e, act.target))
                        status = transfer_direct(c, m, &in, act.target, 1, &nr);
                    else
                        status = push_work(c, act.target);
                    if (status != GT_OK)
                        break;
                    a = next;
                    continue;
                }
                if (act.type == A_JMP) {
                    const gt_elf_symbol *s = gt_elf_function_at(e, act.target);
                    if ((s && act.target != entry) || gt_elf_in_plt(e, act.target))
                        status = transfer_direct(c, m, &in, act.target, 1, &nr);
                    else
                        status = push_work(c, act.target);
                    break;
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
            if (!map_get(&c->visited, a, NULL))
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
    if (c->cache && map_get(&c->cache->index, fkey(m, entry), &idx)) {
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
            if (grow((void **)&k->sums, &k->cap, k->n, sizeof *k->sums) == GT_OK &&
                map_put(&k->index, fkey(m, entry), (long)k->n) == GT_OK) {
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
    map_free(&k->index);
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
    for (size_t i = 0; i < r->n_events; i++) {
        gt_free(r->events[i].callee);
        gt_free(r->events[i].provider);
        gt_free(r->events[i].text);
    }
    for (size_t i = 0; i < r->n_functions; i++)
        gt_free(r->functions[i].name);
    gt_free(r->events);
    gt_free(r->functions);
    memset(r, 0, sizeof *r);
}

/* When the object at `path` is loaded in this process: returns a new dlopen handle (the caller
 * dlcloses it) and its mapping base and load bias, found from one of its exported functions.
 * The dynamic linker's own structures (link.h) are not used: dladdr is enough. NULL otherwise. */
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
    for (size_t i = 0; i < nmods; i++) {
        if (!mods[i].path)
            continue;
        uintptr_t base;
        uint64_t bias;
        void *h = loaded_module(mods[i].path, mods[i].elf, &base, &bias);
        if (h) {
            c.rt[i].handle = h;
            c.rt[i].base = base;
            c.rt[i].bias = bias;
        }
    }
    const uint8_t *code;
    size_t avail;
    if (gt_elf_code(mods[entry_module].elf, entry, &code, &avail) != GT_OK) {
        status = fail_msg(&c, GT_EFORMAT, "address 0x%llx is not in the executable code of %s",
                          (unsigned long long)entry, mods[entry_module].path ? mods[entry_module].path : "the object");
        goto cleanup;
    }
    if ((status = grow((void **)&out->functions, &c.cap_funcs, 0, sizeof *out->functions)) != GT_OK)
        goto cleanup;
    gt_dispatch_function *root = &out->functions[0];
    memset(root, 0, sizeof *root);
    root->module = (int)entry_module;
    root->entry = entry;
    root->parent = -1;
    const gt_elf_symbol *s = gt_elf_function_at(mods[entry_module].elf, entry);
    char buf[40];
    snprintf(buf, sizeof buf, "sub_%llx", (unsigned long long)entry);
    root->name = dup_str(s ? s->name : buf);
    out->n_functions = 1;
    if (!root->name || (status = map_put(&c.fmap, fkey((int)entry_module, entry), 0)) != GT_OK) {
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
        if (c.rt[i].handle)
            dlclose(c.rt[i].handle);
    gt_decoder_close(c.dec);
    map_free(&c.fmap);
    map_free(&c.visited);
    map_free(&c.noreturn);
    map_free(&c.resolved_at);
    gt_free(c.resolved_cache);
    gt_free(c.edges);
    gt_free(c.work);
    return status;
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

/* ---------- the call check ---------- */

typedef int64_t (*call_int_fn)(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, double, double, double, double,
                               double, double, double, double);
typedef double (*call_fp_fn)(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, double, double, double, double,
                             double, double, double, double);

/* What the guarded child sends back: the result, and what it did outside a buffer argument. */
typedef struct call_message {
    uint64_t ret;
    char overrun[64];
} call_message;

static void free_bufs(gt_guardbuf **bufs, int n)
{
    for (int k = 0; k < n; k++)
        gt_gb_free(bufs[k]);
}

/* Runs in the guarded child: spreads the arguments over the two register classes and calls.
 * Buffer arguments are first copied into guard buffers (checked after the call; a fault on a
 * guard page is named by the guard). */
static int guarded_call(void *vctx, void *out, size_t out_cap, size_t *out_len)
{
    const gt_call_spec *spec = vctx;
    int64_t iv[GT_CALL_MAX_INT] = {0};
    double fv[GT_CALL_MAX_FP] = {0};
    gt_guardbuf *bufs[GT_CALL_MAX_ARGS] = {NULL};
    call_message msg;
    memset(&msg, 0, sizeof msg);
    int ni = 0, nf = 0;
    for (int k = 0; k < spec->nargs; k++) {
        if (spec->cls[k] == GT_CALL_INT) {
            uint64_t v = spec->bits[k];
            if (spec->buf_len[k]) {
                bufs[k] = gt_gb_new(spec->buf_len[k], GT_GB_END, spec->buf_name[k], !spec->buf_const[k]);
                if (!bufs[k]) {
                    free_bufs(bufs, k);
                    return 1; /* no memory for the copy: reported as a child that could not report */
                }
                memcpy(gt_gb_data(bufs[k]), (const void *)(uintptr_t)v, spec->buf_len[k]);
                v = (uint64_t)(uintptr_t)gt_gb_data(bufs[k]);
            }
            iv[ni++] = (int64_t)v;
        } else {
            /* a float travels in the low 32 bits of its register: put its bits there */
            uint64_t bits = spec->cls[k] == GT_CALL_F32 ? (spec->bits[k] & 0xffffffffu) : spec->bits[k];
            memcpy(&fv[nf++], &bits, sizeof bits);
        }
    }
    uint64_t ret = 0;
    /* the guard has already reset the handlers inherited from the parent (Python's faulthandler,
     * pytest's) and named the guard pages' faults */
    gt_guard_stage("calling the target");
    /* calling through a prototype other than the function's own is the ABI-level contract
     * explained above gt_call_spec; extra register arguments are ignored by the callee */
    if (spec->ret == GT_CALL_F64 || spec->ret == GT_CALL_F32) {
        double r = ((call_fp_fn)spec->fn)(iv[0], iv[1], iv[2], iv[3], iv[4], iv[5], fv[0], fv[1], fv[2], fv[3], fv[4],
                                          fv[5], fv[6], fv[7]);
        memcpy(&ret, &r, sizeof ret);
    } else {
        ret = (uint64_t)((call_int_fn)spec->fn)(iv[0], iv[1], iv[2], iv[3], iv[4], iv[5], fv[0], fv[1], fv[2], fv[3],
                                                fv[4], fv[5], fv[6], fv[7]);
    }
    gt_guard_stage("returned");
    msg.ret = ret;
    for (int k = 0; k < spec->nargs; k++)
        if (!msg.overrun[0])
            gt_gb_check(bufs[k], 0, msg.overrun, sizeof msg.overrun);
    free_bufs(bufs, spec->nargs);
    if (out_cap < sizeof msg)
        return 1;
    memcpy(out, &msg, sizeof msg);
    *out_len = sizeof msg;
    return 0;
}

int gt_dispatch_call(const gt_call_spec *spec, double timeout_s, gt_call_outcome *out, char *err, size_t err_cap)
{
    if (!spec || !out || !spec->fn || spec->nargs < 0 || spec->nargs > GT_CALL_MAX_ARGS) {
        if (err && err_cap)
            snprintf(err, err_cap, "invalid call specification");
        return GT_EINVAL;
    }
    int ni = 0, nf = 0;
    for (int k = 0; k < spec->nargs; k++) {
        if (spec->cls[k] == GT_CALL_INT)
            ni++;
        else if (spec->cls[k] == GT_CALL_F64 || spec->cls[k] == GT_CALL_F32)
            nf++;
        else {
            if (err && err_cap)
                snprintf(err, err_cap, "argument %d has an unknown class %d", k, spec->cls[k]);
            return GT_EINVAL;
        }
    }
    if (ni > GT_CALL_MAX_INT || nf > GT_CALL_MAX_FP) {
        if (err && err_cap)
            snprintf(err, err_cap, "the call check passes at most %d integer/pointer and %d floating-point "
                     "arguments (registers only); this signature has %d and %d", GT_CALL_MAX_INT, GT_CALL_MAX_FP, ni, nf);
        return GT_EINVAL;
    }
    memset(out, 0, sizeof *out);
    gt_guard_result res;
    call_message msg;
    memset(&msg, 0, sizeof msg);
    out->status = gt_guard_run(guarded_call, (void *)spec, &msg, sizeof msg, timeout_s, &res);
    if (out->status == GT_EINVAL)
        return GT_EINVAL;
    out->signal = res.signal;
    out->exit_code = res.exit_code;
    memcpy(out->stage, res.stage, sizeof out->stage);
    if (out->status == GT_OK && res.fn_status != 0)
        out->status = GT_ECRASH; /* the child could not send its result */
    /* a fault on a guard page, or a canary found damaged after the call */
    const char *overrun = out->status == GT_ECRASH && res.fault[0] ? res.fault
                          : out->status == GT_OK && msg.overrun[0] ? msg.overrun : NULL;
    if (overrun) {
        snprintf(out->overrun, sizeof out->overrun, "%s", overrun);
        out->status = GT_EOVERRUN;
    }
    out->ret_bits = msg.ret;
    return GT_OK;
}

typedef struct probe_ctx {
    const char *path;
} probe_ctx;

/* Runs in the guarded child: dlopen, and send back dlerror's message when it fails. */
static int guarded_dlopen(void *vctx, void *out, size_t out_cap, size_t *out_len)
{
    const probe_ctx *p = vctx;
    static const int crash_signals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGTRAP, SIGSYS};
    for (size_t k = 0; k < sizeof crash_signals / sizeof crash_signals[0]; k++)
        signal(crash_signals[k], SIG_DFL);
    gt_guard_stage("dlopen");
    void *h = dlopen(p->path, RTLD_NOW | RTLD_LOCAL);
    if (h)
        return 0; /* the child leaves with _exit: no dlclose needed */
    const char *msg = dlerror();
    size_t n = msg ? strlen(msg) : 0;
    if (n > out_cap)
        n = out_cap;
    if (n)
        memcpy(out, msg, n);
    *out_len = n;
    return 1;
}

int gt_dispatch_probe_load(const char *path, double timeout_s, int *loadable, gt_call_outcome *out, char *err,
                           size_t err_cap)
{
    if (!path || !loadable || !out || !err || err_cap == 0)
        return GT_EINVAL;
    memset(out, 0, sizeof *out);
    *loadable = 0;
    err[0] = '\0';
    probe_ctx p = {path};
    gt_guard_result res;
    int status = gt_guard_run(guarded_dlopen, &p, err, err_cap - 1, timeout_s, &res);
    out->status = status;
    out->signal = res.signal;
    out->exit_code = res.exit_code;
    memcpy(out->stage, res.stage, sizeof out->stage);
    if (status != GT_OK) {
        err[0] = '\0';
        return status;
    }
    err[res.out_len < err_cap ? res.out_len : err_cap - 1] = '\0';
    *loadable = res.fn_status == 0;
    return GT_OK;
}
