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

/* second partials, as functions of (a, b, y) like the first: the names say which pair, d00 =
 * d2y/da2, d01 = d2y/dadb, d11 = d2y/db2. Each follows its first partial's kink rule (ops.h). */
static double mul_d01(double a, double b, double y) { (void)a; (void)b; (void)y; return 1.0; }
static double div_d01(double a, double b, double y) { (void)a; (void)y; return -1.0 / (b * b); }
static double div_d11(double a, double b, double y) { (void)a; return 2.0 * y / (b * b); }
static double pow_d00(double a, double b, double y)
{
    (void)y;
    /* b * (b - 1) is exactly 0 for b in {0, 1}: the partial is locally constant there */
    return b == 0.0 || b == 1.0 ? 0.0 : b * (b - 1.0) * pow(a, b - 2.0);
}
static double pow_d01(double a, double b, double y)
{
    (void)y;
    /* d/db of b * a**(b-1), equally d/da of a**b * log(a); 0 where a == 0, as d/db itself */
    if (a == 0.0)
        return 0.0;
    return b == 0.0 ? 1.0 / a : pow(a, b - 1.0) * (1.0 + b * log(a));
}
static double pow_d11(double a, double b, double y)
{
    (void)b;
    if (a == 0.0)
        return 0.0;
    double l = log(a);
    return y * l * l;
}
static double expm1_d00(double a, double b, double y) { (void)a; (void)b; return y + 1.0; }
static double exp2_d00(double a, double b, double y) { (void)a; (void)b; return y * LN2 * LN2; }
static double log_d00(double a, double b, double y) { (void)b; (void)y; return -1.0 / (a * a); }
static double log1p_d00(double a, double b, double y) { (void)b; (void)y; return -1.0 / ((1.0 + a) * (1.0 + a)); }
static double log2_d00(double a, double b, double y) { (void)b; (void)y; return -1.0 / (a * a * LN2); }
static double log10_d00(double a, double b, double y) { (void)b; (void)y; return -1.0 / (a * a * LN10); }
static double sqrt_d00(double a, double b, double y) { (void)a; (void)b; return -0.25 / (y * y * y); }
static double cbrt_d00(double a, double b, double y) { (void)a; (void)b; return -2.0 / (9.0 * y * y * y * y * y); }
static double two(double a, double b, double y) { (void)a; (void)b; (void)y; return 2.0; }
static double reciprocal_d00(double a, double b, double y) { (void)a; (void)b; return 2.0 * y * y * y; }
static double neg_y(double a, double b, double y) { (void)a; (void)b; return -y; }
static double tan_d00(double a, double b, double y) { (void)a; (void)b; return 2.0 * y * (1.0 + y * y); }
static double arcsin_d00(double a, double b, double y)
{
    (void)b; (void)y;
    double r = 1.0 - a * a;
    return a / (r * sqrt(r));
}
static double arccos_d00(double a, double b, double y) { return -arcsin_d00(a, b, y); }
static double arctan_d00(double a, double b, double y)
{
    (void)b; (void)y;
    double r = 1.0 + a * a;
    return -2.0 * a / (r * r);
}
static double arctan2_d00(double a, double b, double y) { (void)y; double r = a * a + b * b; return -2.0 * a * b / (r * r); }
static double arctan2_d01(double a, double b, double y) { (void)y; double r = a * a + b * b; return (a * a - b * b) / (r * r); }
static double arctan2_d11(double a, double b, double y) { (void)y; double r = a * a + b * b; return 2.0 * a * b / (r * r); }
static double tanh_d00(double a, double b, double y) { (void)a; (void)b; return -2.0 * y * (1.0 - y * y); }
static double arcsinh_d00(double a, double b, double y)
{
    (void)b; (void)y;
    double r = a * a + 1.0;
    return -a / (r * sqrt(r));
}
static double arccosh_d00(double a, double b, double y)
{
    (void)b; (void)y;
    double r = a * a - 1.0;
    return -a / (r * sqrt(r));
}
static double arctanh_d00(double a, double b, double y)
{
    (void)b; (void)y;
    double r = 1.0 - a * a;
    return 2.0 * a / (r * r);
}
/* hypot: 0 where y == 0, as its first partials */
static double hypot_d00(double a, double b, double y) { (void)a; return y == 0.0 ? 0.0 : b * b / (y * y * y); }
static double hypot_d01(double a, double b, double y) { return y == 0.0 ? 0.0 : -a * b / (y * y * y); }
static double hypot_d11(double a, double b, double y) { (void)b; return y == 0.0 ? 0.0 : a * a / (y * y * y); }
/* logaddexp: with p = exp(a - y) and q = exp(b - y) (p + q = 1), d2y/da2 = d2y/db2 = pq = -d2y/dadb */
static double logaddexp_pq(double a, double b, double y) { return exp(a - y) * exp(b - y); }
static double logaddexp_mpq(double a, double b, double y) { return -logaddexp_pq(a, b, y); }
static double logaddexp2_pq(double a, double b, double y) { return LN2 * exp2(a - y) * exp2(b - y); }
static double logaddexp2_mpq(double a, double b, double y) { return -logaddexp2_pq(a, b, y); }

#define SMOOTH "smooth on its domain"
/* OP1(id, name, d/da, d2/da2, rule); OP2(id, name, d/da, d/db, d2/da2, d2/dadb, d2/db2, rule);
 * NULL: identically zero */
