/* _forward.c: the CPython glue of the forward-mode (dual-number) kernels in csrc/core/dual.c.
 *
 * Each entry point parses and validates its arguments, works out the broadcast strides, and runs
 * the core kernel with the GIL released for large work. The primal values are computed by the
 * caller with NumPy itself; these functions only compute tangents. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_23_API_VERSION
#include <numpy/arrayobject.h>
#include <structmember.h>

#include "dual.h"
#include "gt_blas.h"
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

/* Module state: the Python class whose instances the fast paths create and read. */
typedef struct forward_state {
    PyTypeObject *dual_type; /* gradtest.forward.Dual once register_dual ran, else NULL */
    Py_ssize_t off_value;    /* byte offsets of its `value` and `tangents` slots */
    Py_ssize_t off_tangents;
    PyObject *fast;          /* dict: ufunc -> (op-table index, Python rule) */
    PyObject *slow;          /* the Python __array_ufunc__ for everything else */
    PyObject *slow_getitem;  /* the Python __getitem__ and reshape for the other cases */
    PyObject *slow_reshape;
    PyObject *s_call;        /* interned "__call__" */
    PyObject *all;           /* slice(None) */
} forward_state;

static forward_state *get_state(PyObject *module) { return (forward_state *)PyModule_GetState(module); }

/* The byte offset of the __slots__ member `name` of cls, or -1 with an exception. Reading and
 * writing the slot at that offset is what the member descriptor itself does, without the
 * attribute lookup (a measurable part of a small op). */
static Py_ssize_t slot_offset(PyObject *cls, const char *name)
{
    PyObject *descr = PyObject_GetAttrString(cls, name);
    if (!descr)
        return -1;
    Py_ssize_t off = -1;
    if (Py_IS_TYPE(descr, &PyMemberDescr_Type) && ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX)
        off = ((PyMemberDescrObject *)descr)->d_member->offset;
    else
        PyErr_Format(PyExc_TypeError, "cls: expected `%s` to be a __slots__ member", name);
    Py_DECREF(descr);
    return off;
}

/* The object in slot `off` of obj (borrowed; NULL when unset). */
static PyObject *slot_get(PyObject *obj, Py_ssize_t off) { return *(PyObject **)((char *)obj + off); }

PyDoc_STRVAR(register_dual_doc,
"register_dual(cls, fast, slow, slow_getitem, slow_reshape)\n--\n\n"
"Registers the Dual class (with __slots__ `value` and `tangents`) that the fast paths read and\n"
"create; `fast` maps ufuncs to (op-table index, Python rule); `slow`, `slow_getitem` and\n"
"`slow_reshape` are the Python __array_ufunc__, __getitem__ and reshape that `array_ufunc`,\n"
"`getitem` and `reshape` hand the cases they do not handle to.");

