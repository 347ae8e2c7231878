/* caller.c: calls into helper.c's library. Without target_modules the calls are external calls;
 * with the helper library as a target module they are followed and its malloc is found. */
#include <stddef.h>

extern double *gt_helper_alloc(size_t n);
extern double gt_helper_pure(double v);

__attribute__((visibility("default"))) double gt_calls_helper_alloc(size_t n)
{
    double *p = gt_helper_alloc(n);
    return p ? 1.0 : 0.0;
}

__attribute__((visibility("default"))) double gt_calls_helper_pure(double v)
{
    return gt_helper_pure(v) + 1.0;
}
