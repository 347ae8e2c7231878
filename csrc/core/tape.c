/* tape.c: recording and the backward sweep of the reverse-mode tape (see tape.h). */
#define _DEFAULT_SOURCE /* madvise */
#include "tape.h"
#include "gt_blas.h"

#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#define GT_TAPE_MAXDIM 64   /* NumPy's NPY_MAXDIMS */
#define CHUNK 256           /* elements per block when partials are computed during the sweep */

typedef struct node {
    unsigned char kind;
    unsigned char dtype;
    int ndim;
    int nin;
    size_t shape_off;     /* output shape: tape->dims[shape_off .. shape_off + ndim) */
    size_t kshape_off;    /* GT_NODE_REDUCE: the keepdims shape, same ndim as the input */
    size_t size;          /* output element count */
    long in_small[2];     /* input ids when nin <= 2 */
    long *in_heap;        /* input ids when nin > 2 (owned) */
    double coef_small[2]; /* GT_NODE_LINEAR coefficients when nin <= 2 */
    double *coef_heap;    /* ... when nin > 2 (owned) */
    long *sizes;          /* GT_NODE_GATHER: element count of each input (owned) */
    double rcoef;         /* GT_NODE_REDUCE coefficient */
    long mm[4];           /* GT_NODE_MATMUL: batch, m, k, n */
    const gt_op *op;      /* GT_NODE_ELEMWISE */
    gt_buf saved[3];      /* borrowed values the VJP reads */
    void *adj;            /* adjoint (owned), NULL while zero */
    unsigned char flags;  /* GT_NODE_PARTIAL: the argument k; GT_NODE_MATMUL_T: 1 a^T, 2 b^T */
    void *val;            /* nodes of gt_tape_backward_graph: their value (owned); else NULL */
    void *part;           /* GT_NODE_PARTIAL: the partial itself, kept when its sweep reads it
                           * and it reads a (a transcendental: cos for sin) (owned); else NULL */
} node;

struct gt_tape {
    node *nodes;
    long count, cap;
    long *dims;           /* arena of all shapes */
    size_t ndims, dims_cap;
    gt_release_fn release;
    size_t adj_bytes;
    size_t val_bytes;     /* values of the nodes recorded by gt_tape_backward_graph */
    int order2;           /* gt_tape_set_order2: keep what a recorded sweep's second partials read */
};

/* ---------------------------------------------------------------- small helpers */

/* NULL for a tape that has stored no dimension yet (only 0-d nodes): no arithmetic on NULL. */
static const long *node_shape(const gt_tape *t, const node *n)
{
    return t->dims ? t->dims + n->shape_off : NULL;
}
static const long *node_in(const node *n) { return n->nin <= 2 ? n->in_small : n->in_heap; }
static const double *node_coef(const node *n) { return n->nin <= 2 ? n->coef_small : n->coef_heap; }

static size_t shape_size(int ndim, const long *shape)
{
    size_t s = 1;
    for (int i = 0; i < ndim; i++)
        s *= (size_t)shape[i];
    return s;
}

static int same_shape(int nd1, const long *s1, int nd2, const long *s2)
{
    if (nd1 != nd2)
        return 0;
    for (int i = 0; i < nd1; i++)
        if (s1[i] != s2[i])
            return 0;
    return 1;
}

/* Copies `ndim` extents into the shape arena; *off receives their position. */
static int push_dims(gt_tape *t, int ndim, const long *shape, size_t *off)
{
    if (ndim < 0 || ndim > GT_TAPE_MAXDIM || (ndim > 0 && !shape))
        return GT_EINVAL;
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0)
            return GT_EINVAL;
    if (t->ndims + (size_t)ndim > t->dims_cap) {
        size_t cap = t->dims_cap ? t->dims_cap * 2 : 256;
        while (cap < t->ndims + (size_t)ndim)
            cap *= 2;
        long *dims = gt_malloc(cap * sizeof *dims);
        if (!dims)
            return GT_ENOMEM;
        if (t->ndims)
            memcpy(dims, t->dims, t->ndims * sizeof *dims);
        gt_free(t->dims);
        t->dims = dims;
        t->dims_cap = cap;
    }
    *off = t->ndims;
    if (ndim)
        memcpy(t->dims + t->ndims, shape, (size_t)ndim * sizeof *shape);
    t->ndims += (size_t)ndim;
    return GT_OK;
}

/* Reserves a zeroed node at the end (not yet counted); returns NULL on allocation failure. */
static node *reserve_node(gt_tape *t)
{
    if (t->count == t->cap) {
        long cap = t->cap ? t->cap * 2 : 64;
        node *nodes = gt_malloc((size_t)cap * sizeof *nodes);
        if (!nodes)
            return NULL;
        if (t->count)
            memcpy(nodes, t->nodes, (size_t)t->count * sizeof *nodes);
        gt_free(t->nodes);
        t->nodes = nodes;
        t->cap = cap;
    }
    node *n = &t->nodes[t->count];
    memset(n, 0, sizeof *n);
    return n;
}

static void release_buf(gt_tape *t, gt_buf *b)
{
    if (b->owner && t->release)
        t->release(b->owner);
    b->owner = NULL;
    b->data = NULL;
}

/* Checks that every input id is -1 or an earlier node of `dtype`. */
static int check_inputs(const gt_tape *t, int nin, const long *in, int dtype)
{
    for (int k = 0; k < nin; k++) {
        if (in[k] == -1)
            continue;
        if (in[k] < 0 || in[k] >= t->count)
            return GT_EINVAL;
        if (dtype >= 0 && t->nodes[in[k]].dtype != dtype)
            return GT_EINVAL;
    }
    return GT_OK;
}

/* Fills the common fields of the reserved node `n` and commits it; on failure nothing changes
 * except the shape arena growing (harmless). */
static int commit_node(gt_tape *t, node *n, gt_node_kind kind, gt_dtype dtype, int ndim,
                       const long *shape, long *id)
{
    int st = push_dims(t, ndim, shape, &n->shape_off);
    if (st != GT_OK)
        return st;
    n->kind = (unsigned char)kind;
    n->dtype = (unsigned char)dtype;
    n->ndim = ndim;
    n->size = shape_size(ndim, shape);
    *id = t->count++;
    return GT_OK;
}

static void free_node_memory(gt_tape *t, node *n)
{
    for (int k = 0; k < 3; k++)
        release_buf(t, &n->saved[k]);
    gt_free(n->in_heap);
    gt_free(n->coef_heap);
    gt_free(n->sizes);
    n->in_heap = NULL;
    n->coef_heap = NULL;
    n->sizes = NULL;
    if (n->adj) {
        gt_free(n->adj);
        t->adj_bytes -= n->size * gt_dtype_size((gt_dtype)n->dtype);
        n->adj = NULL;
    }
    if (n->val) {
        gt_free(n->val);
        t->val_bytes -= n->size * gt_dtype_size((gt_dtype)n->dtype);
        n->val = NULL;
    }
    if (n->part) {
        gt_free(n->part);
        t->val_bytes -= n->size * gt_dtype_size((gt_dtype)n->dtype);
        n->part = NULL;
    }
}

/* ---------------------------------------------------------------- lifetime */

int gt_tape_new(gt_release_fn release, gt_tape **out)
{
    if (!out)
        return GT_EINVAL;
    gt_tape *t = gt_calloc(1, sizeof *t);
    if (!t)
        return GT_ENOMEM;
    t->release = release;
    *out = t;
    return GT_OK;
}

void gt_tape_free(gt_tape *tape)
{
    if (!tape)
        return;
    for (long i = 0; i < tape->count; i++)
        free_node_memory(tape, &tape->nodes[i]);
    gt_free(tape->nodes);
    gt_free(tape->dims);
    gt_free(tape);
}

long gt_tape_size(const gt_tape *tape) { return tape ? tape->count : 0; }

size_t gt_tape_nbytes(const gt_tape *tape)
{
    if (!tape)
        return 0;
    size_t bytes = sizeof *tape + (size_t)tape->cap * sizeof(node) + tape->dims_cap * sizeof(long);
    return bytes + tape->adj_bytes + tape->val_bytes;
}

int gt_tape_node_info(const gt_tape *tape, long id, gt_dtype *dtype, int *ndim, const long **shape)
{
    if (!tape || id < 0 || id >= tape->count)
        return GT_EINVAL;
    const node *n = &tape->nodes[id];
    if (dtype)
        *dtype = (gt_dtype)n->dtype;
    if (ndim)
        *ndim = n->ndim;
    if (shape)
        *shape = node_shape(tape, n);
    return GT_OK;
}

/* ---------------------------------------------------------------- recording */

static int valid_dtype(gt_dtype d) { return d == GT_FLOAT64 || d == GT_FLOAT32; }

int gt_tape_leaf(gt_tape *tape, gt_dtype dtype, int ndim, const long *shape, long *id)
{
    if (!tape || !id || !valid_dtype(dtype))
        return GT_EINVAL;
    node *n = reserve_node(tape);
    if (!n)
        return GT_ENOMEM;
    return commit_node(tape, n, GT_NODE_LEAF, dtype, ndim, shape, id);
}

static int is_linear_op(const gt_op *op)
{
    return op->id == GT_OP_ADD || op->id == GT_OP_SUBTRACT || op->id == GT_OP_NEGATIVE ||
           op->id == GT_OP_POSITIVE;
}

void gt_tape_set_order2(gt_tape *tape, int on)
{
    if (tape)
        tape->order2 = on != 0;
}

/* The operands (GT_READS_* bits) an elementwise node's sweeps read: the first partials of its
 * differentiated arguments, and with `order2` also their second partials (gt_tape_backward_graph). */
