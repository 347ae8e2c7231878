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
} node;

struct gt_tape {
    node *nodes;
    long count, cap;
    long *dims;           /* arena of all shapes */
    size_t ndims, dims_cap;
    gt_release_fn release;
    size_t adj_bytes;
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
    return bytes + tape->adj_bytes;
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
    /* the tape owns the handles from here on; drop the ones the sweep will not read */
    n->saved[0] = a;
    n->saved[1] = b;
    n->saved[2] = y;
    if (is_linear_op(op) || nin == 1)
        release_buf(tape, &n->saved[1]);
    if (is_linear_op(op)) {
        release_buf(tape, &n->saved[0]);
        release_buf(tape, &n->saved[2]);
    }
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

int gt_tape_cumulative(gt_tape *tape, gt_node_kind kind, long in, gt_buf x, gt_buf y, long *id)
{
    if (!tape || !id || in < 0 || in >= tape->count)
        return GT_EINVAL;
    if (kind != GT_NODE_CUMSUM && kind != GT_NODE_CUMPROD)
        return GT_EINVAL;
    const node *src = &tape->nodes[in];
    if (src->ndim < 1)
        return GT_EINVAL;
    if (kind == GT_NODE_CUMPROD && (!x.data || !y.data || x.n != src->size || y.n != src->size))
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
    int st = commit_node(tape, n, kind, dtype, nd, shape, id);
    if (st == GT_OK && kind == GT_NODE_CUMPROD) {
        n->saved[0] = x;
        n->saved[1] = y;
    } else if (st == GT_OK) {
        release_buf(tape, &x);
        release_buf(tape, &y);
    }
    return st;
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
 * page fault per 4 KiB (3 us each in a virtual machine measured here: a 10^6-element float64
 * buffer cost 6 ms of faults, more than the arithmetic of the VJP that fills it). */
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

/* Fills `out[0..len)` with the partial d(op)/d(arg k) for output positions [i0, i0+len). */
static int partial_block(const node *n, int k, size_t i0, size_t len, void *out, void *abuf, void *bbuf)
{
    const gt_buf *a = &n->saved[0], *b = &n->saved[1], *y = &n->saved[2];
    size_t es = gt_dtype_size((gt_dtype)n->dtype);
    const char *ap = a->n == 1 ? abuf : (const char *)a->data + i0 * es;
    const char *bp = n->nin == 2 ? (b->n == 1 ? bbuf : (const char *)b->data + i0 * es) : NULL;
    const char *yp = (const char *)y->data + i0 * es;
    if (n->dtype == GT_FLOAT64)
        return gt_op_partials_f64(n->op, len, (const double *)ap, (const double *)bp,
                                  (const double *)yp, k == 0 ? out : NULL, k == 1 ? out : NULL);
    return gt_op_partials_f32(n->op, len, (const float *)ap, (const float *)bp, (const float *)yp,
                              k == 0 ? out : NULL, k == 1 ? out : NULL);
}

static void fill_scalar(const node *n, const gt_buf *b, void *buf)
{
    if (!b->data || b->n != 1)
        return;
    for (int i = 0; i < CHUNK; i++) {
        if (n->dtype == GT_FLOAT64)
            ((double *)buf)[i] = *(const double *)b->data;
        else
            ((float *)buf)[i] = *(const float *)b->data;
    }
}

static int vjp_elementwise(gt_tape *t, node *n)
{
    const long *in = node_in(n);
    const long *ys = node_shape(t, n);
    void *ybar = n->adj;
    int stolen = 0, st = GT_OK;
    size_t es = gt_dtype_size((gt_dtype)n->dtype);
    double pbuf[CHUNK], abuf[CHUNK], bbuf[CHUNK]; /* float blocks fit in double storage */
    if (!is_linear_op(n->op)) {
        fill_scalar(n, &n->saved[0], abuf);
        fill_scalar(n, &n->saved[1], bbuf);
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
            st = partial_block(n, k, i0, len, pbuf, abuf, bbuf);
            if (n->dtype == GT_FLOAT64) {
                double *d = (double *)dst + i0;
                const double *g = (const double *)ybar + i0;
                if (assign)
                    for (size_t i = 0; i < len; i++)
                        d[i] = gt_chain_f64(pbuf[i], g[i]);
                else
                    for (size_t i = 0; i < len; i++)
                        d[i] += gt_chain_f64(pbuf[i], g[i]);
            } else {
                float *d = (float *)dst + i0;
                const float *g = (const float *)ybar + i0;
                const float *p = (const float *)pbuf;
                if (assign)
                    for (size_t i = 0; i < len; i++)
                        d[i] = gt_chain_f32(p[i], g[i]);
                else
                    for (size_t i = 0; i < len; i++)
                        d[i] += gt_chain_f32(p[i], g[i]);
            }
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

/* xbar[i] = sum_{j >= i} ybar[j] * prod_{k <= j, k != i} x[k] along each line of length L. Without
 * zeros in the line this is revcumsum(ybar * y)[i] / x[i]; with zeros it is computed directly. */
#define CUMPROD_LINE(T)                                                                          \
    do {                                                                                         \
        const T *xv = (const T *)x + off, *yv = (const T *)y + off, *g = (const T *)ybar + off;  \
        T *o = (T *)out + off;                                                                   \
        int zero = 0;                                                                            \
        for (long i = 0; i < L; i++)                                                             \
            zero |= xv[i] == 0;                                                                  \
        if (!zero) {                                                                             \
            double r = 0.0;                                                                      \
            for (long i = L - 1; i >= 0; i--) {                                                  \
                r += (double)g[i] * (double)yv[i];                                               \
                o[i] = (T)(r / (double)xv[i]);                                                   \
            }                                                                                    \
        } else {                                                                                 \
            double left = 1.0; /* prod_{k < i} x[k] */                                           \
            for (long i = 0; i < L; i++) {                                                       \
                double s = 0.0, run = left;                                                      \
                for (long j = i; j < L; j++) {                                                   \
                    if (j > i)                                                                   \
                        run *= (double)xv[j];                                                    \
                    s += (double)g[j] * run;                                                     \
                }                                                                                \
                o[i] = (T)s;                                                                     \
                left *= (double)xv[i];                                                           \
            }                                                                                    \
        }                                                                                        \
    } while (0)

static int vjp_cumulative(gt_tape *t, node *n)
{
    long xid = node_in(n)[0];
    const long *shape = node_shape(t, n);
    long L = shape[n->ndim - 1];
    size_t lines = L ? n->size / (size_t)L : 0;
    size_t es = gt_dtype_size((gt_dtype)n->dtype);
    void *out = sweep_alloc(n->size, es, 0);
    if (!out)
        return GT_ENOMEM;
    const void *ybar = n->adj, *x = n->saved[0].data, *y = n->saved[1].data;
    for (size_t line = 0; line < lines; line++) {
        size_t off = line * (size_t)L;
        if (n->kind == GT_NODE_CUMSUM) {
            if (n->dtype == GT_FLOAT64) {
                double r = 0.0;
                for (long i = L - 1; i >= 0; i--)
                    ((double *)out)[off + i] = r += ((const double *)ybar)[off + i];
            } else {
                float r = 0.0f;
                for (long i = L - 1; i >= 0; i--)
                    ((float *)out)[off + i] = r += ((const float *)ybar)[off + i];
            }
        } else if (n->dtype == GT_FLOAT64) {
            CUMPROD_LINE(double);
        } else {
            CUMPROD_LINE(float);
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
        case GT_NODE_CUMSUM:
        case GT_NODE_CUMPROD: st = vjp_cumulative(t, n); break;
        case GT_NODE_MATMUL: st = vjp_matmul(t, n); break;
        case GT_NODE_CAST: st = vjp_cast(t, n); break;
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
