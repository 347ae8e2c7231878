/* gt_blas.h: the core's view of CBLAS and OpenBLAS, for every file that calls them.
 *
 * The scipy-openblas32 wheel prefixes all of its symbols (scipy_cblas_dgemm,
 * scipy_openblas_set_num_threads); a system OpenBLAS does not. setup.py defines GT_BLAS_PREFIX
 * (to scipy_) for the former. GT_BLAS(name) is the symbol as linked, from its unprefixed name:
 * GT_BLAS(cblas_dgemm)(...), GT_BLAS(openblas_get_num_threads)(). */
#ifndef GT_BLAS_H
#define GT_BLAS_H

#include <cblas.h>
#include <stdlib.h>

#define GT_BLAS_CAT_(a, b) a##b
#define GT_BLAS_CAT(a, b) GT_BLAS_CAT_(a, b)
#ifdef GT_BLAS_PREFIX
#define GT_BLAS(name) GT_BLAS_CAT(GT_BLAS_PREFIX, name)
#else
#define GT_BLAS(name) name
#endif

/* The worker-thread count the core's own OpenBLAS starts with: GRADTEST_BLAS_THREADS when it is
 * an integer in [1, 1024], else 1. The core's pool is private (NumPy links its own OpenBLAS), so
 * two pools share the cores whenever NumPy's GEMMs and the engines' GEMMs alternate, as they do in
 * every recorded forward pass and its sweep; each pool's idle workers spin while the other one
 * works. Measured on a 2-core machine (docs/performance.rst, benchmarks/bench_reverse.py): an
 * MLP's gradient took 1.7-2.2x as long with the core's pool at 2 threads as at 1, with GEMMs up
 * to 411 MFLOP, once NumPy's pool was active. */
static inline int gt_blas_default_threads(void)
{
    const char *s = getenv("GRADTEST_BLAS_THREADS");
    if (!s || !*s)
        return 1;
    char *end = NULL;
    long n = strtol(s, &end, 10);
    return *end == '\0' && n >= 1 && n <= 1024 ? (int)n : 1;
}

/* Sets the core's pool to gt_blas_default_threads(); called once when an extension that runs
 * GEMMs is imported (under the import lock, before any GEMM). */
static inline void gt_blas_init_threads(void)
{
    GT_BLAS(openblas_set_num_threads)(gt_blas_default_threads());
}

#endif /* GT_BLAS_H */