static PyObject *register_dual(PyObject *self, PyObject *const *argv, Py_ssize_t argc)
{
    if (argc != 5) {
        PyErr_Format(PyExc_TypeError, "register_dual expected 5 arguments, got %zd", argc);
        return NULL;
    }
    PyObject *cls = argv[0];
    if (!PyType_Check(cls)) {
        PyErr_Format(PyExc_TypeError, "cls: expected a class, got %.200s", Py_TYPE(cls)->tp_name);
        return NULL;
    }
    if (!PyDict_Check(argv[1]) || !PyCallable_Check(argv[2]) || !PyCallable_Check(argv[3]) ||
        !PyCallable_Check(argv[4])) {
        PyErr_SetString(PyExc_TypeError, "fast, slow, slow_getitem, slow_reshape: expected a dict and callables");
        return NULL;
    }
    Py_ssize_t off_value = slot_offset(cls, "value");
    Py_ssize_t off_tangents = off_value < 0 ? -1 : slot_offset(cls, "tangents");
    if (off_tangents < 0)
        return NULL;
    forward_state *st = get_state(self);
    st->off_value = off_value;
    st->off_tangents = off_tangents;
    Py_INCREF(cls);
    Py_XSETREF(st->dual_type, (PyTypeObject *)cls);
    PyObject **slots[4] = {&st->fast, &st->slow, &st->slow_getitem, &st->slow_reshape};
    for (int i = 0; i < 4; i++) {
        Py_INCREF(argv[1 + i]);
        Py_XSETREF(*slots[i], argv[1 + i]);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(method_doc,
"method(func)\n--\n\n"
"func as a method: bound to the instance when looked up on one (an instancemethod), so that a C\n"
"function can serve as Dual.__array_ufunc__ without a Python frame.");

static PyObject *method(PyObject *self, PyObject *func)
{
    (void)self;
    return PyInstanceMethod_New(func);
}

/* A new instance of the registered Dual class holding y and yt (references stolen, also on
 * failure). NULL with an exception on failure. */
static PyObject *new_dual(forward_state *st, PyObject *y, PyObject *yt)
{
    PyObject *d = st->dual_type->tp_alloc(st->dual_type, 0);
    if (!d) {
        Py_DECREF(y);
        Py_DECREF(yt);
        return NULL;
    }
    *(PyObject **)((char *)d + st->off_value) = y;
    *(PyObject **)((char *)d + st->off_tangents) = yt;
    return d;
}

/* One ufunc operand as the fast path sees it. */
typedef struct operand {
    PyObject *value;   /* new reference (once set): the Dual's value, the array, or the number */
    PyObject *tangent; /* new reference to a Dual's tangents, NULL for a constant */
    int number;        /* 1 for a Python float or (small) int */
    double d;          /* the number, when `number` */
    float f;
} operand;

/* Fills `out` from obj. Returns 1 when the operand qualifies for the fast path, 0 when it does not
 * (the caller takes the Python rule), -1 with an exception set. *type is the float type of the
 * Duals seen so far (-1 before the first). */
static int read_operand(forward_state *st, PyObject *obj, operand *out, int *type)
{
    if (Py_TYPE(obj) == st->dual_type) {
        /* strong references: the ufunc call may run Python code (a warning filter) that could
         * rebind the Dual's slots while their arrays are in use */
        out->value = slot_get(obj, st->off_value);
        out->tangent = slot_get(obj, st->off_tangents);
        Py_XINCREF(out->value);
        Py_XINCREF(out->tangent);
        if (!out->value || !out->tangent || !PyArray_CheckExact(out->value) || !PyArray_CheckExact(out->tangent))
            return 0;
        int vt = PyArray_TYPE((PyArrayObject *)out->value);
        if ((vt != NPY_DOUBLE && vt != NPY_FLOAT) || (*type >= 0 && *type != vt) ||
            PyArray_TYPE((PyArrayObject *)out->tangent) != vt)
            return 0;
        *type = vt;
        return 1;
    }
    if (PyArray_CheckExact(obj)) { /* its dtype is checked once the Duals' type is known */
        Py_INCREF(obj);
        out->value = obj;
        return 1;
    }
    if (PyFloat_CheckExact(obj) || PyLong_CheckExact(obj)) {
        if (PyFloat_CheckExact(obj)) {
            out->d = PyFloat_AS_DOUBLE(obj);
        } else {
            /* integers that float32 holds exactly; larger ones take NumPy's own conversion rules */
            int overflow;
            long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
            if (v == -1 && PyErr_Occurred())
                return -1;
            if (overflow || v > (1 << 24) || v < -(1 << 24))
                return 0;
            out->d = (double)v;
        }
        out->f = (float)out->d;
        out->number = 1;
        Py_INCREF(obj);
        out->value = obj;
        return 1;
    }
    return 0;
}

PyDoc_STRVAR(ufunc_doc,
"ufunc(op, ufunc, fallback, a[, b])\n--\n\n"
"The Dual result of ufunc(a[, b]) for the op-table entry with index `op`, computed in one C call:\n"
"the primal by calling `ufunc` on the primal values, the tangents by the C core, the result\n"
"created without Python code. a, b are registered Duals of one float dtype, exact NumPy arrays of\n"
"that dtype, or Python floats/ints; for anything else (subclasses, other dtypes, a result of\n"
"another dtype) the call returns fallback(a[, b]) instead.");

/* The fast path of one ufunc call: `ufunc` is the op-table entry `op` applied to the nin = op->arity
 * operands in `inputs`, `fallback` the Python rule called with them when they do not qualify.
 * Returns a new reference, or NULL with an exception. */
static PyObject *ufunc_impl(forward_state *st, const gt_op *op, PyObject *ufunc, PyObject *fallback,
                            PyObject *const *inputs, int nin)
{
    operand ops[2] = {{0}, {0}};
    arg_view views[2];
    ptrdiff_t zeros[NPY_MAXDIMS] = {0};
    PyObject *result = NULL, *y = NULL, *yt = NULL, *values[2];
    int type = -1, status = GT_OK;
    for (int i = 0; i < nin; i++) {
        int ok = read_operand(st, inputs[i], &ops[i], &type);
        if (ok < 0)
            goto cleanup;
        if (ok == 0)
            goto fallback;
        values[i] = ops[i].value;
    }
    if (type < 0)
        goto fallback; /* no Dual among the operands */
    for (int i = 0; i < nin; i++)
        if (!ops[i].tangent && !ops[i].number && PyArray_TYPE((PyArrayObject *)ops[i].value) != type)
            goto fallback;

    y = PyObject_Vectorcall(ufunc, values, (size_t)nin, NULL);
    if (!y)
        goto cleanup;
    if (!PyArray_CheckExact(y)) {
        if (!PyArray_IsScalar(y, Double) && !PyArray_IsScalar(y, Float))
            goto fallback;
        PyObject *arr = PyArray_FromScalar(y, NULL); /* a 0-d result, as np.asarray gives */
        Py_SETREF(y, arr);
        if (!y)
            goto cleanup;
    }
    PyArrayObject *ya = (PyArrayObject *)y;
    if (PyArray_TYPE(ya) != type || !PyArray_IS_C_CONTIGUOUS(ya) || !PyArray_ISALIGNED(ya))
        goto fallback; /* e.g. float_power promoting float32; the rule recomputes it */

    int nd = PyArray_NDIM(ya);
    npy_intp *shape = PyArray_DIMS(ya), k = -1;
    const char *names[2][2] = {{"a", "at"}, {"b", "bt"}};
    for (int i = 0; i < nin; i++) {
        if (ops[i].number) {
            views[i].arg = (gt_dual_arg){type == NPY_DOUBLE ? (const char *)&ops[i].d : (const char *)&ops[i].f,
                                         zeros, NULL, NULL};
        } else if (make_arg(ops[i].value, ops[i].tangent ? ops[i].tangent : Py_None, type, nd, shape, &k,
                            &views[i], names[i][0], names[i][1])) {
            goto cleanup;
        }
    }
    npy_intp full[NPY_MAXDIMS + 1];
    size_t ushape[NPY_MAXDIMS];
    full[0] = k;
    for (int d = 0; d < nd; d++) {
        full[d + 1] = shape[d];
        ushape[d] = (size_t)shape[d];
    }
    yt = PyArray_SimpleNew(nd + 1, full, type);
    if (!yt)
        goto cleanup;
    gt_dtype dtype = type == NPY_DOUBLE ? GT_FLOAT64 : GT_FLOAT32;
    const gt_dual_arg *bp = nin == 2 ? &views[1].arg : NULL;
    void *ydata = PyArray_DATA(ya), *ytdata = PyArray_DATA((PyArrayObject *)yt);
    if ((size_t)PyArray_SIZE((PyArrayObject *)yt) > GT_NOGIL_WORK) {
        Py_BEGIN_ALLOW_THREADS
        status = gt_dual_elementwise(op, dtype, nd, ushape, (size_t)k, &views[0].arg, bp, ydata, ytdata);
        Py_END_ALLOW_THREADS
    } else {
        status = gt_dual_elementwise(op, dtype, nd, ushape, (size_t)k, &views[0].arg, bp, ydata, ytdata);
    }
    if (status) {
        gt_raise_status(status, op->name);
        goto cleanup;
    }
    result = new_dual(st, y, yt);
    y = yt = NULL;
    goto cleanup;

fallback:
    result = PyObject_Vectorcall(fallback, inputs, (size_t)nin, NULL);
cleanup:
    for (int i = 0; i < 2; i++) {
        Py_XDECREF(ops[i].value);
        Py_XDECREF(ops[i].tangent);
    }
    Py_XDECREF(y);
    Py_XDECREF(yt);
    return result;
}

/* The op-table entry whose index is `obj` (a Python int); NULL with an exception set otherwise. */
static const gt_op *op_from_index(PyObject *obj)
{
    long index = PyLong_AsLong(obj);
    if (index == -1 && PyErr_Occurred())
        return NULL;
    if (index < 0 || index >= GT_OP_COUNT) {
        PyErr_Format(PyExc_ValueError, "op: expected an op-table index in [0, %d), got %ld", GT_OP_COUNT, index);
        return NULL;
    }
    return &gt_op_table[index];
}

static PyObject *ufunc_call(PyObject *self, PyObject *const *argv, Py_ssize_t argc)
{
    forward_state *st = get_state(self);
    if (argc != 4 && argc != 5) {
        PyErr_Format(PyExc_TypeError, "ufunc expected 4 or 5 arguments, got %zd", argc);
        return NULL;
    }
    if (!st->dual_type) {
        PyErr_SetString(PyExc_RuntimeError, "ufunc: no Dual class registered (register_dual)");
        return NULL;
    }
    const gt_op *op = op_from_index(argv[0]);
    if (!op)
        return NULL;
    int nin = (int)argc - 3;
    if (op->arity != nin) {
        PyErr_Format(PyExc_TypeError, "op %s takes %d argument(s), got %d", op->name, op->arity, nin);
        return NULL;
    }
    return ufunc_impl(st, op, argv[1], argv[2], argv + 3, nin);
}

PyDoc_STRVAR(array_ufunc_doc,
"array_ufunc(self, ufunc, method, *inputs, **kwargs)\n--\n\n"
"Dual.__array_ufunc__ (through `method`): a plain call of a registered ufunc without keywords\n"
"takes the `ufunc` fast path; everything else goes to the registered Python implementation.");

static PyObject *array_ufunc(PyObject *self, PyObject *const *argv, size_t nargsf, PyObject *kwnames)
{
    forward_state *st = get_state(self);
    Py_ssize_t argc = PyVectorcall_NARGS(nargsf);
    if (!st->dual_type) {
        PyErr_SetString(PyExc_RuntimeError, "array_ufunc: no Dual class registered (register_dual)");
        return NULL;
    }
    if (argc >= 4 && argc <= 5 && (!kwnames || PyTuple_GET_SIZE(kwnames) == 0) &&
        PyUnicode_Check(argv[2]) && (argv[2] == st->s_call || PyUnicode_Compare(argv[2], st->s_call) == 0)) {
        PyObject *entry = PyDict_GetItemWithError(st->fast, argv[1]);
        if (entry && PyTuple_Check(entry) && PyTuple_GET_SIZE(entry) == 2) {
            long index = PyLong_AsLong(PyTuple_GET_ITEM(entry, 0));
            if (index == -1 && PyErr_Occurred())
                return NULL;
            if (index >= 0 && index < GT_OP_COUNT && gt_op_table[index].arity == argc - 3)
                return ufunc_impl(st, &gt_op_table[index], argv[1], PyTuple_GET_ITEM(entry, 1), argv + 3,
                                  (int)argc - 3);
        } else if (PyErr_Occurred()) {
            return NULL;
        }
    }
    return PyObject_Vectorcall(st->slow, argv, nargsf, kwnames);
}

/* The registered Dual's value and tangents when self is one (borrowed, both set), else 0. */
static int dual_parts(forward_state *st, PyObject *self, PyArrayObject **v, PyArrayObject **t)
{
    if (!st->dual_type || Py_TYPE(self) != st->dual_type)
        return 0;
    PyObject *vo = slot_get(self, st->off_value), *to = slot_get(self, st->off_tangents);
    if (!vo || !to || !PyArray_CheckExact(vo) || !PyArray_CheckExact(to))
        return 0;
    *v = (PyArrayObject *)vo;
    *t = (PyArrayObject *)to;
    return 1;
}

PyDoc_STRVAR(getitem_doc,
"getitem(self, index)\n--\n\n"
"Dual.__getitem__ (through `method`): an int or slice index selects from the value and, after\n"
"the direction axis, from the tangents in C; other indices go to the registered Python one.");

/* A view of arr selecting `len` elements from `start` in steps of `step` along `axis`, or (drop)
 * the single element `start` with that axis removed. Returns a new reference or NULL. Building
 * the view directly skips NumPy's index parsing, which costs more than the rest of a small
 * x[i] or x[a:b] on a Dual. */
static PyObject *axis_view(PyArrayObject *arr, int axis, npy_intp start, npy_intp step, npy_intp len, int drop)
{
    int nd = PyArray_NDIM(arr), out_nd = 0;
    npy_intp dims[NPY_MAXDIMS], strides[NPY_MAXDIMS];
    for (int d = 0; d < nd; d++) {
        if (d == axis && drop)
            continue;
        dims[out_nd] = d == axis ? len : PyArray_DIM(arr, d);
        strides[out_nd] = d == axis ? PyArray_STRIDE(arr, d) * step : PyArray_STRIDE(arr, d);
        out_nd++;
    }
    char *data = PyArray_BYTES(arr) + (len > 0 || drop ? start * PyArray_STRIDE(arr, axis) : 0);
    PyArray_Descr *descr = PyArray_DESCR(arr);
    Py_INCREF(descr);
    PyObject *view = PyArray_NewFromDescr(&PyArray_Type, descr, out_nd, dims, strides, data,
                                          PyArray_FLAGS(arr) & NPY_ARRAY_WRITEABLE, NULL);
    if (view) {
        Py_INCREF(arr);
        if (PyArray_SetBaseObject((PyArrayObject *)view, (PyObject *)arr) < 0)
            Py_CLEAR(view);
    }
    return view;
}

PyDoc_STRVAR(tangent_view_doc, "tangent_view(t, first, writeable) -> ndarray: the k directions' view "
             "of tangents t (k, ...) whose direction 0 is `first`, a view of t[0] (a transpose, flip or "
             "diagonal of it): first's strides, one stride of t further on per direction; base t.");
/* np.lib.stride_tricks.as_strided does the same through a Python-level array interface, which
 * cost more than the rest of a small x.T on a Dual */
static PyObject *tangent_view(PyObject *self, PyObject *const *argv, Py_ssize_t argc)
{
    (void)self;
    if (argc != 3 || !PyArray_Check(argv[0]) || !PyArray_Check(argv[1])) {
        PyErr_SetString(PyExc_TypeError, "tangent_view(t, first, writeable): t and first must be arrays");
        return NULL;
    }
    PyArrayObject *t = (PyArrayObject *)argv[0], *first = (PyArrayObject *)argv[1];
    int writeable = PyObject_IsTrue(argv[2]);
    if (writeable < 0)
        return NULL;
    int nd = PyArray_NDIM(first);
    if (PyArray_NDIM(t) < 1 || nd + 1 > NPY_MAXDIMS || !PyArray_EquivTypes(PyArray_DESCR(t), PyArray_DESCR(first))) {
        PyErr_SetString(PyExc_ValueError, "tangent_view: t needs a leading axis and first t's dtype");
        return NULL;
    }
    npy_intp dims[NPY_MAXDIMS], strides[NPY_MAXDIMS];
    dims[0] = PyArray_DIM(t, 0);
    strides[0] = PyArray_STRIDE(t, 0);
    for (int d = 0; d < nd; d++) {
        dims[d + 1] = PyArray_DIM(first, d);
        strides[d + 1] = PyArray_STRIDE(first, d);
    }
    PyArray_Descr *descr = PyArray_DESCR(t);
    Py_INCREF(descr);
    int flags = writeable ? PyArray_FLAGS(t) & NPY_ARRAY_WRITEABLE : 0;
    PyObject *view = PyArray_NewFromDescr(&PyArray_Type, descr, nd + 1, dims, strides, PyArray_BYTES(first),
                                          flags, NULL);
    if (view) {
        Py_INCREF(t);
        if (PyArray_SetBaseObject((PyArrayObject *)view, (PyObject *)t) < 0)
            Py_CLEAR(view);
    }
    return view;
}

static PyObject *getitem(PyObject *self, PyObject *const *argv, Py_ssize_t argc)
{
    forward_state *st = get_state(self);
    PyArrayObject *v, *t;
    npy_intp start, stop, step, len;
    if (argc != 2) {
        PyErr_Format(PyExc_TypeError, "getitem expected 2 arguments, got %zd", argc);
        return NULL;
    }
    PyObject *index = argv[1];
    int ok = dual_parts(st, argv[0], &v, &t) && PyArray_NDIM(v) > 0;
    int drop = ok && PyLong_CheckExact(index);
    if (drop) {
        Py_ssize_t i = PyLong_AsSsize_t(index), n = PyArray_DIM(v, 0);
        if (i == -1 && PyErr_Occurred())
            PyErr_Clear(); /* huge: NumPy's own IndexError from the Python path */
        else if (i >= -n && i < n) {
            start = i < 0 ? i + n : i;
            step = len = 1;
            ok = 2;
        }
    } else if (ok && PySlice_Check(index)) {
        if (PySlice_Unpack(index, &start, &stop, &step) < 0)
            return NULL;
        len = PySlice_AdjustIndices(PyArray_DIM(v, 0), &start, &stop, step);
        ok = 2;
    }
    if (ok != 2)
        return st->slow_getitem ? PyObject_Vectorcall(st->slow_getitem, argv, 2, NULL)
                                : PyErr_Format(PyExc_RuntimeError, "getitem: no Dual class registered");
    PyObject *y;
    if (drop && PyArray_NDIM(v) == 1) {
        /* one element: a fresh 0-d array, as np.asarray of NumPy's scalar result */
        PyObject *item = axis_view(v, 0, start, step, len, drop);
        y = item ? PyArray_NewCopy((PyArrayObject *)item, NPY_CORDER) : NULL;
        Py_XDECREF(item);
    } else {
        y = axis_view(v, 0, start, step, len, drop);
    }
    PyObject *yt = y ? axis_view(t, 1, start, step, len, drop) : NULL;
    if (!yt) {
        Py_XDECREF(y);
        return NULL;
    }
    return new_dual(st, y, yt);
}

PyDoc_STRVAR(reshape_doc,
"reshape(self, *shape, order='C')\n--\n\n"
"Dual.reshape (through `method`): a C-order reshape of the value and of the tangents (behind\n"
"their direction axis) in C; other orders go to the registered Python one.");

static PyObject *reshape(PyObject *self, PyObject *const *argv, size_t nargsf, PyObject *kwnames)
{
    forward_state *st = get_state(self);
    Py_ssize_t argc = PyVectorcall_NARGS(nargsf);
    PyArrayObject *v, *t;
    PyArray_Dims dims = {NULL, 0};
    PyObject *y = NULL, *result = NULL;
    if (argc < 2 || (kwnames && PyTuple_GET_SIZE(kwnames)) || !dual_parts(st, argv[0], &v, &t))
        return st->slow_reshape ? PyObject_Vectorcall(st->slow_reshape, argv, nargsf, kwnames)
                                : PyErr_Format(PyExc_RuntimeError, "reshape: no Dual class registered");
    /* strong references: converting the shape may run Python code (__index__) */
    Py_INCREF(v);
    Py_INCREF(t);
    /* reshape(2, 4) or reshape((2, 4)), as ndarray.reshape takes it */
    PyObject *shape = argc == 2 ? argv[1] : NULL;
    PyObject *packed = NULL;
    if (!shape) {
        packed = PyTuple_New(argc - 1);
        if (!packed)
            goto cleanup;
        for (Py_ssize_t i = 1; i < argc; i++) {
            Py_INCREF(argv[i]);
            PyTuple_SET_ITEM(packed, i - 1, argv[i]);
        }
        shape = packed;
    }
    if (!PyArray_IntpConverter(shape, &dims))
        goto cleanup;
    y = PyArray_Newshape(v, &dims, NPY_CORDER);
    if (!y)
        goto cleanup;
    int nd = PyArray_NDIM((PyArrayObject *)y);
    npy_intp full[NPY_MAXDIMS + 1];
    full[0] = PyArray_DIM(t, 0);
    for (int d = 0; d < nd; d++)
        full[d + 1] = PyArray_DIM((PyArrayObject *)y, d);
    PyArray_Dims tdims = {full, nd + 1};
    PyObject *yt = nd + 1 <= NPY_MAXDIMS ? PyArray_Newshape(t, &tdims, NPY_CORDER) : NULL;
    if (!yt) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_ValueError, "reshape: the tangents would have more than %d dimensions", NPY_MAXDIMS);
        goto cleanup;
    }
    result = new_dual(st, y, yt);
    y = NULL;
cleanup:
    Py_DECREF(v);
    Py_DECREF(t);
    Py_XDECREF(y);
    Py_XDECREF(packed);
    if (dims.ptr)
        PyDimMem_FREE(dims.ptr);
    return result;
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
    const gt_op *op = op_from_index(argv[0]);
    if (!op)
        return NULL;
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
    {"register_dual", (PyCFunction)(void (*)(void))register_dual, METH_FASTCALL, register_dual_doc},
    {"method", method, METH_O, method_doc},
    {"getitem", (PyCFunction)(void (*)(void))getitem, METH_FASTCALL, getitem_doc},
    {"tangent_view", (PyCFunction)(void (*)(void))tangent_view, METH_FASTCALL, tangent_view_doc},
    {"reshape", (PyCFunction)(void (*)(void))reshape, METH_FASTCALL | METH_KEYWORDS, reshape_doc},
    {"array_ufunc", (PyCFunction)(void (*)(void))array_ufunc, METH_FASTCALL | METH_KEYWORDS, array_ufunc_doc},
    {"ufunc", (PyCFunction)(void (*)(void))ufunc_call, METH_FASTCALL, ufunc_doc},
    {NULL, NULL, 0, NULL},
};

