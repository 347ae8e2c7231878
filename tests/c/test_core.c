/* Tests of the C core alone (no Python): the op table, finite differences, allocation failure
 * handling and the guard. Built and run by tests/test_core_c.py through tests/_cbuild.py, under
 * ASan/UBSan where available. Prints "N checks, M failed" and exits non-zero on any failure. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fd.h"
#include "guard.h"
#include "ops.h"

#include "check.h"

/* every op has a name, a value rule, a kink rule, and a partial for each argument it is
 * differentiable in; partials agree with central differences of the value rule */
static void test_op_table(void)
{
    for (int i = 0; i < GT_OP_COUNT; i++) {
        const gt_op *op = &gt_op_table[i];
        CHECK(op->id == (gt_op_id)i);
        CHECK(op->name && op->value && op->kink_rule);
        CHECK(op->arity == 1 || op->arity == 2);
        CHECK(gt_op_lookup(op->name) == op);
        if (op->arity == 1)
            CHECK(op->partial[1] == NULL);
        double a = 0.37, b = 0.61; /* inside every domain, away from kinks */
        if (strcmp(op->name, "arccosh") == 0)
            a = 1.37;
        double y = op->value(a, b);
        for (int k = 0; k < op->arity; k++) {
            double h = 1e-6, fp, fm;
            if (k == 0) {
                fp = op->value(a + h, b);
                fm = op->value(a - h, b);
            } else {
                fp = op->value(a, b + h);
                fm = op->value(a, b - h);
            }
            double numeric = (fp - fm) / (2 * h);
            double analytic = op->partial[k] ? op->partial[k](a, b, y) : 0.0;
            if (fabs(numeric - analytic) > 1e-6 * (1 + fabs(numeric)))
                fprintf(stderr, "op %s arg %d: analytic %g numeric %g\n", op->name, k, analytic, numeric);
            CHECK(fabs(numeric - analytic) <= 1e-6 * (1 + fabs(numeric)));
        }
    }
    CHECK(gt_op_lookup("no_such_op") == NULL);
    const gt_op *mx = gt_op_lookup("maximum");
    CHECK(mx->partial[0](1.0, 1.0, 1.0) == 0.5 && mx->partial[1](1.0, 1.0, 1.0) == 0.5);
    const gt_op *ab = gt_op_lookup("abs");
    CHECK(ab->partial[0](0.0, 0.0, 0.0) == 0.0);
    double a[3] = {1, 2, 3}, yv[3], d[3];
    const gt_op *sq = gt_op_lookup("square");
    for (int i = 0; i < 3; i++)
        yv[i] = sq->value(a[i], 0);
    CHECK(gt_op_partials_f64(sq, 3, a, NULL, yv, d, NULL) == GT_OK && d[2] == 6.0);
    CHECK(gt_op_partials_f64(sq, 3, a, NULL, yv, d, d) == GT_EINVAL);
    CHECK(gt_op_partials_f64(mx, 3, a, NULL, yv, d, NULL) == GT_EINVAL);
}

/* first partial k of `op` at (a, b), its y recomputed from the value rule */
static double first_at(const gt_op *op, int k, double a, double b)
{
    return op->partial[k] ? op->partial[k](a, b, op->value(a, b)) : 0.0;
}

/* every second partial agrees with a central difference of the first partial it differentiates,
 * at several points per op (inside each domain, away from kinks), in both orders of the mixed
 * one; the kink conventions of ops.h at their points; unary ops have no mixed or b-b entry */
