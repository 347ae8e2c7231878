/* _core.c: the CPython glue of the finite-difference engine and the op table.
 *
 * Parsing and validation happen here; the loops live in csrc/core. The evaluation callback calls
 * the user's Python function on views of the working buffer: no copy per evaluation. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_23_API_VERSION
#include <numpy/arrayobject.h>

#include <math.h>
#include <time.h>

#include "fd.h"
#include "gt_glue.h"
#include "ops.h"

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* State of one run: the callable, its prepared arguments and the output reduction. */
typedef struct py_eval_ctx {
    PyObject *f;           /* borrowed */
    PyObject *args;        /* borrowed tuple */
    PyObject *kwargs;      /* borrowed dict or NULL */
    const double *u;       /* cotangent for array outputs, or NULL for scalar outputs */
    npy_intp u_size;
    size_t evaluations;
} py_eval_ctx;

/* Converts one result of f to a double: a real scalar, a size-1 array when u is NULL, or
 * <u, out> for an array whose size matches u. Sets a Python exception and returns -1 otherwise. */
static int result_to_double(const py_eval_ctx *c, PyObject *res, double *value)
{
    if (PyFloat_CheckExact(res)) {
        *value = PyFloat_AS_DOUBLE(res);
        return 0;
    }
    if (PyComplex_Check(res) || PyArray_IsScalar(res, ComplexFloating) ||
        (PyArray_Check(res) && PyArray_ISCOMPLEX((PyArrayObject *)res))) {
        PyErr_SetString(PyExc_TypeError, "f returned a complex value; gradtest checks real-valued functions");
        return -1;
    }
    if (!PyArray_Check(res) && c->u == NULL) {
        double v = PyFloat_AsDouble(res);
        if (v == -1.0 && PyErr_Occurred()) {
            PyErr_Format(PyExc_TypeError, "f must return a real number or a floating array, got %.200s",
                         Py_TYPE(res)->tp_name);
            return -1;
        }
        *value = v;
        return 0;
    }
    PyArrayObject *arr = (PyArrayObject *)PyArray_FROMANY(res, NPY_DOUBLE, 0, 0, NPY_ARRAY_CARRAY_RO);
    if (!arr) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "f must return a real number or a floating array, got %.200s",
                     Py_TYPE(res)->tp_name);
        return -1;
    }
    npy_intp size = PyArray_SIZE(arr);
    const double *data = PyArray_DATA(arr);
    int status = 0;
    if (c->u == NULL) {
        if (size != 1) {
            PyErr_Format(PyExc_ValueError, "f returned %zd values where a scalar was expected "
                         "(its output shape changed between calls)", (Py_ssize_t)size);
            status = -1;
        } else {
            *value = data[0];
        }
    } else if (size != c->u_size) {
        PyErr_Format(PyExc_ValueError, "f returned %zd values where %zd were expected "
                     "(its output shape changed between calls)", (Py_ssize_t)size, (Py_ssize_t)c->u_size);
        status = -1;
    } else {
        double acc = 0.0;
        for (npy_intp i = 0; i < size; i++)
            acc += c->u[i] * data[i];
        *value = acc;
    }
    Py_DECREF(arr);
    return status;
}

static int py_eval(void *ctx, double *value)
{
    py_eval_ctx *c = ctx;
    PyObject *res = PyObject_Call(c->f, c->args, c->kwargs);
    if (!res)
        return -1;
    c->evaluations++;
    int status = result_to_double(c, res, value);
    Py_DECREF(res);
    return status;
}

/* Parsed arguments common to fd_gradient and fd_directional. Owns the references it holds. */
typedef struct fd_call {
    PyObject *f, *args, *kwargs;
    PyArrayObject *x, *u, *scale;
    gt_fd_options opts;
    gt_fd_problem problem;
    py_eval_ctx ctx;
} fd_call;

static void fd_call_clear(fd_call *call)
{
    Py_CLEAR(call->x);
    Py_CLEAR(call->u);
    Py_CLEAR(call->scale);
}

/* Validates and converts the arguments. On failure sets an exception and returns -1; the caller
 * still runs fd_call_clear. */
