/* tape.h: the reverse-mode tape. Recording appends nodes; the backward sweep walks them from the
 * last to the first (ids increase in recording order, so this is a topological order) and
 * accumulates adjoints in place. Plain C11, no Python.
 *
 * Every node has one output, of the node's dtype and shape. Its inputs are earlier node ids, or -1
 * for a constant (no adjoint flows there). The engine keeps two rules for all node kinds:
 *   - a VJP rule produces a contribution for input k; gt_tape's one accumulation routine adds it
 *     into the input's adjoint and, when the contribution's shape differs from the input's, sums
 *     it back over the broadcast dimensions (or expands it over length-1 dimensions). No rule
 *     handles broadcasting itself.
 *   - every buffer a node reads (saved values, index arrays) is borrowed from an *owner* handle
 *     that the tape releases through the release function given at creation (the Python glue
 *     passes ndarrays and Py_DECREF); the tape never copies them.
 *
 * A tape is not locked: one thread uses it at a time (the Python layer keeps one tape per thread).
 */
#ifndef GT_TAPE_H
#define GT_TAPE_H

#include <stddef.h>

#include "gt_common.h"
#include "ops.h"

typedef enum gt_node_kind {
    GT_NODE_LEAF = 0,   /* an input; its adjoint is kept after the sweep */
    GT_NODE_ELEMWISE,   /* y = op(a[, b]) from the op table; saved a, b, y (see gt_tape_elementwise) */
    GT_NODE_LINEAR,     /* y = sum_k coef_k * x_k, inputs broadcast to y (add, broadcast_to, ...) */
    GT_NODE_RESHAPE,    /* y holds x's elements in C order under another shape */
    GT_NODE_GATHER,     /* y.flat[j] = concat(x_0.flat, x_1.flat, ...)[idx[j]] */
    GT_NODE_REDUCE,     /* y = coef * sum(w * x) over the length-1 axes of `kshape` */
    GT_NODE_CUMSUM,     /* cumulative sum along the last axis */
    GT_NODE_MATMUL,     /* y[b] = a[b] @ b[b], batches of (m,k) @ (k,n) through BLAS GEMM */
    GT_NODE_CAST,       /* y = x converted to the node's dtype */
    /* Recorded only by gt_tape_backward_graph (order 2); each holds its own value: */
    GT_NODE_CONST,      /* a value no adjoint flows through (the seed, a VJP of constants only) */
    GT_NODE_PARTIAL,    /* y = d op / d(argument k) at an ELEMWISE node's (a, b), times a cotangent
                         * node g; VJP: the partial again (to g), the second partials (to a, b) */
    GT_NODE_SCATTER,    /* y.flat[idx[j] - off] += x.flat[j] for idx[j] in [off, off + y's size) */
    GT_NODE_REVCUMSUM,  /* reversed cumulative sum along the last axis (the VJP of CUMSUM) */
    GT_NODE_MATMUL_T,   /* y[q] = op(a[q]) @ op(b[q]), op a transpose where the node's flags say */
    GT_NODE_KIND_COUNT
} gt_node_kind;

/* A borrowed, read-only, C-contiguous buffer and the owner handle that keeps it alive. `n` is its
 * element count; an elementwise operand may have n == 1 (a scalar broadcast to the output). */
typedef struct gt_buf {
    const void *data;
    size_t n;
    void *owner;
} gt_buf;

typedef struct gt_tape gt_tape;

/* Releases one owner handle (called once per handle given to the tape). */
typedef void (*gt_release_fn)(void *owner);

/* Creates an empty tape. `release` may be NULL when owners need no release. Returns GT_OK and
 * sets *out (caller owns it; free with gt_tape_free), or GT_ENOMEM. */
int gt_tape_new(gt_release_fn release, gt_tape **out);

/* Frees the tape, its adjoints, and releases every owner handle it holds. NULL is a no-op. */
void gt_tape_free(gt_tape *tape);

/* Number of nodes recorded. */
long gt_tape_size(const gt_tape *tape);

/* Bytes of tape-owned memory (nodes, shapes, adjoints); borrowed buffers are not counted. */
size_t gt_tape_nbytes(const gt_tape *tape);

