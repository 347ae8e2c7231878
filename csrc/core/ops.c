/* ops.c: values and local partial derivatives of the elementwise ops (see ops.h). */
#include "ops.h"

#include <math.h>
#include <string.h>

/* The table's function pointers are thin wrappers over the switch in op_rules.h with a constant
 * op id, so each folds to that op's case; the rules themselves are written only there. */
#define RULES1(ID, NAME) \
    static double v_##NAME(double a, double b) { return gt_rule_value(ID, a, b); } \
    static double d0_##NAME(double a, double b, double y) { return gt_rule_partial0(ID, a, b, y); }
#define RULES2(ID, NAME) \
    RULES1(ID, NAME) \
    static double d1_##NAME(double a, double b, double y) { return gt_rule_partial1(ID, a, b, y); }

RULES2(GT_OP_ADD, add)
RULES2(GT_OP_SUBTRACT, subtract)
RULES2(GT_OP_MULTIPLY, multiply)
RULES2(GT_OP_DIVIDE, divide)
RULES2(GT_OP_POWER, power)
RULES1(GT_OP_NEGATIVE, negative)
RULES1(GT_OP_POSITIVE, positive)
RULES1(GT_OP_ABS, abs)
/* sign has no partial: the table's NULL says its gradient is defined to be zero */
static double v_sign(double a, double b) { return gt_rule_value(GT_OP_SIGN, a, b); }
RULES1(GT_OP_EXP, exp)
RULES1(GT_OP_EXPM1, expm1)
RULES1(GT_OP_EXP2, exp2)
RULES1(GT_OP_LOG, log)
RULES1(GT_OP_LOG1P, log1p)
RULES1(GT_OP_LOG2, log2)
RULES1(GT_OP_LOG10, log10)
RULES1(GT_OP_SQRT, sqrt)
RULES1(GT_OP_CBRT, cbrt)
RULES1(GT_OP_SQUARE, square)
RULES1(GT_OP_RECIPROCAL, reciprocal)
RULES1(GT_OP_SIN, sin)
RULES1(GT_OP_COS, cos)
RULES1(GT_OP_TAN, tan)
RULES1(GT_OP_ARCSIN, arcsin)
RULES1(GT_OP_ARCCOS, arccos)
RULES1(GT_OP_ARCTAN, arctan)
RULES2(GT_OP_ARCTAN2, arctan2)
RULES1(GT_OP_SINH, sinh)
RULES1(GT_OP_COSH, cosh)
RULES1(GT_OP_TANH, tanh)
RULES1(GT_OP_ARCSINH, arcsinh)
RULES1(GT_OP_ARCCOSH, arccosh)
RULES1(GT_OP_ARCTANH, arctanh)
RULES2(GT_OP_HYPOT, hypot)
RULES2(GT_OP_MAXIMUM, maximum)
RULES2(GT_OP_MINIMUM, minimum)
RULES2(GT_OP_FMAX, fmax)
RULES2(GT_OP_FMIN, fmin)
RULES2(GT_OP_LOGADDEXP, logaddexp)
RULES2(GT_OP_LOGADDEXP2, logaddexp2)
RULES2(GT_OP_REMAINDER, remainder)
RULES2(GT_OP_FMOD, fmod)

#define SMOOTH "smooth on its domain"
#define OP1(ID, NAME, RULE) [ID] = {ID, #NAME, 1, v_##NAME, {d0_##NAME, NULL}, RULE}
#define OP0(ID, NAME, RULE) [ID] = {ID, #NAME, 1, v_##NAME, {NULL, NULL}, RULE}
#define OP2(ID, NAME, RULE) [ID] = {ID, #NAME, 2, v_##NAME, {d0_##NAME, d1_##NAME}, RULE}