static int fd_call_init(fd_call *call, PyObject *x_obj, PyObject *u_obj, PyObject *scale_obj,
                        const char *method, int richardson, double rel_step)
{
    if (!PyCallable_Check(call->f)) {
        PyErr_SetString(PyExc_TypeError, "f: expected a callable");
        return -1;
    }
    if (!PyTuple_Check(call->args)) {
        PyErr_SetString(PyExc_TypeError, "args: expected a tuple");
        return -1;
    }
    if (call->kwargs == Py_None)
        call->kwargs = NULL;
    if (call->kwargs && !PyDict_Check(call->kwargs)) {
        PyErr_SetString(PyExc_TypeError, "kwargs: expected a dict or None");
        return -1;
    }
    if (!PyArray_Check(x_obj)) {
        PyErr_SetString(PyExc_TypeError, "x: expected the working buffer, a NumPy array");
        return -1;
    }
    PyArrayObject *x = (PyArrayObject *)x_obj;
    int type = PyArray_TYPE(x);
    if ((type != NPY_DOUBLE && type != NPY_FLOAT) || PyArray_NDIM(x) != 1 ||
        !PyArray_IS_C_CONTIGUOUS(x) || !PyArray_ISWRITEABLE(x) || !PyArray_ISALIGNED(x)) {
        PyErr_SetString(PyExc_ValueError, "x: expected a writable, aligned, contiguous 1-d float64 or float32 array");
        return -1;
    }
    Py_INCREF(x);
    call->x = x;
    if (u_obj != Py_None) {
        call->u = (PyArrayObject *)PyArray_FROMANY(u_obj, NPY_DOUBLE, 0, 0, NPY_ARRAY_CARRAY_RO);
        if (!call->u)
            return -1;
    }
    if (scale_obj != Py_None) {
        call->scale = (PyArrayObject *)PyArray_FROMANY(scale_obj, NPY_DOUBLE, 1, 1, NPY_ARRAY_CARRAY_RO);
        if (!call->scale)
            return -1;
        if (PyArray_SIZE(call->scale) != PyArray_SIZE(x)) {
            PyErr_SetString(PyExc_ValueError, "scale: expected one value per element of x");
            return -1;
        }
    }
    if (strcmp(method, "central") == 0)
        call->opts.method = GT_FD_CENTRAL;
    else if (strcmp(method, "forward") == 0)
        call->opts.method = GT_FD_FORWARD;
    else if (strcmp(method, "backward") == 0)
        call->opts.method = GT_FD_BACKWARD;
    else {
        PyErr_Format(PyExc_ValueError, "method: expected 'central', 'forward' or 'backward', got '%s'",
                     method);
        return -1;
    }
    if (!(rel_step >= 0.0) || !isfinite(rel_step)) {
        PyErr_SetString(PyExc_ValueError, "rel_step: expected a finite number >= 0 (0 selects the default)");
        return -1;
    }
    call->opts.richardson = richardson;
    call->opts.rel_step = rel_step;
    call->ctx = (py_eval_ctx){call->f, call->args, call->kwargs,
                              call->u ? PyArray_DATA(call->u) : NULL,
                              call->u ? PyArray_SIZE(call->u) : 0, 0};
    call->problem = (gt_fd_problem){PyArray_DATA(x), type == NPY_FLOAT ? GT_FLOAT32 : GT_FLOAT64,
                                    (size_t)PyArray_SIZE(x), py_eval, &call->ctx,
                                    call->scale ? PyArray_DATA(call->scale) : NULL};
    return 0;
}

/* Parses the argument vector shared by fd_gradient and fd_directional:
 * (f, args, kwargs, x, u, <scale or dirs>, method, richardson, rel_step). argv[5] is read by the
 * caller; `scale_obj` is what fd_call_init gets for it. Returns 0, or -1 with an exception set
 * (the caller still runs fd_call_clear). */
static int fd_call_parse(fd_call *call, PyObject *const *argv, Py_ssize_t argc, const char *fname,
                         PyObject *scale_obj)
{
    if (argc != 9 && !(argc == 10 && strcmp(fname, "fd_gradient") == 0)) {
        PyErr_Format(PyExc_TypeError, "%s expected 9 arguments, got %zd", fname, argc);
        return -1;
    }
    call->f = argv[0];
    call->args = argv[1];
    call->kwargs = argv[2];
    if (!PyUnicode_Check(argv[6])) {
        PyErr_SetString(PyExc_TypeError, "method: expected a string");
        return -1;
    }
    const char *method = PyUnicode_AsUTF8(argv[6]);
    int richardson = PyObject_IsTrue(argv[7]);
    double rel_step = PyFloat_AsDouble(argv[8]);
    if (!method || richardson < 0 || (rel_step == -1.0 && PyErr_Occurred()))
        return -1;
    return fd_call_init(call, argv[3], argv[4], scale_obj, method, richardson, rel_step);
}

PyDoc_STRVAR(fd_gradient_doc,
"fd_gradient(f, args, kwargs, x, u, scale, method, richardson, rel_step, time_limit=0)\n--\n\n"
"Finite-difference gradient of f(*args, **kwargs) with respect to the working buffer x, which the\n"
"arguments view. With time_limit > 0 (seconds) the run stops after the component during which the\n"
"limit passed. Returns (grad, err, f0, evaluations, nonfinite, completed): components\n"
"[completed, n) of grad and err are unset when the limit stopped the run.");