/* Shape, dtype and element count of node `id`; returns GT_EINVAL for an unknown id. */
int gt_tape_node_info(const gt_tape *tape, long id, gt_dtype *dtype, int *ndim, const long **shape);

/* All recording functions below append one node and return GT_OK with its id in *id, or an error
 * with nothing appended. On success the tape takes over every owner handle passed in (even those
 * of buffers it ends up not needing); on failure the caller keeps them. Shapes are copied.
 * Inputs must be earlier ids or -1; a recorded node's dtype must equal each input's dtype except
 * for GT_NODE_CAST. */

/* Order 2 recording on (nonzero) or off: while on, elementwise nodes keep the operands their
 * second partials read as well, so that gt_tape_backward_graph can record their sweep; nodes
 * recorded while off keep only what one sweep reads. NULL is a no-op. */
void gt_tape_set_order2(gt_tape *tape, int on);

/* A leaf of the given dtype and shape. */
int gt_tape_leaf(gt_tape *tape, gt_dtype dtype, int ndim, const long *shape, long *id);

/* y = op(a, b) elementwise (b ignored for unary ops). in[k] are the input ids (-1: constant).
 * a, b, y: the operand values in the node's dtype, each with n equal to y's size, or n == 1.
 * For the linear ops (add, subtract, negative, positive) the buffers may be {NULL, 0, NULL}.
 * The tape releases at once the handles of the operands that the partials of the differentiated
 * arguments do not read (gt_rule_partial_reads): tanh keeps y, a multiplication by a constant
 * keeps only the constant. While gt_tape_set_order2 is on it also keeps what the second partials
 * read (gt_rule_second_reads), which gt_tape_backward_graph needs. */
int gt_tape_elementwise(gt_tape *tape, const gt_op *op, gt_dtype dtype, int ndim, const long *shape,
                        const long in[2], gt_buf a, gt_buf b, gt_buf y, long *id);

/* y = sum_k coef[k] * x_k, each x_k broadcast to y's shape; nin >= 1. */
int gt_tape_linear(gt_tape *tape, gt_dtype dtype, int ndim, const long *shape, int nin,
                   const long *in, const double *coef, long *id);

/* y = reshape(x, shape); x's size must equal the product of `shape`. */
int gt_tape_reshape(gt_tape *tape, int ndim, const long *shape, long in, long *id);

/* y.flat[j] = concat(x_k.flat)[idx[j]] with idx of y's size (int64 / ptrdiff_t values in
 * [0, total size of the inputs)). Repeated indices are allowed (their adjoints add). All inputs
 * share `dtype`; their sizes come from their nodes, or from `sizes[k]` for constants (in[k] == -1). */
int gt_tape_gather(gt_tape *tape, gt_dtype dtype, int ndim, const long *shape, int nin,
                   const long *in, const long *sizes, gt_buf idx, long *id);

/* y = coef * sum(w * x) over the axes where kshape (x's ndim) is 1 and x is not; y's own shape is
 * `ndim, shape` (kshape with or without the reduced axes). w: x-sized weights, or data NULL. */
int gt_tape_reduce(gt_tape *tape, int ndim, const long *shape, const long *kshape, long in,
                   double coef, gt_buf w, long *id);

/* Cumulative sum along the last axis. (A cumulative product is a scan of multiplies recorded by the
 * rule set, so that both engines read one rule and its order 2 follows.) */
int gt_tape_cumsum(gt_tape *tape, long in, long *id);

/* y[q] = a[q] @ b[q] for q < batch, a: (m, k), b: (k, n) C-contiguous blocks; the inputs' node
 * sizes must be batch*m*k and batch*k*n (their shapes are free, e.g. 2-D when batch == 1). */
int gt_tape_matmul(gt_tape *tape, gt_dtype dtype, int ndim, const long *shape, const long in[2],
                   long batch, long m, long k, long n, gt_buf a, gt_buf b, long *id);

/* The primal of a matmul node through the core's BLAS, so that a recorded forward pass and its
 * sweep run every GEMM on one pool (NumPy's own pool, alternating with the core's, slowed both):
 * c[q] = a[q] @ b[q] for q < batch, a: (m, k), b: (k, n), c: (m, n), all C-contiguous blocks of
 * `dtype`, c caller-owned and fully written. Returns GT_OK, GT_EINVAL (NULL pointer with a
 * non-empty size, unknown dtype) or GT_EUNSUPPORTED (an extent beyond BLAS's 32-bit integers).
 * Calls nothing back, so the caller may release a global lock around it. */
