/* _reverse.c: the CPython glue of the reverse-mode tape (csrc/core/tape.h).
 *
 * One Python type, Tape, wraps a gt_tape. Each recording method parses its arguments, turns arrays
 * into C-contiguous buffers of the node's dtype, hands the tape a new reference per buffer (the
 * tape releases them through Py_DecRef when it is freed) and returns the new node id. backward()
 * runs the sweep with the GIL released; a tape in a sweep refuses every other call. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_23_API_VERSION
#include <numpy/arrayobject.h>

#include <structmember.h>

#include "gt_glue.h"
#include "gt_blas.h"
#include "ops.h"
#include "tape.h"

typedef struct {
    PyObject_HEAD
    gt_tape *tape;  /* owned; NULL once released */
    int busy;       /* a sweep is running without the GIL */
        /* order 2 is being recorded (gradtest.reverse.hvp): Python handlers whose rules are not
     * differentiable twice as recorded take another route or refuse; the fast path stays on, the
     * tape records its own backward sweep (backward_graph) */
    int python_recording;
    int observed;         /* dispatch check: each op passes through an observing Tracked subclass */
} TapeObject;

/* Module state: the Python Tracked class, set once by gradtest.reverse, for the fast path. */
typedef struct {
    PyObject *tracked; /* strong reference or NULL */
    Py_ssize_t off_value, off_tape, off_node; /* byte offsets of Tracked's __slots__ */
} reverse_state;

static void release_owner(void *owner) { Py_DecRef((PyObject *)owner); }

/* Returns the tape of `self`, or NULL with RuntimeError when released or busy. */
static gt_tape *live_tape(TapeObject *self)
{
    if (!self->tape) {
        PyErr_SetString(PyExc_RuntimeError, "this tape has been released (its gradient was read "
                        "or its function raised); record a new computation");
        return NULL;
    }
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "this tape is being swept by another thread");
        return NULL;
    }
    return self->tape;
}

static int typenum_of(gt_dtype d) { return d == GT_FLOAT64 ? NPY_DOUBLE : NPY_FLOAT; }

/* Parses a dtype code (0: float64, 1: float32). */
static int parse_dtype(PyObject *obj, gt_dtype *out)
{
    long v = PyLong_AsLong(obj);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v != GT_FLOAT64 && v != GT_FLOAT32) {
        PyErr_Format(PyExc_ValueError, "dtype: expected 0 (float64) or 1 (float32), got %ld", v);
        return -1;
    }
    *out = (gt_dtype)v;
    return 0;
}

static int parse_id(PyObject *obj, long *out)
{
    *out = PyLong_AsLong(obj);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* A tuple of obj's items, TypeError `what` when obj is no sequence. By the rule in gt_glue.h:
 * converting an item (__index__, __float__) may run Python code that mutates a list and frees
 * the items a borrowed view of it would read; the tuple holds them, and cannot change. */
static PyObject *snapshot(PyObject *obj, const char *what)
{
    PyObject *seq = PySequence_Fast(obj, what);
    if (!seq)
        return NULL;
    PyObject *items = PySequence_Tuple(seq); /* the same object when it already is a tuple */
    Py_DECREF(seq);
    return items;
}

/* Parses a sequence of ints into `out` (capacity `cap`); returns its length or -1. */
static int parse_longs(PyObject *obj, long *out, int cap, const char *what)
{
    PyObject *seq = snapshot(obj, what);
    if (!seq)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > cap) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "%s: at most %d entries, got %zd", what, cap, n);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        out[i] = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if (out[i] == -1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
    }
    Py_DECREF(seq);
    return (int)n;
}

/* A new reference to `obj` as a C-contiguous array of `typenum` (safe casts only), filled into
 * *buf with that reference as owner. None gives an empty buffer when `optional`. */
static int to_buf(PyObject *obj, int typenum, gt_buf *buf, int optional, const char *what)
{
    buf->data = NULL;
    buf->n = 0;
    buf->owner = NULL;
    if (obj == Py_None && optional)
        return 0;
    PyArrayObject *arr = (PyArrayObject *)PyArray_FROMANY(obj, typenum, 0, 0, NPY_ARRAY_CARRAY_RO);
    if (!arr) {
        PyErr_Format(PyExc_TypeError, "%s: expected an array convertible to %s", what,
                     typenum == NPY_DOUBLE ? "float64" : typenum == NPY_FLOAT ? "float32" : "intp");
        return -1;
    }
    buf->data = PyArray_DATA(arr);
    buf->n = (size_t)PyArray_SIZE(arr);
    buf->owner = arr;
    return 0;
}

static void drop_buf(gt_buf *buf)
{
    Py_XDECREF((PyObject *)buf->owner);
    buf->owner = NULL;
}

static PyObject *id_or_raise(int st, long id, const char *what)
{
    if (st != GT_OK)
        return gt_raise_status(st, what);
    return PyLong_FromLong(id);
}