static PyObject *fd_gradient(PyObject *self, PyObject *const *argv, Py_ssize_t argc)
{
    (void)self;
    fd_call call = {0};
    PyObject *result = NULL;
    PyArrayObject *grad = NULL, *err = NULL;
    if (fd_call_parse(&call, argv, argc, "fd_gradient", argc == 9 ? argv[5] : Py_None))
        goto error;
    npy_intp n = (npy_intp)call.problem.n;
    grad = (PyArrayObject *)PyArray_SimpleNew(1, &n, NPY_DOUBLE);
    err = (PyArrayObject *)PyArray_SimpleNew(1, &n, NPY_DOUBLE);
    if (!grad || !err)
        goto error;
    double time_limit = 0.0;
    if (argc == 10) {
        time_limit = PyFloat_AsDouble(argv[9]);
        if (time_limit == -1.0 && PyErr_Occurred())
            goto error;
    }
    double f0;
    size_t nonfinite = 0, completed = 0;
    int status = gt_fd_eval(&call.problem, &f0);
    /* with a time limit, the clock is read after each component (a few evaluations of f) */
    const size_t block = time_limit > 0 ? 1 : call.problem.n;
    const double deadline = time_limit > 0 ? now_seconds() + time_limit : 0.0;
    while (!status && completed < call.problem.n) {
        size_t stop = completed + block < call.problem.n ? completed + block : call.problem.n;
        size_t block_nonfinite = 0;
        status = gt_fd_gradient_range(&call.problem, &call.opts, f0, completed, stop,
                                      PyArray_DATA(grad), PyArray_DATA(err), &block_nonfinite);
        if (status)
            break;
        nonfinite += block_nonfinite;
        completed = stop;
        if (deadline > 0 && now_seconds() > deadline)
            break;
    }
    if (status) {
        gt_raise_status(status, "finite differences");
        goto error;
    }
    result = Py_BuildValue("(OOdnnn)", grad, err, f0, (Py_ssize_t)call.ctx.evaluations, (Py_ssize_t)nonfinite,
                           (Py_ssize_t)completed);
error:
    Py_XDECREF(grad);
    Py_XDECREF(err);
    fd_call_clear(&call);
    return result;
}

PyDoc_STRVAR(fd_directional_doc,
"fd_directional(f, args, kwargs, x, u, dirs, method, richardson, rel_step)\n--\n\n"
"Finite-difference derivatives of f along the rows of dirs (k x n, already scaled).\n"
"Returns (d, err, f0, evaluations).");

static PyObject *fd_directional(PyObject *self, PyObject *const *argv, Py_ssize_t argc)
{
    (void)self;
    fd_call call = {0};
    PyObject *result = NULL;
    PyArrayObject *dirs = NULL, *d = NULL, *err = NULL;
    if (fd_call_parse(&call, argv, argc, "fd_directional", Py_None))
        goto error;
    dirs = (PyArrayObject *)PyArray_FROMANY(argv[5], NPY_DOUBLE, 2, 2, NPY_ARRAY_CARRAY_RO);
    if (!dirs)
        goto error;
    if ((size_t)PyArray_DIM(dirs, 1) != call.problem.n) {
        PyErr_SetString(PyExc_ValueError, "dirs: expected one row of x's length per direction");
        goto error;
    }
    npy_intp k = PyArray_DIM(dirs, 0);
    d = (PyArrayObject *)PyArray_SimpleNew(1, &k, NPY_DOUBLE);
    err = (PyArrayObject *)PyArray_SimpleNew(1, &k, NPY_DOUBLE);
    if (!d || !err)
        goto error;
    double f0;
    int status = gt_fd_eval(&call.problem, &f0);
    if (!status)
        status = gt_fd_directional(&call.problem, &call.opts, f0, PyArray_DATA(dirs), (size_t)k,
                                   PyArray_DATA(d), PyArray_DATA(err));
    if (status) {
        gt_raise_status(status, "directional finite differences");
        goto error;
    }
    result = Py_BuildValue("(OOdn)", d, err, f0, (Py_ssize_t)call.ctx.evaluations);
error:
    Py_XDECREF(dirs);
    Py_XDECREF(d);
    Py_XDECREF(err);
    fd_call_clear(&call);
    return result;
}

PyDoc_STRVAR(op_table_doc,
"op_table()\n--\n\n"
"The op table as a list of dicts: name, arity, differentiable (a tuple of bools per argument),\n"
"kink_rule.");

