/* _forward.c: the CPython glue of the forward-mode (dual-number) kernels in csrc/core/dual.c.
 *
 * Each entry point parses and validates its arguments, works out the broadcast strides, and runs
 * the core kernel with the GIL released for large work. The primal values are computed by the
 * caller with NumPy itself; these functions only compute tangents. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_23_API_VERSION
#include <numpy/arrayobject.h>

#include "dual.h"
#include "gt_glue.h"
#include "ops.h"

/* Work (elements times directions) above which the GIL is released around a kernel. */
#define GT_NOGIL_WORK 32768

/* Checks that obj is an aligned ndarray of the given NumPy type number. Sets an exception naming
 * `what` and returns NULL otherwise; returns a borrowed pointer on success. */
static PyArrayObject *checked_array(PyObject *obj, int type, const char *what)
{
    if (!PyArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s: expected a NumPy array, got %.200s", what, Py_TYPE(obj)->tp_name);
        return NULL;
    }
    PyArrayObject *arr = (PyArrayObject *)obj;
    if (PyArray_TYPE(arr) != type || !PyArray_ISALIGNED(arr)) {
        PyErr_Format(PyExc_TypeError, "%s: expected an aligned %s array", what,
                     type == NPY_DOUBLE ? "float64" : "float32");
        return NULL;
    }
    return arr;
}

/* Strides that broadcast `arr` (its last `nd - lead` axes right-aligned against `shape`, after
 * `lead` leading axes taken as they are) to `shape`, written to out[0..nd). Returns -1 with a
 * ValueError naming `what` if the shapes do not broadcast. */
static int broadcast_strides(PyArrayObject *arr, int lead, int nd, const npy_intp *shape,
                             ptrdiff_t *out, const char *what)
{
    int an = PyArray_NDIM(arr);
    if (an - lead > nd - lead || an < lead) {
        PyErr_Format(PyExc_ValueError, "%s: has %d dimensions, cannot broadcast to %d", what, an, nd);
        return -1;
    }
    for (int d = 0; d < lead; d++) {
        if (PyArray_DIM(arr, d) != shape[d]) {
            PyErr_Format(PyExc_ValueError, "%s: leading dimension %d is %zd, expected %zd", what, d,
                         (Py_ssize_t)PyArray_DIM(arr, d), (Py_ssize_t)shape[d]);
            return -1;
        }
        out[d] = PyArray_STRIDE(arr, d);
    }
    int offset = nd - an; /* arr's axis i is output axis i + offset (for i >= lead) */
    for (int d = lead; d < nd; d++) {
        int i = d - offset;
        if (i < lead) {
            out[d] = 0;
            continue;
        }
        npy_intp dim = PyArray_DIM(arr, i);
        if (dim == shape[d])
            out[d] = dim == 1 ? 0 : PyArray_STRIDE(arr, i);
        else if (dim == 1)
            out[d] = 0;
        else {
            PyErr_Format(PyExc_ValueError, "%s: dimension %d is %zd, cannot broadcast to %zd", what, i,
                         (Py_ssize_t)dim, (Py_ssize_t)shape[d]);
            return -1;
        }
    }
    return 0;
}

/* Parsed, broadcast form of one argument. Holds borrowed references only. */
typedef struct arg_view {
    ptrdiff_t vstrides[NPY_MAXDIMS];
    ptrdiff_t tstrides[NPY_MAXDIMS + 1];
    gt_dual_arg arg;
} arg_view;

/* Fills `view` for value array `v` and tangent `t` (None for a constant) against the output
 * shape (k, *shape). Returns -1 with an exception set on bad input. */