static int check_nargs(Py_ssize_t nargs, Py_ssize_t want, const char *name)
{
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments (%zd given)", name, want, nargs);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- methods */

PyDoc_STRVAR(leaf_doc, "leaf(dtype, shape) -> id: records an input of the given dtype code and shape.");
static PyObject *Tape_leaf(TapeObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    gt_tape *t = live_tape(self);
    gt_dtype dtype;
    long shape[64], id = -1;
    if (!t || check_nargs(nargs, 2, "leaf") < 0 || parse_dtype(args[0], &dtype) < 0)
        return NULL;
    int nd = parse_longs(args[1], shape, 64, "shape");
    if (nd < 0)
        return NULL;
    int st_ = gt_tape_leaf(t, dtype, nd, shape, &id);
    return id_or_raise(st_, id, "leaf");
}

PyDoc_STRVAR(elementwise_doc,
             "elementwise(op_index, y, a_id, a, b_id, b) -> id: records y = op(a, b). y: the output "
             "array; a, b: the operands in y's dtype, of y's size or of size 1 (None for b of a "
             "unary op, and for both operands of add/subtract/negative/positive).");
static PyObject *Tape_elementwise(TapeObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    gt_tape *t = live_tape(self);
    if (!t || check_nargs(nargs, 6, "elementwise") < 0)
        return NULL;
    long opi = PyLong_AsLong(args[0]), in[2], id = -1, shape[64];
    if (opi == -1 && PyErr_Occurred())
        return NULL;
    if (opi < 0 || opi >= GT_OP_COUNT) {
        PyErr_Format(PyExc_ValueError, "op_index: expected 0..%d, got %ld", GT_OP_COUNT - 1, opi);
        return NULL;
    }
    if (parse_id(args[2], &in[0]) < 0 || parse_id(args[4], &in[1]) < 0)
        return NULL;
    if (!PyArray_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "y: expected a float32 or float64 ndarray");
        return NULL;
    }
    PyArrayObject *y = (PyArrayObject *)args[1];
    int tn = PyArray_TYPE(y);
    if (tn != NPY_DOUBLE && tn != NPY_FLOAT) {
        PyErr_SetString(PyExc_TypeError, "y: expected a float32 or float64 ndarray");
        return NULL;
    }
    int nd = PyArray_NDIM(y);
    for (int i = 0; i < nd; i++)
        shape[i] = (long)PyArray_DIM(y, i);
    gt_buf a, b, yb;
    if (to_buf(args[3], tn, &a, 1, "a") < 0)
        return NULL;
    if (to_buf(args[5], tn, &b, 1, "b") < 0) {
        drop_buf(&a);
        return NULL;
    }
    if (to_buf(args[1], tn, &yb, 0, "y") < 0) {
        drop_buf(&a);
        drop_buf(&b);
        return NULL;
    }
    int st = gt_tape_elementwise(t, &gt_op_table[opi], tn == NPY_DOUBLE ? GT_FLOAT64 : GT_FLOAT32,
                                 nd, shape, in, a, b, yb, &id);
    if (st != GT_OK) {
        drop_buf(&a);
        drop_buf(&b);
        drop_buf(&yb);
    }
    return id_or_raise(st, id, "elementwise");
}


/* A new reference to obj as an aligned C-contiguous array of `typenum` (safe casts only). */
static PyArrayObject *as_carray(PyObject *obj, int typenum)
{
    if (PyArray_CheckExact(obj)) {
        PyArrayObject *a = (PyArrayObject *)obj;
        if (PyArray_TYPE(a) == typenum && PyArray_IS_C_CONTIGUOUS(a) && PyArray_ISALIGNED(a))
            return (PyArrayObject *)Py_NewRef(obj);
    }
    return (PyArrayObject *)PyArray_FROMANY(obj, typenum, 0, 0, NPY_ARRAY_CARRAY_RO);
}

/* One operand of the fast path: a Tracked of this tape (its value and node id) or a constant.
 * Returns 1 with *val a new (strong) reference, 0 when the general path must handle it, -1 on
 * error; *val is set only on 1. Strong, by the rule in gt_glue.h: the ufunc call that follows may
 * run Python code (a warning filter) that rebinds the Tracked's slots. */
static int fast_operand(TapeObject *self, reverse_state *st, PyObject *x, PyObject **val, long *id)
{
    if ((PyObject *)Py_TYPE(x) != st->tracked) {
        *val = Py_NewRef(x);
        *id = -1;
        return 1;
    }
    /* the slots, read in place: reading them calls nothing, so borrowing is safe until *val */
    PyObject *tape = *(PyObject **)((char *)x + st->off_tape);
    PyObject *node = *(PyObject **)((char *)x + st->off_node);
    PyObject *v = *(PyObject **)((char *)x + st->off_value);
    if (tape != (PyObject *)self || !node || !v || !PyArray_Check(v))
        return 0; /* another tape, or an unset slot: the general path reports it */
    *id = PyLong_AsLong(node);
    if (*id == -1 && PyErr_Occurred())
        return -1;
    *val = Py_NewRef(v);
    return 1;
}

PyDoc_STRVAR(ufunc_doc,
             "ufunc(ufunc, op_index, linear, *inputs) -> Tracked or None: the fast path of an "
             "elementwise op of the table on one or two inputs: calls the ufunc on the values, "
             "records the node and wraps the output. None when the inputs need the general path "
             "(dtype conversion, broadcasting, another tape).");
