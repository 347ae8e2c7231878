/* op_rules.h: the scalar value and first-partial rule of every elementwise op, written once for
 * both the host and the device.
 *
 * This header is the single source of the elementwise rules. The CPU op table (ops.c) and the
 * CUDA kernels (csrc/cuda/) both read it, so a rule cannot drift between them. It is plain C11
 * that also compiles as CUDA C++: every function is marked GT_HD, which is
 * `__host__ __device__ inline` under nvcc and `static inline` for a C compiler. It includes
 * nothing but <math.h>, so device code can include it without the rest of the core.
 *
 * Each rule is one case of a switch on the op id: gt_rule_value(op, a, b) is y = op(a, b) and
 * gt_rule_partial(op, k, a, b, y) is dy/d(argument k) at (a, b), with y = value(a, b) already
 * known. b is ignored by unary ops. Arguments in which an op is not differentiable (sign)
 * return 0 here and have no partial in the op table (gt_rule_has_partial says which).
 * Second partials (gt_rule_second, below) follow the same pattern. The kink and tie conventions
 * of both are documented in ops.h.
 *
 * Everything is computed in double; float32 callers convert on load and round once on store,
 * so the device and the CPU round the same way. An unknown op id gives NaN, never a silent 0.
 */
#ifndef GT_OP_RULES_H
#define GT_OP_RULES_H

#include <math.h>

#ifdef __CUDACC__
#define GT_HD __host__ __device__ inline
#elif defined(__GNUC__)
/* forced: each rule is a switch that folds to one case where the op is a constant (the CPU's
 * partial loops), but GCC judged the unfolded switch too large to inline, which left a call per
 * element in loops that otherwise vectorize */
#define GT_HD static inline __attribute__((always_inline))
#else
#define GT_HD static inline
#endif

#define GT_LN2 0.69314718055994530942
#define GT_LN10 2.30258509299404568402

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

/* The chain rule of both engines and of the device sweep: partial * x, with a zero on either
 * side giving exactly 0 (see ops.h). The product is taken unconditionally and then selected, so
 * that loops over it vectorize. */
GT_HD double gt_chain_f64(double partial, double x)
{
    double m = partial * x;
    return (partial == 0.0) | (x == 0.0) ? 0.0 : m;
}

GT_HD float gt_chain_f32(float partial, float x)
{
    float m = partial * x;
    return (partial == 0.0f) | (x == 0.0f) ? 0.0f : m;
}

/* 1 or 2 for a known op, 0 for an unknown id. */
GT_HD int gt_rule_arity(int op)
{
    switch (op) {
    case GT_OP_ADD: case GT_OP_SUBTRACT: case GT_OP_MULTIPLY: case GT_OP_DIVIDE: case GT_OP_POWER:
    case GT_OP_ARCTAN2: case GT_OP_HYPOT: case GT_OP_MAXIMUM: case GT_OP_MINIMUM: case GT_OP_FMAX:
    case GT_OP_FMIN: case GT_OP_LOGADDEXP: case GT_OP_LOGADDEXP2: case GT_OP_REMAINDER: case GT_OP_FMOD:
        return 2;
    default:
        return op >= 0 && op < GT_OP_COUNT ? 1 : 0;
    }
}

/* 1 when the op is differentiable in argument k (its partial is a rule), 0 when its gradient
 * there is defined to be zero (sign) or k is not an argument of the op. */
GT_HD int gt_rule_has_partial(int op, int k)
{
    return k >= 0 && k < gt_rule_arity(op) && op != GT_OP_SIGN;
}