static int elem_reads(const gt_op *op, int nin, const long *in, int order2)
{
    int op_id = (int)op->id, reads = 0, any = 0;
    for (int k = 0; k < nin; k++)
        if (in[k] >= 0 && gt_rule_has_partial(op_id, k)) {
            reads |= gt_rule_partial_reads(op_id, k);
            any = 1;
        }
    if (order2 && any)
        reads |= gt_rule_second_reads(op_id);
    return reads;
}

int gt_tape_elementwise(gt_tape *tape, const gt_op *op, gt_dtype dtype, int ndim, const long *shape,
                        const long in[2], gt_buf a, gt_buf b, gt_buf y, long *id)
{
    if (!tape || !op || !in || !id || !valid_dtype(dtype) || op->arity < 1 || op->arity > 2)
        return GT_EINVAL;
    int nin = op->arity;
    int st = check_inputs(tape, nin, in, dtype);
    if (st != GT_OK)
        return st;
    size_t size = shape_size(ndim < 0 ? 0 : ndim, shape);
    if (!is_linear_op(op)) {
        /* the partials read a (and b) and y at every output position */
        if (!a.data || !y.data || (a.n != size && a.n != 1) || y.n != size ||
            (nin == 2 && (!b.data || (b.n != size && b.n != 1))))
            return GT_EINVAL;
    }
    node *n = reserve_node(tape);
    if (!n)
        return GT_ENOMEM;
    n->nin = nin;
    n->in_small[0] = in[0];
    n->in_small[1] = nin == 2 ? in[1] : -1;
    n->op = op;
    st = commit_node(tape, n, GT_NODE_ELEMWISE, dtype, ndim, shape, id);
    if (st != GT_OK)
        return st;
    /* the tape owns the handles from here on; drop the ones the sweeps will not read, so that a
     * recorded forward pass holds no more arrays than its gradient needs (a chain of ops whose
     * partials read only their outputs then frees each input as NumPy's own chain would) */
    n->saved[0] = a;
    n->saved[1] = b;
    n->saved[2] = y;
    int reads = is_linear_op(op) ? 0 : elem_reads(op, nin, n->in_small, tape->order2);
    if (nin == 1)
        reads &= ~GT_READS_B;
    for (int j = 0; j < 3; j++)
        if (!(reads & (1 << j)))
            release_buf(tape, &n->saved[j]);
    return GT_OK;
}

int gt_tape_linear(gt_tape *tape, gt_dtype dtype, int ndim, const long *shape, int nin,
                   const long *in, const double *coef, long *id)
{
    if (!tape || !id || nin < 1 || !in || !coef || !valid_dtype(dtype))
        return GT_EINVAL;
    int st = check_inputs(tape, nin, in, dtype);
    if (st != GT_OK)
        return st;
    node *n = reserve_node(tape);
    if (!n)
        return GT_ENOMEM;
    n->nin = nin;
    if (nin <= 2) {
        memcpy(n->in_small, in, (size_t)nin * sizeof *in);
        memcpy(n->coef_small, coef, (size_t)nin * sizeof *coef);
    } else {
        n->in_heap = gt_malloc((size_t)nin * sizeof *in);
        n->coef_heap = gt_malloc((size_t)nin * sizeof *coef);
        if (!n->in_heap || !n->coef_heap) {
            st = GT_ENOMEM;
            goto fail;
        }
        memcpy(n->in_heap, in, (size_t)nin * sizeof *in);
        memcpy(n->coef_heap, coef, (size_t)nin * sizeof *coef);
    }
    st = commit_node(tape, n, GT_NODE_LINEAR, dtype, ndim, shape, id);
    if (st == GT_OK)
        return GT_OK;
fail:
    gt_free(n->in_heap);
    gt_free(n->coef_heap);
    n->in_heap = NULL;
    n->coef_heap = NULL;
    return st;
}

int gt_tape_reshape(gt_tape *tape, int ndim, const long *shape, long in, long *id)
{
    if (!tape || !id || in < 0 || in >= tape->count || ndim < 0)
        return GT_EINVAL;
    const node *x = &tape->nodes[in];
    if (shape_size(ndim, shape) != x->size)
        return GT_EINVAL;
    gt_dtype dtype = (gt_dtype)x->dtype;
    node *n = reserve_node(tape);
    if (!n)
        return GT_ENOMEM;
    n->nin = 1;
    n->in_small[0] = in;
    return commit_node(tape, n, GT_NODE_RESHAPE, dtype, ndim, shape, id);
}

int gt_tape_gather(gt_tape *tape, gt_dtype dtype, int ndim, const long *shape, int nin,
                   const long *in, const long *sizes, gt_buf idx, long *id)
{
    if (!tape || !id || nin < 1 || !in || !valid_dtype(dtype) || ndim < 0)
        return GT_EINVAL;
    int st = check_inputs(tape, nin, in, dtype);
    if (st != GT_OK)
        return st;
    size_t size = shape_size(ndim, shape);
    if (idx.n != size || (size && !idx.data))
        return GT_EINVAL;
    long total = 0;
    for (int k = 0; k < nin; k++) {
        long s = in[k] >= 0 ? (long)tape->nodes[in[k]].size : (sizes ? sizes[k] : -1);
        if (s < 0)
            return GT_EINVAL;
        total += s;
    }
    const ptrdiff_t *ix = idx.data;
    for (size_t j = 0; j < size; j++)
        if (ix[j] < 0 || ix[j] >= total)
            return GT_EINVAL;
    node *n = reserve_node(tape);
    if (!n)
        return GT_ENOMEM;
    n->nin = nin;
    n->sizes = gt_malloc((size_t)nin * sizeof *n->sizes);
    if (!n->sizes)
        return GT_ENOMEM;
    if (nin > 2) {
        n->in_heap = gt_malloc((size_t)nin * sizeof *in);
        if (!n->in_heap) {
            st = GT_ENOMEM;
            goto fail;
        }
        memcpy(n->in_heap, in, (size_t)nin * sizeof *in);
    } else {
        memcpy(n->in_small, in, (size_t)nin * sizeof *in);
    }
    for (int k = 0; k < nin; k++)
        n->sizes[k] = in[k] >= 0 ? (long)tape->nodes[in[k]].size : sizes[k];
    st = commit_node(tape, n, GT_NODE_GATHER, dtype, ndim, shape, id);
    if (st == GT_OK) {
        n->saved[0] = idx;
        return GT_OK;
    }
fail:
    gt_free(n->sizes);
    gt_free(n->in_heap);
    n->sizes = NULL;
    n->in_heap = NULL;
    return st;
}

int gt_tape_reduce(gt_tape *tape, int ndim, const long *shape, const long *kshape, long in,
                   double coef, gt_buf w, long *id)
{
    if (!tape || !id || !kshape || in < 0 || in >= tape->count || ndim < 0)
        return GT_EINVAL;
    const node *x = &tape->nodes[in];
    const long *xs = node_shape(tape, x);
    for (int i = 0; i < x->ndim; i++)
        if (kshape[i] != xs[i] && kshape[i] != 1)
            return GT_EINVAL;
    if (shape_size(ndim, shape) != shape_size(x->ndim, kshape))
        return GT_EINVAL;
    if (w.data && w.n != x->size)
        return GT_EINVAL;
    gt_dtype dtype = (gt_dtype)x->dtype;
    int xnd = x->ndim;
    node *n = reserve_node(tape);
    if (!n)
        return GT_ENOMEM;
    n->nin = 1;
    n->in_small[0] = in;
    n->rcoef = coef;
    int st = push_dims(tape, xnd, kshape, &n->kshape_off);
    if (st != GT_OK)
        return st;
    st = commit_node(tape, n, GT_NODE_REDUCE, dtype, ndim, shape, id);
    if (st == GT_OK)
        n->saved[0] = w;
    return st;
}

int gt_tape_cumsum(gt_tape *tape, long in, long *id)
{
    if (!tape || !id || in < 0 || in >= tape->count)
        return GT_EINVAL;
    const node *src = &tape->nodes[in];
    if (src->ndim < 1)
        return GT_EINVAL;
    gt_dtype dtype = (gt_dtype)src->dtype;
    int nd = src->ndim;
    long shape[GT_TAPE_MAXDIM];
    memcpy(shape, node_shape(tape, src), (size_t)nd * sizeof *shape);
    node *n = reserve_node(tape);
    if (!n)
        return GT_ENOMEM;
    n->nin = 1;
    n->in_small[0] = in;
    return commit_node(tape, n, GT_NODE_CUMSUM, dtype, nd, shape, id);
}

int gt_tape_gemm(gt_dtype dtype, long batch, long m, long k, long n, const void *a, const void *b, void *c)
{
    if (batch < 0 || m < 0 || k < 0 || n < 0 || !valid_dtype(dtype))
        return GT_EINVAL;
    if (m > INT_MAX || k > INT_MAX || n > INT_MAX)
        return GT_EUNSUPPORTED;
    size_t es = gt_dtype_size(dtype), out = (size_t)m * (size_t)n;
    if (!batch || !out)
        return GT_OK;
    if (!c || (k && (!a || !b)))
        return GT_EINVAL;
    if (!k) { /* an empty sum */
        memset(c, 0, (size_t)batch * out * es);
        return GT_OK;
    }
    for (long q = 0; q < batch; q++) {
        size_t ao = (size_t)q * (size_t)m * (size_t)k, bo = (size_t)q * (size_t)k * (size_t)n, co = (size_t)q * out;
        if (dtype == GT_FLOAT64)
            GT_BLAS(cblas_dgemm)(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)n, (int)k, 1.0,
                                 (const double *)a + ao, (int)k, (const double *)b + bo, (int)n, 0.0,
                                 (double *)c + co, (int)n);
        else
            GT_BLAS(cblas_sgemm)(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)n, (int)k, 1.0f,
                                 (const float *)a + ao, (int)k, (const float *)b + bo, (int)n, 0.0f,
                                 (float *)c + co, (int)n);
    }
    return GT_OK;
}