static PyObject *Tape_ufunc(TapeObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    gt_tape *t = live_tape(self);
    if (!t)
        return NULL;
    if (nargs != 4 && nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "ufunc() takes a ufunc, an op index, a flag and 1 or 2 inputs");
        return NULL;
    }
    reverse_state *st = PyType_GetModuleState(Py_TYPE(self));
    if (!st || !st->tracked || self->observed) /* observed: every op goes through Python */
        Py_RETURN_NONE;
    long opi = PyLong_AsLong(args[1]);
    if (opi == -1 && PyErr_Occurred())
        return NULL;
    if (opi < 0 || opi >= GT_OP_COUNT || gt_op_table[opi].arity != (int)nargs - 3) {
        PyErr_SetString(PyExc_ValueError, "op_index: not an op of this arity");
        return NULL;
    }
    int linear = PyObject_IsTrue(args[2]);
    if (linear < 0)
        return NULL;
    int nin = (int)nargs - 3;
    PyObject *vals[2] = {NULL, NULL};
    long ids[2] = {-1, -1};
    PyObject *res = NULL, *yobj = NULL;
    PyArrayObject *y = NULL;
    gt_buf bufs[3] = {{NULL, 0, NULL}, {NULL, 0, NULL}, {NULL, 0, NULL}};
    for (int k = 0; k < nin; k++) {
        int r = fast_operand(self, st, args[3 + k], &vals[k], &ids[k]);
        if (r < 0)
            goto done;
        if (r == 0)
            goto fallback;
    }
    yobj = PyObject_Vectorcall(args[0], vals, (size_t)nin, NULL);
    if (!yobj)
        goto done;
    y = (PyArrayObject *)PyArray_FROM_O(yobj); /* a 0-d result comes back as a NumPy scalar */
    Py_DECREF(yobj);
    if (!y)
        goto done;
    int tn = PyArray_TYPE(y);
    if (tn != NPY_DOUBLE && tn != NPY_FLOAT)
        goto fallback;
    npy_intp ysize = PyArray_SIZE(y);
    for (int k = 0; k < nin; k++) {
        /* a Tracked input of another dtype needs a cast node: the general path records it */
        if (ids[k] >= 0 && PyArray_TYPE((PyArrayObject *)vals[k]) != tn)
            goto fallback;
        if (linear)
            continue;
        PyArrayObject *a = as_carray(vals[k], tn);
        if (!a) {
            PyErr_Clear();
            goto fallback;
        }
        if (PyArray_SIZE(a) != 1 && !PyArray_SAMESHAPE(a, y)) {
            Py_DECREF(a); /* broadcasting: the general path materializes it */
            goto fallback;
        }
        bufs[k].data = PyArray_DATA(a);
        bufs[k].n = (size_t)PyArray_SIZE(a);
        bufs[k].owner = a;
    }
    if (!linear) {
        PyArrayObject *yc = as_carray((PyObject *)y, tn);
        if (!yc)
            goto done;
        bufs[2].data = PyArray_DATA(yc);
        bufs[2].n = (size_t)ysize;
        bufs[2].owner = yc;
    }
    long shape[64], id = -1;
    int nd = PyArray_NDIM(y);
    for (int i = 0; i < nd; i++)
        shape[i] = (long)PyArray_DIM(y, i);
    int status = gt_tape_elementwise(t, &gt_op_table[opi], tn == NPY_DOUBLE ? GT_FLOAT64 : GT_FLOAT32,
                                     nd, shape, ids, bufs[0], bufs[1], bufs[2], &id);
    if (status != GT_OK) {
        gt_raise_status(status, "elementwise");
        goto done;
    }
    for (int k = 0; k < 3; k++)
        bufs[k].owner = NULL; /* the tape owns them now */
    PyObject *idobj = PyLong_FromLong(id);
    if (!idobj)
        goto done;
    /* a Tracked without running __init__: its three slots are filled directly */
    PyTypeObject *tt = (PyTypeObject *)st->tracked;
    res = tt->tp_alloc(tt, 0);
    if (!res) {
        Py_DECREF(idobj);
        goto done;
    }
    *(PyObject **)((char *)res + st->off_value) = Py_NewRef((PyObject *)y);
    *(PyObject **)((char *)res + st->off_tape) = Py_NewRef((PyObject *)self);
    *(PyObject **)((char *)res + st->off_node) = idobj;
    goto done;
fallback:
    res = Py_NewRef(Py_None);
done:
    for (int k = 0; k < 3; k++)
        drop_buf(&bufs[k]);
    Py_XDECREF(y);
    for (int k = 0; k < nin; k++)
        Py_XDECREF(vals[k]);
    return res;
}

PyDoc_STRVAR(linear_doc, "linear(dtype, shape, ids, coefs) -> id: y = sum coef_k * x_k (broadcast).");
static PyObject *Tape_linear(TapeObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    gt_tape *t = live_tape(self);
    gt_dtype dtype;
    long shape[64], id = -1;
    if (!t || check_nargs(nargs, 4, "linear") < 0 || parse_dtype(args[0], &dtype) < 0)
        return NULL;
    int nd = parse_longs(args[1], shape, 64, "shape");
    if (nd < 0)
        return NULL;
    PyObject *ids = snapshot(args[2], "ids"), *coefs = snapshot(args[3], "coefs");
    PyObject *res = NULL;
    long *in = NULL;
    double *coef = NULL;
    if (!ids || !coefs)
        goto done;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(ids);
    if (n < 1 || n != PySequence_Fast_GET_SIZE(coefs) || n > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "ids, coefs: expected sequences of one equal, non-zero length");
        goto done;
    }
    in = PyMem_Malloc((size_t)n * sizeof *in);
    coef = PyMem_Malloc((size_t)n * sizeof *coef);
    if (!in || !coef) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        if (parse_id(PySequence_Fast_GET_ITEM(ids, k), &in[k]) < 0)
            goto done;
        coef[k] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(coefs, k));
        if (coef[k] == -1.0 && PyErr_Occurred())
            goto done;
    }
    int st_ = gt_tape_linear(t, dtype, nd, shape, (int)n, in, coef, &id);
    res = id_or_raise(st_, id, "linear");