/* y = op(a, b). */
GT_HD double gt_rule_value(int op, double a, double b)
{
    switch (op) {
    case GT_OP_ADD: return a + b;
    case GT_OP_SUBTRACT: return a - b;
    case GT_OP_MULTIPLY: return a * b;
    case GT_OP_DIVIDE: return a / b;
    case GT_OP_POWER: return pow(a, b);
    case GT_OP_NEGATIVE: return -a;
    case GT_OP_POSITIVE: return a;
    case GT_OP_ABS: return fabs(a);
    case GT_OP_SIGN: return isnan(a) ? a : (a > 0) - (a < 0);
    case GT_OP_EXP: return exp(a);
    case GT_OP_EXPM1: return expm1(a);
    case GT_OP_EXP2: return exp2(a);
    case GT_OP_LOG: return log(a);
    case GT_OP_LOG1P: return log1p(a);
    case GT_OP_LOG2: return log2(a);
    case GT_OP_LOG10: return log10(a);
    case GT_OP_SQRT: return sqrt(a);
    case GT_OP_CBRT: return cbrt(a);
    case GT_OP_SQUARE: return a * a;
    case GT_OP_RECIPROCAL: return 1.0 / a;
    case GT_OP_SIN: return sin(a);
    case GT_OP_COS: return cos(a);
    case GT_OP_TAN: return tan(a);
    case GT_OP_ARCSIN: return asin(a);
    case GT_OP_ARCCOS: return acos(a);
    case GT_OP_ARCTAN: return atan(a);
    case GT_OP_ARCTAN2: return atan2(a, b);
    case GT_OP_SINH: return sinh(a);
    case GT_OP_COSH: return cosh(a);
    case GT_OP_TANH: return tanh(a);
    case GT_OP_ARCSINH: return asinh(a);
    case GT_OP_ARCCOSH: return acosh(a);
    case GT_OP_ARCTANH: return atanh(a);
    case GT_OP_HYPOT: return hypot(a, b);
    case GT_OP_MAXIMUM: return (isnan(a) || isnan(b)) ? a + b : (a >= b ? a : b);
    case GT_OP_MINIMUM: return (isnan(a) || isnan(b)) ? a + b : (a <= b ? a : b);
    case GT_OP_FMAX: return fmax(a, b);
    case GT_OP_FMIN: return fmin(a, b);
    case GT_OP_LOGADDEXP: {
        if (a == b)
            return a + GT_LN2; /* also right for a == b == +-inf, where the general form gives NaN */
        double hi = a > b ? a : b, lo = a > b ? b : a;
        return hi + log1p(exp(lo - hi));
    }
    case GT_OP_LOGADDEXP2: {
        if (a == b)
            return a + 1.0;
        double hi = a > b ? a : b, lo = a > b ? b : a;
        return hi + log1p(exp2(lo - hi)) / GT_LN2;
    }
    case GT_OP_REMAINDER: {
        /* Python's %: the sign of b */
        double r = fmod(a, b);
        if (r != 0.0 && ((r < 0.0) != (b < 0.0)))
            r += b;
        return r;
    }
    case GT_OP_FMOD: return fmod(a, b);
    default: return NAN;
    }
}