int gt_tape_matmul(gt_tape *tape, gt_dtype dtype, int ndim, const long *shape, const long in[2],
                   long batch, long m, long k, long n_, gt_buf a, gt_buf b, long *id)
{
    if (!tape || !id || !in || !valid_dtype(dtype) || batch < 0 || m < 0 || k < 0 || n_ < 0)
        return GT_EINVAL;
    if (m > INT_MAX || k > INT_MAX || n_ > INT_MAX)
        return GT_EUNSUPPORTED; /* the BLAS interface takes 32-bit extents */
    int st = check_inputs(tape, 2, in, dtype);
    if (st != GT_OK)
        return st;
    size_t asz = (size_t)batch * (size_t)m * (size_t)k, bsz = (size_t)batch * (size_t)k * (size_t)n_;
    if (shape_size(ndim, shape) != (size_t)batch * (size_t)m * (size_t)n_)
        return GT_EINVAL;
    if ((in[0] >= 0 && tape->nodes[in[0]].size != asz) || (in[1] >= 0 && tape->nodes[in[1]].size != bsz))
        return GT_EINVAL;
    /* abar needs b, bbar needs a */
    if ((in[0] >= 0 && (!b.data || b.n != bsz)) || (in[1] >= 0 && (!a.data || a.n != asz)))
        return GT_EINVAL;
    node *nd = reserve_node(tape);
    if (!nd)
        return GT_ENOMEM;
    nd->nin = 2;
    nd->in_small[0] = in[0];
    nd->in_small[1] = in[1];
    nd->mm[0] = batch;
    nd->mm[1] = m;
    nd->mm[2] = k;
    nd->mm[3] = n_;
    st = commit_node(tape, nd, GT_NODE_MATMUL, dtype, ndim, shape, id);
    if (st == GT_OK) {
        nd->saved[0] = a;
        nd->saved[1] = b;
    }
    return st;
}

int gt_tape_cast(gt_tape *tape, gt_dtype dtype, long in, long *id)
{
    if (!tape || !id || in < 0 || in >= tape->count || !valid_dtype(dtype))
        return GT_EINVAL;
    const node *x = &tape->nodes[in];
    int nd = x->ndim;
    long shape[GT_TAPE_MAXDIM];
    if (nd > 0) /* a 0-d node may have no shape storage at all: no memcpy from NULL */
        memcpy(shape, node_shape(tape, x), (size_t)nd * sizeof *shape);
    node *n = reserve_node(tape);
    if (!n)
        return GT_ENOMEM;
    n->nin = 1;
    n->in_small[0] = in;
    return commit_node(tape, n, GT_NODE_CAST, dtype, nd, shape, id);
}

/* ---------------------------------------------------------------- kernels */

/* Bytes from which a sweep buffer asks for transparent huge pages, as NumPy does for its arrays
 * (4 MiB): a large adjoint is written once, page by page, so with 4 KiB pages the sweep pays one
 * page fault per 4 KiB (about 3 us each in the virtual machine measured, bench_reverse's machine
 * row: a 10^6-element float64 buffer cost over 5 ms of faults, more than the arithmetic of the
 * VJP that fills it). */
#define HUGE_ADVICE_BYTES ((size_t)4 << 20)

/* Every buffer of the sweep (adjoints, contributions) comes from here: gt_malloc or gt_calloc
 * (freed with gt_free), with huge-page advice for large ones. The advice is best effort: where the
 * kernel refuses it nothing changes. */
static void *sweep_alloc(size_t count, size_t es, int zero)
{
    size_t n = count ? count : 1, bytes = n * es;
#ifdef MADV_HUGEPAGE
    if (bytes >= HUGE_ADVICE_BYTES) {
        /* advise before the first write, so the zeroing itself already faults in huge pages */
        char *p = gt_malloc(bytes);
        if (!p)
            return NULL;
        uintptr_t page = 4096, start = ((uintptr_t)p + page - 1) & ~(page - 1);
        uintptr_t end = ((uintptr_t)p + bytes) & ~(page - 1);
        if (end > start)
            (void)madvise((void *)start, (size_t)(end - start), MADV_HUGEPAGE);
        if (zero)
            memset(p, 0, bytes);
        return p;
    }
#endif
    return zero ? gt_calloc(n, es) : gt_malloc(bytes);
}

/* dst[i] += coef * src[i] over a full index space `full` (ndim dims) with element strides (0 on
 * broadcast dimensions). The same routine sums a gradient back to a broadcast source (dst has zero
 * strides) and expands a reduced gradient (src has zero strides). */
static void nd_add(gt_dtype dt, int nd, const long *full, void *dst, const long *dstr,
                   const void *src, const long *sstr, double coef)
{
    long idx[GT_TAPE_MAXDIM] = {0};
    for (int i = 0; i < nd; i++)
        if (full[i] == 0)
            return;
    long inner = nd ? full[nd - 1] : 1, di = nd ? dstr[nd - 1] : 0, si = nd ? sstr[nd - 1] : 0;
    long doff = 0, soff = 0;
    for (;;) {
        if (dt == GT_FLOAT64) {
            double *d = (double *)dst + doff;
            const double *s = (const double *)src + soff;
            for (long j = 0; j < inner; j++)
                d[j * di] += coef * s[j * si];
        } else {
            float *d = (float *)dst + doff;
            const float *s = (const float *)src + soff;
            float c = (float)coef;
            for (long j = 0; j < inner; j++)
                d[j * di] += c * s[j * si];
        }
        int ax = nd - 2;
        for (; ax >= 0; ax--) {
            doff += dstr[ax];
            soff += sstr[ax];
            if (++idx[ax] < full[ax])
                break;
            doff -= dstr[ax] * full[ax];
            soff -= sstr[ax] * full[ax];
            idx[ax] = 0;
        }
        if (ax < 0)
            return;
    }
}

/* dst (shape dshape) += coef * src (shape sshape) where the shapes are broadcast-compatible:
 * dimensions of src missing or of length 1 in dst are summed, those of length 1 in src are
 * expanded. Returns GT_EINVAL for incompatible shapes. */
static int bcast_add(gt_dtype dt, void *dst, int dnd, const long *dshape, const void *src, int snd,
                     const long *sshape, double coef)
{
    int nd = dnd > snd ? dnd : snd;
    long full[GT_TAPE_MAXDIM], dstr[GT_TAPE_MAXDIM], sstr[GT_TAPE_MAXDIM];
    long ds = 1, ss = 1;
    for (int i = nd - 1; i >= 0; i--) {
        long dd = i >= nd - dnd ? dshape[i - (nd - dnd)] : 1;
        long sd = i >= nd - snd ? sshape[i - (nd - snd)] : 1;
        if (dd != sd && dd != 1 && sd != 1)
            return GT_EINVAL;
        full[i] = dd == 1 ? sd : dd;
        dstr[i] = dd == 1 ? 0 : ds;
        sstr[i] = sd == 1 ? 0 : ss;
        ds *= dd;
        ss *= sd;
    }
    nd_add(dt, nd, full, dst, dstr, src, sstr, coef);
    return GT_OK;
}

static void *alloc_adj(gt_tape *t, const node *x, int zero)
{
    size_t es = gt_dtype_size((gt_dtype)x->dtype), n = x->size ? x->size : 1;
    void *p = sweep_alloc(n, es, zero);
    if (p)
        t->adj_bytes += x->size * es;
    return p;
}

/* Accumulates `contrib` (node x's dtype, shape cnd/cshape) into the adjoint of node `id`; the one
 * place where gradients are summed back to a broadcast source. If `owned`, the function takes
 * `contrib` (a gt_malloc block of the contribution's size) and frees or keeps it. */
static int acc(gt_tape *t, long id, void *contrib, int cnd, const long *cshape, int owned)
{
    int st = GT_OK;
    if (id < 0)
        goto done;
    node *x = &t->nodes[id];
    const long *xs = node_shape(t, x);
    size_t es = gt_dtype_size((gt_dtype)x->dtype);
    if (same_shape(cnd, cshape, x->ndim, xs)) {
        if (!x->adj) {
            if (owned) {
                x->adj = contrib;
                t->adj_bytes += x->size * es;
                return GT_OK;
            }
            if (!(x->adj = alloc_adj(t, x, 0)))
                return GT_ENOMEM;
            memcpy(x->adj, contrib, x->size * es);
            return GT_OK;
        }
        nd_add((gt_dtype)x->dtype, 1, (const long[]){(long)x->size}, x->adj, (const long[]){1},
               contrib, (const long[]){1}, 1.0);
        goto done;
    }
    int fresh = !x->adj;
    if (fresh && !(x->adj = alloc_adj(t, x, 1))) {
        st = GT_ENOMEM;
        goto done;
    }
    st = bcast_add((gt_dtype)x->dtype, x->adj, x->ndim, xs, contrib, cnd, cshape, 1.0);
done:
    if (owned)
        gt_free(contrib);
    return st;
}

/* Adds coef * ybar (shape cnd/cshape, the source node's dtype) into input `id`. May take the
 * buffer itself (sets *stolen) when the caller allows it and no copy is needed. */
static int acc_scaled(gt_tape *t, long id, void *ybar, int cnd, const long *cshape, double coef,
                      int *stolen)
{
    if (id < 0)
        return GT_OK;
    node *x = &t->nodes[id];
    size_t es = gt_dtype_size((gt_dtype)x->dtype);
    if (coef == 1.0) {
        if (stolen && !*stolen && !x->adj && same_shape(cnd, cshape, x->ndim, node_shape(t, x))) {
            x->adj = ybar;
            t->adj_bytes += x->size * es;
            *stolen = 1;
            return GT_OK;
        }
        return acc(t, id, ybar, cnd, cshape, 0);
    }
    size_t n = shape_size(cnd, cshape);
    void *tmp = sweep_alloc(n, es, 1);
    if (!tmp)
        return GT_ENOMEM;
    nd_add((gt_dtype)x->dtype, 1, (const long[]){(long)n}, tmp, (const long[]){1}, ybar,
           (const long[]){1}, coef);
    return acc(t, id, tmp, cnd, cshape, 1);
}