done:
    PyMem_Free(in);
    PyMem_Free(coef);
    Py_XDECREF(ids);
    Py_XDECREF(coefs);
    return res;
}

PyDoc_STRVAR(reshape_doc, "reshape(shape, x_id) -> id.");
static PyObject *Tape_reshape(TapeObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    gt_tape *t = live_tape(self);
    long shape[64], x, id = -1;
    if (!t || check_nargs(nargs, 2, "reshape") < 0 || parse_id(args[1], &x) < 0)
        return NULL;
    int nd = parse_longs(args[0], shape, 64, "shape");
    if (nd < 0)
        return NULL;
    int st_ = gt_tape_reshape(t, nd, shape, x, &id);
    return id_or_raise(st_, id, "reshape");
}

PyDoc_STRVAR(gather_doc,
             "gather(dtype, idx, ids, sizes) -> id: y.flat[j] = concat(x_k.flat)[idx.flat[j]], y of "
             "idx's shape; sizes[k] is input k's size.");
static PyObject *Tape_gather(TapeObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    gt_tape *t = live_tape(self);
    gt_dtype dtype;
    long shape[64], id = -1;
    if (!t || check_nargs(nargs, 4, "gather") < 0 || parse_dtype(args[0], &dtype) < 0)
        return NULL;
    if (!PyArray_Check(args[1]) || PyArray_TYPE((PyArrayObject *)args[1]) != NPY_INTP) {
        PyErr_SetString(PyExc_TypeError, "idx: expected an intp ndarray");
        return NULL;
    }
    PyArrayObject *ix = (PyArrayObject *)args[1];
    int nd = PyArray_NDIM(ix);
    for (int i = 0; i < nd; i++)
        shape[i] = (long)PyArray_DIM(ix, i);
    Py_ssize_t n = PySequence_Size(args[2]);
    if (n < 1 || n > 4096 || PySequence_Size(args[3]) != n) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "ids, sizes: expected 1..4096 entries of equal length");
        return NULL;
    }
    long *in = PyMem_Malloc((size_t)n * 2 * sizeof *in);
    if (!in)
        return PyErr_NoMemory();
    PyObject *res = NULL;
    gt_buf b;
    if (parse_longs(args[2], in, (int)n, "ids") < 0 || parse_longs(args[3], in + n, (int)n, "sizes") < 0)
        goto done;
    if (to_buf(args[1], NPY_INTP, &b, 0, "idx") < 0)
        goto done;
    int st = gt_tape_gather(t, dtype, nd, shape, (int)n, in, in + n, b, &id);
    if (st != GT_OK)
        drop_buf(&b);
    if (st == GT_EINVAL) {
        PyErr_SetString(PyExc_ValueError, "gather: an index is out of range, or the inputs do not "
                        "match the tape");
        goto done;
    }
    res = id_or_raise(st, id, "gather");
done:
    PyMem_Free(in);
    return res;
}

PyDoc_STRVAR(reduce_doc, "reduce(shape, kshape, x_id, coef, w) -> id: y = coef * sum(w * x) over "
             "the axes where kshape is 1; w None or x-sized.");
static PyObject *Tape_reduce(TapeObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    gt_tape *t = live_tape(self);
    long shape[64], kshape[64], x, id = -1;
    gt_dtype dtype;
    if (!t || check_nargs(nargs, 5, "reduce") < 0 || parse_id(args[2], &x) < 0)
        return NULL;
    int nd = parse_longs(args[0], shape, 64, "shape");
    int knd = nd < 0 ? -1 : parse_longs(args[1], kshape, 64, "kshape");
    if (knd < 0)
        return NULL;
    int xnd;
    if (gt_tape_node_info(t, x, &dtype, &xnd, NULL) != GT_OK || xnd != knd) {
        PyErr_SetString(PyExc_ValueError, "reduce: x_id is not a node of this tape, or kshape "
                        "does not have its number of dimensions");
        return NULL;
    }
    double coef = PyFloat_AsDouble(args[3]);
    if (coef == -1.0 && PyErr_Occurred())
        return NULL;
    gt_buf w;
    if (to_buf(args[4], typenum_of(dtype), &w, 1, "w") < 0)
        return NULL;
    int st = gt_tape_reduce(t, nd, shape, kshape, x, coef, w, &id);
    if (st != GT_OK)
        drop_buf(&w);
    return id_or_raise(st, id, "reduce");
}

PyDoc_STRVAR(cumsum_doc, "cumsum(x_id) -> id: the cumulative sum along the last axis.");
static PyObject *Tape_cumsum(TapeObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    gt_tape *t = live_tape(self);
    long x, id = -1;
    if (!t || check_nargs(nargs, 1, "cumsum") < 0 || parse_id(args[0], &x) < 0)
        return NULL;
    int st = gt_tape_cumsum(t, x, &id);
    return id_or_raise(st, id, "cumsum");
}

PyDoc_STRVAR(matmul_doc, "matmul(shape, a_id, b_id, batch, m, k, n, a, b) -> id: y[q] = a[q] @ b[q] "
             "over C-contiguous (batch, m, k) and (batch, k, n) blocks.");