static int make_arg(PyObject *v, PyObject *t, int type, int nd, const npy_intp *shape, npy_intp *k,
                    arg_view *view, const char *vname, const char *tname)
{
    npy_intp full[NPY_MAXDIMS + 1];
    PyArrayObject *va = checked_array(v, type, vname);
    if (!va || broadcast_strides(va, 0, nd, shape, view->vstrides, vname))
        return -1;
    view->arg = (gt_dual_arg){PyArray_BYTES(va), view->vstrides, NULL, NULL};
    if (t == Py_None)
        return 0;
    PyArrayObject *ta = checked_array(t, type, tname);
    if (!ta)
        return -1;
    if (PyArray_NDIM(ta) < 1 || PyArray_NDIM(ta) > nd + 1) {
        PyErr_Format(PyExc_ValueError, "%s: expected shape (k,) + a shape broadcastable to the output", tname);
        return -1;
    }
    if (*k < 0)
        *k = PyArray_DIM(ta, 0);
    full[0] = *k;
    for (int d = 0; d < nd; d++)
        full[d + 1] = shape[d];
    if (broadcast_strides(ta, 1, nd + 1, full, view->tstrides, tname))
        return -1;
    view->arg.tangent = PyArray_BYTES(ta);
    view->arg.tangent_strides = view->tstrides;
    return 0;
}

PyDoc_STRVAR(op_names_doc,
"op_names()\n--\n\n"
"Names of the op table's entries, in table order (the indices `elementwise` takes).");

static PyObject *op_names(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    PyObject *names = PyTuple_New(GT_OP_COUNT);
    if (!names)
        return NULL;
    for (int i = 0; i < GT_OP_COUNT; i++) {
        PyObject *s = PyUnicode_FromString(gt_op_table[i].name);
        if (!s) {
            Py_DECREF(names);
            return NULL;
        }
        PyTuple_SET_ITEM(names, i, s);
    }
    return names;
}

PyDoc_STRVAR(elementwise_doc,
"elementwise(op, y, a, at, b=None, bt=None)\n--\n\n"
"Tangents of y = op(a[, b]) for the op-table entry with index `op`.\n\n"
"y is the primal output (C-contiguous float64 or float32); a, b are the primal inputs of y's\n"
"dtype, broadcastable to y.shape; at, bt are their tangents of shape (k,) + a.shape (or any shape\n"
"broadcastable to it after the k axis), or None for constants. Returns a new (k,) + y.shape array.");

static PyObject *elementwise(PyObject *self, PyObject *const *argv, Py_ssize_t argc)
{
    (void)self;
    arg_view av, bv;
    npy_intp k = -1;
    if (argc != 4 && argc != 6) {
        PyErr_Format(PyExc_TypeError, "elementwise expected 4 or 6 arguments, got %zd", argc);
        return NULL;
    }
    long index = PyLong_AsLong(argv[0]);
    if (index == -1 && PyErr_Occurred())
        return NULL;
    if (index < 0 || index >= GT_OP_COUNT) {
        PyErr_Format(PyExc_ValueError, "op: expected an op-table index in [0, %d), got %ld", GT_OP_COUNT, index);
        return NULL;
    }
    const gt_op *op = &gt_op_table[index];
    if ((op->arity == 2) != (argc == 6)) {
        PyErr_Format(PyExc_TypeError, "op %s takes %d argument(s)", op->name, op->arity);
        return NULL;
    }
    if (!PyArray_Check(argv[1])) {
        PyErr_SetString(PyExc_TypeError, "y: expected a NumPy array");
        return NULL;
    }
    PyArrayObject *y = (PyArrayObject *)argv[1];
    int type = PyArray_TYPE(y);
    if ((type != NPY_DOUBLE && type != NPY_FLOAT) || !PyArray_IS_C_CONTIGUOUS(y) || !PyArray_ISALIGNED(y)) {
        PyErr_SetString(PyExc_TypeError, "y: expected a C-contiguous, aligned float64 or float32 array");
        return NULL;
    }
    int nd = PyArray_NDIM(y);
    npy_intp *shape = PyArray_DIMS(y);
    if (make_arg(argv[2], argv[3], type, nd, shape, &k, &av, "a", "at"))
        return NULL;
    if (argc == 6 && make_arg(argv[4], argv[5], type, nd, shape, &k, &bv, "b", "bt"))
        return NULL;
    if (k < 0) {
        PyErr_SetString(PyExc_ValueError, "at, bt: at least one argument needs tangents");
        return NULL;
    }
    npy_intp full[NPY_MAXDIMS + 1];
    size_t ushape[NPY_MAXDIMS];
    full[0] = k;
    for (int d = 0; d < nd; d++) {
        full[d + 1] = shape[d];
        ushape[d] = (size_t)shape[d];
    }
    PyArrayObject *yt = (PyArrayObject *)PyArray_SimpleNew(nd + 1, full, type);
    if (!yt)
        return NULL;
    gt_dtype dtype = type == NPY_DOUBLE ? GT_FLOAT64 : GT_FLOAT32;
    int status;
    if ((size_t)PyArray_SIZE(yt) > GT_NOGIL_WORK) {
        Py_BEGIN_ALLOW_THREADS
        status = gt_dual_elementwise(op, dtype, nd, ushape, (size_t)k, &av.arg, argc == 6 ? &bv.arg : NULL,
                                     PyArray_DATA(y), PyArray_DATA(yt));
        Py_END_ALLOW_THREADS
    } else {
        status = gt_dual_elementwise(op, dtype, nd, ushape, (size_t)k, &av.arg, argc == 6 ? &bv.arg : NULL,
                                     PyArray_DATA(y), PyArray_DATA(yt));
    }
    if (status) {
        Py_DECREF(yt);
        return gt_raise_status(status, op->name);
    }
    return (PyObject *)yt;
}

