/* dispatch_x86.c: the x86-64 instruction table of the dispatch analysis (see dispatch_isa.h).
 *
 * Operands are capstone's Intel syntax: "qword ptr [rip + 0x2fe2]", "rax", "0x401020". */
#define _GNU_SOURCE /* strtok_r */
#include "dispatch_isa.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

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
    if (!gt_isa_bracketed(lb, rb, buf))
        return 0;
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
            if (m->index < 0 || !gt_isa_parse_num(star + 1, &v))
                return 0;
            m->scale = (int)v;
        } else if (gt_isa_parse_num(tok, &v)) {
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
        gt_isa_via_register(&t->r[r], t, is_jump, a);
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
        a->count = gt_table_count(&t->r[m.index], t);
    }
}

static void x86_track(const char *mn, char ops[MAX_OPS][OP_LEN], int nops, tracker *t, uint64_t next)
{
    if (nops < 1)
        return;
    int d = x86_reg(ops[0]);
    if (!strcmp(mn, "cmp")) {
        int64_t v;
        if (nops == 2 && gt_isa_parse_num(ops[1], &v)) {
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
        } else if (!strcmp(mn, "mov") && !strchr(ops[1], '[') && gt_isa_parse_num(ops[1], &v)) {
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
                out.width = 4; /* a table of signed 32-bit offsets from its own address */
                out.sign = 1;
                out.count = a->kind == RK_ENTRY ? a->count : b->count;
            }
        } else if (!strcmp(mn, "and") && gt_isa_parse_num(ops[1], &v)) {
            out.count = gt_mask_bound(v);
        }
    }
    t->r[d] = out;
}

void gt_isa_x86_classify(const gt_insn *in, tracker *t, action *a)
{
    memset(a, 0, sizeof *a);
    a->count = -1;
    const char *mn = strip_prefixes(in->mnemonic);
    uint64_t next = in->address + in->size;
    char ops[MAX_OPS][OP_LEN];
    int nops = gt_isa_split_ops(in->op_str, ops);
    int64_t v;
    if (!strcmp(mn, "ret") || !strcmp(mn, "retf") || !strncmp(mn, "iret", 4)) {
        a->type = A_RET;
    } else if (!strcmp(mn, "ud2") || !strcmp(mn, "hlt") || !strcmp(mn, "int3") || !strcmp(mn, "ud1") ||
               !strcmp(mn, "ud0")) {
        a->type = A_TRAP;
    } else if (!strcmp(mn, "jmp") || !strcmp(mn, "call")) {
        int is_jump = mn[0] == 'j';
        if (nops == 1 && gt_isa_parse_num(ops[0], &v)) {
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
    } else if ((mn[0] == 'j' || !strncmp(mn, "loop", 4)) && nops == 1 && gt_isa_parse_num(ops[0], &v)) {
        a->type = A_JCC;
        a->target = (uint64_t)v;
    } else {
        a->type = A_OTHER;
        x86_track(mn, ops, nops, t, next);
    }
}