static PyObject *Tape_matmul(TapeObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    gt_tape *t = live_tape(self);
    long shape[64], in[2], dims[4], id = -1;
    if (!t || check_nargs(nargs, 9, "matmul") < 0)
        return NULL;
    int nd = parse_longs(args[0], shape, 64, "shape");
    if (nd < 0 || parse_id(args[1], &in[0]) < 0 || parse_id(args[2], &in[1]) < 0)
        return NULL;
    for (int i = 0; i < 4; i++)
        if (parse_id(args[3 + i], &dims[i]) < 0)
            return NULL;
    if (!PyArray_Check(args[7]) || !PyArray_Check(args[8])) {
        PyErr_SetString(PyExc_TypeError, "a, b: expected ndarrays");
        return NULL;
    }
    int tn = PyArray_TYPE((PyArrayObject *)args[7]);
    if (tn != NPY_DOUBLE && tn != NPY_FLOAT) {
        PyErr_SetString(PyExc_TypeError, "a: expected float32 or float64");
        return NULL;
    }
    gt_buf a, b;
    if (to_buf(args[7], tn, &a, 0, "a") < 0)
        return NULL;
    if (to_buf(args[8], tn, &b, 0, "b") < 0) {
        drop_buf(&a);
        return NULL;
    }
    int st = gt_tape_matmul(t, tn == NPY_DOUBLE ? GT_FLOAT64 : GT_FLOAT32, nd, shape, in, dims[0],
                            dims[1], dims[2], dims[3], a, b, &id);
    if (st != GT_OK) {
        drop_buf(&a);
        drop_buf(&b);
    }
    return id_or_raise(st, id, "matmul");
}

PyDoc_STRVAR(cast_doc, "cast(dtype, x_id) -> id.");
static PyObject *Tape_cast(TapeObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    gt_tape *t = live_tape(self);
    gt_dtype dtype;
    long x, id = -1;
    if (!t || check_nargs(nargs, 2, "cast") < 0 || parse_dtype(args[0], &dtype) < 0 ||
        parse_id(args[1], &x) < 0)
        return NULL;
    int st_ = gt_tape_cast(t, dtype, x, &id);
    return id_or_raise(st_, id, "cast");
}

PyDoc_STRVAR(backward_doc, "backward(out_id, seed): the sweep from node out_id with cotangent seed "
             "(an array of the node's shape); runs without the GIL.");
static PyObject *Tape_backward(TapeObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    gt_tape *t = live_tape(self);
    long out;
    gt_dtype dtype;
    int nd;
    const long *shape;
    if (!t || check_nargs(nargs, 2, "backward") < 0 || parse_id(args[0], &out) < 0)
        return NULL;
    if (gt_tape_node_info(t, out, &dtype, &nd, &shape) != GT_OK) {
        PyErr_Format(PyExc_ValueError, "out_id: %ld is not a node of this tape", out);
        return NULL;
    }
    PyArrayObject *seed = (PyArrayObject *)PyArray_FROMANY(args[1], typenum_of(dtype), 0, 0,
                                                           NPY_ARRAY_CARRAY_RO | NPY_ARRAY_FORCECAST);
    if (!seed)
        return NULL;
    size_t size = 1;
    for (int i = 0; i < nd; i++)
        size *= (size_t)shape[i];
    if ((size_t)PyArray_SIZE(seed) != size) {
        PyErr_Format(PyExc_ValueError, "seed: expected %zu values (the output's size), got %zd",
                     size, (Py_ssize_t)PyArray_SIZE(seed));
        Py_DECREF(seed);
        return NULL;
    }
    int st;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    st = gt_tape_backward(t, out, PyArray_DATA(seed));
    Py_END_ALLOW_THREADS
    self->busy = 0;
    Py_DECREF(seed);
    if (st != GT_OK)
        return gt_raise_status(st, "backward");
    Py_RETURN_NONE;
}

PyDoc_STRVAR(backward_graph_doc, "backward_graph(out_id, seed, leaves) -> list: order 2. The sweep "
             "from node out_id with cotangent seed, recorded on the tape as new nodes; for each "
             "leaf id in leaves, None (no gradient reaches it) or (node id, a copy of its value) of "
             "the leaf's gradient node, which backward() can sweep again. Runs without the GIL.");
