/* helper.c: a second library for the target_modules tests; caller.c calls into it. */
#include <stddef.h>
#include <stdlib.h>

__attribute__((visibility("default"))) double *gt_helper_alloc(size_t n)
{
    return malloc(n * sizeof(double));
}

__attribute__((visibility("default"))) double gt_helper_pure(double v)
{
    return v * v + 1.0;
}