int gt_tape_gemm(gt_dtype dtype, long batch, long m, long k, long n, const void *a, const void *b, void *c);

/* y = x converted to `dtype`, same shape. */
int gt_tape_cast(gt_tape *tape, gt_dtype dtype, long in, long *id);

/* The backward sweep from node `out` with cotangent `seed` (the node's dtype and size, borrowed
 * for the call). Clears all adjoints first, then visits nodes out, out-1, ..., 0 once each
 * (iteratively). Afterwards the adjoints of leaves are readable; the others are freed. Returns
 * GT_OK, GT_EINVAL, or GT_ENOMEM (the tape stays valid and can be swept again). Does not call
 * back into anything, so the caller may release a global lock around it. */
int gt_tape_backward(gt_tape *tape, long out, const void *seed);

/* Order 2: the backward sweep from node `out` with cotangent `seed` (as gt_tape_backward), but
 * *recorded*: every VJP is appended to the tape as new nodes, as PyTorch's create_graph=True does,
 * so that each leaf's gradient is itself a node, which gt_tape_backward can sweep again (a
 * Hessian-vector product is the sweep from <gradient, v>). The seed is recorded as a CONST node
 * (copied). On success grads[i] is the id of the gradient node of leaves[i] (nleaves ids), or -1
 * when no gradient reaches it (it is zero); each such node holds its value (gt_tape_value).
 *
 * What is recorded for each node kind: ELEMWISE -> per differentiated argument one PARTIAL node,
 * the partial times the cotangent (its VJP reads the second partials of op_rules.h, and skips
 * those that are identically zero), and an accumulation; LINEAR, RESHAPE and CAST -> the same
 * kinds; GATHER -> SCATTER (whose own VJP is a gather); REDUCE -> a broadcast times the node's
 * weights, which are taken as locally constant (they are for max/min; a caller must not record
 * order 2 through weights that depend on the input, as prod's do); CUMSUM -> REVCUMSUM;
 * MATMUL -> two MATMUL_T. Accumulation is LINEAR; a contribution of a broadcast shape is summed
 * back by a REDUCE node (and expanded by a LINEAR one). A recorded node none of whose inputs
 * carries an adjoint is a CONST. The values of the recorded nodes follow the first-order sweep's
 * arithmetic (the chain rule's zero rule included), so the gradient nodes hold its numbers up to
 * the order of summation where a broadcast contribution meets an earlier one.
 * Nodes recorded by an earlier gt_tape_backward_graph (third order) and elementwise
 * nodes recorded without gt_tape_set_order2 that dropped an operand their second partials read, give
 * GT_EUNSUPPORTED. Returns GT_OK, GT_EINVAL, GT_ENOMEM or GT_EUNSUPPORTED; on failure the tape is
 * as before the call. Adjoints of an earlier gt_tape_backward are left alone. Does not call back
 * into anything, so the caller may release a global lock around it. */
int gt_tape_backward_graph(gt_tape *tape, long out, const void *seed, long nleaves, const long *leaves,
                           long *grads);

/* The value of node `id` when the tape computed it (a node recorded by gt_tape_backward_graph):
 * *data points into tape-owned memory (node dtype and size), valid until the tape is freed; NULL
 * for nodes recorded by the caller, who holds their values. */
int gt_tape_value(const gt_tape *tape, long id, const void **data);

/* The adjoint of leaf `id` after a sweep: *data points into tape-owned memory (node dtype and
 * size), or is NULL when no gradient reached it (it is zero). Valid until the next sweep or free. */
int gt_tape_adjoint(const gt_tape *tape, long id, const void **data);

/* Like gt_tape_adjoint, but hands the buffer over: *data (node dtype and size) is the caller's
 * to release with gt_free, and the tape forgets it (the node's adjoint reads as NULL until the
 * next sweep). Saves the copy, and the fresh pages a copy needs, when the caller returns the
 * gradient to its user. *data is NULL when no gradient reached the node. */
int gt_tape_take_adjoint(gt_tape *tape, long id, void **data);

#endif /* GT_TAPE_H */