static int forward_exec(PyObject *module)
{
    gt_blas_init_threads(); /* the core's pool: one thread unless GRADTEST_BLAS_THREADS says */
    if (PyArray_ImportNumPyAPI() < 0)
        return -1;
    forward_state *st = get_state(module);
    st->s_call = PyUnicode_InternFromString("__call__");
    st->all = PySlice_New(NULL, NULL, NULL);
    return st->s_call && st->all ? 0 : -1;
}

static int forward_traverse(PyObject *module, visitproc visit, void *arg)
{
    forward_state *st = get_state(module);
    Py_VISIT(st->dual_type);
    Py_VISIT(st->fast);
    Py_VISIT(st->slow);
    Py_VISIT(st->slow_getitem);
    Py_VISIT(st->slow_reshape);
    return 0;
}

static int forward_clear(PyObject *module)
{
    forward_state *st = get_state(module);
    Py_CLEAR(st->dual_type);
    Py_CLEAR(st->fast);
    Py_CLEAR(st->slow);
    Py_CLEAR(st->slow_getitem);
    Py_CLEAR(st->slow_reshape);
    Py_CLEAR(st->s_call);
    Py_CLEAR(st->all);
    return 0;
}

static void forward_free(void *module) { forward_clear((PyObject *)module); }

static PyModuleDef_Slot forward_slots[] = {
    {Py_mod_exec, forward_exec},
    {0, NULL},
};

static struct PyModuleDef forward_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gradtest._forward",
    .m_doc = "Forward-mode (dual-number) kernels of gradtest's C core.",
    .m_size = sizeof(forward_state),
    .m_methods = forward_methods,
    .m_slots = forward_slots,
    .m_traverse = forward_traverse,
    .m_clear = forward_clear,
    .m_free = forward_free,
};

PyMODINIT_FUNC PyInit__forward(void)
{
    return PyModuleDef_Init(&forward_module);
}