/* Fills `out[0..len)` with the partial d(op)/d(arg k) for output positions [i0, i0+len).
 * abuf, bbuf, ybuf: blocks standing in for a scalar operand, or for one the node did not keep
 * (fill_scalar). */
static int partial_block(const node *n, int k, size_t i0, size_t len, void *out, void *abuf, void *bbuf,
                         void *ybuf)
{
    const gt_buf *a = &n->saved[0], *b = &n->saved[1], *y = &n->saved[2];
    size_t es = gt_dtype_size((gt_dtype)n->dtype);
    const char *ap = a->n == 1 || !a->data ? abuf : (const char *)a->data + i0 * es;
    const char *bp = n->nin == 2 ? (b->n == 1 || !b->data ? bbuf : (const char *)b->data + i0 * es) : NULL;
    const char *yp = !y->data ? ybuf : (const char *)y->data + i0 * es;
    if (n->dtype == GT_FLOAT64)
        return gt_op_partials_f64(n->op, len, (const double *)ap, (const double *)bp,
                                  (const double *)yp, k == 0 ? out : NULL, k == 1 ? out : NULL);
    return gt_op_partials_f32(n->op, len, (const float *)ap, (const float *)bp, (const float *)yp,
                              k == 0 ? out : NULL, k == 1 ? out : NULL);
}

/* Fills a block with a scalar operand's value, or with NaN for an operand the node did not keep
 * (the rule does not read it; NaN, not 0, so that a wrong GT_READS_* bit shows in the gradient). */
static void fill_scalar(const node *n, const gt_buf *b, void *buf)
{
    if (b->data && b->n != 1)
        return;
    for (int i = 0; i < CHUNK; i++) {
        if (n->dtype == GT_FLOAT64)
            ((double *)buf)[i] = b->data ? *(const double *)b->data : NAN;
        else
            ((float *)buf)[i] = b->data ? *(const float *)b->data : NAN;
    }
}

static int vjp_elementwise(gt_tape *t, node *n)
{
    const long *in = node_in(n);
    const long *ys = node_shape(t, n);
    void *ybar = n->adj;
    int stolen = 0, st = GT_OK;
    size_t es = gt_dtype_size((gt_dtype)n->dtype);
    double pbuf[CHUNK], abuf[CHUNK], bbuf[CHUNK], ybuf[CHUNK]; /* float blocks fit in double storage */
    if (!is_linear_op(n->op)) {
        fill_scalar(n, &n->saved[0], abuf);
        if (n->nin == 2)
            fill_scalar(n, &n->saved[1], bbuf);
        fill_scalar(n, &n->saved[2], ybuf);
    }
    for (int k = 0; k < n->nin && st == GT_OK; k++) {
        if (in[k] < 0 || !n->op->partial[k])
            continue; /* a constant, or an argument with a zero partial (sign) */
        if (is_linear_op(n->op)) {
            double c = n->op->partial[k](0.0, 0.0, 0.0); /* constant partials: +1 or -1 */
            st = acc_scaled(t, in[k], ybar, n->ndim, ys, c, &stolen);
            continue;
        }
        node *x = &t->nodes[in[k]];
        int same = same_shape(n->ndim, ys, x->ndim, node_shape(t, x));
        int assign = !(same && x->adj);
        /* the last reader of ybar may overwrite it with its contribution and keep the buffer
         * (no allocation, no fresh pages): ybar is read element by element before each write */
        int last = k == n->nin - 1 || in[n->nin - 1] < 0 || !n->op->partial[n->nin - 1];
        int reuse = assign && same && last && !stolen;
        void *dst = reuse ? ybar : assign ? sweep_alloc(n->size, es, 0) : x->adj;
        if (!dst)
            return GT_ENOMEM;
        if (reuse)
            stolen = 1;
        for (size_t i0 = 0; i0 < n->size && st == GT_OK; i0 += CHUNK) {
            size_t len = n->size - i0 < CHUNK ? n->size - i0 : CHUNK;
            st = partial_block(n, k, i0, len, pbuf, abuf, bbuf, ybuf);
            if (n->dtype == GT_FLOAT64)
                gt_chain_block_f64(len, (double *)dst + i0, pbuf, (const double *)ybar + i0, !assign);
            else
                gt_chain_block_f32(len, (float *)dst + i0, (const float *)pbuf, (const float *)ybar + i0,
                                   !assign);
        }
        if (st != GT_OK) {
            if (assign && !reuse)
                gt_free(dst);
            if (reuse)
                stolen = 0; /* ybar is still the node's, freed by the sweep */
            break;
        }
        if (assign)
            st = acc(t, in[k], dst, n->ndim, ys, 1);
    }
    if (stolen)
        n->adj = NULL; /* now an input's adjoint */
    return st;
}

static int vjp_linear(gt_tape *t, node *n)
{
    const long *in = node_in(n);
    const double *coef = node_coef(n);
    int stolen = 0, st = GT_OK;
    for (int k = 0; k < n->nin && st == GT_OK; k++) {
        if (n->kind == GT_NODE_RESHAPE) {
            const node *x = &t->nodes[in[k]];
            st = acc_scaled(t, in[k], n->adj, x->ndim, node_shape(t, x), 1.0, &stolen);
        } else {
            st = acc_scaled(t, in[k], n->adj, n->ndim, node_shape(t, n), coef[k], &stolen);
        }
    }
    if (stolen)
        n->adj = NULL;
    return st;
}

static int vjp_gather(gt_tape *t, node *n)
{
    const long *in = node_in(n);
    size_t es = gt_dtype_size((gt_dtype)n->dtype), total = 0;
    for (int k = 0; k < n->nin; k++)
        total += (size_t)n->sizes[k];
    char *tmp = sweep_alloc(total, es, 1);
    if (!tmp)
        return GT_ENOMEM;
    const ptrdiff_t *ix = n->saved[0].data;
    /* a scatter-add: repeated indices accumulate (np.add.at semantics) */
    if (n->dtype == GT_FLOAT64) {
        double *d = (double *)tmp;
        const double *g = n->adj;
        for (size_t j = 0; j < n->size; j++)
            d[ix[j]] += g[j];
    } else {
        float *d = (float *)tmp;
        const float *g = n->adj;
        for (size_t j = 0; j < n->size; j++)
            d[ix[j]] += g[j];
    }
    int st = GT_OK;
    size_t off = 0;
    for (int k = 0; k < n->nin && st == GT_OK; k++) {
        if (in[k] >= 0) {
            const node *x = &t->nodes[in[k]];
            int own = n->nin == 1;
            st = acc(t, in[k], tmp + off * es, x->ndim, node_shape(t, x), own);
            if (own)
                tmp = NULL;
        }
        off += (size_t)n->sizes[k];
    }
    gt_free(tmp);
    return st;
}

static int vjp_reduce(gt_tape *t, node *n)
{
    long xid = node_in(n)[0];
    node *x = &t->nodes[xid];
    const long *xs = node_shape(t, x), *ks = t->dims + n->kshape_off;
    const gt_buf *w = &n->saved[0];
    if (!w->data) {
        if (!x->adj && !(x->adj = alloc_adj(t, x, 1)))
            return GT_ENOMEM;
        return bcast_add((gt_dtype)x->dtype, x->adj, x->ndim, xs, n->adj, x->ndim, ks, n->rcoef);
    }
    void *tmp = alloc_adj(t, x, 1);
    if (!tmp)
        return GT_ENOMEM;
    t->adj_bytes -= x->size * gt_dtype_size((gt_dtype)x->dtype); /* acc counts it if kept */
    int st = bcast_add((gt_dtype)x->dtype, tmp, x->ndim, xs, n->adj, x->ndim, ks, n->rcoef);
    if (st != GT_OK) {
        gt_free(tmp);
        return st;
    }
    if (x->dtype == GT_FLOAT64)
        for (size_t i = 0; i < x->size; i++)
            ((double *)tmp)[i] *= ((const double *)w->data)[i];
    else
        for (size_t i = 0; i < x->size; i++)
            ((float *)tmp)[i] *= ((const float *)w->data)[i];
    return acc(t, xid, tmp, x->ndim, xs, 1);
}

static int vjp_cumsum(gt_tape *t, node *n)
{
    long xid = node_in(n)[0];
    const long *shape = node_shape(t, n);
    long L = shape[n->ndim - 1];
    size_t lines = L ? n->size / (size_t)L : 0;
    size_t es = gt_dtype_size((gt_dtype)n->dtype);
    void *out = sweep_alloc(n->size, es, 0);
    if (!out)
        return GT_ENOMEM;
    const void *ybar = n->adj;
    for (size_t line = 0; line < lines; line++) {
        size_t off = line * (size_t)L;
        if (n->dtype == GT_FLOAT64) {
            double r = 0.0;
            for (long i = L - 1; i >= 0; i--)
                ((double *)out)[off + i] = r += ((const double *)ybar)[off + i];
        } else {
            float r = 0.0f;
            for (long i = L - 1; i >= 0; i--)
                ((float *)out)[off + i] = r += ((const float *)ybar)[off + i];
        }
    }
    return acc(t, xid, out, n->ndim, shape, 1);
}