/* dy/da at (a, b) with y = op(a, b). */
GT_HD double gt_rule_partial0(int op, double a, double b, double y)
{
    switch (op) {
    case GT_OP_ADD: case GT_OP_SUBTRACT: case GT_OP_POSITIVE: case GT_OP_REMAINDER: case GT_OP_FMOD:
        return 1.0;
    case GT_OP_NEGATIVE: return -1.0;
    case GT_OP_MULTIPLY: return b;
    case GT_OP_DIVIDE: return 1.0 / b;
    case GT_OP_POWER: return b == 0.0 ? 0.0 : b * pow(a, b - 1.0);
    case GT_OP_ABS: return isnan(a) ? a : (a > 0) - (a < 0);
    case GT_OP_SIGN: return 0.0;
    case GT_OP_EXP: return y;
    case GT_OP_EXPM1: return y + 1.0;
    case GT_OP_EXP2: return y * GT_LN2;
    case GT_OP_LOG: return 1.0 / a;
    case GT_OP_LOG1P: return 1.0 / (1.0 + a);
    case GT_OP_LOG2: return 1.0 / (a * GT_LN2);
    case GT_OP_LOG10: return 1.0 / (a * GT_LN10);
    case GT_OP_SQRT: return 0.5 / y;
    case GT_OP_CBRT: return 1.0 / (3.0 * y * y);
    case GT_OP_SQUARE: return 2.0 * a;
    case GT_OP_RECIPROCAL: return -y * y;
    case GT_OP_SIN: return cos(a);
    case GT_OP_COS: return -sin(a);
    case GT_OP_TAN: return 1.0 + y * y;
    case GT_OP_ARCSIN: return 1.0 / sqrt(1.0 - a * a);
    case GT_OP_ARCCOS: return -1.0 / sqrt(1.0 - a * a);
    case GT_OP_ARCTAN: return 1.0 / (1.0 + a * a);
    case GT_OP_ARCTAN2: return b / (a * a + b * b);
    case GT_OP_SINH: return cosh(a);
    case GT_OP_COSH: return sinh(a);
    case GT_OP_TANH: return 1.0 - y * y;
    case GT_OP_ARCSINH: return 1.0 / sqrt(a * a + 1.0);
    case GT_OP_ARCCOSH: return 1.0 / sqrt(a * a - 1.0);
    case GT_OP_ARCTANH: return 1.0 / (1.0 - a * a);
    case GT_OP_HYPOT: return y == 0.0 ? 0.0 : a / y;
    /* ties split evenly; a NaN operand propagates NaN into the derivative of maximum/minimum */
    case GT_OP_MAXIMUM: return isnan(a) || isnan(b) ? NAN : a > b ? 1.0 : a == b ? 0.5 : 0.0;
    case GT_OP_MINIMUM: return isnan(a) || isnan(b) ? NAN : a < b ? 1.0 : a == b ? 0.5 : 0.0;
    /* fmax/fmin: the non-NaN argument takes the whole gradient */
    case GT_OP_FMAX: return isnan(a) ? 0.0 : isnan(b) ? 1.0 : a > b ? 1.0 : a == b ? 0.5 : 0.0;
    case GT_OP_FMIN: return isnan(a) ? 0.0 : isnan(b) ? 1.0 : a < b ? 1.0 : a == b ? 0.5 : 0.0;
    /* logaddexp: d/da = exp(a - y) = a's softmax weight; logaddexp2 the same in base 2 */
    case GT_OP_LOGADDEXP: return exp(a - y);
    case GT_OP_LOGADDEXP2: return exp2(a - y);
    default: return NAN;
    }
}

/* dy/db at (a, b) with y = op(a, b); NaN for a unary op, which has no second argument. */
GT_HD double gt_rule_partial1(int op, double a, double b, double y)
{
    switch (op) {
    case GT_OP_ADD: return 1.0;
    case GT_OP_SUBTRACT: return -1.0;
    case GT_OP_MULTIPLY: return a;
    case GT_OP_DIVIDE: return -y / b;
    case GT_OP_POWER: return a == 0.0 ? 0.0 : y * log(a);
    case GT_OP_ARCTAN2: return -a / (a * a + b * b);
    case GT_OP_HYPOT: return y == 0.0 ? 0.0 : b / y;
    case GT_OP_MAXIMUM: return isnan(a) || isnan(b) ? NAN : b > a ? 1.0 : a == b ? 0.5 : 0.0;
    case GT_OP_MINIMUM: return isnan(a) || isnan(b) ? NAN : b < a ? 1.0 : a == b ? 0.5 : 0.0;
    case GT_OP_FMAX: return isnan(b) ? 0.0 : isnan(a) ? 1.0 : b > a ? 1.0 : a == b ? 0.5 : 0.0;
    case GT_OP_FMIN: return isnan(b) ? 0.0 : isnan(a) ? 1.0 : b < a ? 1.0 : a == b ? 0.5 : 0.0;
    case GT_OP_LOGADDEXP: return exp(b - y);
    case GT_OP_LOGADDEXP2: return exp2(b - y);
    case GT_OP_REMAINDER: return -floor(a / b);
    case GT_OP_FMOD: return -trunc(a / b);
    default: return NAN;
    }
}

