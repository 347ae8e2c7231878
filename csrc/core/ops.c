/* ops.c: values and local partial derivatives of the elementwise ops (see ops.h). */
#include "ops.h"
#include "vmath.h"

#include <math.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

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

/* The partial loops. Each is instantiated once per op with the table's own rule as a
 * compile-time constant (gt_op_table[ID].partial[K] below), so the compiler inlines the rule into
 * the loop and vectorizes it where it can: through the pointer, every element cost an indirect
 * call (about 3 ns, more than the arithmetic of most partials and of the chain rule after them;
 * an exp node's VJP over 10^6 elements took 3.8x NumPy's exp). The rules themselves stay in the
 * table: nothing here knows what any op computes. */
/* GCC declined to inline the 41 instances of each loop (only their callers' size grew), which
 * left every element an indirect call again: the instances are forced inline. */
#if defined(__GNUC__)
#define GT_FORCE_INLINE static inline __attribute__((always_inline))
#else
#define GT_FORCE_INLINE static inline
#endif

GT_FORCE_INLINE void loop_f64(gt_partial_fn d, size_t n, const double *a, const double *b, const double *y,
                            double *out)
{
    if (b)
        for (size_t i = 0; i < n; i++)
            out[i] = d(a[i], b[i], y[i]);
    else
        for (size_t i = 0; i < n; i++)
            out[i] = d(a[i], 0.0, y[i]);
}

GT_FORCE_INLINE void loop_f32(gt_partial_fn d, size_t n, const float *a, const float *b, const float *y,
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

/* Loops with a vector form of the elementary function a rule calls: the partial of sin is cos
 * and that of cos is -sin (op_rules.h), which libm computes one call per element; vmath.h does
 * two lanes at once. The rules stay in op_rules.h; this only says which of them are exactly
 * vmath.h's sin or cos of `a` (times sign), and tests/c/test_vmath.c holds each loop to its
 * table rule on millions of points. Returns 1 when it filled out. */
static int vector_partial_f64(gt_op_id id, int k, size_t n, const double *a, double *out)
{
    if (k != 0)
        return 0;
    switch (id) {
    case GT_OP_SIN: /* cos(a) */
        gt_vm_cos_f64(n, a, out);
        return 1;
    case GT_OP_COS: /* -sin(a) */
        gt_vm_sin_f64(n, a, out);
        for (size_t i = 0; i < n; i++)
            out[i] = -out[i];
        return 1;
    default:
        return 0;
    }
}

/* The same for float32, through the double lanes: a float converts to double exactly, and the
 * double result rounded to float is the table rule's (float)cos((double)a) except where the
 * vector and libm doubles straddle a float rounding boundary (then one float ulp apart). */
static int vector_partial_f32(gt_op_id id, int k, size_t n, const float *a, float *out)
{
    if (k != 0 || (id != GT_OP_SIN && id != GT_OP_COS))
        return 0;
    enum { BLOCK = 256 };
    double in[BLOCK], res[BLOCK];
    for (size_t start = 0; start < n; start += BLOCK) {
        size_t m = n - start < BLOCK ? n - start : BLOCK;
        for (size_t i = 0; i < m; i++)
            in[i] = a[start + i];
        if (!vector_partial_f64(id, k, m, in, res))
            return 0; /* not reached: the same ids */
        for (size_t i = 0; i < m; i++)
            out[start + i] = (float)res[i];
    }
    return 1;
}

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
        if (vector_partial_f64(op->id, k, n, a, out))
            continue;
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
        if (vector_partial_f32(op->id, k, n, a, out))
            continue;
        PARTIAL_LOOPS(f32)
    }
    return GT_OK;
}

void gt_chain_block_f64(size_t n, double *d, const double *p, const double *g, int accumulate)
{
    size_t i = 0;
#if defined(__SSE2__)
    /* a zero on either side selects 0 (andnot with the mask), as gt_chain_f64 does */
    const __m128d zero = _mm_setzero_pd();
    for (; i + 2 <= n; i += 2) {
        __m128d pv = _mm_loadu_pd(p + i), gv = _mm_loadu_pd(g + i);
        __m128d z = _mm_or_pd(_mm_cmpeq_pd(pv, zero), _mm_cmpeq_pd(gv, zero));
        __m128d r = _mm_andnot_pd(z, _mm_mul_pd(pv, gv));
        if (accumulate)
            r = _mm_add_pd(_mm_loadu_pd(d + i), r);
        _mm_storeu_pd(d + i, r);
    }
#endif
    for (; i < n; i++)
        d[i] = accumulate ? d[i] + gt_chain_f64(p[i], g[i]) : gt_chain_f64(p[i], g[i]);
}

void gt_chain_block_f32(size_t n, float *d, const float *p, const float *g, int accumulate)
{
    size_t i = 0;
#if defined(__SSE2__)
    const __m128 zero = _mm_setzero_ps();
    for (; i + 4 <= n; i += 4) {
        __m128 pv = _mm_loadu_ps(p + i), gv = _mm_loadu_ps(g + i);
        __m128 z = _mm_or_ps(_mm_cmpeq_ps(pv, zero), _mm_cmpeq_ps(gv, zero));
        __m128 r = _mm_andnot_ps(z, _mm_mul_ps(pv, gv));
        if (accumulate)
            r = _mm_add_ps(_mm_loadu_ps(d + i), r);
        _mm_storeu_ps(d + i, r);
    }
#endif
    for (; i < n; i++)
        d[i] = accumulate ? d[i] + gt_chain_f32(p[i], g[i]) : gt_chain_f32(p[i], g[i]);
}