static void test_op_second_partials(void)
{
    static const double pts[][2] = {{0.37, 0.61}, {-0.42, 1.3}, {0.8, -0.55}, {1.9, 2.4}, {0.05, 0.9}};
    for (int i = 0; i < GT_OP_COUNT; i++) {
        const gt_op *op = &gt_op_table[i];
        if (op->arity == 1)
            CHECK(gt_op_second(op, 0, 1, 0.3, 0.0, 0.3) == 0.0 && gt_op_second(op, 1, 1, 0.3, 0.0, 0.3) == 0.0);
        for (size_t p = 0; p < sizeof pts / sizeof pts[0]; p++) {
            double a = pts[p][0], b = pts[p][1];
            const char *n = op->name;
            if (!strcmp(n, "arccosh"))
                a = 1.2 + fabs(a);
            if (!strcmp(n, "log") || !strcmp(n, "log2") || !strcmp(n, "log10") || !strcmp(n, "sqrt") ||
                !strcmp(n, "power") || !strcmp(n, "cbrt"))
                a = 0.3 + fabs(a);
            if (!strcmp(n, "arcsin") || !strcmp(n, "arccos") || !strcmp(n, "arctanh"))
                a = 0.9 * sin(a);
            if (!strcmp(n, "tan"))
                a = 0.5 * a;
            if (!strcmp(n, "remainder") || !strcmp(n, "fmod"))
                b = 0.77; /* away from the quotient's jumps at these a */
            if (!strcmp(n, "maximum") || !strcmp(n, "minimum") || !strcmp(n, "fmax") || !strcmp(n, "fmin"))
                b = a + 0.3;
            double y = op->value(a, b), h = 1e-5;
            for (int k = 0; k < op->arity; k++) {
                for (int j = 0; j < op->arity; j++) {
                    double fp = j == 0 ? first_at(op, k, a + h, b) : first_at(op, k, a, b + h);
                    double fm = j == 0 ? first_at(op, k, a - h, b) : first_at(op, k, a, b - h);
                    double numeric = (fp - fm) / (2 * h);
                    double analytic = gt_op_second(op, k, j, a, b, y);
                    int ok = fabs(numeric - analytic) <= 1e-5 * (1 + fabs(numeric));
                    if (!ok)
                        fprintf(stderr, "op %s d2/(%d,%d) at (%g, %g): analytic %.10g numeric %.10g\n",
                                n, k, j, a, b, analytic, numeric);
                    CHECK(ok);
                    if (gt_rule_second_is_zero_at(op->id, k, j))
                        CHECK(analytic == 0.0);
                }
            }
        }
    }
    const gt_op *pw = gt_op_lookup("power"), *hy = gt_op_lookup("hypot"), *ab = gt_op_lookup("abs");
    CHECK(gt_op_second(pw, 0, 0, 0.0, 2.0, 0.0) == 2.0);  /* (x**2)'' = 2 at x = 0 */
    CHECK(gt_op_second(pw, 0, 0, 0.0, 3.0, 0.0) == 0.0);  /* (x**3)'' = 6x */
    CHECK(gt_op_second(pw, 0, 0, 0.0, 1.0, 0.0) == 0.0);  /* x**1: no 0 * inf */
    CHECK(gt_op_second(pw, 0, 1, 0.0, 2.0, 0.0) == 0.0);  /* d/db is 0 where a == 0 */
    CHECK(gt_op_second(pw, 1, 1, 0.0, 2.0, 0.0) == 0.0);
    CHECK(gt_op_second(pw, 0, 1, 2.0, 0.0, 1.0) == 0.5);  /* b == 0: 1/a */
    CHECK(isinf(gt_op_second(pw, 0, 0, 0.0, 0.5, 0.0)));  /* sqrt''(0): the one-sided limit */
    CHECK(gt_op_second(hy, 0, 0, 0.0, 0.0, 0.0) == 0.0 && gt_op_second(hy, 0, 1, 0.0, 0.0, 0.0) == 0.0);
    CHECK(gt_op_second_is_zero(ab) && gt_op_second_is_zero(gt_op_lookup("maximum")));
    CHECK(!gt_op_second_is_zero(gt_op_lookup("multiply")));
    CHECK(isnan(gt_rule_second(GT_OP_COUNT, 0, 0, 1.0, 1.0, 1.0))); /* an unknown id: never a silent 0 */
}

/* f(x) = sum_i c_i x_i^3, gradient 3 c_i x_i^2 */
typedef struct cubic { const double *x; size_t n; int fail_after; int calls; } cubic;

static int eval_cubic(void *ctx, double *value)
{
    cubic *c = ctx;
    if (c->fail_after >= 0 && c->calls >= c->fail_after)
        return -1;
    c->calls++;
    double s = 0;
    for (size_t i = 0; i < c->n; i++)
        s += (double)(i + 1) * c->x[i] * c->x[i] * c->x[i];
    *value = s;
    return 0;
}

