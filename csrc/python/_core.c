/* _core.c: the CPython glue of the finite-difference engine and the op table.
 *
 * Parsing and validation happen here; the loops live in csrc/core. The evaluation callback calls
 * the user's Python function on views of the working buffer: no copy per evaluation. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_23_API_VERSION
#include <numpy/arrayobject.h>

#include <math.h>
#include <string.h>
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
    npy_intp expected = c->u == NULL ? 1 : c->u_size;
    if (size != expected && c->evaluations > 1) {
        /* at a perturbed point: an output whose shape depends on x (x[x > 0.5]) changed; that
         * step gives no quotient, smaller ones may */
        *value = NAN;
    } else if (size != expected) {
        PyErr_Format(PyExc_ValueError, "f returned %zd values where %zd were expected "
                     "(its output shape changed between calls)", (Py_ssize_t)size, (Py_ssize_t)expected);
        status = -1;
    } else if (c->u == NULL) {
        *value = data[0];
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

/* Parsed arguments common to the finite-difference entry points. Owns the references it holds. */
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

static int parse_method(const char *method, gt_fd_method *out)
{
    if (strcmp(method, "central") == 0)
        *out = GT_FD_CENTRAL;
    else if (strcmp(method, "forward") == 0)
        *out = GT_FD_FORWARD;
    else if (strcmp(method, "backward") == 0)
        *out = GT_FD_BACKWARD;
    else {
        PyErr_Format(PyExc_ValueError, "method: expected 'central', 'forward' or 'backward', got '%s'", method);
        return -1;
    }
    return 0;
}

static int nonnegative(double v, const char *name)
{
    if (v == -1.0 && PyErr_Occurred())
        return -1;
    if (!(v >= 0.0) || !isfinite(v)) {
        PyErr_Format(PyExc_ValueError, "%s: expected a finite number >= 0", name);
        return -1;
    }
    return 0;
}

/* Parses the leading arguments every entry point shares:
 * (f, args, kwargs, x, u, scale, method, richardson, rel_step, noise, out_eps).
 * On failure sets an exception and returns -1; the caller still runs fd_call_clear. */
enum { FD_COMMON_ARGS = 11 };
static int fd_call_parse(fd_call *call, PyObject *const *argv, Py_ssize_t argc, Py_ssize_t extra,
                         const char *fname)
{
    if (argc != FD_COMMON_ARGS + extra) {
        PyErr_Format(PyExc_TypeError, "%s expected %zd arguments, got %zd", fname,
                     (Py_ssize_t)(FD_COMMON_ARGS + extra), argc);
        return -1;
    }
    call->f = argv[0];
    call->args = argv[1];
    call->kwargs = argv[2] == Py_None ? NULL : argv[2];
    if (!PyCallable_Check(call->f)) {
        PyErr_SetString(PyExc_TypeError, "f: expected a callable");
        return -1;
    }
    if (!PyTuple_Check(call->args)) {
        PyErr_SetString(PyExc_TypeError, "args: expected a tuple");
        return -1;
    }
    if (call->kwargs && !PyDict_Check(call->kwargs)) {
        PyErr_SetString(PyExc_TypeError, "kwargs: expected a dict or None");
        return -1;
    }
    if (!PyArray_Check(argv[3])) {
        PyErr_SetString(PyExc_TypeError, "x: expected the working buffer, a NumPy array");
        return -1;
    }
    PyArrayObject *x = (PyArrayObject *)argv[3];
    int type = PyArray_TYPE(x);
    if ((type != NPY_DOUBLE && type != NPY_FLOAT) || PyArray_NDIM(x) != 1 ||
        !PyArray_IS_C_CONTIGUOUS(x) || !PyArray_ISWRITEABLE(x) || !PyArray_ISALIGNED(x)) {
        PyErr_SetString(PyExc_ValueError, "x: expected a writable, aligned, contiguous 1-d float64 or float32 array");
        return -1;
    }
    Py_INCREF(x);
    call->x = x;
    if (argv[4] != Py_None) {
        call->u = (PyArrayObject *)PyArray_FROMANY(argv[4], NPY_DOUBLE, 0, 0, NPY_ARRAY_CARRAY_RO);
        if (!call->u)
            return -1;
    }
    if (argv[5] != Py_None) {
        call->scale = (PyArrayObject *)PyArray_FROMANY(argv[5], NPY_DOUBLE, 1, 1, NPY_ARRAY_CARRAY_RO);
        if (!call->scale)
            return -1;
        if (PyArray_SIZE(call->scale) != PyArray_SIZE(x)) {
            PyErr_SetString(PyExc_ValueError, "scale: expected one value per element of x");
            return -1;
        }
    }
    if (!PyUnicode_Check(argv[6])) {
        PyErr_SetString(PyExc_TypeError, "method: expected a string");
        return -1;
    }
    const char *method = PyUnicode_AsUTF8(argv[6]);
    if (!method || parse_method(method, &call->opts.method))
        return -1;
    int richardson = PyObject_IsTrue(argv[7]);
    if (richardson < 0)
        return -1;
    call->opts.richardson = richardson;
    call->opts.rel_step = PyFloat_AsDouble(argv[8]);
    call->opts.noise = PyFloat_AsDouble(argv[9]);
    call->opts.out_eps = PyFloat_AsDouble(argv[10]);
    if (nonnegative(call->opts.rel_step, "rel_step") || nonnegative(call->opts.noise, "noise") ||
        nonnegative(call->opts.out_eps, "out_eps"))
        return -1;
    call->ctx = (py_eval_ctx){call->f, call->args, call->kwargs,
                              call->u ? PyArray_DATA(call->u) : NULL,
                              call->u ? PyArray_SIZE(call->u) : 0, 0};
    call->problem = (gt_fd_problem){PyArray_DATA(x), type == NPY_FLOAT ? GT_FLOAT32 : GT_FLOAT64,
                                    (size_t)PyArray_SIZE(x), py_eval, &call->ctx,
                                    call->scale ? PyArray_DATA(call->scale) : NULL};
    return 0;
}

static PyArrayObject *new_doubles(npy_intp n) { return (PyArrayObject *)PyArray_SimpleNew(1, &n, NPY_DOUBLE); }

#define FD_COMMON_SIG "f, args, kwargs, x, u, scale, method, richardson, rel_step, noise, out_eps"

PyDoc_STRVAR(fd_gradient_doc,
"fd_gradient(" FD_COMMON_SIG ", time_limit)\n--\n\n"
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
    if (fd_call_parse(&call, argv, argc, 1, "fd_gradient"))
        goto error;
    double time_limit = PyFloat_AsDouble(argv[FD_COMMON_ARGS]);
    if (nonnegative(time_limit, "time_limit"))
        goto error;
    grad = new_doubles((npy_intp)call.problem.n);
    err = new_doubles((npy_intp)call.problem.n);
    if (!grad || !err)
        goto error;
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

PyDoc_STRVAR(fd_components_doc,
"fd_components(" FD_COMMON_SIG ", indices, f0)\n--\n\n"
"Finite-difference derivatives of f with respect to the listed components of x (an integer\n"
"array), with `method` choosing central or one-sided quotients and f0 = f(x).\n"
"Returns (values, errors, evaluations).");

static PyObject *fd_components(PyObject *self, PyObject *const *argv, Py_ssize_t argc)
{
    (void)self;
    fd_call call = {0};
    PyObject *result = NULL;
    PyArrayObject *idx = NULL, *values = NULL, *err = NULL;
    size_t *indices = NULL;
    if (fd_call_parse(&call, argv, argc, 2, "fd_components"))
        goto error;
    idx = (PyArrayObject *)PyArray_FROMANY(argv[FD_COMMON_ARGS], NPY_INTP, 1, 1, NPY_ARRAY_CARRAY_RO);
    double f0 = PyFloat_AsDouble(argv[FD_COMMON_ARGS + 1]);
    if (!idx || (f0 == -1.0 && PyErr_Occurred()))
        goto error;
    npy_intp k = PyArray_SIZE(idx);
    const npy_intp *raw = PyArray_DATA(idx);
    indices = gt_malloc((k ? (size_t)k : 1) * sizeof *indices);
    values = new_doubles(k);
    err = new_doubles(k);
    if (!indices || !values || !err) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        goto error;
    }
    for (npy_intp j = 0; j < k; j++) {
        if (raw[j] < 0 || (size_t)raw[j] >= call.problem.n) {
            PyErr_Format(PyExc_IndexError, "indices: %zd is out of range for %zu components",
                         (Py_ssize_t)raw[j], call.problem.n);
            goto error;
        }
        indices[j] = (size_t)raw[j];
    }
    int status = gt_fd_gradient_indices(&call.problem, &call.opts, f0, indices, (size_t)k,
                                        PyArray_DATA(values), PyArray_DATA(err), NULL);
    if (status) {
        gt_raise_status(status, "finite differences");
        goto error;
    }
    result = Py_BuildValue("(OOn)", values, err, (Py_ssize_t)call.ctx.evaluations);
error:
    gt_free(indices);
    Py_XDECREF(idx);
    Py_XDECREF(values);
    Py_XDECREF(err);
    fd_call_clear(&call);
    return result;
}

static int parse_seed(PyObject *obj, uint64_t *seed)
{
    unsigned long long v = PyLong_AsUnsignedLongLongMask(obj);
    if (v == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    *seed = (uint64_t)v;
    return 0;
}

PyDoc_STRVAR(fd_directional_doc,
"fd_directional(" FD_COMMON_SIG ", seed, k)\n--\n\n"
"Finite-difference derivatives of f along directions 0..k-1 of the family `seed` (see\n"
"direction()). Returns (d, err, f0, evaluations).");

static PyObject *fd_directional(PyObject *self, PyObject *const *argv, Py_ssize_t argc)
{
    (void)self;
    fd_call call = {0};
    PyObject *result = NULL;
    PyArrayObject *d = NULL, *err = NULL;
    uint64_t seed;
    if (fd_call_parse(&call, argv, argc, 2, "fd_directional") || parse_seed(argv[FD_COMMON_ARGS], &seed))
        goto error;
    Py_ssize_t k = PyLong_AsSsize_t(argv[FD_COMMON_ARGS + 1]);
    if (k == -1 && PyErr_Occurred())
        goto error;
    if (k < 0) {
        PyErr_SetString(PyExc_ValueError, "k: expected a number of directions >= 0");
        goto error;
    }
    d = new_doubles(k);
    err = new_doubles(k);
    if (!d || !err)
        goto error;
    double f0;
    int status = gt_fd_eval(&call.problem, &f0);
    if (!status)
        status = gt_fd_directional(&call.problem, &call.opts, f0, seed, (size_t)k, PyArray_DATA(d),
                                   PyArray_DATA(err));
    if (status) {
        gt_raise_status(status, "directional finite differences");
        goto error;
    }
    result = Py_BuildValue("(OOdn)", d, err, f0, (Py_ssize_t)call.ctx.evaluations);
error:
    Py_XDECREF(d);
    Py_XDECREF(err);
    fd_call_clear(&call);
    return result;
}

PyDoc_STRVAR(fd_noise_doc,
"fd_noise(" FD_COMMON_SIG ", seed)\n--\n\n"
"The noise level of f near x (standard deviation of its values about a smooth fit).\n"
"Returns (sigma, evaluations).");

static PyObject *fd_noise(PyObject *self, PyObject *const *argv, Py_ssize_t argc)
{
    (void)self;
    fd_call call = {0};
    PyObject *result = NULL;
    uint64_t seed;
    if (fd_call_parse(&call, argv, argc, 1, "fd_noise") || parse_seed(argv[FD_COMMON_ARGS], &seed))
        goto error;
    double sigma;
    int status = gt_fd_noise(&call.problem, seed, &sigma, NULL);
    if (status) {
        gt_raise_status(status, "noise estimate");
        goto error;
    }
    result = Py_BuildValue("(dn)", sigma, (Py_ssize_t)call.ctx.evaluations);
error:
    fd_call_clear(&call);
    return result;
}

/* (seed, scale) -> the direction family; scale: n float64 values (the per-component scales). */
static PyArrayObject *parse_scale(PyObject *obj)
{
    PyArrayObject *scale = (PyArrayObject *)PyArray_FROMANY(obj, NPY_DOUBLE, 1, 1, NPY_ARRAY_CARRAY_RO);
    if (!scale)
        return NULL;
    const double *s = PyArray_DATA(scale);
    for (npy_intp i = 0; i < PyArray_SIZE(scale); i++) {
        if (!(s[i] > 0.0) || !isfinite(s[i])) {
            PyErr_Format(PyExc_ValueError, "scale: expected finite values > 0, got %g at %zd", s[i], (Py_ssize_t)i);
            Py_DECREF(scale);
            return NULL;
        }
    }
    if (PyArray_SIZE(scale) == 0) {
        Py_DECREF(scale);
        PyErr_SetString(PyExc_ValueError, "scale: expected at least one element");
        return NULL;
    }
    return scale;
}

PyDoc_STRVAR(direction_doc,
"direction(seed, j, scale)\n--\n\n"
"Direction j of the family `seed`: scale[i] * z_ji, z_ji = +-(0.5 + u) with a random sign and u\n"
"uniform in [0, 1) (a new float64 array).");

static PyObject *direction(PyObject *self, PyObject *const *argv, Py_ssize_t argc)
{
    (void)self;
    uint64_t seed, j;
    if (argc != 3) {
        PyErr_SetString(PyExc_TypeError, "direction expected 3 arguments (seed, j, scale)");
        return NULL;
    }
    if (parse_seed(argv[0], &seed) || parse_seed(argv[1], &j))
        return NULL;
    PyArrayObject *scale = parse_scale(argv[2]);
    if (!scale)
        return NULL;
    PyArrayObject *v = new_doubles(PyArray_SIZE(scale));
    if (v)
        gt_fd_direction(seed, j, (size_t)PyArray_SIZE(scale), PyArray_DATA(scale), NULL, GT_FLOAT64,
                        PyArray_DATA(v));
    Py_DECREF(scale);
    return (PyObject *)v;
}

PyDoc_STRVAR(direction_components_doc,
"direction_components(seed, k, i)\n--\n\n"
"z_ji for j < k: component i of directions 0..k-1 of the family before scaling (float64).");

static PyObject *direction_components(PyObject *self, PyObject *const *argv, Py_ssize_t argc)
{
    (void)self;
    uint64_t seed;
    if (argc != 3) {
        PyErr_SetString(PyExc_TypeError, "direction_components expected 3 arguments (seed, k, i)");
        return NULL;
    }
    if (parse_seed(argv[0], &seed))
        return NULL;
    Py_ssize_t k = PyLong_AsSsize_t(argv[1]), i = PyLong_AsSsize_t(argv[2]);
    if ((k == -1 || i == -1) && PyErr_Occurred())
        return NULL;
    if (k < 0 || i < 0) {
        PyErr_SetString(PyExc_ValueError, "k, i: expected integers >= 0");
        return NULL;
    }
    PyArrayObject *out = new_doubles(k);
    if (!out)
        return NULL;
    double *od = PyArray_DATA(out);
    for (Py_ssize_t j = 0; j < k; j++)
        od[j] = gt_fd_direction_component(seed, (uint64_t)j, (size_t)i);
    return (PyObject *)out;
}

PyDoc_STRVAR(direction_products_doc,
"direction_products(seed, k, scale, g)\n--\n\n"
"For the k directions of the family: (<g, v_j>, ||g * v_j||_2, sum_i |g_i v_ji|), three float64\n"
"arrays of k values, g a float64 vector (the GIL is released; directions are regenerated, not\n"
"stored).");

PyDoc_STRVAR(direction_combine_doc,
"direction_combine(seed, scale, r)\n--\n\n"
"(sum_j r[j] v_j, sum_j v_j ** 2) over the directions 0..len(r)-1 of the family (two new\n"
"float64 arrays; the GIL is released).");

/* Shared parsing for direction_products and direction_combine. */
static int parse_family(PyObject *const *argv, uint64_t *seed, PyArrayObject **scale)
{
    if (parse_seed(argv[0], seed))
        return -1;
    *scale = parse_scale(argv[1]);
    return *scale ? 0 : -1;
}

static PyObject *direction_products(PyObject *self, PyObject *const *argv, Py_ssize_t argc)
{
    (void)self;
    uint64_t seed;
    PyArrayObject *scale = NULL, *g = NULL, *dots = NULL, *norms = NULL, *abssum = NULL;
    PyObject *result = NULL;
    if (argc != 4) {
        PyErr_SetString(PyExc_TypeError, "direction_products expected 4 arguments (seed, k, scale, g)");
        return NULL;
    }
    PyObject *family[2] = {argv[0], argv[2]};
    if (parse_family(family, &seed, &scale))
        goto error;
    Py_ssize_t k = PyLong_AsSsize_t(argv[1]);
    if ((k == -1 && PyErr_Occurred()))
        goto error;
    if (k < 0) {
        PyErr_SetString(PyExc_ValueError, "k: expected a number of directions >= 0");
        goto error;
    }
    g = (PyArrayObject *)PyArray_FROMANY(argv[3], NPY_DOUBLE, 1, 1, NPY_ARRAY_CARRAY_RO);
    if (!g)
        goto error;
    size_t n = (size_t)PyArray_SIZE(scale);
    if ((size_t)PyArray_SIZE(g) != n) {
        PyErr_SetString(PyExc_ValueError, "g: expected one value per element of scale");
        goto error;
    }
    dots = new_doubles(k);
    norms = new_doubles(k);
    abssum = new_doubles(k);
    if (!dots || !norms || !abssum)
        goto error;
    const double *gd = PyArray_DATA(g), *sd = PyArray_DATA(scale);
    double *dd = PyArray_DATA(dots), *nd = PyArray_DATA(norms), *ad = PyArray_DATA(abssum);
    Py_BEGIN_ALLOW_THREADS
    gt_fd_direction_products(seed, (size_t)k, n, sd, gd, dd, nd, ad);
    Py_END_ALLOW_THREADS
    result = PyTuple_Pack(3, dots, norms, abssum);
error:
    Py_XDECREF(scale);
    Py_XDECREF(g);
    Py_XDECREF(dots);
    Py_XDECREF(norms);
    Py_XDECREF(abssum);
    return result;
}

static PyObject *direction_combine(PyObject *self, PyObject *const *argv, Py_ssize_t argc)
{
    (void)self;
    uint64_t seed;
    PyArrayObject *scale = NULL, *r = NULL, *out = NULL, *sq = NULL;
    PyObject *result = NULL;
    if (argc != 3) {
        PyErr_SetString(PyExc_TypeError, "direction_combine expected 3 arguments (seed, scale, r)");
        return NULL;
    }
    if (parse_family(argv, &seed, &scale))
        goto error;
    r = (PyArrayObject *)PyArray_FROMANY(argv[2], NPY_DOUBLE, 1, 1, NPY_ARRAY_CARRAY_RO);
    if (!r)
        goto error;
    size_t n = (size_t)PyArray_SIZE(scale);
    out = new_doubles((npy_intp)n);
    sq = new_doubles((npy_intp)n);
    if (!out || !sq)
        goto error;
    double *od = PyArray_DATA(out), *qd = PyArray_DATA(sq);
    const double *rd = PyArray_DATA(r), *sd = PyArray_DATA(scale);
    size_t k = (size_t)PyArray_SIZE(r);
    Py_BEGIN_ALLOW_THREADS
    gt_fd_direction_combine(seed, k, n, sd, rd, od, qd);
    Py_END_ALLOW_THREADS
    result = PyTuple_Pack(2, out, sq);
error:
    Py_XDECREF(scale);
    Py_XDECREF(r);
    Py_XDECREF(out);
    Py_XDECREF(sq);
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
    {"fd_components", (PyCFunction)(void (*)(void))fd_components, METH_FASTCALL, fd_components_doc},
    {"fd_noise", (PyCFunction)(void (*)(void))fd_noise, METH_FASTCALL, fd_noise_doc},
    {"direction", (PyCFunction)(void (*)(void))direction, METH_FASTCALL, direction_doc},
    {"direction_components", (PyCFunction)(void (*)(void))direction_components, METH_FASTCALL,
     direction_components_doc},
    {"direction_products", (PyCFunction)(void (*)(void))direction_products, METH_FASTCALL, direction_products_doc},
    {"direction_combine", (PyCFunction)(void (*)(void))direction_combine, METH_FASTCALL, direction_combine_doc},
    {"op_table", op_table, METH_NOARGS, op_table_doc},
    {"op_partials", op_partials, METH_VARARGS, op_partials_doc},
    {NULL, NULL, 0, NULL},
};

static int core_exec(PyObject *module)
{
    if (PyArray_ImportNumPyAPI() < 0)
        return -1;
    /* the noise bound's factor, so the Python side reads the one the C kernels use */
    return PyModule_AddObject(module, "NOISE_FACTOR", PyFloat_FromDouble(GT_FD_NOISE_FACTOR));
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