static PyObject *op_table(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    PyObject *list = PyList_New(GT_OP_COUNT);
    if (!list)
        return NULL;
    for (int i = 0; i < GT_OP_COUNT; i++) {
        const gt_op *op = &gt_op_table[i];
        PyObject *diff = op->arity == 1
                             ? Py_BuildValue("(O)", op->partial[0] ? Py_True : Py_False)
                             : Py_BuildValue("(OO)", op->partial[0] ? Py_True : Py_False,
                                             op->partial[1] ? Py_True : Py_False);
        PyObject *entry = diff ? Py_BuildValue("{s:s,s:i,s:N,s:s,s:O}", "name", op->name, "arity", op->arity,
                                               "differentiable", diff, "kink_rule", op->kink_rule,
                                               "has_value", op->value ? Py_True : Py_False)
                               : NULL;
        if (!entry) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, entry);
    }
    return list;
}

PyDoc_STRVAR(op_partials_doc,
"op_partials(name, a, b=None)\n--\n\n"
"Value and local partial derivatives of the elementwise op `name` at float64 arrays a (and b),\n"
"broadcast together. Returns (y, da) for unary ops and (y, da, db) for binary ones.");

static PyObject *op_partials(PyObject *self, PyObject *args)
{
    (void)self;
    const char *name;
    PyObject *a_obj, *b_obj = Py_None, *result = NULL;
    PyArrayObject *a = NULL, *b = NULL, *y = NULL, *da = NULL, *db = NULL;
    if (!PyArg_ParseTuple(args, "sO|O:op_partials", &name, &a_obj, &b_obj))
        return NULL;
    const gt_op *op = gt_op_lookup(name);
    if (!op)
        return PyErr_Format(PyExc_KeyError, "name: no op named %R in the op table", PyTuple_GET_ITEM(args, 0));
    if ((op->arity == 2) != (b_obj != Py_None))
        return PyErr_Format(PyExc_TypeError, "op %s takes %d argument(s)", name, op->arity);
    a = (PyArrayObject *)PyArray_FROMANY(a_obj, NPY_DOUBLE, 0, 0, NPY_ARRAY_CARRAY_RO | NPY_ARRAY_ENSURECOPY);
    if (!a)
        goto error;
    if (op->arity == 2) {
        b = (PyArrayObject *)PyArray_FROMANY(b_obj, NPY_DOUBLE, 0, 0, NPY_ARRAY_CARRAY_RO);
        if (!b)
            goto error;
        if (!PyArray_SAMESHAPE(a, b)) {
            PyErr_SetString(PyExc_ValueError, "b: expected the shape of a");
            goto error;
        }
    }
    int nd = PyArray_NDIM(a);
    npy_intp *dims = PyArray_DIMS(a);
    y = (PyArrayObject *)PyArray_SimpleNew(nd, dims, NPY_DOUBLE);
    da = (PyArrayObject *)PyArray_SimpleNew(nd, dims, NPY_DOUBLE);
    if (op->arity == 2)
        db = (PyArrayObject *)PyArray_SimpleNew(nd, dims, NPY_DOUBLE);
    if (!y || !da || (op->arity == 2 && !db))
        goto error;
    size_t n = (size_t)PyArray_SIZE(a);
    const double *ad = PyArray_DATA(a), *bd = b ? PyArray_DATA(b) : NULL;
    double *yd = PyArray_DATA(y);
    for (size_t i = 0; i < n; i++)
        yd[i] = op->value(ad[i], bd ? bd[i] : 0.0);
    int status = gt_op_partials_f64(op, n, ad, bd, yd, PyArray_DATA(da), db ? PyArray_DATA(db) : NULL);
    if (status) {
        gt_raise_status(status, "op_partials");
        goto error;
    }
    result = db ? PyTuple_Pack(3, y, da, db) : PyTuple_Pack(2, y, da);
error:
    Py_XDECREF(a);
    Py_XDECREF(b);
    Py_XDECREF(y);
    Py_XDECREF(da);
    Py_XDECREF(db);
    return result;
}

static PyMethodDef core_methods[] = {
    {"fd_gradient", (PyCFunction)(void (*)(void))fd_gradient, METH_FASTCALL, fd_gradient_doc},
    {"fd_directional", (PyCFunction)(void (*)(void))fd_directional, METH_FASTCALL, fd_directional_doc},
    {"op_table", op_table, METH_NOARGS, op_table_doc},
    {"op_partials", op_partials, METH_VARARGS, op_partials_doc},
    {NULL, NULL, 0, NULL},
};

static int core_exec(PyObject *module)
{
    (void)module;
    if (PyArray_ImportNumPyAPI() < 0)
        return -1;
    return 0;
}

static PyModuleDef_Slot core_slots[] = {
    {Py_mod_exec, core_exec},
    {0, NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT, "gradtest._core",
    "The C core of gradtest: finite differences and the op table.", 0, core_methods, core_slots,
    NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__core(void) { return PyModuleDef_Init(&core_module); }
