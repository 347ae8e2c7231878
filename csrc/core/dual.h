/* dual.h: the forward-mode (dual-number) kernels of the core.
 *
 * A dual array holds a primal value of some shape S and k tangent directions stored as one array
 * of shape (k,) + S, the direction axis first (so that the k tangents of a matrix stack into one
 * GEMM operand). The kernels here compute the tangents of an op's output from its inputs; the
 * primal itself is computed by the caller (NumPy), so values are bit-identical to plain NumPy.
 *
 * Elementwise ops read their local partials from the op table (ops.h) one block at a time and
 * combine them with every tangent direction while the block is in cache:
 *     ydot[d, i] = dy/da[i] * adot[d, i] + dy/db[i] * bdot[d, i]      for d < k.
 * Inputs may be strided and broadcast (stride 0), as NumPy views are. */
#ifndef GT_DUAL_H
#define GT_DUAL_H

#include <stddef.h>

#include "gt_common.h"
#include "ops.h"

/* One argument of an elementwise op, as strided views already broadcast to the output shape.
 * value: the first primal element (elements of the op's dtype); value_strides: nd byte strides.
 * tangent: the first tangent element, or NULL when the argument is a constant (zero tangent);
 * tangent_strides: nd + 1 byte strides, the direction axis first. Nothing is owned. */
typedef struct gt_dual_arg {
    const char *value;
    const ptrdiff_t *value_strides;
    const char *tangent;
    const ptrdiff_t *tangent_strides;
} gt_dual_arg;

/* Tangents of y = op(a[, b]) over an nd-dimensional output of shape `shape` (nd = 0 for a
 * scalar), for k directions.
 * y: the primal output, C-contiguous, computed by the caller; read only.
 * yt: caller-owned, C-contiguous output of shape (k,) + shape; fully written (zeros when no
 *     argument has a tangent).
 * b must be NULL exactly for unary ops. All arrays hold elements of `dtype`.
 * Same-shape operands (every value C-contiguous or one broadcast element, every tangent one
 * contiguous (k, n) block) take a kernel that reads values in place and, for add, subtract,
 * negative and positive, sums the tangents in one pass without partials.
 * Returns GT_OK; GT_EINVAL for a NULL required pointer, an arity mismatch or an unknown dtype;
 * GT_ENOMEM when the block buffers of a large same-shape op cannot be allocated (they come from
 * the per-thread scratch of gt_dual_matmul; up to 1024 elements nothing is allocated).
 * Safe to call without the GIL. */
int gt_dual_elementwise(const gt_op *op, gt_dtype dtype, int nd, const size_t *shape, size_t k,
                        const gt_dual_arg *a, const gt_dual_arg *b, const void *y, void *yt);

/* Tangents of C = A @ B for 2-d operands, k directions, every array C-contiguous:
 *   dC[d] = dA[d] @ B + A @ dB[d]
 * with one GEMM over all k directions per term: dA (k, m, n) is a (k*m, n) matrix, and dB
 * (k, n, p) is transposed into an (n, k*p) scratch matrix so that A @ [dB[0] .. dB[k-1]] is one
 * call. a (m, n), b (n, p): primal operands. da, db: tangents, either may be NULL (constant).
 * c: caller-owned primal output (m, p) = a @ b, or NULL to skip it (computing it here keeps every
 * GEMM of a dual matmul on one OpenBLAS thread pool; alternating with NumPy's own pool made
 * both pools spin against each other). dc: caller-owned output (k, m, p), fully written.
 * Returns GT_OK; GT_EINVAL for a NULL required pointer or an unknown dtype; GT_EUNSUPPORTED when
 * a dimension exceeds BLAS's 32-bit integers; GT_ENOMEM when the scratch cannot be allocated.
 * The scratch (through gt_malloc) is kept per thread between calls up to 64 MiB, shared with
 * gt_dual_elementwise, see gt_dual_scratch_release. Safe to call without the GIL, from several threads at once. */
int gt_dual_matmul(gt_dtype dtype, size_t m, size_t n, size_t p, size_t k, const void *a,
                   const void *da, const void *b, const void *db, void *c, void *dc);

/* Sets the number of worker threads of the OpenBLAS that the core links (process-wide: this
 * build has no thread-local setting) and returns the previous value; n <= 0 only returns it.
 * Gradient checks run many small GEMMs, for which OpenBLAS's workers cost more than they save
 * (and on a loaded machine far more), so the forward backend runs them on one thread; the caller
 * serializes changes (gradtest.forward holds a lock and restores the value afterwards). */
int gt_dual_blas_threads(int n);

/* Frees the calling thread's matmul scratch (also freed automatically when the thread exits).
 * For tests that count live allocations, and for long-lived threads that are done with duals. */
void gt_dual_scratch_release(void);

#endif /* GT_DUAL_H */
