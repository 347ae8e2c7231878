/* gt_blas.h: the core's view of CBLAS and OpenBLAS, for every file that calls them.
 *
 * The scipy-openblas32 wheel prefixes all of its symbols (scipy_cblas_dgemm,
 * scipy_openblas_set_num_threads); a system OpenBLAS does not. setup.py defines GT_BLAS_PREFIX
 * (to scipy_) for the former. GT_BLAS(name) is the symbol as linked, from its unprefixed name:
 * GT_BLAS(cblas_dgemm)(...), GT_BLAS(openblas_get_num_threads)(). */
#ifndef GT_BLAS_H
#define GT_BLAS_H

#include <cblas.h>

#define GT_BLAS_CAT_(a, b) a##b
#define GT_BLAS_CAT(a, b) GT_BLAS_CAT_(a, b)
#ifdef GT_BLAS_PREFIX
#define GT_BLAS(name) GT_BLAS_CAT(GT_BLAS_PREFIX, name)
#else
#define GT_BLAS(name) name
#endif

#endif /* GT_BLAS_H */
