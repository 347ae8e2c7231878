/* ops.c: values and local partial derivatives of the elementwise ops (see ops.h). */
#include "ops.h"

#include <math.h>
#include <string.h>

#define LN2 0.69314718055994530942
#define LN10 2.30258509299404568402

/* values */
static double v_add(double a, double b) { return a + b; }
static double v_subtract(double a, double b) { return a - b; }
static double v_multiply(double a, double b) { return a * b; }
static double v_divide(double a, double b) { return a / b; }
static double v_power(double a, double b) { return pow(a, b); }
static double v_negative(double a, double b) { (void)b; return -a; }
static double v_positive(double a, double b) { (void)b; return a; }
static double v_abs(double a, double b) { (void)b; return fabs(a); }
static double v_sign(double a, double b) { (void)b; return isnan(a) ? a : (a > 0) - (a < 0); }
static double v_exp(double a, double b) { (void)b; return exp(a); }
static double v_expm1(double a, double b) { (void)b; return expm1(a); }
static double v_exp2(double a, double b) { (void)b; return exp2(a); }
static double v_log(double a, double b) { (void)b; return log(a); }
static double v_log1p(double a, double b) { (void)b; return log1p(a); }
static double v_log2(double a, double b) { (void)b; return log2(a); }
static double v_log10(double a, double b) { (void)b; return log10(a); }
static double v_sqrt(double a, double b) { (void)b; return sqrt(a); }
static double v_cbrt(double a, double b) { (void)b; return cbrt(a); }
static double v_square(double a, double b) { (void)b; return a * a; }
static double v_reciprocal(double a, double b) { (void)b; return 1.0 / a; }
static double v_sin(double a, double b) { (void)b; return sin(a); }
static double v_cos(double a, double b) { (void)b; return cos(a); }
static double v_tan(double a, double b) { (void)b; return tan(a); }
static double v_arcsin(double a, double b) { (void)b; return asin(a); }
static double v_arccos(double a, double b) { (void)b; return acos(a); }
static double v_arctan(double a, double b) { (void)b; return atan(a); }
static double v_arctan2(double a, double b) { return atan2(a, b); }
static double v_sinh(double a, double b) { (void)b; return sinh(a); }
static double v_cosh(double a, double b) { (void)b; return cosh(a); }
static double v_tanh(double a, double b) { (void)b; return tanh(a); }
static double v_arcsinh(double a, double b) { (void)b; return asinh(a); }
static double v_arccosh(double a, double b) { (void)b; return acosh(a); }
static double v_arctanh(double a, double b) { (void)b; return atanh(a); }
static double v_hypot(double a, double b) { return hypot(a, b); }
static double v_maximum(double a, double b) { return (isnan(a) || isnan(b)) ? a + b : (a >= b ? a : b); }
static double v_minimum(double a, double b) { return (isnan(a) || isnan(b)) ? a + b : (a <= b ? a : b); }
static double v_fmax(double a, double b) { return fmax(a, b); }
static double v_fmin(double a, double b) { return fmin(a, b); }
static double v_logaddexp(double a, double b)
{
    if (a == b)
        return a + LN2; /* also right for a == b == +-inf, where the general form gives NaN */
    double hi = a > b ? a : b, lo = a > b ? b : a;
    return hi + log1p(exp(lo - hi));
}
static double v_logaddexp2(double a, double b)
{
    if (a == b)
        return a + 1.0;
    double hi = a > b ? a : b, lo = a > b ? b : a;
    return hi + log1p(exp2(lo - hi)) / LN2;
}
static double v_remainder(double a, double b)
{
    /* Python's %: the sign of b */
    double r = fmod(a, b);
    if (r != 0.0 && ((r < 0.0) != (b < 0.0)))
        r += b;
    return r;
}
static double v_fmod(double a, double b) { return fmod(a, b); }

