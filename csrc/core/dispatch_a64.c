/* dispatch_a64.c: the aarch64 instruction table of the dispatch analysis (see dispatch_isa.h).
 *
 * Operands are capstone's ARM syntax: "x16, #0x11000", "[x17, #0xf80]", "[x1, w2, uxtw #2]". */
#include "dispatch_isa.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

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
    if (!gt_isa_bracketed(op, rb, buf))
        return 0;
    char parts[MAX_OPS][OP_LEN];
    int n = gt_isa_split_ops(buf, parts);
    m->base = -1;
    m->index = -1;
    m->off = 0;
    if (n < 1)
        return 0;
    m->base = a64_reg(parts[0]);
    if (n >= 2 && !gt_isa_parse_num(parts[1], &m->off))
        m->index = a64_reg(parts[1]);
    return 1;
}

static void a64_track(const char *mn, char ops[MAX_OPS][OP_LEN], int nops, tracker *t)
{
    if (nops < 1)
        return;
    int64_t v;
    if (!strcmp(mn, "cmp")) {
        if (nops == 2 && gt_isa_parse_num(ops[1], &v)) {
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
    if ((!strcmp(mn, "adrp") || !strcmp(mn, "adr")) && nops == 2 && gt_isa_parse_num(ops[1], &v)) {
        out.kind = RK_ADDR;
        out.v = (uint64_t)v;
    } else if (!strcmp(mn, "mov") && nops == 2 && a64_reg(ops[1]) >= 0) {
        out = t->r[a64_reg(ops[1])];
    } else if (!strcmp(mn, "add") && nops == 3 && a64_reg(ops[1]) >= 0 && gt_isa_parse_num(ops[2], &v)) {
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
            if (hash && gt_isa_parse_num(hash, &v))
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
    } else if (!strcmp(mn, "and") && nops == 3 && gt_isa_parse_num(ops[2], &v)) {
        out.count = gt_mask_bound(v);
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

void gt_isa_a64_classify(const gt_insn *in, tracker *t, action *a)
{
    memset(a, 0, sizeof *a);
    a->count = -1;
    const char *mn = in->mnemonic;
    char ops[MAX_OPS][OP_LEN];
    int nops = gt_isa_split_ops(in->op_str, ops);
    int64_t v;
    if (!strcmp(mn, "ret") || !strcmp(mn, "retaa") || !strcmp(mn, "retab") || !strcmp(mn, "eret")) {
        a->type = A_RET;
    } else if (!strcmp(mn, "brk") || !strcmp(mn, "udf") || !strcmp(mn, "hlt")) {
        a->type = A_TRAP;
    } else if ((!strcmp(mn, "b") || !strcmp(mn, "bl")) && nops == 1 && gt_isa_parse_num(ops[0], &v)) {
        a->type = mn[1] == 'l' ? A_CALL : A_JMP;
        a->target = (uint64_t)v;
    } else if ((!strncmp(mn, "b.", 2) || !strcmp(mn, "cbz") || !strcmp(mn, "cbnz") || !strcmp(mn, "tbz") ||
                !strcmp(mn, "tbnz")) && nops >= 1 && gt_isa_parse_num(ops[nops - 1], &v)) {
        a->type = A_JCC;
        a->target = (uint64_t)v;
    } else if (!strncmp(mn, "br", 2) || !strncmp(mn, "blr", 3)) {
        int is_jump = mn[1] == 'r';
        a->type = is_jump ? A_IJMP : A_ICALL;
        a->via = VIA_UNKNOWN;
        int r = nops >= 1 ? a64_reg(ops[0]) : -1;
        if (r >= 0 && (!strcmp(mn, "br") || !strcmp(mn, "blr"))) {
            gt_isa_via_register(&t->r[r], t, is_jump, a);
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