static int vjp_matmul(gt_tape *t, node *n)
{
    const long *in = node_in(n);
    long B = n->mm[0], m = n->mm[1], k = n->mm[2], nn = n->mm[3];
    size_t es = gt_dtype_size((gt_dtype)n->dtype);
    int st = GT_OK;
    for (int arg = 0; arg < 2 && st == GT_OK; arg++) {
        if (in[arg] < 0)
            continue;
        const node *x = &t->nodes[in[arg]];
        size_t blk = arg == 0 ? (size_t)m * (size_t)k : (size_t)k * (size_t)nn;
        void *c = sweep_alloc(x->size, es, 1);
        if (!c)
            return GT_ENOMEM;
        if (m && k && nn) {
            for (long q = 0; q < B; q++) {
                size_t yo = (size_t)q * (size_t)m * (size_t)nn;
                if (n->dtype == GT_FLOAT64) {
                    const double *g = (const double *)n->adj + yo;
                    if (arg == 0) /* abar = ybar @ b^T: (m,n) x (n,k) */
                        GT_BLAS(cblas_dgemm)(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)k, (int)nn,
                                        1.0, g, (int)nn, (const double *)n->saved[1].data + (size_t)q * (size_t)k * (size_t)nn,
                                        (int)nn, 0.0, (double *)c + (size_t)q * blk, (int)k);
                    else /* bbar = a^T @ ybar: (k,m) x (m,n) */
                        GT_BLAS(cblas_dgemm)(CblasRowMajor, CblasTrans, CblasNoTrans, (int)k, (int)nn, (int)m,
                                        1.0, (const double *)n->saved[0].data + (size_t)q * (size_t)m * (size_t)k,
                                        (int)k, g, (int)nn, 0.0, (double *)c + (size_t)q * blk, (int)nn);
                } else {
                    const float *g = (const float *)n->adj + yo;
                    if (arg == 0)
                        GT_BLAS(cblas_sgemm)(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)k, (int)nn,
                                        1.0f, g, (int)nn, (const float *)n->saved[1].data + (size_t)q * (size_t)k * (size_t)nn,
                                        (int)nn, 0.0f, (float *)c + (size_t)q * blk, (int)k);
                    else
                        GT_BLAS(cblas_sgemm)(CblasRowMajor, CblasTrans, CblasNoTrans, (int)k, (int)nn, (int)m,
                                        1.0f, (const float *)n->saved[0].data + (size_t)q * (size_t)m * (size_t)k,
                                        (int)k, g, (int)nn, 0.0f, (float *)c + (size_t)q * blk, (int)nn);
                }
            }
        }
        st = acc(t, in[arg], c, x->ndim, node_shape(t, x), 1);
    }
    return st;
}

static int vjp_cast(gt_tape *t, node *n)
{
    long xid = node_in(n)[0];
    const node *x = &t->nodes[xid];
    void *c = sweep_alloc(x->size, gt_dtype_size((gt_dtype)x->dtype), 0);
    if (!c)
        return GT_ENOMEM;
    for (size_t i = 0; i < n->size; i++) {
        double v = n->dtype == GT_FLOAT64 ? ((const double *)n->adj)[i] : ((const float *)n->adj)[i];
        if (x->dtype == GT_FLOAT64)
            ((double *)c)[i] = v;
        else
            ((float *)c)[i] = (float)v;
    }
    return acc(t, xid, c, x->ndim, node_shape(t, x), 1);
}

/* ---------------------------------------------------------------- order 2: the VJPs of the recorded sweep's kinds */

static void store_at(gt_dtype dt, void *p, size_t i, double v)
{
    if (dt == GT_FLOAT64)
        ((double *)p)[i] = v;
    else
        ((float *)p)[i] = (float)v;
}

static double load_at(gt_dtype dt, const void *p, size_t i)
{
    return dt == GT_FLOAT64 ? ((const double *)p)[i] : (double)((const float *)p)[i];
}

/* out[i] = R(a[i], b[i], y[i]) for i < n, times g[i] and then h[i] by the chain rule where those
 * are not NULL, where R is the first partial k of `op` (j < 0) or its second partial (k, j). a and
 * b may have n == 1 (a broadcast scalar); b is unused by unary ops. Computed in double (the
 * products in `dt`, as the first-order sweep takes them), stored in `dt`. */
static void rule_loop(gt_dtype dt, int op, int k, int j, size_t n, const gt_buf *a, const gt_buf *b,
                      const gt_buf *y, const void *g, const void *h, void *out)
{
    /* an operand the node did not keep (the rule does not read it) reads as a NaN scalar */
    static const double nan64 = NAN;
    static const float nan32 = NAN;
    size_t sa = a->data && a->n != 1 ? 1 : 0, sb = b->data && b->n != 1 ? 1 : 0, sy = y->data ? 1 : 0;
    if (dt == GT_FLOAT64) {
        const double *av = a->data ? a->data : &nan64, *bv = b->data ? b->data : av;
        const double *yv = y->data ? y->data : &nan64, *gv = g, *hv = h;
        double *o = out;
        for (size_t i = 0; i < n; i++) {
            double r = j < 0 ? gt_rule_partial(op, k, av[i * sa], bv[i * sb], yv[i * sy])
                             : gt_rule_second(op, k, j, av[i * sa], bv[i * sb], yv[i * sy]);
            r = gv ? gt_chain_f64(r, gv[i]) : r;
            o[i] = hv ? gt_chain_f64(r, hv[i]) : r;
        }
    } else {
        const float *av = a->data ? a->data : &nan32, *bv = b->data ? b->data : av;
        const float *yv = y->data ? y->data : &nan32, *gv = g, *hv = h;
        float *o = out;
        for (size_t i = 0; i < n; i++) {
            double r = j < 0 ? gt_rule_partial(op, k, av[i * sa], bv[i * sb], yv[i * sy])
                             : gt_rule_second(op, k, j, av[i * sa], bv[i * sb], yv[i * sy]);
            float q = gv ? gt_chain_f32((float)r, gv[i]) : (float)r;
            o[i] = hv ? gt_chain_f32(q, hv[i]) : q;
        }
    }
}

/* out = gt_chain(d op / d(arg k), g) for the ELEMWISE or PARTIAL node n (op, nin and saved are
 * the elementwise node's), in blocks through the op table's vectorised partials, exactly as the
 * first-order sweep computes them (vjp_elementwise); the partial itself where g is NULL. out may
 * be g itself (in place). */
static int partial_times(const node *n, int k, const void *g, void *out)
{
    double pbuf[CHUNK], abuf[CHUNK], bbuf[CHUNK], ybuf[CHUNK]; /* float blocks fit in double storage */
    int st = GT_OK;
    fill_scalar(n, &n->saved[0], abuf);
    if (n->nin == 2)
        fill_scalar(n, &n->saved[1], bbuf);
    fill_scalar(n, &n->saved[2], ybuf);
    for (size_t i0 = 0; i0 < n->size && st == GT_OK; i0 += CHUNK) {
        size_t len = n->size - i0 < CHUNK ? n->size - i0 : CHUNK;
        st = partial_block(n, k, i0, len, pbuf, abuf, bbuf, ybuf);
        size_t es = gt_dtype_size((gt_dtype)n->dtype);
        if (!g)
            memcpy((char *)out + i0 * es, pbuf, len * es);
        else if (n->dtype == GT_FLOAT64)
            gt_chain_block_f64(len, (double *)out + i0, pbuf, (const double *)g + i0, 0);
        else
            gt_chain_block_f32(len, (float *)out + i0, (const float *)pbuf, (const float *)g + i0, 0);
    }
    return st;
}

/* out = gt_chain(p, g) over n elements of dtype dt (out may be g). */
static void chain_into(gt_dtype dt, size_t n, const void *p, const void *g, void *out)
{
    if (dt == GT_FLOAT64)
        gt_chain_block_f64(n, out, p, g, 0);
    else
        gt_chain_block_f32(n, out, p, g, 0);
}

/* P = d op / d(arg k)(a, b) * g (g: node mm[0]): gbar += d op / d(arg k) * Pbar, and
 * abar_j += d2 op / d(arg k) d(arg j) * g * Pbar, through the chain rule. */
static int vjp_partial(gt_tape *t, node *n)
{
    const long *in = node_in(n);
    gt_dtype dt = (gt_dtype)n->dtype;
    int k = n->flags, op = (int)n->op->id, st = GT_OK;
    const void *g = t->nodes[n->mm[0]].val;
    size_t bytes = (n->size ? n->size : 1) * gt_dtype_size(dt);
    long xs[3];
    for (int j = -1; j < n->nin; j++) {
        long x = j < 0 ? (n->mm[1] ? n->mm[0] : -1) : in[j];
        xs[j + 1] = x < 0 || (j >= 0 && gt_rule_second_is_zero_at(op, k, j)) ? -1 : x;
    }
    int last = -1;
    for (int j = -1; j < n->nin; j++)
        if (xs[j + 1] >= 0)
            last = j;
    for (int j = -1; j < n->nin && st == GT_OK; j++) {
        if (xs[j + 1] < 0)
            continue;
        /* the last output overwrites Pbar in place (each element is read before it is written)
         * and hands the buffer on: no fresh pages */
        void *c = j == last ? n->adj : gt_malloc(bytes);
        if (!c)
            return GT_ENOMEM;
        if (j < 0 && n->part) {
            chain_into(dt, n->size, n->part, n->adj, c);
        } else if (j < 0 && n->size) {
            if ((st = partial_times(n, k, n->adj, c)) != GT_OK) {
                if (j != last)
                    gt_free(c);
                break;
            }
        } else {
            rule_loop(dt, op, k, j, n->size, &n->saved[0], &n->saved[1], &n->saved[2], j < 0 ? NULL : g,
                      n->adj, c);
        }
        if (j == last)
            n->adj = NULL; /* acc takes it (and frees it on failure) */
        st = acc(t, xs[j + 1], c, n->ndim, node_shape(t, n), 1);
    }
    return st;
}

