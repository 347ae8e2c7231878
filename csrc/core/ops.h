/* ops.h: the op table, the CPU's view of each elementwise operation's value and derivative
 * rules, which are written once in op_rules.h (shared with the CUDA kernels). Both the forward
 * (dual-number) and the reverse (tape) engines read it.
 *
 * Design: for an elementwise op y = op(a, b) the table gives the *local partial derivatives*
 * dy/da and dy/db as functions of (a, b, y). One partial serves both modes:
 *   JVP:  ydot  = dy/da * adot + dy/db * bdot
 *   VJP:  abar += dy/da * ybar,   bbar += dy/db * ybar
 * Structural ops (reductions, reshapes, indexing, matmul) are linear in their inputs and are
 * handled by the engines themselves; they are not elementwise and do not appear here.
 *
 * Kinks and ties (documented choices, the same in both engines):
 *   abs'(0) = 0 and sign' = 0 (as JAX and PyTorch);
 *   maximum/minimum at a tie split the gradient evenly, 0.5 to each argument (as HIPS autograd);
 *   fmax/fmin give the whole gradient to the non-NaN argument, and split at ties;
 *   sqrt'(0) = +inf, log'(0) = +inf: the true one-sided limits, never silently clamped;
 *   power: d/db a**b = a**b * log(a) is taken as 0 where a == 0 (the b-derivative of 0**b for b > 0),
 *          and d/da a**b = b * a**(b-1) is 0 where b == 0;
 *   remainder/fmod: the derivative of the smooth piece, d/da = 1 and d/db = -floor(a/b) (remainder)
 *          or -trunc(a/b) (fmod); the jumps where the quotient changes are ignored.
 *
 * Second partials (gt_rule_second in op_rules.h, read by the tape's recorded backward sweep for
 * order 2) are the derivatives of the first partials as written, so they follow the same
 * conventions: a first partial that is locally constant (the linear ops, abs, sign,
 * maximum/minimum, fmax/fmin, remainder/fmod) has zero second partials, ties and kinks included;
 * where a kink rule defines a first partial as 0, the second partials that differentiate it are 0:
 *   power: d2/da2 is 0 where b == 0 or b == 1 (b * (b - 1) == 0, so (x**2)'' = 2 and x**1 has no
 *          0 * inf at x == 0); d2/dadb and d2/db2 are 0 where a == 0 (d/db is 0 there), and
 *          d2/dadb = 1/a where b == 0;
 *   hypot: all three are 0 where y == 0;
 *   sqrt''(0) = log''(0) = cbrt''(0) = -inf: the one-sided limits, as for the first partials.
 *
 * The chain rule itself (gt_chain_f64/f32 in op_rules.h, used by both engines for every elementwise
 * product of a partial with a tangent or an adjoint): a zero factor gives exactly 0, even against
 * an infinite or NaN one. A zero tangent (an element that does not move along a direction) or a
 * zero adjoint contributes nothing; a zero partial stops an infinite adjoint. So the derivative of
 * std at a constant slice and of norm at 0 is 0 in both modes, where plain IEEE 0 * inf = NaN
 * would make forward and reverse disagree (each meets the infinity on a different side).
 * (The forward kernel takes a plain multiply on blocks whose partials and results are all
 * finite, for speed, and redoes the others with this rule; see dual.c.)
 */
#ifndef GT_OPS_H
#define GT_OPS_H

#include <stddef.h>

#include "gt_common.h"
#include "op_rules.h"

/* The op ids (gt_op_id), the chain rule (gt_chain_f64/f32) and the scalar rules themselves
 * live in op_rules.h, which also compiles for the device; this table is the CPU's view of them. */
/* Scalar rule: value y = value(a, b); b is ignored by unary ops. */
typedef double (*gt_value_fn)(double a, double b);
/* Scalar rule: partial derivative dy/d(arg) at (a, b) with y = value(a, b) already known. */
typedef double (*gt_partial_fn)(double a, double b, double y);

typedef struct gt_op {
    gt_op_id id;
    const char *name;        /* the NumPy ufunc name, e.g. "arctan2" */
    int arity;               /* 1 or 2 */
    gt_value_fn value;
    /* partial[k] is dy/d(argument k); NULL exactly when the op is not differentiable in
     * argument k (its gradient is defined to be zero, as for sign). */
    gt_partial_fn partial[2];
    const char *kink_rule;   /* how ties and kinks are treated, for docs and error messages */
} gt_op;

/* The table, indexed by gt_op_id. Static storage; never modified. */
extern const gt_op gt_op_table[GT_OP_COUNT];

/* d2y/(d arg i)(d arg j) of `op` at (a, b, y), i, j in {0, 1} (see op_rules.h). */
static inline double gt_op_second(const gt_op *op, int i, int j, double a, double b, double y)
{
    return gt_rule_second((int)op->id, i, j, a, b, y);
}

/* Whether every second partial of `op` is identically zero (its first partials are locally
 * constant, so an order-2 sweep records no derivative for them). */
static inline int gt_op_second_is_zero(const gt_op *op) { return gt_rule_second_is_zero((int)op->id); }

/* Returns the entry named `name` (a NumPy ufunc name), or NULL if there is none. */
const gt_op *gt_op_lookup(const char *name);

/* Elementwise partials over contiguous float64 arrays of length n.
 * a, y: inputs and outputs of the op (length n). b: second input, or NULL for unary ops.
 * da, db: outputs, caller-owned, length n; either may be NULL to skip it. For an argument in
 * which the op is not differentiable the output is filled with zeros.
 * Returns GT_OK, or GT_EINVAL for a NULL required pointer or an arity mismatch. */
int gt_op_partials_f64(const gt_op *op, size_t n, const double *a, const double *b,
                       const double *y, double *da, double *db);

/* The same over float32 arrays (computed in double, rounded once on store). */
int gt_op_partials_f32(const gt_op *op, size_t n, const float *a, const float *b,
                       const float *y, float *da, float *db);

/* The chain rule over a block, d[i] = gt_chain(p[i], g[i]) (accumulate == 0) or
 * d[i] += gt_chain(p[i], g[i]), the rule of op_rules.h element for element. d may be g itself
 * (in place) but must not overlap p or g otherwise. Written with SSE2 where the compiler has it:
 * GCC does not vectorize the rule's select while comparisons may trap (-ftrapping-math, its
 * default), and the scalar loop cost an elementwise VJP more than its memory traffic. */
void gt_chain_block_f64(size_t n, double *d, const double *p, const double *g, int accumulate);
void gt_chain_block_f32(size_t n, float *d, const float *p, const float *g, int accumulate);

#endif /* GT_OPS_H */
