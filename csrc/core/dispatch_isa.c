/* dispatch_isa.c: operand text shared by both instruction-set tables (see dispatch_isa.h). */
#include "dispatch_isa.h"

#include <ctype.h>
#include <stdlib.h>

/* Splits op_str at commas outside brackets and braces; trims blanks. Returns the count. */
int gt_isa_split_ops(const char *s, char ops[MAX_OPS][OP_LEN])
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
int gt_isa_parse_num(const char *s, int64_t *v)
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

void gt_isa_via_register(const rstate *s, const tracker *t, int is_jump, action *a)
{
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
        a->count = gt_table_count(s, t);
    }
}

int gt_isa_bracketed(const char *lb, const char *rb, char buf[OP_LEN])
{
    size_t len = (size_t)(rb - lb - 1);
    if (len >= OP_LEN)
        return 0;
    memcpy(buf, lb + 1, len);
    buf[len] = '\0';
    return 1;
}