const gt_op gt_op_table[GT_OP_COUNT] = {
    OP2(GT_OP_ADD, add, "linear"),
    OP2(GT_OP_SUBTRACT, subtract, "linear"),
    OP2(GT_OP_MULTIPLY, multiply, "bilinear"),
    OP2(GT_OP_DIVIDE, divide, SMOOTH),
    OP2(GT_OP_POWER, power, "d/da is 0 where b == 0; d/db is 0 where a == 0"),
    OP1(GT_OP_NEGATIVE, negative, "linear"),
    OP1(GT_OP_POSITIVE, positive, "linear"),
    OP1(GT_OP_ABS, abs, "abs'(0) = 0"),
    OP0(GT_OP_SIGN, sign, "piecewise constant: zero gradient"),
    OP1(GT_OP_EXP, exp, SMOOTH),
    OP1(GT_OP_EXPM1, expm1, SMOOTH),
    OP1(GT_OP_EXP2, exp2, SMOOTH),
    OP1(GT_OP_LOG, log, "log'(0) = inf"),
    OP1(GT_OP_LOG1P, log1p, SMOOTH),
    OP1(GT_OP_LOG2, log2, SMOOTH),
    OP1(GT_OP_LOG10, log10, SMOOTH),
    OP1(GT_OP_SQRT, sqrt, "sqrt'(0) = inf"),
    OP1(GT_OP_CBRT, cbrt, "cbrt'(0) = inf"),
    OP1(GT_OP_SQUARE, square, SMOOTH),
    OP1(GT_OP_RECIPROCAL, reciprocal, SMOOTH),
    OP1(GT_OP_SIN, sin, SMOOTH),
    OP1(GT_OP_COS, cos, SMOOTH),
    OP1(GT_OP_TAN, tan, SMOOTH),
    OP1(GT_OP_ARCSIN, arcsin, SMOOTH),
    OP1(GT_OP_ARCCOS, arccos, SMOOTH),
    OP1(GT_OP_ARCTAN, arctan, SMOOTH),
    OP2(GT_OP_ARCTAN2, arctan2, SMOOTH),
    OP1(GT_OP_SINH, sinh, SMOOTH),
    OP1(GT_OP_COSH, cosh, SMOOTH),
    OP1(GT_OP_TANH, tanh, SMOOTH),
    OP1(GT_OP_ARCSINH, arcsinh, SMOOTH),
    OP1(GT_OP_ARCCOSH, arccosh, SMOOTH),
    OP1(GT_OP_ARCTANH, arctanh, SMOOTH),
    OP2(GT_OP_HYPOT, hypot, "hypot'(0, 0) = (0, 0)"),
    OP2(GT_OP_MAXIMUM, maximum, "ties split the gradient 0.5/0.5; NaN propagates"),
    OP2(GT_OP_MINIMUM, minimum, "ties split the gradient 0.5/0.5; NaN propagates"),
    OP2(GT_OP_FMAX, fmax, "ties split 0.5/0.5; the non-NaN argument takes it all"),
    OP2(GT_OP_FMIN, fmin, "ties split 0.5/0.5; the non-NaN argument takes it all"),
    OP2(GT_OP_LOGADDEXP, logaddexp, SMOOTH),
    OP2(GT_OP_LOGADDEXP2, logaddexp2, SMOOTH),
    OP2(GT_OP_REMAINDER, remainder, "jumps where floor(a/b) changes are ignored"),
    OP2(GT_OP_FMOD, fmod, "jumps where trunc(a/b) changes are ignored"),
};

const gt_op *gt_op_lookup(const char *name)
{
    if (!name)
        return NULL;
    for (int i = 0; i < GT_OP_COUNT; i++)
        if (gt_op_table[i].name && strcmp(gt_op_table[i].name, name) == 0)
            return &gt_op_table[i];
    return NULL;
}

int gt_op_partials_f64(const gt_op *op, size_t n, const double *a, const double *b,
                       const double *y, double *da, double *db)
{
    if (!op || !a || !y || (op->arity == 2 && !b) || (op->arity == 1 && db))
        return GT_EINVAL;
    for (int k = 0; k < op->arity; k++) {
        double *out = k == 0 ? da : db;
        gt_partial_fn d = op->partial[k];
        if (!out)
            continue;
        if (!d) {
            memset(out, 0, n * sizeof *out);
            continue;
        }
        if (op->arity == 1)
            for (size_t i = 0; i < n; i++)
                out[i] = d(a[i], 0.0, y[i]);
        else
            for (size_t i = 0; i < n; i++)
                out[i] = d(a[i], b[i], y[i]);
    }
    return GT_OK;
}

int gt_op_partials_f32(const gt_op *op, size_t n, const float *a, const float *b,
                       const float *y, float *da, float *db)
{
    if (!op || !a || !y || (op->arity == 2 && !b) || (op->arity == 1 && db))
        return GT_EINVAL;
    for (int k = 0; k < op->arity; k++) {
        float *out = k == 0 ? da : db;
        gt_partial_fn d = op->partial[k];
        if (!out)
            continue;
        if (!d) {
            memset(out, 0, n * sizeof *out);
            continue;
        }
        for (size_t i = 0; i < n; i++)
            out[i] = (float)d(a[i], op->arity == 2 ? b[i] : 0.0, y[i]);
    }
    return GT_OK;
}
