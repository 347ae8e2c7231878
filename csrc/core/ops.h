/* ops.h: the op table, the one place where each elementwise operation's value and derivative
 * rules live. Both the forward (dual-number) and the reverse (tape) engines read it.
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
 * Second partials (order 2, read by the tape's recorded backward sweep) are the derivatives of the
 * first partials as written, so they follow the same conventions: a first partial that is locally
 * constant (abs, sign, maximum/minimum, fmax/fmin, remainder/fmod, the linear ops) has zero second
 * partials, ties and kinks included; where a first partial is defined as 0 by a kink rule, the
 * second partials that differentiate it are 0 too:
 *   power: d2/da2 is 0 where b == 0 or b == 1 (b * (b - 1) == 0); d2/dadb and d2/db2 are 0 where
 *          a == 0 (d/db is 0 there); d2/dadb = 1/a where b == 0 (no 0 * log(a));
 *   hypot: all three are 0 where y == 0;
 *   sqrt''(0) = -inf, log''(0) = -inf, cbrt''(0) = -inf: the one-sided limits, like the first.
 *
 * The chain rule itself (gt_chain_f64/f32 below, used by both engines for every elementwise
 * product of a partial with a tangent or an adjoint): a zero factor gives exactly 0, even against
 * an infinite or NaN one. A zero tangent (an element that does not move along a direction) or a
 * zero adjoint contributes nothing; a zero partial stops an infinite adjoint. So the derivative of
 * std at a constant slice and of norm at 0 is 0 in both modes, where plain IEEE 0 * inf = NaN
 * would make forward and reverse disagree (each meets the infinity on a different side).
 * (The forward kernel takes a plain multiply on blocks whose partials are all finite, for speed;
 * see dual.c: there a zero partial meeting an already infinite tangent stays NaN.)
 */
#ifndef GT_OPS_H
#define GT_OPS_H

#include <stddef.h>

#include "gt_common.h"

typedef enum gt_op_id {
    GT_OP_ADD, GT_OP_SUBTRACT, GT_OP_MULTIPLY, GT_OP_DIVIDE, GT_OP_POWER,
    GT_OP_NEGATIVE, GT_OP_POSITIVE, GT_OP_ABS, GT_OP_SIGN,
    GT_OP_EXP, GT_OP_EXPM1, GT_OP_EXP2, GT_OP_LOG, GT_OP_LOG1P, GT_OP_LOG2, GT_OP_LOG10,
    GT_OP_SQRT, GT_OP_CBRT, GT_OP_SQUARE, GT_OP_RECIPROCAL,
    GT_OP_SIN, GT_OP_COS, GT_OP_TAN, GT_OP_ARCSIN, GT_OP_ARCCOS, GT_OP_ARCTAN, GT_OP_ARCTAN2,
    GT_OP_SINH, GT_OP_COSH, GT_OP_TANH, GT_OP_ARCSINH, GT_OP_ARCCOSH, GT_OP_ARCTANH,
    GT_OP_HYPOT, GT_OP_MAXIMUM, GT_OP_MINIMUM, GT_OP_FMAX, GT_OP_FMIN,
    GT_OP_LOGADDEXP, GT_OP_LOGADDEXP2, GT_OP_REMAINDER, GT_OP_FMOD,
    GT_OP_COUNT
} gt_op_id;

/* partial * x, with a zero on either side giving 0 (the rule above). The product is taken
 * unconditionally and then selected, so that loops over it vectorize. */
static inline double gt_chain_f64(double partial, double x)
{
    double m = partial * x;
    return (partial == 0.0) | (x == 0.0) ? 0.0 : m;
}

static inline float gt_chain_f32(float partial, float x)
{
    float m = partial * x;
    return (partial == 0.0f) | (x == 0.0f) ? 0.0f : m;
}

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
    /* second partials d2y/da2, d2y/dadb, d2y/db2 at (a, b, y); NULL where identically zero (the
     * last two are NULL for unary ops) */
    gt_partial_fn partial2[3];
} gt_op;

/* The table, indexed by gt_op_id. Static storage; never modified. */
extern const gt_op gt_op_table[GT_OP_COUNT];

/* d2y/(d arg i)(d arg j) at (a, b, y), i, j in {0, 1}; 0 where the table has NULL. */
static inline double gt_op_second(const gt_op *op, int i, int j, double a, double b, double y)
{
    gt_partial_fn d = op->partial2[i + j];
    return d ? d(a, b, y) : 0.0;
}

/* Whether every second partial of `op` is identically zero (its first partials are locally
 * constant, so a recorded partial needs no derivative of its own). */
static inline int gt_op_second_is_zero(const gt_op *op)
{
    return !op->partial2[0] && !op->partial2[1] && !op->partial2[2];
}

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

#endif /* GT_OPS_H */