/* partials; the names say which argument: d0 = dy/da, d1 = dy/db */
static double one(double a, double b, double y) { (void)a; (void)b; (void)y; return 1.0; }
static double minus_one(double a, double b, double y) { (void)a; (void)b; (void)y; return -1.0; }
static double mul_d0(double a, double b, double y) { (void)a; (void)y; return b; }
static double mul_d1(double a, double b, double y) { (void)b; (void)y; return a; }
static double div_d0(double a, double b, double y) { (void)a; (void)y; return 1.0 / b; }
static double div_d1(double a, double b, double y) { (void)a; return -y / b; }
static double pow_d0(double a, double b, double y)
{
    (void)y;
    return b == 0.0 ? 0.0 : b * pow(a, b - 1.0);
}
static double pow_d1(double a, double b, double y)
{
    (void)b;
    return a == 0.0 ? 0.0 : y * log(a);
}
static double abs_d0(double a, double b, double y) { (void)b; (void)y; return isnan(a) ? a : (a > 0) - (a < 0); }
static double exp_d0(double a, double b, double y) { (void)a; (void)b; return y; }
static double expm1_d0(double a, double b, double y) { (void)a; (void)b; return y + 1.0; }
static double exp2_d0(double a, double b, double y) { (void)a; (void)b; return y * LN2; }
static double log_d0(double a, double b, double y) { (void)b; (void)y; return 1.0 / a; }
static double log1p_d0(double a, double b, double y) { (void)b; (void)y; return 1.0 / (1.0 + a); }
static double log2_d0(double a, double b, double y) { (void)b; (void)y; return 1.0 / (a * LN2); }
static double log10_d0(double a, double b, double y) { (void)b; (void)y; return 1.0 / (a * LN10); }
static double sqrt_d0(double a, double b, double y) { (void)a; (void)b; return 0.5 / y; }
static double cbrt_d0(double a, double b, double y) { (void)a; (void)b; return 1.0 / (3.0 * y * y); }
static double square_d0(double a, double b, double y) { (void)b; (void)y; return 2.0 * a; }
static double reciprocal_d0(double a, double b, double y) { (void)a; (void)b; return -y * y; }
static double sin_d0(double a, double b, double y) { (void)b; (void)y; return cos(a); }
static double cos_d0(double a, double b, double y) { (void)b; (void)y; return -sin(a); }
static double tan_d0(double a, double b, double y) { (void)a; (void)b; return 1.0 + y * y; }
static double arcsin_d0(double a, double b, double y) { (void)b; (void)y; return 1.0 / sqrt(1.0 - a * a); }
static double arccos_d0(double a, double b, double y) { (void)b; (void)y; return -1.0 / sqrt(1.0 - a * a); }
static double arctan_d0(double a, double b, double y) { (void)b; (void)y; return 1.0 / (1.0 + a * a); }
static double arctan2_d0(double a, double b, double y) { (void)y; return b / (a * a + b * b); }
static double arctan2_d1(double a, double b, double y) { (void)y; return -a / (a * a + b * b); }
static double sinh_d0(double a, double b, double y) { (void)b; (void)y; return cosh(a); }
static double cosh_d0(double a, double b, double y) { (void)b; (void)y; return sinh(a); }
static double tanh_d0(double a, double b, double y) { (void)a; (void)b; return 1.0 - y * y; }
static double arcsinh_d0(double a, double b, double y) { (void)b; (void)y; return 1.0 / sqrt(a * a + 1.0); }
static double arccosh_d0(double a, double b, double y) { (void)b; (void)y; return 1.0 / sqrt(a * a - 1.0); }
static double arctanh_d0(double a, double b, double y) { (void)b; (void)y; return 1.0 / (1.0 - a * a); }
static double hypot_d0(double a, double b, double y) { (void)b; return y == 0.0 ? 0.0 : a / y; }
static double hypot_d1(double a, double b, double y) { (void)a; return y == 0.0 ? 0.0 : b / y; }
/* ties split evenly; a NaN operand propagates NaN into the derivative of maximum/minimum */
static double max_d0(double a, double b, double y) { (void)y; return isnan(a) || isnan(b) ? NAN : a > b ? 1.0 : a == b ? 0.5 : 0.0; }
static double max_d1(double a, double b, double y) { (void)y; return isnan(a) || isnan(b) ? NAN : b > a ? 1.0 : a == b ? 0.5 : 0.0; }
static double min_d0(double a, double b, double y) { (void)y; return isnan(a) || isnan(b) ? NAN : a < b ? 1.0 : a == b ? 0.5 : 0.0; }
static double min_d1(double a, double b, double y) { (void)y; return isnan(a) || isnan(b) ? NAN : b < a ? 1.0 : a == b ? 0.5 : 0.0; }
/* fmax/fmin: the non-NaN argument takes the whole gradient */
static double fmax_d0(double a, double b, double y) { (void)y; return isnan(a) ? 0.0 : isnan(b) ? 1.0 : a > b ? 1.0 : a == b ? 0.5 : 0.0; }
static double fmax_d1(double a, double b, double y) { (void)y; return isnan(b) ? 0.0 : isnan(a) ? 1.0 : b > a ? 1.0 : a == b ? 0.5 : 0.0; }
static double fmin_d0(double a, double b, double y) { (void)y; return isnan(a) ? 0.0 : isnan(b) ? 1.0 : a < b ? 1.0 : a == b ? 0.5 : 0.0; }
static double fmin_d1(double a, double b, double y) { (void)y; return isnan(b) ? 0.0 : isnan(a) ? 1.0 : b < a ? 1.0 : a == b ? 0.5 : 0.0; }