/* Checks a C-contiguous array of `type` with `nd` dimensions; NULL + exception otherwise. */
static PyArrayObject *contiguous(PyObject *obj, int type, int nd, const char *what)
{
    PyArrayObject *arr = checked_array(obj, type, what);
    if (!arr)
        return NULL;
    if (PyArray_NDIM(arr) != nd || !PyArray_IS_C_CONTIGUOUS(arr)) {
        PyErr_Format(PyExc_ValueError, "%s: expected a C-contiguous %d-d array", what, nd);
        return NULL;
    }
    return arr;
}

PyDoc_STRVAR(matmul_doc,
"matmul(a, da, b, db)\n--\n\n"
"Value and tangents of a @ b for C-contiguous 2-d a (m, n) and b (n, p) of one float dtype,\n"
"with tangents da (k, m, n) and db (k, n, p), either None. Returns (c, dc): new (m, p) and\n"
"(k, m, p) arrays; one GEMM serves all k directions of each term.");

static PyObject *matmul(PyObject *self, PyObject *const *argv, Py_ssize_t argc)
{
    (void)self;
    if (argc != 4) {
        PyErr_Format(PyExc_TypeError, "matmul expected 4 arguments, got %zd", argc);
        return NULL;
    }
    if (!PyArray_Check(argv[0])) {
        PyErr_SetString(PyExc_TypeError, "a: expected a NumPy array");
        return NULL;
    }
    int type = PyArray_TYPE((PyArrayObject *)argv[0]);
    if (type != NPY_DOUBLE && type != NPY_FLOAT) {
        PyErr_SetString(PyExc_TypeError, "a: expected a float64 or float32 array");
        return NULL;
    }
    PyArrayObject *a = contiguous(argv[0], type, 2, "a");
    PyArrayObject *b = a ? contiguous(argv[2], type, 2, "b") : NULL;
    if (!b)
        return NULL;
    npy_intp m = PyArray_DIM(a, 0), n = PyArray_DIM(a, 1), p = PyArray_DIM(b, 1), k = -1;
    if (PyArray_DIM(b, 0) != n) {
        PyErr_Format(PyExc_ValueError, "b: expected %zd rows to match a's columns, got %zd", (Py_ssize_t)n,
                     (Py_ssize_t)PyArray_DIM(b, 0));
        return NULL;
    }
    PyArrayObject *da = NULL, *db = NULL;
    if (argv[1] != Py_None) {
        if (!(da = contiguous(argv[1], type, 3, "da")))
            return NULL;
        k = PyArray_DIM(da, 0);
        if (PyArray_DIM(da, 1) != m || PyArray_DIM(da, 2) != n) {
            PyErr_SetString(PyExc_ValueError, "da: expected shape (k,) + a.shape");
            return NULL;
        }
    }
    if (argv[3] != Py_None) {
        if (!(db = contiguous(argv[3], type, 3, "db")))
            return NULL;
        if (k >= 0 && PyArray_DIM(db, 0) != k) {
            PyErr_SetString(PyExc_ValueError, "db: expected as many directions as da");
            return NULL;
        }
        k = PyArray_DIM(db, 0);
        if (PyArray_DIM(db, 1) != n || PyArray_DIM(db, 2) != p) {
            PyErr_SetString(PyExc_ValueError, "db: expected shape (k,) + b.shape");
            return NULL;
        }
    }
    if (k < 0) {
        PyErr_SetString(PyExc_ValueError, "da, db: at least one operand needs tangents");
        return NULL;
    }
    npy_intp dims[3] = {k, m, p};
    PyArrayObject *c = (PyArrayObject *)PyArray_SimpleNew(2, dims + 1, type);
    PyArrayObject *dc = c ? (PyArrayObject *)PyArray_SimpleNew(3, dims, type) : NULL;
    if (!dc) {
        Py_XDECREF(c);
        return NULL;
    }
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = gt_dual_matmul(type == NPY_DOUBLE ? GT_FLOAT64 : GT_FLOAT32, (size_t)m, (size_t)n, (size_t)p,
                            (size_t)k, PyArray_DATA(a), da ? PyArray_DATA(da) : NULL, PyArray_DATA(b),
                            db ? PyArray_DATA(db) : NULL, PyArray_DATA(c), PyArray_DATA(dc));
    Py_END_ALLOW_THREADS
    if (status) {
        Py_DECREF(c);
        Py_DECREF(dc);
        return gt_raise_status(status, "dual matmul");
    }
    return Py_BuildValue("(NN)", c, dc);
}

