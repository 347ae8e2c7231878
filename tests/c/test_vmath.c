/* Tests of csrc/core/vmath.h (the vectorized sin/cos of the CPU partial loops) against libm, and
 * of the op table's partial loops that use it against the table's own scalar rules. Built and
 * run by tests/test_vmath_c.py, under ASan/UBSan where available. Prints the largest error seen
 * and "N checks, M failed"; exits non-zero on any failure. */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* M_PI and friends */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "vmath.h"

#include "check.h"

/* the tolerance against libm: libm is within 1 ulp of the truth, vmath.h claims 1 */
#define MAX_ULP 2.0

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t next_u64(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static double uniform(double lo, double hi) { return lo + (hi - lo) * ((double)(next_u64() >> 11) * 0x1p-53); }

/* doubles mapped to integers in their order, so that a difference counts the doubles between */
static int64_t ordered(double v)
{
    int64_t i;
    memcpy(&i, &v, sizeof i);
    return i < 0 ? INT64_MIN - i : i;
}

/* distance in ulps; both NaN is 0, one NaN is infinite; +0 and -0 are 0 apart (the sign of a
 * zero is checked separately) */
static double ulps(double got, double want)
{
    if (isnan(got) || isnan(want))
        return isnan(got) && isnan(want) ? 0.0 : INFINITY;
    int64_t a = ordered(got), b = ordered(want);
    return a > b ? (double)((uint64_t)a - (uint64_t)b) : (double)((uint64_t)b - (uint64_t)a);
}

static double worst_sin, worst_cos, worst_sin_x, worst_cos_x;
static long n_checked;

/* compares vmath with libm on x[0..n), both functions; also as one whole array, so that lanes
 * pair up differently, and for the odd tail */
static void compare(size_t n, const double *x)
{
    double *s = malloc(n * sizeof *s), *c = malloc(n * sizeof *c);
    CHECK(s && c);
    if (!s || !c) {
        free(s);
        free(c);
        return;
    }
    int bad = 0;
    /* each width the build has, the one this processor runs last (as the callers do) */
    for (int width = 0; width < 3; width++) {
        int ran = width == 2;
#if GT_VMATH_VECTOR
        if (width == 0) {
            ran = 1;
            gt_vmk_sincos_f64_w2(n, x, s, 0);
            gt_vmk_sincos_f64_w2(n, x, c, 1);
        }
#if GT_VMATH_AVX2
        if (width == 1 && gt_vm_uses_avx2()) {
            ran = 1;
            gt_vmk_sincos_f64_w4(n, x, s, 0);
            gt_vmk_sincos_f64_w4(n, x, c, 1);
        }
#endif
#endif
        if (width == 2) {
            gt_vm_sin_f64(n, x, s);
            gt_vm_cos_f64(n, x, c);
        }
        if (!ran)
            continue;
        for (size_t i = 0; i < n; i++) {
        double es = ulps(s[i], sin(x[i])), ec = ulps(c[i], cos(x[i]));
        if (es > worst_sin) {
            worst_sin = es;
            worst_sin_x = x[i];
        }
        if (ec > worst_cos) {
            worst_cos = ec;
            worst_cos_x = x[i];
        }
        if ((es > MAX_ULP || ec > MAX_ULP) && bad++ < 5)
            fprintf(stderr, "width %d, x = %a: sin %a (libm %a), cos %a (libm %a)\n", width, x[i], s[i],
                    sin(x[i]), c[i], cos(x[i]));
    }
    }
    n_checked += (long)n;
    CHECK(bad == 0);
    free(s);
    free(c);
}

static void test_special_values(void)
{
    const double x[] = {0.0, -0.0, 0x1p-1074, -0x1p-1074, DBL_MIN, -DBL_MIN, 0x1p-1030, 0x1p-27,
                        nextafter(0x1p-27, 0.0), -0x1p-27, 0x1p-26, 1e-10, 0.5, 1.0, -1.0, M_PI_4,
                        M_PI_2, -M_PI_2, M_PI, 2 * M_PI, 0x1p20, nextafter(0x1p20, 0.0), -0x1p20,
                        nextafter(-0x1p20, 0.0), 1e6, 1e10, 1e22, 0x1p1023, DBL_MAX, -DBL_MAX,
                        INFINITY, -INFINITY, NAN, -NAN};
    size_t n = sizeof x / sizeof x[0];
    compare(n, x);
    /* exact results where libm's are exact: the sign of zero, tiny arguments, specials */
    double s[sizeof x / sizeof x[0]], c[sizeof x / sizeof x[0]];
    gt_vm_sin_f64(n, x, s);
    gt_vm_cos_f64(n, x, c);
    for (size_t i = 0; i < n; i++) {
        if (fabs(x[i]) < 0x1p-27) {
            CHECK(memcmp(&s[i], &x[i], sizeof s[i]) == 0); /* sin(x) == x, -0 kept */
            CHECK(c[i] == 1.0);
        }
        if (!isfinite(x[i]))
            CHECK(isnan(s[i]) && isnan(c[i]));
    }
    /* every short length, every offset: the odd tail and the pairs */
    for (size_t len = 0; len <= 7; len++)
        for (size_t off = 0; off + len <= n; off++)
            compare(len, x + off);
}

static void test_ranges(void)
{
    enum { N = 200001 }; /* odd: the tail lane too */
    double *x = malloc(N * sizeof *x);
    CHECK(x != NULL);
    if (!x)
        return;
    const double bounds[] = {1e-8, 0.1, M_PI_4, 1.0, 4.0, 10.0, 100.0, 1e4, 1e5, 0x1p20 * 1.5, 1e9, 1e300};
    for (size_t b = 0; b < sizeof bounds / sizeof bounds[0]; b++) {
        for (size_t i = 0; i < N; i++)
            x[i] = uniform(-bounds[b], bounds[b]);
        compare(N, x);
    }
    /* any bit pattern: huge, subnormal, NaN payloads, infinities */
    for (size_t i = 0; i < N; i++) {
        uint64_t bits = next_u64();
        memcpy(&x[i], &bits, sizeof x[i]);
    }
    compare(N, x);
    /* magnitudes spread over every binade from 2^-1074 to 2^30 */
    for (size_t i = 0; i < N; i++)
        x[i] = ldexp(uniform(1.0, 2.0), (int)(next_u64() % 1105) - 1075) * (next_u64() & 1 ? 1 : -1);
    compare(N, x);
    free(x);
}

/* arguments next to multiples of pi/2, where the reduction cancels most bits: the doubles
 * nearest k pi/2 and their neighbours, k up to 2^20 * 2 / pi */
static void test_near_multiples(void)
{
    enum { K = 667000, W = 2 };
    size_t n = (size_t)K * (2 * W + 1);
    double *x = malloc(n * sizeof *x);
    CHECK(x != NULL);
    if (!x)
        return;
    size_t m = 0;
    for (long k = 1; k <= K; k++) {
        double c = (double)((long double)k * 1.570796326794896619231321691639751442L);
        double lo = c, hi = c;
        x[m++] = c;
        for (int w = 0; w < W; w++) {
            lo = nextafter(lo, 0.0);
            hi = nextafter(hi, INFINITY);
            x[m++] = lo;
            x[m++] = (k & 1) ? -hi : hi;
        }
    }
    compare(m, x);
    free(x);
}

/* the table's partial loops for sin and cos go through vmath.h (ops.c): they must agree with
 * the table's scalar rules, which stay the definition */
static void test_partial_loops(void)
{
    enum { N = 4099 };
    double *a = malloc(N * sizeof *a), *y = malloc(N * sizeof *y), *d = malloc(N * sizeof *d);
    CHECK(a && y && d);
    if (!a || !y || !d) {
        free(a);
        free(y);
        free(d);
        return;
    }
    const int ids[] = {GT_OP_SIN, GT_OP_COS};
    for (size_t t = 0; t < 2; t++) {
        const gt_op *op = &gt_op_table[ids[t]];
        for (size_t i = 0; i < N; i++) {
            a[i] = i % 97 == 0 ? ldexp(1.0, (int)(i % 2100) - 1074) : uniform(-3e6, 3e6) / (double)(1 + i % 1000);
            y[i] = op->value(a[i], 0.0);
        }
        a[1] = INFINITY;
        a[2] = NAN;
        a[3] = -0.0;
        for (size_t len = 0; len <= N; len += len < 9 ? 1 : 1021) {
            memset(d, 0, N * sizeof *d);
            CHECK(gt_op_partials_f64(op, len, a, NULL, y, d, NULL) == GT_OK);
            int bad = 0;
            for (size_t i = 0; i < len; i++)
                if (ulps(d[i], op->partial[0](a[i], 0.0, y[i])) > MAX_ULP && bad++ < 5)
                    fprintf(stderr, "%s' at %a: %a, rule %a\n", op->name, a[i], d[i], op->partial[0](a[i], 0.0, y[i]));
            CHECK(bad == 0);
            for (size_t i = len; i < N; i++)
                bad += d[i] != 0.0; /* nothing written past len */
            CHECK(bad == 0);
        }
    }
    free(a);
    free(y);
    free(d);
}

/* float32 partials of sin and cos go through the double lanes: within one float ulp of the
 * table rule, rounded from double (equal but where the doubles straddle a float rounding point) */
static void test_partial_loops_f32(void)
{
    enum { N = 4099 };
    float *a = malloc(N * sizeof *a), *y = malloc(N * sizeof *y), *d = malloc(N * sizeof *d);
    CHECK(a && y && d);
    if (!a || !y || !d) {
        free(a);
        free(y);
        free(d);
        return;
    }
    const int ids[] = {GT_OP_SIN, GT_OP_COS};
    long unequal = 0, total = 0;
    for (size_t t = 0; t < 2; t++) {
        const gt_op *op = &gt_op_table[ids[t]];
        for (size_t i = 0; i < N; i++) {
            a[i] = i % 97 == 0 ? ldexpf(1.0f, (int)(i % 270) - 149) : (float)(uniform(-3e6, 3e6) / (double)(1 + i % 1000));
            y[i] = (float)op->value(a[i], 0.0);
        }
        a[1] = INFINITY;
        a[2] = NAN;
        a[3] = -0.0f;
        for (size_t len = 0; len <= N; len += len < 9 ? 1 : 1021) {
            memset(d, 0, N * sizeof *d);
            CHECK(gt_op_partials_f32(op, len, a, NULL, y, d, NULL) == GT_OK);
            int bad = 0;
            for (size_t i = 0; i < len; i++) {
                float rule = (float)op->partial[0](a[i], 0.0, y[i]);
                int same = d[i] == rule || (isnan(d[i]) && isnan(rule));
                int near = same || nextafterf(rule, INFINITY) == d[i] || nextafterf(rule, -INFINITY) == d[i];
                unequal += !same;
                total++;
                if (!near && bad++ < 5)
                    fprintf(stderr, "%s' (float32) at %a: %a, rule %a\n", op->name, (double)a[i], (double)d[i],
                            (double)rule);
            }
            CHECK(bad == 0);
            for (size_t i = len; i < N; i++)
                bad += d[i] != 0.0f;
            CHECK(bad == 0);
        }
    }
    printf("float32 partials: %ld of %ld one ulp from the rule, none further\n", unequal, total);
    free(a);
    free(y);
    free(d);
}

int main(void)
{
    test_special_values();
    test_ranges();
    test_near_multiples();
    test_partial_loops();
    test_partial_loops_f32();
    printf("vector path: %s; %ld points (each width); largest error against libm: sin %.0f ulp (x = %a), cos %.0f ulp (x = %a)\n",
           !GT_VMATH_VECTOR ? "no (libm)" : gt_vm_uses_avx2() ? "2 and 4 lanes (AVX2)" : "2 lanes", n_checked, worst_sin, worst_sin_x, worst_cos, worst_cos_x);
    return check_summary();
}