/* dy/d(argument k), k = 0 or 1. */
GT_HD double gt_rule_partial(int op, int k, double a, double b, double y)
{
    return k == 0 ? gt_rule_partial0(op, a, b, y) : gt_rule_partial1(op, a, b, y);
}

/* Which of (a, b, y) a rule reads, so that the tape can keep only those operands: a recorded
 * multiplication by a constant needs neither array, tanh only its output. A bit set for a value
 * the rule does not read only costs memory; a bit missing would make the sweep read a value it
 * did not keep, so each case below follows its rule above line by line. */
#define GT_READS_A 1
#define GT_READS_B 2
#define GT_READS_Y 4
#define GT_READS_ALL (GT_READS_A | GT_READS_B | GT_READS_Y)

/* What gt_rule_partial(op, k, ...) reads; 0 for a constant partial or k not an argument. */
GT_HD int gt_rule_partial_reads(int op, int k)
{
    if (k == 1) {
        switch (op) {
        case GT_OP_ADD: case GT_OP_SUBTRACT: return 0;
        case GT_OP_MULTIPLY: return GT_READS_A;
        case GT_OP_DIVIDE: case GT_OP_HYPOT: case GT_OP_LOGADDEXP: case GT_OP_LOGADDEXP2:
            return GT_READS_B | GT_READS_Y;
        case GT_OP_POWER: return GT_READS_A | GT_READS_Y;
        case GT_OP_ARCTAN2: case GT_OP_MAXIMUM: case GT_OP_MINIMUM: case GT_OP_FMAX: case GT_OP_FMIN:
        case GT_OP_REMAINDER: case GT_OP_FMOD:
            return GT_READS_A | GT_READS_B;
        default: return gt_rule_arity(op) == 2 ? GT_READS_ALL : 0;
        }
    }
    if (k != 0)
        return 0;
    switch (op) {
    case GT_OP_ADD: case GT_OP_SUBTRACT: case GT_OP_POSITIVE: case GT_OP_REMAINDER: case GT_OP_FMOD:
    case GT_OP_NEGATIVE: case GT_OP_SIGN:
        return 0;
    case GT_OP_MULTIPLY: case GT_OP_DIVIDE: return GT_READS_B;
    case GT_OP_POWER: case GT_OP_ARCTAN2: case GT_OP_MAXIMUM: case GT_OP_MINIMUM: case GT_OP_FMAX:
    case GT_OP_FMIN:
        return GT_READS_A | GT_READS_B;
    case GT_OP_EXP: case GT_OP_EXPM1: case GT_OP_EXP2: case GT_OP_SQRT: case GT_OP_CBRT:
    case GT_OP_RECIPROCAL: case GT_OP_TAN: case GT_OP_TANH:
        return GT_READS_Y;
    case GT_OP_ABS: case GT_OP_LOG: case GT_OP_LOG1P: case GT_OP_LOG2: case GT_OP_LOG10:
    case GT_OP_SQUARE: case GT_OP_SIN: case GT_OP_COS: case GT_OP_ARCSIN: case GT_OP_ARCCOS:
    case GT_OP_ARCTAN: case GT_OP_SINH: case GT_OP_COSH: case GT_OP_ARCSINH: case GT_OP_ARCCOSH:
    case GT_OP_ARCTANH:
        return GT_READS_A;
    case GT_OP_HYPOT: case GT_OP_LOGADDEXP: case GT_OP_LOGADDEXP2: return GT_READS_A | GT_READS_Y;
    default: return GT_READS_ALL;
    }
}

/* Second partials, as the first are, functions of (a, b, y): gt_rule_second(op, i, j, a, b, y) is
 * d2y/(d argument i)(d argument j), i, j in {0, 1} (symmetric). They are the derivatives of the
 * first partials as written above, so they keep the same kink conventions (listed in ops.h): a
 * locally constant first partial (the linear ops, abs, sign, maximum/minimum, fmax/fmin,
 * remainder/fmod) has all second partials 0, ties included. gt_rule_second_is_zero says which ops
 * those are; an order-2 sweep records no derivative for their partials. */