static PyObject *Tape_backward_graph(TapeObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    gt_tape *t = live_tape(self);
    long out, *ids = NULL;
    gt_dtype dtype;
    int nd;
    const long *shape;
    PyArrayObject *seed = NULL;
    PyObject *items = NULL, *result = NULL;
    if (!t || check_nargs(nargs, 3, "backward_graph") < 0 || parse_id(args[0], &out) < 0)
        return NULL;
    if (gt_tape_node_info(t, out, &dtype, &nd, &shape) != GT_OK) {
        PyErr_Format(PyExc_ValueError, "out_id: %ld is not a node of this tape", out);
        return NULL;
    }
    size_t size = 1;
    for (int i = 0; i < nd; i++)
        size *= (size_t)shape[i];
    seed = (PyArrayObject *)PyArray_FROMANY(args[1], typenum_of(dtype), 0, 0,
                                            NPY_ARRAY_CARRAY_RO | NPY_ARRAY_FORCECAST);
    if (!seed)
        goto done;
    if ((size_t)PyArray_SIZE(seed) != size) {
        PyErr_Format(PyExc_ValueError, "seed: expected %zu values (the output's size), got %zd",
                     size, (Py_ssize_t)PyArray_SIZE(seed));
        goto done;
    }
    if (!(items = snapshot(args[2], "leaves: expected a sequence of node ids")))
        goto done;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(items);
    if (!(ids = PyMem_Malloc((size_t)(2 * n + 1) * sizeof *ids))) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (parse_id(PySequence_Fast_GET_ITEM(items, i), &ids[i]) < 0)
            goto done;
    int st;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    st = gt_tape_backward_graph(t, out, PyArray_DATA(seed), (long)n, ids, ids + n);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (st != GT_OK) {
        gt_raise_status(st, "backward_graph");
        goto done;
    }
    if (!(result = PyList_New(n)))
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        long g = ids[n + i];
        const void *data;
        PyObject *entry = NULL;
        if (g < 0) {
            entry = Py_NewRef(Py_None);
        } else if (gt_tape_node_info(t, g, &dtype, &nd, &shape) == GT_OK && gt_tape_value(t, g, &data) == GT_OK) {
            npy_intp dims[64];
            for (int d = 0; d < nd; d++)
                dims[d] = (npy_intp)shape[d];
            PyObject *arr = PyArray_SimpleNew(nd, dims, typenum_of(dtype));
            if (arr) {
                memcpy(PyArray_DATA((PyArrayObject *)arr), data, (size_t)PyArray_NBYTES((PyArrayObject *)arr));
                entry = Py_BuildValue("(lN)", g, arr);
            }
        } else {
            gt_raise_status(GT_EINVAL, "backward_graph");
        }
        if (!entry) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, i, entry);
    }
done:
    PyMem_Free(ids);
    Py_XDECREF(items);
    Py_XDECREF(seed);
    return result;
}


#define ADJOINT_CAPSULE "gradtest._reverse.adjoint"

static void free_adjoint_capsule(PyObject *capsule)
{
    gt_free(PyCapsule_GetPointer(capsule, ADJOINT_CAPSULE));
}

/* A new ndarray over `data` (a gt_malloc block the array then owns, freed with it); frees `data`
 * and returns NULL on failure. */
static PyObject *array_owning(void *data, int nd, const npy_intp *dims, int typenum)
{
    PyObject *capsule = PyCapsule_New(data, ADJOINT_CAPSULE, free_adjoint_capsule);
    if (!capsule) {
        gt_free(data);
        return NULL;
    }
    PyObject *arr = PyArray_SimpleNewFromData(nd, dims, typenum, data);
    if (!arr) {
        Py_DECREF(capsule);
        return NULL;
    }
    if (PyArray_SetBaseObject((PyArrayObject *)arr, capsule) < 0) { /* steals capsule */
        Py_DECREF(arr);
        return NULL;
    }
    return arr;
}

PyDoc_STRVAR(adjoint_doc, "adjoint(id, take=False) -> ndarray or None: the adjoint of node id after a "
             "sweep (None when no gradient reached it): a copy, or with take true the tape's own buffer, "
             "which the tape then forgets (a second call returns None).");
static PyObject *Tape_adjoint(TapeObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    long id;
    gt_dtype dtype;
    int nd;
    const long *shape;
    const void *data;
    if (nargs != 1 && nargs != 2) {
        PyErr_Format(PyExc_TypeError, "adjoint() takes 1 or 2 arguments (%zd given)", nargs);
        return NULL;
    }
    if (parse_id(args[0], &id) < 0)
        return NULL;
    int take = nargs == 2 ? PyObject_IsTrue(args[1]) : 0;
    if (take < 0)
        return NULL;
    gt_tape *t = live_tape(self); /* after the calls that can run Python code */
    if (!t)
        return NULL;
    if (gt_tape_node_info(t, id, &dtype, &nd, &shape) != GT_OK || gt_tape_adjoint(t, id, &data) != GT_OK) {
        PyErr_Format(PyExc_ValueError, "id: %ld is not a node of this tape", id);
        return NULL;
    }
    if (!data)
        Py_RETURN_NONE;
    npy_intp dims[64];
    for (int i = 0; i < nd; i++)
        dims[i] = (npy_intp)shape[i];
    if (take) {
        void *own = NULL;
        if (gt_tape_take_adjoint(t, id, &own) != GT_OK || !own) {
            PyErr_SetString(PyExc_RuntimeError, "adjoint: the buffer could not be taken");
            return NULL;
        }
        return array_owning(own, nd, dims, typenum_of(dtype));
    }
    PyObject *arr = PyArray_SimpleNew(nd, dims, typenum_of(dtype));
    if (!arr)
        return NULL;
    memcpy(PyArray_DATA((PyArrayObject *)arr), data, (size_t)PyArray_NBYTES((PyArrayObject *)arr));
    return arr;
}

PyDoc_STRVAR(release_doc, "release(): frees the tape and its saved values; idempotent.");
static PyObject *Tape_release(TapeObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "this tape is being swept by another thread");
        return NULL;
    }
    gt_tape *t = self->tape;
    self->tape = NULL;
    gt_tape_free(t);
    Py_RETURN_NONE;
}

static PyObject *Tape_get_nbytes(TapeObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSize_t(gt_tape_nbytes(self->tape));
}

static PyObject *Tape_get_released(TapeObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->tape == NULL);
}