/* The VJP of a scatter-add is a gather: xbar[j] = ybar[idx[j] - off] where idx[j] is in range. */
static int vjp_scatter(gt_tape *t, node *n)
{
    long xid = node_in(n)[0];
    if (xid < 0)
        return GT_OK;
    const node *x = &t->nodes[xid];
    gt_dtype dt = (gt_dtype)n->dtype;
    void *c = gt_calloc(x->size ? x->size : 1, gt_dtype_size(dt));
    if (!c)
        return GT_ENOMEM;
    const ptrdiff_t *ix = n->saved[0].data;
    ptrdiff_t off = (ptrdiff_t)n->mm[0], sz = (ptrdiff_t)n->size;
    for (size_t j = 0; j < x->size; j++) {
        ptrdiff_t q = ix[j] - off;
        if (q >= 0 && q < sz)
            store_at(dt, c, j, load_at(dt, n->adj, (size_t)q));
    }
    return acc(t, xid, c, x->ndim, node_shape(t, x), 1);
}

/* Cumulative sums along the last axis of `src` into `dst` (reverse: from the end), accumulated
 * in the dtype, as the first-order CUMSUM VJP does. */
static void cumsum_lines(gt_dtype dt, const void *src, void *dst, size_t size, long L, int reverse)
{
    size_t lines = L ? size / (size_t)L : 0;
    for (size_t line = 0; line < lines; line++) {
        size_t off = line * (size_t)L;
        double r = 0.0;
        float rf = 0.0f;
        for (long s = 0; s < L; s++) {
            size_t i = off + (size_t)(reverse ? L - 1 - s : s);
            if (dt == GT_FLOAT64)
                ((double *)dst)[i] = r += ((const double *)src)[i];
            else
                ((float *)dst)[i] = rf += ((const float *)src)[i];
        }
    }
}

static int vjp_revcumsum(gt_tape *t, node *n)
{
    long xid = node_in(n)[0];
    gt_dtype dt = (gt_dtype)n->dtype;
    void *c = gt_malloc((n->size ? n->size : 1) * gt_dtype_size(dt));
    if (!c)
        return GT_ENOMEM;
    cumsum_lines(dt, n->adj, c, n->size, node_shape(t, n)[n->ndim - 1], 0);
    return acc(t, xid, c, n->ndim, node_shape(t, n), 1);
}

/* C = op(X) @ op(Y) for one block, C (M, N) overwritten; X and Y stored row-major as given by
 * their transposition (tx: X stored (K, M)), with extents >= 0 (nothing to do when one is 0). */
static void gemm_block(gt_dtype dt, int tx, int ty, long M, long N, long K, const void *X, const void *Y,
                       void *C)
{
    if (!M || !N)
        return;
    if (!K) {
        memset(C, 0, (size_t)M * (size_t)N * gt_dtype_size(dt));
        return;
    }
    int ldx = (int)(tx ? M : K), ldy = (int)(ty ? K : N);
    enum CBLAS_TRANSPOSE ox = tx ? CblasTrans : CblasNoTrans, oy = ty ? CblasTrans : CblasNoTrans;
    if (dt == GT_FLOAT64)
        GT_BLAS(cblas_dgemm)(CblasRowMajor, ox, oy, (int)M, (int)N, (int)K, 1.0, X, ldx, Y, ldy, 0.0, C,
                             (int)N);
    else
        GT_BLAS(cblas_sgemm)(CblasRowMajor, ox, oy, (int)M, (int)N, (int)K, 1.0f, X, ldx, Y, ldy, 0.0f, C,
                             (int)N);
}

/* y = op(a) @ op(b) with op(a) (m, k), op(b) (k, n):
 *   abar = ybar @ op(b)^T, stored transposed (op(b) @ ybar^T) when a is;
 *   bbar = op(a)^T @ ybar, stored transposed (ybar^T @ op(a)) when b is. */
static int vjp_matmul_t(gt_tape *t, node *n)
{
    const long *in = node_in(n);
    long B = n->mm[0], m = n->mm[1], k = n->mm[2], nn = n->mm[3];
    int ta = n->flags & 1, tb = (n->flags >> 1) & 1, st = GT_OK;
    gt_dtype dt = (gt_dtype)n->dtype;
    size_t es = gt_dtype_size(dt), ab = (size_t)m * (size_t)k, bb = (size_t)k * (size_t)nn,
           yb = (size_t)m * (size_t)nn;
    const char *A = n->saved[0].data, *Bv = n->saved[1].data, *G = n->adj;
    for (int arg = 0; arg < 2 && st == GT_OK; arg++) {
        if (in[arg] < 0)
            continue;
        const node *x = &t->nodes[in[arg]];
        char *c = gt_calloc(x->size ? x->size : 1, es);
        if (!c)
            return GT_ENOMEM;
        for (long q = 0; q < B; q++) {
            const char *Aq = A + (size_t)q * ab * es, *Bq = Bv + (size_t)q * bb * es, *Gq = G + (size_t)q * yb * es;
            if (arg == 0) {
                char *Cq = c + (size_t)q * ab * es;
                if (!ta) /* (m, n) @ op(b)^T (n, k); op(b)^T is b's storage transposed back */
                    gemm_block(dt, 0, !tb, m, k, nn, Gq, Bq, Cq);
                else /* op(b) (k, n) @ ybar^T (n, m) */
                    gemm_block(dt, tb, 1, k, m, nn, Bq, Gq, Cq);
            } else {
                char *Cq = c + (size_t)q * bb * es;
                if (!tb) /* op(a)^T (k, m) @ ybar (m, n) */
                    gemm_block(dt, !ta, 0, k, nn, m, Aq, Gq, Cq);
                else /* ybar^T (n, m) @ op(a) (m, k) */
                    gemm_block(dt, 1, ta, nn, k, m, Gq, Aq, Cq);
            }
        }
        st = acc(t, in[arg], c, x->ndim, node_shape(t, x), 1);
    }
    return st;
}

/* ---------------------------------------------------------------- the sweep */

static void clear_adjoints(gt_tape *t)
{
    for (long i = 0; i < t->count; i++) {
        gt_free(t->nodes[i].adj);
        t->nodes[i].adj = NULL;
    }
    t->adj_bytes = 0;
}

int gt_tape_backward(gt_tape *tape, long out, const void *seed)
{
    if (!tape || !seed || out < 0 || out >= tape->count)
        return GT_EINVAL;
    gt_tape *t = tape;
    clear_adjoints(t);
    node *o = &t->nodes[out];
    if (!(o->adj = alloc_adj(t, o, 0)))
        return GT_ENOMEM;
    memcpy(o->adj, seed, o->size * gt_dtype_size((gt_dtype)o->dtype));
    int st = GT_OK;
    for (long i = out; i >= 0 && st == GT_OK; i--) {
        node *n = &t->nodes[i];
        if (!n->adj || n->kind == GT_NODE_LEAF)
            continue;
        switch ((gt_node_kind)n->kind) {
        case GT_NODE_ELEMWISE: st = vjp_elementwise(t, n); break;
        case GT_NODE_LINEAR:
        case GT_NODE_RESHAPE: st = vjp_linear(t, n); break;
        case GT_NODE_GATHER: st = vjp_gather(t, n); break;
        case GT_NODE_REDUCE: st = vjp_reduce(t, n); break;
        case GT_NODE_CUMSUM: st = vjp_cumsum(t, n); break;
        case GT_NODE_MATMUL: st = vjp_matmul(t, n); break;
        case GT_NODE_CAST: st = vjp_cast(t, n); break;
        case GT_NODE_CONST: break;
        case GT_NODE_PARTIAL: st = vjp_partial(t, n); break;
        case GT_NODE_SCATTER: st = vjp_scatter(t, n); break;
        case GT_NODE_REVCUMSUM: st = vjp_revcumsum(t, n); break;
        case GT_NODE_MATMUL_T: st = vjp_matmul_t(t, n); break;
        default: st = GT_EINVAL; break;
        }
        if (n->adj) { /* an inner node's adjoint is not needed once propagated */
            gt_free(n->adj);
            n->adj = NULL;
        }
        t->adj_bytes -= n->size * gt_dtype_size((gt_dtype)n->dtype);
    }
    if (st != GT_OK)
        clear_adjoints(t);
    return st;
}

int gt_tape_adjoint(const gt_tape *tape, long id, const void **data)
{
    if (!tape || !data || id < 0 || id >= tape->count)
        return GT_EINVAL;
    *data = tape->nodes[id].adj;
    return GT_OK;
}

int gt_tape_take_adjoint(gt_tape *tape, long id, void **data)
{
    if (!tape || !data || id < 0 || id >= tape->count)
        return GT_EINVAL;
    node *n = &tape->nodes[id];
    *data = n->adj;
    if (n->adj) {
        tape->adj_bytes -= n->size * gt_dtype_size((gt_dtype)n->dtype);
        n->adj = NULL;
    }
    return GT_OK;
}

/* ---------------------------------------------------------------- order 2: the recorded sweep */

int gt_tape_value(const gt_tape *tape, long id, const void **data)
{
    if (!tape || !data || id < 0 || id >= tape->count)
        return GT_EINVAL;
    *data = tape->nodes[id].val;
    return GT_OK;
}

/* Copies node id's shape into buf (GT_TAPE_MAXDIM extents): recording may move the shape arena,
 * so no shape pointer is held across one. Returns ndim. */
static int copy_shape(const gt_tape *t, long id, long *buf)
{
    const node *n = &t->nodes[id];
    if (n->ndim)
        memcpy(buf, node_shape(t, n), (size_t)n->ndim * sizeof *buf);
    return n->ndim;
}

/* Appends a node of the recorded sweep with inputs in[0..nin) (nin <= 2) and an uninitialised
 * value buffer of its size, which the caller fills; *id receives its id. A node none of whose
 * inputs carries an adjoint (all -1) is recorded as CONST: no VJP ever reads its other fields.
 * Node pointers taken before the call are invalid after it (the node array may move). */