GT_HD int gt_rule_second_is_zero(int op)
{
    switch (op) {
    case GT_OP_ADD: case GT_OP_SUBTRACT: case GT_OP_NEGATIVE: case GT_OP_POSITIVE: case GT_OP_ABS:
    case GT_OP_SIGN: case GT_OP_MAXIMUM: case GT_OP_MINIMUM: case GT_OP_FMAX: case GT_OP_FMIN:
    case GT_OP_REMAINDER: case GT_OP_FMOD:
        return 1;
    default:
        return 0;
    }
}

/* 1 when d2y/(d argument i)(d argument j) is identically 0 for `op` (multiply's d2y/da2, a
 * unary op's mixed one), so that a partial that moves with no other argument is a constant. */
GT_HD int gt_rule_second_is_zero_at(int op, int i, int j)
{
    if (gt_rule_second_is_zero(op) || (i + j > 0 && gt_rule_arity(op) < 2))
        return 1;
    switch (op) {
    case GT_OP_MULTIPLY: return i == j;
    case GT_OP_DIVIDE: return i + j == 0;
    default: return 0;
    }
}

/* d2y/da2 at (a, b) with y = op(a, b). */
GT_HD double gt_rule_second00(int op, double a, double b, double y)
{
    switch (op) {
    case GT_OP_POWER:
        /* b * (b - 1) is exactly 0 for b in {0, 1}: no 0 * inf from a**(b-2) at a == 0 */
        return b == 0.0 || b == 1.0 ? 0.0 : b * (b - 1.0) * pow(a, b - 2.0);
    case GT_OP_EXP: case GT_OP_SINH: case GT_OP_COSH: return y;
    case GT_OP_EXPM1: return y + 1.0;
    case GT_OP_EXP2: return y * GT_LN2 * GT_LN2;
    case GT_OP_LOG: return -1.0 / (a * a);
    case GT_OP_LOG1P: return -1.0 / ((1.0 + a) * (1.0 + a));
    case GT_OP_LOG2: return -1.0 / (a * a * GT_LN2);
    case GT_OP_LOG10: return -1.0 / (a * a * GT_LN10);
    case GT_OP_SQRT: return -0.25 / (y * y * y);
    case GT_OP_CBRT: return -2.0 / (9.0 * y * y * y * y * y);
    case GT_OP_SQUARE: return 2.0;
    case GT_OP_RECIPROCAL: return 2.0 * y * y * y;
    case GT_OP_SIN: case GT_OP_COS: return -y;
    case GT_OP_TAN: return 2.0 * y * (1.0 + y * y);
    case GT_OP_ARCSIN: { double r = 1.0 - a * a; return a / (r * sqrt(r)); }
    case GT_OP_ARCCOS: { double r = 1.0 - a * a; return -a / (r * sqrt(r)); }
    case GT_OP_ARCTAN: { double r = 1.0 + a * a; return -2.0 * a / (r * r); }
    case GT_OP_ARCTAN2: { double r = a * a + b * b; return -2.0 * a * b / (r * r); }
    case GT_OP_TANH: return -2.0 * y * (1.0 - y * y);
    case GT_OP_ARCSINH: { double r = a * a + 1.0; return -a / (r * sqrt(r)); }
    case GT_OP_ARCCOSH: { double r = a * a - 1.0; return -a / (r * sqrt(r)); }
    case GT_OP_ARCTANH: { double r = 1.0 - a * a; return 2.0 * a / (r * r); }
    /* hypot: 0 where y == 0, as its first partials */
    case GT_OP_HYPOT: return y == 0.0 ? 0.0 : b * b / (y * y * y);
    /* logaddexp: with p = exp(a - y), q = exp(b - y) (p + q = 1): d2y/da2 = d2y/db2 = pq */
    case GT_OP_LOGADDEXP: return exp(a - y) * exp(b - y);
    case GT_OP_LOGADDEXP2: return GT_LN2 * exp2(a - y) * exp2(b - y);
    default: return gt_rule_second_is_zero(op) || gt_rule_arity(op) ? 0.0 : NAN;
    }
}