/* The two flags share their accessors: `closure` is the flag's offset in TapeObject. */
static PyObject *Tape_get_flag(TapeObject *self, void *closure)
{
    return PyBool_FromLong(*(int *)((char *)self + (size_t)closure));
}

static int Tape_set_flag(TapeObject *self, PyObject *value, void *closure)
{
    int v = value ? PyObject_IsTrue(value) : 0;
    if (v < 0)
        return -1;
    *(int *)((char *)self + (size_t)closure) = v;
    return 0;
}

/* python_recording also tells the tape to keep what a recorded (order 2) sweep reads. */
static int Tape_set_recording(TapeObject *self, PyObject *value, void *closure)
{
    if (Tape_set_flag(self, value, closure) < 0)
        return -1;
    gt_tape_set_order2(self->tape, self->python_recording);
    return 0;
}

static Py_ssize_t Tape_len(TapeObject *self) { return (Py_ssize_t)gt_tape_size(self->tape); }

static PyObject *Tape_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    if (PyTuple_GET_SIZE(args) || (kwargs && PyDict_GET_SIZE(kwargs))) {
        PyErr_SetString(PyExc_TypeError, "Tape() takes no arguments");
        return NULL;
    }
    TapeObject *self = (TapeObject *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    int st = gt_tape_new(release_owner, &self->tape);
    if (st != GT_OK) {
        Py_DECREF(self);
        return gt_raise_status(st, "Tape");
    }
    return (PyObject *)self;
}