static int graph_node(gt_tape *t, gt_node_kind kind, gt_dtype dt, int ndim, const long *shape, int nin,
                      const long *in, long *id)
{
    int live = kind == GT_NODE_PARTIAL; /* its cotangent input is not among in[] */
    for (int k = 0; k < nin; k++)
        live |= in[k] >= 0;
    if (!live) {
        kind = GT_NODE_CONST;
        nin = 0;
    }
    size_t size = shape_size(ndim, shape), es = gt_dtype_size(dt);
    void *val = gt_malloc((size ? size : 1) * es);
    if (!val)
        return GT_ENOMEM;
    node *n = reserve_node(t);
    if (!n) {
        gt_free(val);
        return GT_ENOMEM;
    }
    n->nin = nin;
    for (int k = 0; k < nin; k++)
        n->in_small[k] = in[k];
    int st = commit_node(t, n, kind, dt, ndim, shape, id);
    if (st != GT_OK) {
        gt_free(val);
        return st;
    }
    n->val = val;
    t->val_bytes += size * es;
    return GT_OK;
}

/* An input id for a recorded node: -1 for a CONST node, through which no adjoint flows. */
static long dep(const gt_tape *t, long id)
{
    return id >= 0 && t->nodes[id].kind == GT_NODE_CONST ? -1 : id;
}

/* A borrowed view of a recorded node's value (the tape owns it: no owner handle). */
static gt_buf val_buf(const gt_tape *t, long id)
{
    gt_buf b = {t->nodes[id].val, t->nodes[id].size, NULL};
    return b;
}

/* y = sum_k coef[k] * x_k broadcast to `shape` (nin 1 or 2), recorded as LINEAR. */
static int g_linear(gt_tape *t, int nd, const long *shape, int nin, const long *xs, const double *coef, long *id)
{
    long in[2];
    for (int k = 0; k < nin; k++)
        in[k] = dep(t, xs[k]);
    int st = graph_node(t, GT_NODE_LINEAR, (gt_dtype)t->nodes[xs[0]].dtype, nd, shape, nin, in, id);
    if (st != GT_OK)
        return st;
    node *y = &t->nodes[*id];
    gt_dtype dt = (gt_dtype)y->dtype;
    memset(y->val, 0, (y->size ? y->size : 1) * gt_dtype_size(dt));
    for (int k = 0; k < nin && st == GT_OK; k++) {
        y->coef_small[k] = coef[k];
        long xsh[GT_TAPE_MAXDIM];
        int xnd = copy_shape(t, xs[k], xsh);
        st = bcast_add(dt, y->val, nd, shape, t->nodes[xs[k]].val, xnd, xsh, coef[k]);
    }
    return st; /* GT_EINVAL only for shapes the recording already checked */
}

/* x summed back to (nd, shape) over its broadcast dimensions, then expanded over the length-1
 * ones; *id = x itself when the shapes agree. */
static int g_unbroadcast(gt_tape *t, long x, int nd, const long *shape, long *id)
{
    long xsh[GT_TAPE_MAXDIM], ksh[GT_TAPE_MAXDIM];
    int xnd = copy_shape(t, x, xsh), st = GT_OK;
    *id = x;
    if (same_shape(xnd, xsh, nd, shape))
        return GT_OK;
    int lead = xnd > nd ? xnd - nd : 0, sum = lead > 0;
    for (int i = 0; i < xnd; i++) {
        long target = i < lead ? 1 : (xnd - i <= nd ? shape[nd - (xnd - i)] : 1);
        ksh[i] = target == 1 && xsh[i] != 1 ? 1 : xsh[i];
        sum |= ksh[i] != xsh[i];
    }
    if (sum) {
        const long *rsh = ksh + lead;
        int rnd = xnd - lead;
        long in[1] = {dep(t, x)}, r;
        if ((st = graph_node(t, GT_NODE_REDUCE, (gt_dtype)t->nodes[x].dtype, rnd, rsh, 1, in, &r)) != GT_OK)
            return st;
        if ((st = push_dims(t, xnd, ksh, &t->nodes[r].kshape_off)) != GT_OK)
            return st;
        node *rn = &t->nodes[r];
        rn->rcoef = 1.0;
        memset(rn->val, 0, (rn->size ? rn->size : 1) * gt_dtype_size((gt_dtype)rn->dtype));
        if ((st = bcast_add((gt_dtype)rn->dtype, rn->val, xnd, ksh, t->nodes[x].val, xnd, xsh, 1.0)) != GT_OK)
            return st;
        *id = r;
        if (same_shape(rnd, rsh, nd, shape))
            return GT_OK;
    }
    double one = 1.0;
    long src = *id;
    return g_linear(t, nd, shape, 1, &src, &one, id);
}

/* Adds the contribution node c into the adjoint node of original node x (adjn[x]). */
static int g_acc(gt_tape *t, long *adjn, long x, long c)
{
    long sh[GT_TAPE_MAXDIM], u;
    int nd = copy_shape(t, x, sh);
    int st = g_unbroadcast(t, c, nd, sh, &u);
    if (st != GT_OK)
        return st;
    if (adjn[x] < 0) {
        adjn[x] = u;
        return GT_OK;
    }
    long xs[2] = {adjn[x], u};
    double coef[2] = {1.0, 1.0};
    return g_linear(t, nd, sh, 2, xs, coef, &adjn[x]);
}

/* y = a * w elementwise for a recorded node a and constant weights w of its size, as an
 * ELEMWISE multiply (its VJP reads w; w's owner keeps it alive). */
static int g_weight(gt_tape *t, long a, gt_buf w, long *id)
{
    long sh[GT_TAPE_MAXDIM];
    int nd = copy_shape(t, a, sh);
    long in[2] = {dep(t, a), -1};
    int st = graph_node(t, GT_NODE_ELEMWISE, (gt_dtype)t->nodes[a].dtype, nd, sh, 2, in, id);
    if (st != GT_OK)
        return st;
    node *y = &t->nodes[*id];
    y->op = &gt_op_table[GT_OP_MULTIPLY];
    y->saved[0] = val_buf(t, a);
    y->saved[1] = (gt_buf){w.data, w.n, NULL};
    y->saved[2] = val_buf(t, *id);
    if (y->dtype == GT_FLOAT64) {
        const double *p = y->saved[0].data, *q = w.data;
        double *o = y->val;
        for (size_t i = 0; i < y->size; i++)
            o[i] = p[i] * q[i]; /* as the first-order sweep weights a reduction */
    } else {
        const float *p = y->saved[0].data, *q = w.data;
        float *o = y->val;
        for (size_t i = 0; i < y->size; i++)
            o[i] = p[i] * q[i];
    }
    return GT_OK;
}

/* ELEMWISE y = op(a, b): abar += dy/da * ybar, bbar += dy/db * ybar, with the partials recorded. */
static int g_elementwise(gt_tape *t, long *adjn, long id, long g)
{
    int st = GT_OK;
    const node *n0 = &t->nodes[id];
    if (!is_linear_op(n0->op)) {
        /* a node recorded without gt_tape_set_order2 may lack what its second partials read */
        int need = elem_reads(n0->op, n0->nin, node_in(n0), 1);
        for (int j = 0; j < 3; j++)
            if ((need & (1 << j)) && !n0->saved[j].data && !(j == 1 && n0->nin == 1))
                return GT_EUNSUPPORTED;
    }
    for (int k = 0; k < t->nodes[id].nin && st == GT_OK; k++) {
        const node *n = &t->nodes[id];
        long x = node_in(n)[k], c, p;
        int op = (int)n->op->id;
        if (x < 0 || !gt_rule_has_partial(op, k))
            continue;
        if (is_linear_op(n->op)) {
            double coef = gt_rule_partial(op, k, 0.0, 0.0, 0.0);
            long sh[GT_TAPE_MAXDIM];
            int nd = copy_shape(t, id, sh);
            if (coef == 1.0)
                c = g;
            else if ((st = g_linear(t, nd, sh, 1, &g, &coef, &c)) != GT_OK)
                return st;
            st = g_acc(t, adjn, x, c);
            continue;
        }
        /* the contribution partial * ybar as one node, whose VJP reads the partial again (for
         * ybar) and the second partials (for a and b; none where they are identically zero) */
        long sh[GT_TAPE_MAXDIM], in[2] = {-1, -1};
        int nd = copy_shape(t, id, sh), live = dep(t, g) >= 0;
        for (int j = 0; j < n->nin; j++) {
            if (!gt_rule_second_is_zero_at(op, k, j))
                in[j] = node_in(n)[j];
            live |= in[j] >= 0;
        }
        st = graph_node(t, live ? GT_NODE_PARTIAL : GT_NODE_CONST, (gt_dtype)n->dtype, nd, sh,
                        live ? n->nin : 0, in, &p);
        if (st != GT_OK)
            return st;
        node *pn = &t->nodes[p];
        n = &t->nodes[id];
        pn->op = n->op;
        pn->flags = (unsigned char)k;
        pn->mm[0] = g;
        pn->mm[1] = dep(t, g) >= 0;
        for (int j = 0; j < 3; j++)
            pn->saved[j] = (gt_buf){n->saved[j].data, n->saved[j].n, NULL}; /* owned by n */
        if (pn->size && pn->mm[1] && (gt_rule_partial_reads(op, k) & GT_READS_A)) {
            /* the sweep of pn reads this partial again (for gbar): keep it rather than compute
             * the transcendental twice */
            size_t bytes = pn->size * gt_dtype_size((gt_dtype)n->dtype);
            if (!(pn->part = gt_malloc(bytes)))
                return GT_ENOMEM;
            t->val_bytes += bytes;
            if ((st = partial_times(n, k, NULL, pn->part)) != GT_OK)
                return st;
            chain_into((gt_dtype)n->dtype, pn->size, pn->part, t->nodes[g].val, pn->val);
        } else if (pn->size) {
            if ((st = partial_times(n, k, t->nodes[g].val, pn->val)) != GT_OK)
                return st;
        } else {
            rule_loop((gt_dtype)n->dtype, op, k, -1, pn->size, &n->saved[0], &n->saved[1], &n->saved[2],
                      t->nodes[g].val, NULL, pn->val);
        }
        c = p;
        st = g_acc(t, adjn, x, c);
    }
    return st;
}