/* d2y/dadb at (a, b) with y = op(a, b); 0 for a unary op. */
GT_HD double gt_rule_second01(int op, double a, double b, double y)
{
    switch (op) {
    case GT_OP_MULTIPLY: return 1.0;
    case GT_OP_DIVIDE: return -1.0 / (b * b);
    case GT_OP_POWER:
        /* d/db of b * a**(b-1), equally d/da of a**b * log(a); 0 where a == 0, as d/db is */
        if (a == 0.0)
            return 0.0;
        return b == 0.0 ? 1.0 / a : pow(a, b - 1.0) * (1.0 + b * log(a));
    case GT_OP_ARCTAN2: { double r = a * a + b * b; return (a * a - b * b) / (r * r); }
    case GT_OP_HYPOT: return y == 0.0 ? 0.0 : -a * b / (y * y * y);
    case GT_OP_LOGADDEXP: return -exp(a - y) * exp(b - y);
    case GT_OP_LOGADDEXP2: return -GT_LN2 * exp2(a - y) * exp2(b - y);
    default: return gt_rule_arity(op) ? 0.0 : NAN;
    }
}

/* d2y/db2 at (a, b) with y = op(a, b); 0 for a unary op. */
GT_HD double gt_rule_second11(int op, double a, double b, double y)
{
    switch (op) {
    case GT_OP_DIVIDE: return 2.0 * y / (b * b);
    case GT_OP_POWER: {
        if (a == 0.0)
            return 0.0;
        double l = log(a);
        return y * l * l;
    }
    case GT_OP_ARCTAN2: { double r = a * a + b * b; return 2.0 * a * b / (r * r); }
    case GT_OP_HYPOT: return y == 0.0 ? 0.0 : a * a / (y * y * y);
    case GT_OP_LOGADDEXP: return exp(a - y) * exp(b - y);
    case GT_OP_LOGADDEXP2: return GT_LN2 * exp2(a - y) * exp2(b - y);
    default: return gt_rule_arity(op) ? 0.0 : NAN;
    }
}

/* What any of gt_rule_second(op, i, j, ...) reads, over all i, j (what an order-2 sweep needs
 * besides the first partials' operands). */
GT_HD int gt_rule_second_reads(int op)
{
    switch (op) {
    case GT_OP_MULTIPLY: case GT_OP_SQUARE: return 0;
    case GT_OP_DIVIDE: return GT_READS_B | GT_READS_Y;
    case GT_OP_EXP: case GT_OP_EXPM1: case GT_OP_EXP2: case GT_OP_SINH: case GT_OP_COSH:
    case GT_OP_SQRT: case GT_OP_CBRT: case GT_OP_RECIPROCAL: case GT_OP_SIN: case GT_OP_COS:
    case GT_OP_TAN: case GT_OP_TANH:
        return GT_READS_Y;
    case GT_OP_LOG: case GT_OP_LOG1P: case GT_OP_LOG2: case GT_OP_LOG10: case GT_OP_ARCSIN:
    case GT_OP_ARCCOS: case GT_OP_ARCTAN: case GT_OP_ARCSINH: case GT_OP_ARCCOSH: case GT_OP_ARCTANH:
        return GT_READS_A;
    case GT_OP_ARCTAN2: return GT_READS_A | GT_READS_B;
    default: return gt_rule_second_is_zero(op) ? 0 : GT_READS_ALL; /* power, hypot, logaddexp */
    }
}

/* d2y/(d argument i)(d argument j), i, j in {0, 1}. */
GT_HD double gt_rule_second(int op, int i, int j, double a, double b, double y)
{
    int s = i + j;
    return s == 0 ? gt_rule_second00(op, a, b, y) : s == 1 ? gt_rule_second01(op, a, b, y)
                                                          : gt_rule_second11(op, a, b, y);
}

#endif /* GT_OP_RULES_H */
