/* The guarded child's pipe under valgrind: every byte the child sends is defined (no uninitialised
 * error estimates from the gradient stage). Built plain (valgrind cannot watch a sanitized
 * program) and run under valgrind by tests/test_ckernel_c.py. */
#include <stdio.h>
#include <gradtest.h>
#include "ckernel.h"

static int sq(void *ctx, size_t n, const double *x, double *f)
{ (void)ctx; double a = 0; for (size_t i = 0; i < n; i++) a += x[i] * x[i]; *f = a; return 0; }
static int sq_grad(void *ctx, size_t n, const double *x, double *g)
{ (void)ctx; for (size_t i = 0; i < n; i++) g[i] = 2 * x[i]; return 0; }

int main(void)
{
    double x[5] = {1, 2, 3, 4, 5}, out[5], err[5];
    gt_fd_options opts = {.method = GT_FD_CENTRAL, .richardson = 1};
    gt_guard_options gopts = {60.0, NULL, NULL};
    gt_ck_result res;
    gt_guard_result gres;
    gt_ck_kernel k = {GT_FLOAT64, 5, 0, (gt_ck_fnptr)sq, (gt_ck_fnptr)sq_grad, NULL, NULL, NULL};
    /* the gradient stage sends no error estimates: their bytes must be defined all the same */
    int a = gt_ck_stage_guarded(&k, GT_CK_GRADIENT, x, NULL, &opts, NULL, 1, out, NULL, &res, &gopts, &gres);
    int b = gt_ck_stage_guarded(&k, GT_CK_FUNCTION, x, NULL, &opts, NULL, 1, out, err, &res, &gopts, &gres);
    printf("statuses %d %d\n", a, b);
    return a != GT_OK || b != GT_OK;
}