/* logaddexp: d/da = exp(a - y) = a's softmax weight; logaddexp2 the same in base 2 */
static double logaddexp_d0(double a, double b, double y) { (void)b; return exp(a - y); }
static double logaddexp_d1(double a, double b, double y) { (void)a; return exp(b - y); }
static double logaddexp2_d0(double a, double b, double y) { (void)b; return exp2(a - y); }
static double logaddexp2_d1(double a, double b, double y) { (void)a; return exp2(b - y); }
static double remainder_d1(double a, double b, double y) { (void)y; return -floor(a / b); }
static double fmod_d1(double a, double b, double y) { (void)y; return -trunc(a / b); }

#define SMOOTH "smooth on its domain"
#define OP1(ID, NAME, D0, RULE) [ID] = {ID, #NAME, 1, v_##NAME, {D0, NULL}, RULE}
#define OP2(ID, NAME, D0, D1, RULE) [ID] = {ID, #NAME, 2, v_##NAME, {D0, D1}, RULE}

const gt_op gt_op_table[GT_OP_COUNT] = {
    OP2(GT_OP_ADD, add, one, one, "linear"),
    OP2(GT_OP_SUBTRACT, subtract, one, minus_one, "linear"),
    OP2(GT_OP_MULTIPLY, multiply, mul_d0, mul_d1, "bilinear"),
    OP2(GT_OP_DIVIDE, divide, div_d0, div_d1, SMOOTH),
    OP2(GT_OP_POWER, power, pow_d0, pow_d1, "d/da is 0 where b == 0; d/db is 0 where a == 0"),
    OP1(GT_OP_NEGATIVE, negative, minus_one, "linear"),
    OP1(GT_OP_POSITIVE, positive, one, "linear"),
    OP1(GT_OP_ABS, abs, abs_d0, "abs'(0) = 0"),
    OP1(GT_OP_SIGN, sign, NULL, "piecewise constant: zero gradient"),
    OP1(GT_OP_EXP, exp, exp_d0, SMOOTH),
    OP1(GT_OP_EXPM1, expm1, expm1_d0, SMOOTH),
    OP1(GT_OP_EXP2, exp2, exp2_d0, SMOOTH),
    OP1(GT_OP_LOG, log, log_d0, "log'(0) = inf"),
    OP1(GT_OP_LOG1P, log1p, log1p_d0, SMOOTH),
    OP1(GT_OP_LOG2, log2, log2_d0, SMOOTH),
    OP1(GT_OP_LOG10, log10, log10_d0, SMOOTH),
    OP1(GT_OP_SQRT, sqrt, sqrt_d0, "sqrt'(0) = inf"),
    OP1(GT_OP_CBRT, cbrt, cbrt_d0, "cbrt'(0) = inf"),
    OP1(GT_OP_SQUARE, square, square_d0, SMOOTH),
    OP1(GT_OP_RECIPROCAL, reciprocal, reciprocal_d0, SMOOTH),
    OP1(GT_OP_SIN, sin, sin_d0, SMOOTH),
    OP1(GT_OP_COS, cos, cos_d0, SMOOTH),
    OP1(GT_OP_TAN, tan, tan_d0, SMOOTH),
    OP1(GT_OP_ARCSIN, arcsin, arcsin_d0, SMOOTH),
    OP1(GT_OP_ARCCOS, arccos, arccos_d0, SMOOTH),
    OP1(GT_OP_ARCTAN, arctan, arctan_d0, SMOOTH),
    OP2(GT_OP_ARCTAN2, arctan2, arctan2_d0, arctan2_d1, SMOOTH),
    OP1(GT_OP_SINH, sinh, sinh_d0, SMOOTH),
    OP1(GT_OP_COSH, cosh, cosh_d0, SMOOTH),
    OP1(GT_OP_TANH, tanh, tanh_d0, SMOOTH),
    OP1(GT_OP_ARCSINH, arcsinh, arcsinh_d0, SMOOTH),
    OP1(GT_OP_ARCCOSH, arccosh, arccosh_d0, SMOOTH),
    OP1(GT_OP_ARCTANH, arctanh, arctanh_d0, SMOOTH),
    OP2(GT_OP_HYPOT, hypot, hypot_d0, hypot_d1, "hypot'(0, 0) = (0, 0)"),
    OP2(GT_OP_MAXIMUM, maximum, max_d0, max_d1, "ties split the gradient 0.5/0.5; NaN propagates"),
    OP2(GT_OP_MINIMUM, minimum, min_d0, min_d1, "ties split the gradient 0.5/0.5; NaN propagates"),
    OP2(GT_OP_FMAX, fmax, fmax_d0, fmax_d1, "ties split 0.5/0.5; the non-NaN argument takes it all"),
    OP2(GT_OP_FMIN, fmin, fmin_d0, fmin_d1, "ties split 0.5/0.5; the non-NaN argument takes it all"),
    OP2(GT_OP_LOGADDEXP, logaddexp, logaddexp_d0, logaddexp_d1, SMOOTH),
    OP2(GT_OP_LOGADDEXP2, logaddexp2, logaddexp2_d0, logaddexp2_d1, SMOOTH),
    OP2(GT_OP_REMAINDER, remainder, one, remainder_d1, "jumps where floor(a/b) changes are ignored"),
    OP2(GT_OP_FMOD, fmod, one, fmod_d1, "jumps where trunc(a/b) changes are ignored"),
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

/* The partial loops. Each is instantiated once per op with the table's own rule as a
 * compile-time constant (gt_op_table[ID].partial[K] below), so the compiler inlines the rule into
 * the loop and vectorizes it where it can: through the pointer, every element cost an indirect
 * call (about 3 ns, more than the arithmetic of most partials and of the chain rule after them;
 * an exp node's VJP over 10^6 elements took 3.8x NumPy's exp). The rules themselves stay in the
 * table: nothing here knows what any op computes. */
static inline void loop_f64(gt_partial_fn d, size_t n, const double *a, const double *b, const double *y,
                            double *out)
{
    if (b)
        for (size_t i = 0; i < n; i++)
            out[i] = d(a[i], b[i], y[i]);
    else
        for (size_t i = 0; i < n; i++)
            out[i] = d(a[i], 0.0, y[i]);
}

static inline void loop_f32(gt_partial_fn d, size_t n, const float *a, const float *b, const float *y,
                            float *out)
{
    if (b)
        for (size_t i = 0; i < n; i++)
            out[i] = (float)d(a[i], b[i], y[i]);
    else
        for (size_t i = 0; i < n; i++)
            out[i] = (float)d(a[i], 0.0, y[i]);
}

#define GT_OP_IDS(X)                                                                                 \
    X(GT_OP_ADD) X(GT_OP_SUBTRACT) X(GT_OP_MULTIPLY) X(GT_OP_DIVIDE) X(GT_OP_POWER) X(GT_OP_NEGATIVE) \
    X(GT_OP_POSITIVE) X(GT_OP_ABS) X(GT_OP_EXP) X(GT_OP_EXPM1) X(GT_OP_EXP2) X(GT_OP_LOG)           \
    X(GT_OP_LOG1P) X(GT_OP_LOG2) X(GT_OP_LOG10) X(GT_OP_SQRT) X(GT_OP_CBRT) X(GT_OP_SQUARE)          \
    X(GT_OP_RECIPROCAL) X(GT_OP_SIN) X(GT_OP_COS) X(GT_OP_TAN) X(GT_OP_ARCSIN) X(GT_OP_ARCCOS)       \
    X(GT_OP_ARCTAN) X(GT_OP_ARCTAN2) X(GT_OP_SINH) X(GT_OP_COSH) X(GT_OP_TANH) X(GT_OP_ARCSINH)      \
    X(GT_OP_ARCCOSH) X(GT_OP_ARCTANH) X(GT_OP_HYPOT) X(GT_OP_MAXIMUM) X(GT_OP_MINIMUM) X(GT_OP_FMAX) \
    X(GT_OP_FMIN) X(GT_OP_LOGADDEXP) X(GT_OP_LOGADDEXP2) X(GT_OP_REMAINDER) X(GT_OP_FMOD)

/* partial k of op `op` (which has one, d != NULL) over n elements; `d` serves ops not listed */
#define PARTIAL_LOOPS(SUFFIX)                                                                        \
    switch (op->id) {                                                                                \
    GT_OP_IDS(CASE_##SUFFIX)                                                                         \
    default: loop_##SUFFIX(d, n, a, bb, y, out); break;                                              \
    }
#define CASE_f64(ID)                                                                                 \
    case ID:                                                                                         \
        if (k == 0)                                                                                  \
            loop_f64(gt_op_table[ID].partial[0], n, a, bb, y, out);                                  \
        else if (gt_op_table[ID].partial[1])                                                         \
            loop_f64(gt_op_table[ID].partial[1], n, a, bb, y, out);                                  \
        break;
#define CASE_f32(ID)                                                                                 \
    case ID:                                                                                         \
        if (k == 0)                                                                                  \
            loop_f32(gt_op_table[ID].partial[0], n, a, bb, y, out);                                  \
        else if (gt_op_table[ID].partial[1])                                                         \
            loop_f32(gt_op_table[ID].partial[1], n, a, bb, y, out);                                  \
        break;

static int from_table(const gt_op *op)
{
    return (unsigned)op->id < GT_OP_COUNT && op == &gt_op_table[op->id];
}

int gt_op_partials_f64(const gt_op *op, size_t n, const double *a, const double *b,
                       const double *y, double *da, double *db)
{
    if (!op || !a || !y || (op->arity == 2 && !b) || (op->arity == 1 && db))
        return GT_EINVAL;
    const double *bb = op->arity == 2 ? b : NULL;
    for (int k = 0; k < op->arity; k++) {
        double *out = k == 0 ? da : db;
        gt_partial_fn d = op->partial[k];
        if (!out)
            continue;
        if (!d) {
            memset(out, 0, n * sizeof *out);
            continue;
        }
        if (!from_table(op)) { /* an op not from the table: its own rule */
            loop_f64(d, n, a, bb, y, out);
            continue;
        }
        PARTIAL_LOOPS(f64)
    }
    return GT_OK;
}

int gt_op_partials_f32(const gt_op *op, size_t n, const float *a, const float *b,
                       const float *y, float *da, float *db)
{
    if (!op || !a || !y || (op->arity == 2 && !b) || (op->arity == 1 && db))
        return GT_EINVAL;
    const float *bb = op->arity == 2 ? b : NULL;
    for (int k = 0; k < op->arity; k++) {
        float *out = k == 0 ? da : db;
        gt_partial_fn d = op->partial[k];
        if (!out)
            continue;
        if (!d) {
            memset(out, 0, n * sizeof *out);
            continue;
        }
        if (!from_table(op)) {
            loop_f32(d, n, a, bb, y, out);
            continue;
        }
        PARTIAL_LOOPS(f32)
    }
    return GT_OK;
}