PyDoc_STRVAR(blas_threads_doc,
"blas_threads(n)\n--\n\n"
"Sets the worker-thread count of the core's OpenBLAS (process-wide) and returns the previous\n"
"one; n <= 0 only returns the current one. Callers serialize changes.");

static PyObject *blas_threads(PyObject *self, PyObject *arg)
{
    (void)self;
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (n > 1024) {
        PyErr_SetString(PyExc_ValueError, "n: expected at most 1024 threads");
        return NULL;
    }
    return PyLong_FromLong(gt_dual_blas_threads((int)n));
}

static PyMethodDef forward_methods[] = {
    {"blas_threads", blas_threads, METH_O, blas_threads_doc},
    {"op_names", op_names, METH_NOARGS, op_names_doc},
    {"elementwise", (PyCFunction)(void (*)(void))elementwise, METH_FASTCALL, elementwise_doc},
    {"matmul", (PyCFunction)(void (*)(void))matmul, METH_FASTCALL, matmul_doc},
    {NULL, NULL, 0, NULL},
};

static int forward_exec(PyObject *module)
{
    (void)module;
    if (PyArray_ImportNumPyAPI() < 0)
        return -1;
    return 0;
}

static PyModuleDef_Slot forward_slots[] = {
    {Py_mod_exec, forward_exec},
    {0, NULL},
};

static struct PyModuleDef forward_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gradtest._forward",
    .m_doc = "Forward-mode (dual-number) kernels of gradtest's C core.",
    .m_size = 0,
    .m_methods = forward_methods,
    .m_slots = forward_slots,
};

PyMODINIT_FUNC PyInit__forward(void)
{
    return PyModuleDef_Init(&forward_module);
}