static void Tape_dealloc(TapeObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    gt_tape_free(self->tape); /* never busy here: a running sweep holds a reference */
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

#define FAST(name) {#name, (PyCFunction)(void (*)(void))Tape_##name, METH_FASTCALL, name##_doc}
static PyMethodDef Tape_methods[] = {
    FAST(leaf), FAST(ufunc), FAST(elementwise), FAST(linear), FAST(reshape), FAST(gather), FAST(reduce),
    FAST(cumsum), FAST(matmul), FAST(cast), FAST(backward), FAST(backward_graph), FAST(adjoint),
    {"release", (PyCFunction)Tape_release, METH_NOARGS, release_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Tape_getset[] = {
    {"nbytes", (getter)Tape_get_nbytes, NULL, "bytes of tape-owned memory", NULL},
    {"released", (getter)Tape_get_released, NULL, "whether release() was called", NULL},
    {"python_recording", (getter)Tape_get_flag, (setter)Tape_set_recording,
     "order 2 is being recorded: set by gradtest.reverse.hvp, read by handlers that record order 2 "
     "differently or refuse it; while set, elementwise nodes also keep what their second partials "
     "read (backward_graph needs them)",
     (void *)offsetof(TapeObject, python_recording)},
    {"observed", (getter)Tape_get_flag, (setter)Tape_set_flag,
     "dispatch check: when true, Tape.ufunc declines so that every op passes through the observing "
     "Tracked subclass's NumPy hooks",
     (void *)offsetof(TapeObject, observed)},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Tape_slots[] = {
    {Py_tp_new, Tape_new},
    {Py_tp_dealloc, Tape_dealloc},
    {Py_tp_methods, Tape_methods},
    {Py_tp_getset, Tape_getset},
    {Py_sq_length, Tape_len},
    {Py_tp_doc, "A reverse-mode tape held in C: nodes, saved values and adjoints."},
    {0, NULL},
};

static PyType_Spec Tape_spec = {
    "gradtest._reverse.Tape", sizeof(TapeObject), 0, Py_TPFLAGS_DEFAULT, Tape_slots,
};

PyDoc_STRVAR(op_indices_doc, "op_indices() -> dict: ufunc name -> op table index.");
static PyObject *op_indices(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored))
{
    PyObject *d = PyDict_New();
    for (int i = 0; d && i < GT_OP_COUNT; i++) {
        PyObject *v = PyLong_FromLong(i);
        if (!v || PyDict_SetItemString(d, gt_op_table[i].name, v) < 0) {
            Py_XDECREF(v);
            Py_CLEAR(d);
            break;
        }
        Py_DECREF(v);
    }
    return d;
}

PyDoc_STRVAR(alloc_live_doc, "alloc_live() -> int: live core allocations on this thread (tests).");
static PyObject *alloc_live(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLong(gt_alloc_live());
}

PyDoc_STRVAR(alloc_fail_after_doc, "alloc_fail_after(n): make the n-th next core allocation on this "
             "thread fail (0 disables; tests).");
static PyObject *alloc_fail_after(PyObject *Py_UNUSED(m), PyObject *arg)
{
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    gt_alloc_fail_after(n);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(set_tracked_type_doc, "set_tracked_type(cls): the class Tape.ufunc wraps its outputs in "
             "(called once by gradtest.reverse).");
static PyObject *set_tracked_type(PyObject *m, PyObject *cls)
{
    if (!PyType_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "cls: expected a class");
        return NULL;
    }
    reverse_state *st = PyModule_GetState(m);
    const char *names[3] = {"value", "tape", "node"};
    Py_ssize_t offsets[3];
    for (int i = 0; i < 3; i++) {
        PyObject *d = PyObject_GetAttrString(cls, names[i]);
        if (!d)
            return NULL;
        int ok = Py_IS_TYPE(d, &PyMemberDescr_Type) &&
                 ((PyMemberDescrObject *)d)->d_member->type == T_OBJECT_EX;
        if (ok)
            offsets[i] = ((PyMemberDescrObject *)d)->d_member->offset;
        Py_DECREF(d);
        if (!ok) {
            PyErr_Format(PyExc_TypeError, "cls: expected a class with a __slots__ entry %s", names[i]);
            return NULL;
        }
    }
    st->off_value = offsets[0];
    st->off_tape = offsets[1];
    st->off_node = offsets[2];
    Py_XSETREF(st->tracked, Py_NewRef(cls));
    Py_RETURN_NONE;
}

PyDoc_STRVAR(gemm_doc, "gemm(a, b, batch, m, k, n) -> ndarray: c[q] = a[q] @ b[q] through the core's "
             "BLAS (the primal of a recorded matmul), for C-contiguous float32/float64 arrays of one "
             "dtype holding batch*m*k and batch*k*n elements; returns batch*m*n elements, flat.");
static PyObject *gemm(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    long dims[4];
    if (check_nargs(nargs, 6, "gemm") < 0)
        return NULL;
    for (int i = 0; i < 4; i++) {
        dims[i] = PyLong_AsLong(args[2 + i]);
        if (dims[i] == -1 && PyErr_Occurred())
            return NULL;
        if (dims[i] < 0) {
            PyErr_SetString(PyExc_ValueError, "gemm: extents must be >= 0");
            return NULL;
        }
    }
    /* after the calls that can run Python code (__index__): the arrays are read only below */
    PyArrayObject *a = (PyArrayObject *)args[0], *b = (PyArrayObject *)args[1];
    if (!PyArray_Check(args[0]) || !PyArray_Check(args[1]) || !PyArray_IS_C_CONTIGUOUS(a) ||
        !PyArray_IS_C_CONTIGUOUS(b) || PyArray_TYPE(a) != PyArray_TYPE(b) ||
        (PyArray_TYPE(a) != NPY_DOUBLE && PyArray_TYPE(a) != NPY_FLOAT)) {
        PyErr_SetString(PyExc_TypeError, "gemm: expected two C-contiguous arrays of one dtype, float32 or float64");
        return NULL;
    }
    long batch = dims[0], m = dims[1], k = dims[2], n = dims[3];
    if ((size_t)PyArray_SIZE(a) != (size_t)batch * (size_t)m * (size_t)k ||
        (size_t)PyArray_SIZE(b) != (size_t)batch * (size_t)k * (size_t)n) {
        PyErr_SetString(PyExc_ValueError, "gemm: the arrays' sizes do not match batch, m, k, n");
        return NULL;
    }
    npy_intp size = (npy_intp)((size_t)batch * (size_t)m * (size_t)n);
    int typenum = PyArray_TYPE(a);
    PyObject *c = PyArray_SimpleNew(1, &size, typenum);
    if (!c)
        return NULL;
    gt_dtype dt = typenum == NPY_DOUBLE ? GT_FLOAT64 : GT_FLOAT32;
    int st;
    Py_BEGIN_ALLOW_THREADS
    st = gt_tape_gemm(dt, batch, m, k, n, PyArray_DATA(a), PyArray_DATA(b), PyArray_DATA((PyArrayObject *)c));
    Py_END_ALLOW_THREADS
    if (st != GT_OK) {
        Py_DECREF(c);
        return gt_raise_status(st, "gemm");
    }
    return c;
}

static PyMethodDef reverse_methods[] = {
    {"gemm", (PyCFunction)(void (*)(void))gemm, METH_FASTCALL, gemm_doc},
    {"set_tracked_type", set_tracked_type, METH_O, set_tracked_type_doc},
    {"op_indices", op_indices, METH_NOARGS, op_indices_doc},
    {"alloc_live", alloc_live, METH_NOARGS, alloc_live_doc},
    {"alloc_fail_after", alloc_fail_after, METH_O, alloc_fail_after_doc},
    {NULL, NULL, 0, NULL},
};

static int reverse_exec(PyObject *module)
{
    gt_blas_init_threads(); /* the core's pool: one thread unless GRADTEST_BLAS_THREADS says */
    if (PyArray_ImportNumPyAPI() < 0)
        return -1;
    PyObject *type = PyType_FromModuleAndSpec(module, &Tape_spec, NULL);
    if (!type)
        return -1;
    int rc = PyModule_AddObjectRef(module, "Tape", type);
    Py_DECREF(type);
    return rc;
}

static PyModuleDef_Slot reverse_slots[] = {
    {Py_mod_exec, reverse_exec},
    {0, NULL},
};

static int reverse_traverse(PyObject *m, visitproc visit, void *arg)
{
    reverse_state *st = PyModule_GetState(m);
    if (st)
        Py_VISIT(st->tracked);
    return 0;
}

static int reverse_clear(PyObject *m)
{
    reverse_state *st = PyModule_GetState(m);
    if (st) {
        Py_CLEAR(st->tracked);
    }
    return 0;
}

static void reverse_free(void *m) { reverse_clear((PyObject *)m); }

static struct PyModuleDef reverse_module = {
    PyModuleDef_HEAD_INIT, "gradtest._reverse",
    "The reverse-mode tape of gradtest, recorded and swept in C.", sizeof(reverse_state),
    reverse_methods, reverse_slots, reverse_traverse, reverse_clear, reverse_free,
};

PyMODINIT_FUNC PyInit__reverse(void) { return PyModuleDef_Init(&reverse_module); }