static void test_fd(void)
{
    double x[4] = {0.5, -1.25, 2.0, 0.0}, orig[4], grad[4], err[4];
    memcpy(orig, x, sizeof x);
    cubic c = {x, 4, -1, 0};
    gt_fd_problem p = {x, GT_FLOAT64, 4, eval_cubic, &c, NULL};
    for (int method = 0; method < 3; method++) {
        for (int rich = 0; rich < 2; rich++) {
            gt_fd_options o = {.method = (gt_fd_method)method, .richardson = rich};
            double f0;
            CHECK(gt_fd_eval(&p, &f0) == GT_OK);
            size_t bad = 99;
            CHECK(gt_fd_gradient_range(&p, &o, f0, 0, 4, grad, err, &bad) == GT_OK);
            CHECK(bad == 0);
            double tol = method == GT_FD_CENTRAL ? (rich ? 1e-9 : 1e-7) : (rich ? 1e-5 : 1e-4);
            for (int i = 0; i < 4; i++) {
                double exact = 3.0 * (i + 1) * orig[i] * orig[i];
                CHECK(fabs(grad[i] - exact) <= tol * (1 + fabs(exact)));
                CHECK(err[i] >= 0);
            }
            CHECK(memcmp(x, orig, sizeof x) == 0); /* restored bit for bit */
        }
    }
    /* a failing callback stops the loop, restores x and reports GT_ECALLBACK */
    c.fail_after = 3;
    c.calls = 0;
    gt_fd_options o = {.method = GT_FD_CENTRAL, .richardson = 1};
    CHECK(gt_fd_gradient_range(&p, &o, 0.0, 0, 4, grad, err, NULL) == GT_ECALLBACK);
    CHECK(memcmp(x, orig, sizeof x) == 0);
    c.fail_after = -1;
    /* bad arguments */
    CHECK(gt_fd_gradient_range(&p, &o, 0.0, 3, 2, grad, err, NULL) == GT_EINVAL);
    CHECK(gt_fd_gradient_range(&p, &o, 0.0, 0, 5, grad, err, NULL) == GT_EINVAL);
    CHECK(gt_fd_gradient_range(NULL, &o, 0.0, 0, 1, grad, err, NULL) == GT_EINVAL);
    /* directional: d = <grad, v_j> for the regenerated directions v_j */
    double dd[2], derr[2], f0, v[4];
    CHECK(gt_fd_eval(&p, &f0) == GT_OK);
    CHECK(gt_fd_directional(&p, &o, f0, 7, 2, dd, derr) == GT_OK);
    for (int j = 0; j < 2; j++) {
        gt_fd_direction(7, (uint64_t)j, 4, NULL, orig, GT_FLOAT64, v);
        double exact = 0;
        for (int i = 0; i < 4; i++) {
            exact += v[i] * 3.0 * (i + 1) * orig[i] * orig[i];
            /* scale: |x_i|, or 1 where x_i == 0, times the O(1) accessor's component */
            double s = orig[i] != 0 ? fabs(orig[i]) : 1.0, z = gt_fd_direction_component(7, (uint64_t)j, (size_t)i);
            CHECK(v[i] == s * z && fabs(z) >= 0.5 && fabs(z) < 1.5);
        }
        CHECK(fabs(dd[j] - exact) <= 3 * derr[j] + 1e-12 && derr[j] < 1e-9);
    }
    CHECK(memcmp(x, orig, sizeof x) == 0);
    /* an allocation failure is reported, x untouched, nothing leaked */
    long live = gt_alloc_live();
    gt_alloc_fail_after(1);
    CHECK(gt_fd_directional(&p, &o, f0, 7, 2, dd, derr) == GT_ENOMEM);
    gt_alloc_fail_after(0);
    CHECK(gt_alloc_live() == live);
    CHECK(memcmp(x, orig, sizeof x) == 0);
    /* listed components, one-sided ones too, agree with the range */
    size_t idx[2] = {2, 0};
    double sel[2], sel_err[2];
    for (int method = 0; method < 3; method++) {
        o.method = (gt_fd_method)method;
        CHECK(gt_fd_gradient_indices(&p, &o, f0, idx, 2, sel, sel_err, NULL) == GT_OK);
        for (int j = 0; j < 2; j++) {
            double exact = 3.0 * (idx[j] + 1) * orig[idx[j]] * orig[idx[j]];
            CHECK(fabs(sel[j] - exact) <= 3 * sel_err[j] + 1e-12);
        }
    }
    size_t out_of_range = 4;
    CHECK(gt_fd_gradient_indices(&p, &o, f0, &out_of_range, 1, sel, sel_err, NULL) == GT_EINVAL);
    CHECK(memcmp(x, orig, sizeof x) == 0);
}

/* f = exp(a x) + noise of a known level: the noise probe finds it, and the adaptive rule's bound
 * holds the actual error of the value it returns */
typedef struct noisy {
    double *x;
    double a, level;
    unsigned long long state;
} noisy;

static int eval_noisy(void *ctx, double *value)
{
    noisy *c = ctx;
    c->state = c->state * 6364136223846793005ull + 1442695040888963407ull;
    double u = (double)(c->state >> 11) * 0x1.0p-53 * 2.0 - 1.0; /* uniform in [-1, 1] */
    *value = exp(c->a * c->x[0]) + c->level * u;
    return 0;
}

