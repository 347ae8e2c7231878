/* dispatch_isa.h: what the call-graph walk (dispatch_walk.c) learns from one instruction, and the
 * per-architecture tables that tell it (dispatch_x86.c, dispatch_a64.c). Internal to the dispatch
 * analysis; the public contract is dispatch.h.
 *
 * Operands are read from capstone's text (Intel syntax on x86-64, ARM syntax on aarch64). A small
 * per-block register tracker follows the few value shapes that matter:
 *   - an address formed in code (lea [rip+d], adrp/add, adr)          -> RK_ADDR
 *   - a pointer loaded from a known slot (mov r,[rip+d], ldr x,[x,#o]) -> RK_SLOT (GOT entries)
 *   - an entry loaded from a table at a known address                  -> RK_ENTRY
 *   - a table entry added to the table's (or a label's) address        -> RK_JT (jump target)
 * so that "jmp rax" after a switch's table lookup is a jump table, "br x17" in a PLT stub is the
 * GOT slot it loaded, and everything else through a register or memory is dispatch. */
#ifndef GT_DISPATCH_ISA_H
#define GT_DISPATCH_ISA_H

#include <stdint.h>
#include <string.h>

#include "disasm.h"

#define MAX_TABLE 4096 /* jump-table entries read at most */
#define MAX_OPS 6      /* operands split from one instruction's text */
#define OP_LEN 96      /* characters kept of one operand */

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

static inline void gt_tracker_reset(tracker *t) { memset(t, 0, sizeof *t); }

/* A jump table's entry count: the index's bound, else the block's last comparison. */
static inline long gt_table_count(const rstate *s, const tracker *t)
{
    if (s->count > 0)
        return s->count;
    return t->have_cmp ? (long)(t->cmp_imm + 1) : -1;
}

/* The bound an "and reg, imm" puts on a register: imm + 1 when imm is 2^k - 1 (small). */
static inline long gt_mask_bound(int64_t imm)
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

/* ---------- operand text (dispatch_isa.c) ---------- */

/* Splits op_str at commas outside brackets and braces into ops (blanks trimmed); returns the count. */
int gt_isa_split_ops(const char *s, char ops[MAX_OPS][OP_LEN]);
/* Parses a whole string "0x1f", "31", "-0x10", "#0x10" into *v; 1 on success, else 0. */
int gt_isa_parse_num(const char *s, int64_t *v);
/* Copies the text strictly between the brackets at lb and rb (rb > lb) into buf; 0 when it does
 * not fit. */
int gt_isa_bracketed(const char *lb, const char *rb, char buf[OP_LEN]);

/* Sets how an indirect call or jump through a register in state s goes: through a pointer slot,
 * to a known address, or (a jump only) through the jump table s describes; leaves a->via as it
 * was otherwise. */
void gt_isa_via_register(const rstate *s, const tracker *t, int is_jump, action *a);

/* ---------- the per-architecture tables ---------- */

/* Classifies one instruction into *a and updates the block's register tracker t (Intel syntax,
 * dispatch_x86.c; ARM syntax, dispatch_a64.c). Pure functions of their arguments. */
void gt_isa_x86_classify(const gt_insn *in, tracker *t, action *a);
void gt_isa_a64_classify(const gt_insn *in, tracker *t, action *a);

#endif /* GT_DISPATCH_ISA_H */