/* A node of kind RESHAPE, CAST or REVCUMSUM over the recorded node g, of shape (nd, sh). */
static int g_unary(gt_tape *t, gt_node_kind kind, gt_dtype dt, int nd, const long *sh, long g, long *id)
{
    long in[1] = {dep(t, g)};
    int st = graph_node(t, kind, dt, nd, sh, 1, in, id);
    if (st != GT_OK)
        return st;
    node *y = &t->nodes[*id];
    const node *x = &t->nodes[g];
    if (kind == GT_NODE_REVCUMSUM)
        cumsum_lines(dt, x->val, y->val, y->size, nd ? sh[nd - 1] : 1, 1);
    else
        for (size_t i = 0; i < y->size; i++)
            store_at(dt, y->val, i, load_at((gt_dtype)x->dtype, x->val, i));
    return GT_OK;
}

/* REDUCE y = coef * sum(w * x): xbar = coef * w * broadcast(ybar), w taken as locally constant. */
static int g_reduce(gt_tape *t, long *adjn, long id, long g)
{
    long xsh[GT_TAPE_MAXDIM], ksh[GT_TAPE_MAXDIM], gsh[GT_TAPE_MAXDIM], r = g, b, c;
    long x = node_in(&t->nodes[id])[0];
    int xnd = copy_shape(t, x, xsh), gnd = copy_shape(t, g, gsh), st;
    if (xnd) /* a tape of 0-d nodes only has no shape arena */
        memcpy(ksh, t->dims + t->nodes[id].kshape_off, (size_t)xnd * sizeof *ksh);
    gt_dtype dt = (gt_dtype)t->nodes[id].dtype;
    if (!same_shape(gnd, gsh, xnd, ksh) && (st = g_unary(t, GT_NODE_RESHAPE, dt, xnd, ksh, g, &r)) != GT_OK)
        return st;
    double coef = t->nodes[id].rcoef;
    if ((st = g_linear(t, xnd, xsh, 1, &r, &coef, &b)) != GT_OK)
        return st;
    gt_buf w = t->nodes[id].saved[0];
    if (!w.data)
        return g_acc(t, adjn, x, b);
    if ((st = g_weight(t, b, w, &c)) != GT_OK)
        return st;
    return g_acc(t, adjn, x, c);
}

/* GATHER: each input's adjoint is a scatter-add of ybar over its slice of the indices. */
static int g_gather(gt_tape *t, long *adjn, long id, long g)
{
    int st = GT_OK;
    long off = 0;
    for (int k = 0; k < t->nodes[id].nin && st == GT_OK; k++) {
        const node *n = &t->nodes[id];
        long x = node_in(n)[k], size = n->sizes[k], c;
        if (x >= 0) {
            long sh[GT_TAPE_MAXDIM], in[1] = {dep(t, g)};
            int nd = copy_shape(t, x, sh);
            if ((st = graph_node(t, GT_NODE_SCATTER, (gt_dtype)n->dtype, nd, sh, 1, in, &c)) != GT_OK)
                return st;
            node *y = &t->nodes[c];
            n = &t->nodes[id];
            gt_dtype dt = (gt_dtype)y->dtype;
            y->saved[0] = (gt_buf){n->saved[0].data, n->saved[0].n, NULL}; /* owned by n */
            y->mm[0] = off;
            memset(y->val, 0, (y->size ? y->size : 1) * gt_dtype_size(dt));
            const ptrdiff_t *ix = n->saved[0].data;
            const void *gv = t->nodes[g].val;
            for (size_t j = 0; j < n->size; j++) {
                ptrdiff_t q = ix[j] - (ptrdiff_t)off;
                if (q >= 0 && q < (ptrdiff_t)y->size)
                    store_at(dt, y->val, (size_t)q, load_at(dt, y->val, (size_t)q) + load_at(dt, gv, j));
            }
            st = g_acc(t, adjn, x, c);
        }
        off += size;
    }
    return st;
}

/* MATMUL y = a @ b: abar = ybar @ b^T, bbar = a^T @ ybar, as MATMUL_T nodes. */
static int g_matmul(gt_tape *t, long *adjn, long id, long g)
{
    int st = GT_OK;
    for (int arg = 0; arg < 2 && st == GT_OK; arg++) {
        const node *n = &t->nodes[id];
        long x = node_in(n)[arg], c, sh[GT_TAPE_MAXDIM];
        if (x < 0)
            continue;
        long B = n->mm[0], m = n->mm[1], k = n->mm[2], nn = n->mm[3];
        int nd = copy_shape(t, x, sh);
        /* abar = ybar (m, n) @ b^T: inputs (ybar, b); bbar = a^T (k, m) @ ybar: inputs (a, ybar) */
        long in[2] = {arg == 0 ? dep(t, g) : node_in(n)[0], arg == 0 ? node_in(n)[1] : dep(t, g)};
        if ((st = graph_node(t, GT_NODE_MATMUL_T, (gt_dtype)n->dtype, nd, sh, 2, in, &c)) != GT_OK)
            return st;
        node *y = &t->nodes[c];
        n = &t->nodes[id];
        gt_buf gb = val_buf(t, g);
        y->flags = arg == 0 ? 2 : 1;
        y->mm[0] = B;
        y->mm[1] = arg == 0 ? m : k;
        y->mm[2] = arg == 0 ? nn : m;
        y->mm[3] = arg == 0 ? k : nn;
        y->saved[0] = arg == 0 ? gb : (gt_buf){n->saved[0].data, n->saved[0].n, NULL};
        y->saved[1] = arg == 0 ? (gt_buf){n->saved[1].data, n->saved[1].n, NULL} : gb;
        size_t es = gt_dtype_size((gt_dtype)y->dtype);
        size_t sa = (size_t)y->mm[1] * (size_t)y->mm[2], sb = (size_t)y->mm[2] * (size_t)y->mm[3],
               sy = (size_t)y->mm[1] * (size_t)y->mm[3];
        for (long q = 0; q < B; q++)
            gemm_block((gt_dtype)y->dtype, y->flags & 1, (y->flags >> 1) & 1, y->mm[1], y->mm[3], y->mm[2],
                       (const char *)y->saved[0].data + (size_t)q * sa * es,
                       (const char *)y->saved[1].data + (size_t)q * sb * es, (char *)y->val + (size_t)q * sy * es);
        st = g_acc(t, adjn, x, c);
    }
    return st;
}

int gt_tape_backward_graph(gt_tape *tape, long out, const void *seed, long nleaves, const long *leaves,
                           long *grads)
{
    if (!tape || !seed || out < 0 || out >= tape->count || nleaves < 0 || (nleaves && (!leaves || !grads)))
        return GT_EINVAL;
    for (long i = 0; i < nleaves; i++)
        if (leaves[i] < 0 || leaves[i] >= tape->count)
            return GT_EINVAL;
    gt_tape *t = tape;
    long count0 = t->count, *adjn = gt_malloc((size_t)(out + 1) * sizeof *adjn);
    if (!adjn)
        return GT_ENOMEM;
    for (long i = 0; i <= out; i++)
        adjn[i] = -1;
    long sh[GT_TAPE_MAXDIM];
    int nd = copy_shape(t, out, sh);
    int st = graph_node(t, GT_NODE_CONST, (gt_dtype)t->nodes[out].dtype, nd, sh, 0, NULL, &adjn[out]);
    if (st == GT_OK)
        memcpy(t->nodes[adjn[out]].val, seed, t->nodes[out].size * gt_dtype_size((gt_dtype)t->nodes[out].dtype));
    for (long i = out; i >= 0 && st == GT_OK; i--) {
        long g = adjn[i];
        if (g < 0 || t->nodes[i].kind == GT_NODE_LEAF)
            continue;
        long sh2[GT_TAPE_MAXDIM], c;
        const node *n = &t->nodes[i];
        long x = n->nin ? node_in(n)[0] : -1;
        switch ((gt_node_kind)n->kind) {
        case GT_NODE_ELEMWISE: st = g_elementwise(t, adjn, i, g); break;
        case GT_NODE_LINEAR:
            for (int k = 0; k < t->nodes[i].nin && st == GT_OK; k++) {
                double coef = node_coef(&t->nodes[i])[k];
                x = node_in(&t->nodes[i])[k];
                if (x < 0)
                    continue;
                c = g;
                nd = copy_shape(t, i, sh2);
                if (coef != 1.0)
                    st = g_linear(t, nd, sh2, 1, &g, &coef, &c);
                if (st == GT_OK)
                    st = g_acc(t, adjn, x, c);
            }
            break;
        case GT_NODE_RESHAPE:
        case GT_NODE_CAST:
        case GT_NODE_CUMSUM:
            nd = copy_shape(t, x, sh2);
            st = g_unary(t, n->kind == GT_NODE_CUMSUM ? GT_NODE_REVCUMSUM : (gt_node_kind)n->kind,
                         (gt_dtype)t->nodes[x].dtype, nd, sh2, g, &c);
            if (st == GT_OK)
                st = g_acc(t, adjn, x, c);
            break;
        case GT_NODE_GATHER: st = g_gather(t, adjn, i, g); break;
        case GT_NODE_REDUCE: st = g_reduce(t, adjn, i, g); break;
        case GT_NODE_MATMUL: st = g_matmul(t, adjn, i, g); break;
        default: st = GT_EUNSUPPORTED; break; /* nodes of an earlier recorded sweep */
        }
    }
    if (st == GT_OK) {
        for (long i = 0; i < nleaves; i++)
            grads[i] = leaves[i] <= out ? adjn[leaves[i]] : -1;
    } else {
        /* back to the tape as it was: the recorded nodes own nothing but their values */
        while (t->count > count0)
            free_node_memory(t, &t->nodes[--t->count]);
    }
    gt_free(adjn);
    return st;
}