#define OP1(ID, NAME, D0, D00, RULE) [ID] = {ID, #NAME, 1, v_##NAME, {D0, NULL}, RULE, {D00, NULL, NULL}}
#define OP2(ID, NAME, D0, D1, D00, D01, D11, RULE) \
    [ID] = {ID, #NAME, 2, v_##NAME, {D0, D1}, RULE, {D00, D01, D11}}

const gt_op gt_op_table[GT_OP_COUNT] = {
    OP2(GT_OP_ADD, add, one, one, NULL, NULL, NULL, "linear"),
    OP2(GT_OP_SUBTRACT, subtract, one, minus_one, NULL, NULL, NULL, "linear"),
    OP2(GT_OP_MULTIPLY, multiply, mul_d0, mul_d1, NULL, mul_d01, NULL, "bilinear"),
    OP2(GT_OP_DIVIDE, divide, div_d0, div_d1, NULL, div_d01, div_d11, SMOOTH),
    OP2(GT_OP_POWER, power, pow_d0, pow_d1, pow_d00, pow_d01, pow_d11, "d/da is 0 where b == 0; d/db is 0 where a == 0"),
    OP1(GT_OP_NEGATIVE, negative, minus_one, NULL, "linear"),
    OP1(GT_OP_POSITIVE, positive, one, NULL, "linear"),
    OP1(GT_OP_ABS, abs, abs_d0, NULL, "abs'(0) = 0"),
    OP1(GT_OP_SIGN, sign, NULL, NULL, "piecewise constant: zero gradient"),
    OP1(GT_OP_EXP, exp, exp_d0, exp_d0, SMOOTH),
    OP1(GT_OP_EXPM1, expm1, expm1_d0, expm1_d00, SMOOTH),
    OP1(GT_OP_EXP2, exp2, exp2_d0, exp2_d00, SMOOTH),
    OP1(GT_OP_LOG, log, log_d0, log_d00, "log'(0) = inf"),
    OP1(GT_OP_LOG1P, log1p, log1p_d0, log1p_d00, SMOOTH),
    OP1(GT_OP_LOG2, log2, log2_d0, log2_d00, SMOOTH),
    OP1(GT_OP_LOG10, log10, log10_d0, log10_d00, SMOOTH),
    OP1(GT_OP_SQRT, sqrt, sqrt_d0, sqrt_d00, "sqrt'(0) = inf"),
    OP1(GT_OP_CBRT, cbrt, cbrt_d0, cbrt_d00, "cbrt'(0) = inf"),
    OP1(GT_OP_SQUARE, square, square_d0, two, SMOOTH),
    OP1(GT_OP_RECIPROCAL, reciprocal, reciprocal_d0, reciprocal_d00, SMOOTH),
    OP1(GT_OP_SIN, sin, sin_d0, neg_y, SMOOTH),
    OP1(GT_OP_COS, cos, cos_d0, neg_y, SMOOTH),
    OP1(GT_OP_TAN, tan, tan_d0, tan_d00, SMOOTH),
    OP1(GT_OP_ARCSIN, arcsin, arcsin_d0, arcsin_d00, SMOOTH),
    OP1(GT_OP_ARCCOS, arccos, arccos_d0, arccos_d00, SMOOTH),
    OP1(GT_OP_ARCTAN, arctan, arctan_d0, arctan_d00, SMOOTH),
    OP2(GT_OP_ARCTAN2, arctan2, arctan2_d0, arctan2_d1, arctan2_d00, arctan2_d01, arctan2_d11, SMOOTH),
    OP1(GT_OP_SINH, sinh, sinh_d0, exp_d0, SMOOTH),
    OP1(GT_OP_COSH, cosh, cosh_d0, exp_d0, SMOOTH),
    OP1(GT_OP_TANH, tanh, tanh_d0, tanh_d00, SMOOTH),
    OP1(GT_OP_ARCSINH, arcsinh, arcsinh_d0, arcsinh_d00, SMOOTH),
    OP1(GT_OP_ARCCOSH, arccosh, arccosh_d0, arccosh_d00, SMOOTH),
    OP1(GT_OP_ARCTANH, arctanh, arctanh_d0, arctanh_d00, SMOOTH),
    OP2(GT_OP_HYPOT, hypot, hypot_d0, hypot_d1, hypot_d00, hypot_d01, hypot_d11, "hypot'(0, 0) = (0, 0)"),
    OP2(GT_OP_MAXIMUM, maximum, max_d0, max_d1, NULL, NULL, NULL, "ties split the gradient 0.5/0.5; NaN propagates"),
    OP2(GT_OP_MINIMUM, minimum, min_d0, min_d1, NULL, NULL, NULL, "ties split the gradient 0.5/0.5; NaN propagates"),
    OP2(GT_OP_FMAX, fmax, fmax_d0, fmax_d1, NULL, NULL, NULL, "ties split 0.5/0.5; the non-NaN argument takes it all"),
    OP2(GT_OP_FMIN, fmin, fmin_d0, fmin_d1, NULL, NULL, NULL, "ties split 0.5/0.5; the non-NaN argument takes it all"),
    OP2(GT_OP_LOGADDEXP, logaddexp, logaddexp_d0, logaddexp_d1, logaddexp_pq, logaddexp_mpq, logaddexp_pq, SMOOTH),
    OP2(GT_OP_LOGADDEXP2, logaddexp2, logaddexp2_d0, logaddexp2_d1, logaddexp2_pq, logaddexp2_mpq, logaddexp2_pq, SMOOTH),
    OP2(GT_OP_REMAINDER, remainder, one, remainder_d1, NULL, NULL, NULL, "jumps where floor(a/b) changes are ignored"),
    OP2(GT_OP_FMOD, fmod, one, fmod_d1, NULL, NULL, NULL, "jumps where trunc(a/b) changes are ignored"),
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