static void test_fd_adaptive(void)
{
    for (int s = 0; s < 3; s++) {
        double x0 = s == 2 ? 0.1 : 0.3 + 0.7 * s, x[1] = {x0}, a = s == 2 ? 40.0 : 1.0, level = s == 0 ? 0.0 : 1e-9;
        noisy c = {x, a, level, 12345u + (unsigned)s};
        gt_fd_problem p = {x, GT_FLOAT64, 1, eval_noisy, &c, NULL};
        double sigma;
        size_t evals = 0;
        CHECK(gt_fd_noise(&p, 3, &sigma, &evals) == GT_OK);
        CHECK(evals == 24 && x[0] == x0);
        /* uniform noise of half-width L has standard deviation L / sqrt(3) */
        if (level > 0)
            CHECK(sigma > 0.3 * level && sigma < 1.5 * level);
        gt_fd_options o = {.method = GT_FD_CENTRAL, .richardson = 1, .noise = GT_FD_NOISE_FACTOR * sigma};
        double f0, g, e;
        CHECK(gt_fd_eval(&p, &f0) == GT_OK);
        CHECK(gt_fd_gradient_range(&p, &o, f0, 0, 1, &g, &e, NULL) == GT_OK);
        double exact = a * exp(a * x[0]);
        CHECK(fabs(g - exact) <= e);
        CHECK(e < (level > 0 ? 1e-3 : 1e-12) * exact);
    }
}

static int eval_f32(void *ctx, double *value)
{
    const float *x = *(float **)ctx;
    *value = (double)x[0] * x[0] + 3.0 * x[1];
    return 0;
}

static void test_fd_float32(void)
{
    float x[2] = {1.5f, -0.75f};
    double grad[2];
    /* f = x0^2 + 3 x1, evaluated through a float working vector */
    float *ctx = x;
    gt_fd_problem p = {x, GT_FLOAT32, 2, eval_f32, &ctx, NULL};
    gt_fd_options o = {.method = GT_FD_CENTRAL, .richardson = 1};
    double f0;
    CHECK(gt_fd_eval(&p, &f0) == GT_OK);
    CHECK(gt_fd_gradient_range(&p, &o, f0, 0, 2, grad, NULL, NULL) == GT_OK);
    CHECK(fabs(grad[0] - 3.0) < 1e-3 && fabs(grad[1] - 3.0) < 1e-3);
    CHECK(x[0] == 1.5f && x[1] == -0.75f);
}

static int guarded_ok(void *ctx, void *out, size_t cap, size_t *len)
{
    (void)ctx;
    gt_guard_stage("writing");
    const char msg[] = "hello from the child";
    size_t n = sizeof msg < cap ? sizeof msg : cap;
    memcpy(out, msg, n);
    *len = n;
    return 7;
}

static int guarded_crash(void *ctx, void *out, size_t cap, size_t *len)
{
    (void)out;
    (void)cap;
    (void)len;
    gt_guard_stage("gradient");
    if (ctx)
        raise(SIGSEGV);
    else
        abort();
    return 0;
}

static int guarded_hang(void *ctx, void *out, size_t cap, size_t *len)
{
    (void)ctx;
    (void)out;
    (void)cap;
    (void)len;
    gt_guard_stage("function");
    while (pause() == -1)
        ;
    return 0;
}

static void test_guard(void)
{
    char buf[64] = {0};
    gt_guard_result r;
    CHECK(gt_guard_run(guarded_ok, NULL, buf, sizeof buf, 5.0, &r) == GT_OK);
    CHECK(r.fn_status == 7 && strcmp(buf, "hello from the child") == 0 && strcmp(r.stage, "writing") == 0);
    int dummy = 1;
    CHECK(gt_guard_run(guarded_crash, &dummy, buf, sizeof buf, 5.0, &r) == GT_ECRASH);
    CHECK(r.signal == SIGSEGV && strcmp(r.stage, "gradient") == 0);
    CHECK(gt_guard_run(guarded_crash, NULL, buf, sizeof buf, 5.0, &r) == GT_ECRASH);
    CHECK(r.signal == SIGABRT);
    CHECK(gt_guard_run(guarded_hang, NULL, buf, sizeof buf, 0.2, &r) == GT_ETIMEOUT);
    CHECK(r.timed_out && strcmp(r.stage, "function") == 0);
    CHECK(gt_guard_run(NULL, NULL, buf, sizeof buf, 1.0, &r) == GT_EINVAL);
    char name[32];
    CHECK(strcmp(gt_signal_name(SIGBUS, name, sizeof name), "SIGBUS") == 0);
    CHECK(strcmp(gt_signal_name(63, name, sizeof name), "signal 63") == 0);
}

int main(void)
{
    test_op_table();
    test_op_second_partials();
    test_fd();
    test_fd_adaptive();
    test_fd_float32();
    test_guard();
    return check_summary();
}
