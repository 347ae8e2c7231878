/* _ckernel.c: the CPython glue of the C-kernel runner (csrc/core/ckernel.c).
 *
 * gradtest/ckernel.py resolves function pointers and validates the user's arguments; this module
 * re-checks what it receives (addresses, dtypes, sizes), runs one stage with the GIL released,
 * in-process or in a forked child, and returns a plain dict describing the outcome. Turning a
 * kernel failure or a crash into an exception is left to Python, which knows the user's names. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_23_API_VERSION
#include <numpy/arrayobject.h>

#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ckernel.h"
#include "gt_glue.h"
#include "guard.h"

static gt_ck_fnptr to_fnptr(unsigned long long address)
{
    return (gt_ck_fnptr)(uintptr_t)address;
}

/* Validates x as a 1-d, C-contiguous, aligned array of the kernel's dtype with n >= 1 elements.
 * Sets TypeError/ValueError naming the problem and returns -1 otherwise. */
static int check_x(PyObject *x_obj, gt_dtype dtype, PyArrayObject **x)
{
    if (!PyArray_Check(x_obj)) {
        PyErr_Format(PyExc_TypeError, "x: expected a numpy.ndarray, got %.200s", Py_TYPE(x_obj)->tp_name);
        return -1;
    }
    PyArrayObject *arr = (PyArrayObject *)x_obj;
    int want = dtype == GT_FLOAT32 ? NPY_FLOAT32 : NPY_FLOAT64;
    if (PyArray_TYPE(arr) != want || !PyArray_ISNOTSWAPPED(arr)) {
        PyErr_Format(PyExc_TypeError, "x: expected a native-endian %s array",
                     dtype == GT_FLOAT32 ? "float32" : "float64");
        return -1;
    }
    if (PyArray_NDIM(arr) != 1 || !PyArray_IS_C_CONTIGUOUS(arr) || !PyArray_ISALIGNED(arr)) {
        PyErr_SetString(PyExc_ValueError, "x: expected a 1-d contiguous aligned array");
        return -1;
    }
    if (PyArray_SIZE(arr) < 1) {
        PyErr_SetString(PyExc_ValueError, "x: expected at least one element");
        return -1;
    }
    *x = arr;
    return 0;
}

/* Fills k from the common arguments; sets an exception and returns -1 on bad values. */
static int make_kernel(gt_ck_kernel *k, unsigned long long f, unsigned long long gradient,
                       unsigned long long vjp, unsigned long long jvp, unsigned long long ctx,
                       int dtype, Py_ssize_t m, Py_ssize_t n)
{
    if (dtype != GT_FLOAT64 && dtype != GT_FLOAT32) {
        PyErr_Format(PyExc_ValueError, "dtype: expected 0 (float64) or 1 (float32), got %d", dtype);
        return -1;
    }
    if (!f) {
        PyErr_SetString(PyExc_ValueError, "f: NULL function pointer");
        return -1;
    }
    if (m < 0) {
        PyErr_Format(PyExc_ValueError, "m: expected >= 0, got %zd", m);
        return -1;
    }
    if (m > 0 && gradient) {
        PyErr_SetString(PyExc_ValueError, "gradient: applies to scalar functions (m == 0) only");
        return -1;
    }
    memset(k, 0, sizeof *k);
    k->dtype = (gt_dtype)dtype;
    k->n = (size_t)n;
    k->m = (size_t)m;
    k->f = to_fnptr(f);
    k->gradient = gradient ? to_fnptr(gradient) : NULL;
    k->vjp = vjp ? to_fnptr(vjp) : NULL;
    k->jvp = jvp ? to_fnptr(jvp) : NULL;
    k->ctx = (void *)(uintptr_t)ctx;
    return 0;
}

/* The interruption check of a guarded run (guard.h), called while the GIL is released: takes the
 * GIL and runs Python's pending signal handlers, so that Ctrl-C (KeyboardInterrupt, or whatever
 * the program's SIGINT handler raises) stops the child. The exception is kept in ctx and set
 * again once the run has returned. Only the main thread runs signal handlers; elsewhere this
 * never interrupts (the main thread raises on its own). */
typedef struct interrupt_state {
    PyObject *type, *value, *traceback;
} interrupt_state;

static int python_interrupted(void *ctx)
{
    interrupt_state *st = ctx;
    PyGILState_STATE g = PyGILState_Ensure();
    int stop = 0;
    if (PyErr_CheckSignals() < 0) {
        PyErr_Fetch(&st->type, &st->value, &st->traceback);
        stop = 1;
    }
    PyGILState_Release(g);
    return stop;
}

static int set_item(PyObject *d, const char *key, PyObject *value)
{
    if (!value)
        return -1;
    int r = PyDict_SetItemString(d, key, value);
    Py_DECREF(value);
    return r;
}

PyDoc_STRVAR(run_stage_doc,
"run_stage(f, gradient, vjp, jvp, ctx, dtype, m, stage, x, u, method, richardson, rel_step,\n"
"          threads, isolate, timeout, scale=None) -> dict\n\n"
"Runs one stage of a C-kernel check (0 function/finite differences, 1 gradient, 2 vjp, 3 jvp,\n"
"4 evaluate: one timed call of f)\n"
"with the GIL released. Addresses are integers (0 = NULL); dtype 0 float64, 1 float32; m = 0 for\n"
"a scalar function; x a 1-d contiguous array of the dtype (not modified); u a float64 array of m\n"
"elements (None when m == 0); scale None or n float64 step scales for zero components.\n"
"Returns a dict: status, status_text, grad, err, value, nonfinite,\n"
"evaluations, seconds, kernel_status, signal, signal_name, timed_out, exit_code, crash_stage, overrun.\n"
"An isolated run is stopped by Ctrl-C: the child is killed and KeyboardInterrupt raised.");

static PyObject *run_stage(PyObject *self, PyObject *args, PyObject *kwargs)
{
    (void)self;
    static char *kwlist[] = {"f", "gradient", "vjp", "jvp", "ctx", "dtype", "m", "stage", "x", "u",
                             "method", "richardson", "rel_step", "threads", "isolate", "timeout",
                             "scale", NULL};
    unsigned long long f, gradient, vjp, jvp, ctx;
    int dtype, stage, method, richardson, threads, isolate;
    Py_ssize_t m;
    PyObject *x_obj, *u_obj, *scale_obj = Py_None;
    double rel_step, timeout;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "KKKKKiniOOipdipd|O", kwlist, &f, &gradient, &vjp,
                                     &jvp, &ctx, &dtype, &m, &stage, &x_obj, &u_obj, &method,
                                     &richardson, &rel_step, &threads, &isolate, &timeout, &scale_obj))
        return NULL;
    PyArrayObject *x = NULL, *u = NULL, *scale = NULL, *grad = NULL, *err = NULL;
    PyObject *result = NULL;
    if (check_x(x_obj, (gt_dtype)dtype == GT_FLOAT32 ? GT_FLOAT32 : GT_FLOAT64, &x))
        return NULL;
    npy_intp n = PyArray_SIZE(x);
    gt_ck_kernel k;
    if (make_kernel(&k, f, gradient, vjp, jvp, ctx, dtype, m, (Py_ssize_t)n))
        return NULL;
    if (stage < GT_CK_FUNCTION || stage > GT_CK_EVALUATE) {
        PyErr_Format(PyExc_ValueError, "stage: expected 0..4, got %d", stage);
        return NULL;
    }
    if (method < GT_FD_CENTRAL || method > GT_FD_BACKWARD) {
        PyErr_Format(PyExc_ValueError, "method: expected 0..2, got %d", method);
        return NULL;
    }
    if (threads < 1) {
        PyErr_Format(PyExc_ValueError, "threads: expected >= 1, got %d", threads);
        return NULL;
    }
    if ((stage == GT_CK_GRADIENT && !gradient) || (stage == GT_CK_VJP && !vjp) ||
        (stage == GT_CK_JVP && !jvp)) {
        PyErr_Format(PyExc_ValueError, "%s: NULL function pointer", gt_ck_stage_name(stage));
        return NULL;
    }
    if (m > 0) {
        u = (PyArrayObject *)PyArray_FROMANY(u_obj, NPY_FLOAT64, 1, 1, NPY_ARRAY_CARRAY_RO);
        if (!u)
            return NULL;
        if (PyArray_SIZE(u) != m) {
            PyErr_Format(PyExc_ValueError, "u: expected %zd elements, got %zd", m,
                         (Py_ssize_t)PyArray_SIZE(u));
            goto error;
        }
    }
    if (scale_obj != Py_None) {
        scale = (PyArrayObject *)PyArray_FROMANY(scale_obj, NPY_FLOAT64, 1, 1, NPY_ARRAY_CARRAY_RO);
        if (!scale)
            goto error;
        if (PyArray_SIZE(scale) != n) {
            PyErr_Format(PyExc_ValueError, "scale: expected %zd elements, got %zd", (Py_ssize_t)n,
                         (Py_ssize_t)PyArray_SIZE(scale));
            goto error;
        }
    }
    grad = (PyArrayObject *)PyArray_SimpleNew(1, &n, NPY_FLOAT64);
    if (!grad)
        goto error;
    if (stage == GT_CK_FUNCTION) {
        err = (PyArrayObject *)PyArray_SimpleNew(1, &n, NPY_FLOAT64);
        if (!err)
            goto error;
    }
    gt_fd_options opts = {.method = (gt_fd_method)method, .richardson = richardson, .rel_step = rel_step};
    gt_ck_result res;
    gt_guard_result gres;
    memset(&gres, 0, sizeof gres);
    interrupt_state istate = {NULL, NULL, NULL};
    gt_guard_options gopts = {timeout, python_interrupted, &istate};
    int status;
    const void *xd = PyArray_DATA(x);
    const double *ud = u ? PyArray_DATA(u) : NULL;
    const double *sd = scale ? PyArray_DATA(scale) : NULL;
    double *gd = PyArray_DATA(grad), *ed = err ? PyArray_DATA(err) : NULL;
    /* x, u, scale, grad and err are held by this frame: nothing can free them while the GIL is out */
    Py_BEGIN_ALLOW_THREADS
    if (isolate)
        status = gt_ck_stage_guarded(&k, (gt_ck_stage)stage, xd, ud, &opts, sd, threads, gd, ed,
                                     &res, &gopts, &gres);
    else
        status = gt_ck_stage_run(&k, (gt_ck_stage)stage, xd, ud, &opts, sd, threads, gd, ed, &res);
    Py_END_ALLOW_THREADS
    if (status == GT_EINTR) {
        /* the child was killed and reaped; what the signal handler raised goes on up */
        if (istate.type)
            PyErr_Restore(istate.type, istate.value, istate.traceback);
        else
            PyErr_SetNone(PyExc_KeyboardInterrupt);
        goto error;
    }
    if (status == GT_EINVAL || status == GT_ENOMEM || status == GT_EIO) {
        gt_raise_status(status, "run_stage");
        goto error;
    }
    char sigbuf[32];
    result = PyDict_New();
    if (!result)
        goto error;
    if (set_item(result, "status", PyLong_FromLong(status)) ||
        set_item(result, "status_text", PyUnicode_FromString(gt_status_string(status))) ||
        PyDict_SetItemString(result, "grad", (PyObject *)grad) ||
        PyDict_SetItemString(result, "err", err ? (PyObject *)err : Py_None) ||
        set_item(result, "value", PyFloat_FromDouble(res.value)) ||
        set_item(result, "seconds", PyFloat_FromDouble(res.seconds)) ||
        set_item(result, "nonfinite", PyLong_FromSize_t(res.nonfinite)) ||
        set_item(result, "evaluations", PyLong_FromSize_t(res.evaluations)) ||
        set_item(result, "kernel_status", PyLong_FromLong(res.kernel_status)) ||
        set_item(result, "signal", PyLong_FromLong(gres.signal)) ||
        set_item(result, "signal_name",
                 gres.signal ? PyUnicode_FromString(gt_signal_name(gres.signal, sigbuf, sizeof sigbuf))
                             : Py_NewRef(Py_None)) ||
        set_item(result, "timed_out", PyBool_FromLong(gres.timed_out)) ||
        set_item(result, "exit_code", PyLong_FromLong(gres.exit_code)) ||
        set_item(result, "crash_stage", PyUnicode_FromString(gres.stage)) ||
        set_item(result, "overrun", PyUnicode_FromString(res.overrun)))
        goto error;
    Py_XDECREF(u);
    Py_XDECREF(scale);
    Py_DECREF(grad);
    Py_XDECREF(err);
    return result;
error:
    Py_XDECREF(result);
    Py_XDECREF(u);
    Py_XDECREF(scale);
    Py_XDECREF(grad);
    Py_XDECREF(err);
    return NULL;
}

PyDoc_STRVAR(evaluate_doc,
"evaluate(f, ctx, dtype, m, x) -> (status, kernel_status, y, overrun)\n\n"
"Calls f once at x, in this process with the GIL released. y is a float64 array of m elements\n"
"(1 when m == 0); status is GT_OK, GT_EOVERRUN (f wrote outside its buffers) or GT_ECALLBACK\n"
"(kernel_status then holds the kernel's).");

static PyObject *evaluate(PyObject *self, PyObject *args)
{
    (void)self;
    unsigned long long f, ctx;
    int dtype;
    Py_ssize_t m;
    PyObject *x_obj;
    if (!PyArg_ParseTuple(args, "KKinO", &f, &ctx, &dtype, &m, &x_obj))
        return NULL;
    PyArrayObject *x;
    if (check_x(x_obj, (gt_dtype)dtype == GT_FLOAT32 ? GT_FLOAT32 : GT_FLOAT64, &x))
        return NULL;
    gt_ck_kernel k;
    if (make_kernel(&k, f, 0, 0, 0, ctx, dtype, m, (Py_ssize_t)PyArray_SIZE(x)))
        return NULL;
    npy_intp mo = m > 0 ? m : 1;
    PyArrayObject *y = (PyArrayObject *)PyArray_SimpleNew(1, &mo, NPY_FLOAT64);
    if (!y)
        return NULL;
    int status, kernel_status = 0;
    char overrun[64] = "";
    const void *xd = PyArray_DATA(x);
    double *yd = PyArray_DATA(y);
    Py_BEGIN_ALLOW_THREADS
    status = gt_ck_evaluate(&k, xd, yd, &kernel_status, overrun);
    Py_END_ALLOW_THREADS
    if (status != GT_OK && status != GT_ECALLBACK && status != GT_EOVERRUN) {
        Py_DECREF(y);
        return gt_raise_status(status, "evaluate");
    }
    return Py_BuildValue("iiNs", status, kernel_status, (PyObject *)y, overrun);
}

/* ---- guard self-test: C work that ends in a chosen way ----------------------------------- */

typedef struct selftest {
    const char *kind;
} selftest;

/* Writes "ok" (or stages then misbehaves as `kind` says). Only ever runs in the child. */
static int selftest_fn(void *ctx, void *out, size_t cap, size_t *len)
{
    const selftest *t = ctx;
    gt_guard_stage("selftest");
    if (!strcmp(t->kind, "segv")) {
        /* a real fault, on an inaccessible page (not a NULL store, which UBSan would stop) */
        volatile int *p = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if ((void *)p != MAP_FAILED)
            *p = 1;
        raise(SIGSEGV);
    } else if (!strcmp(t->kind, "abort")) {
        abort();
    } else if (!strcmp(t->kind, "fpe")) {
        raise(SIGFPE);
    } else if (!strcmp(t->kind, "bus")) {
        raise(SIGBUS);
    } else if (!strcmp(t->kind, "hang")) {
        for (;;)
            pause();
    } else if (!strcmp(t->kind, "exit")) {
        _exit(3);
    } else if (!strcmp(t->kind, "fail")) {
        *len = 0;
        return 7;
    } else if (!strcmp(t->kind, "big")) {
        /* more bytes than fit: the guard truncates to cap */
        memset(out, 'x', cap);
        *len = cap + 100;
        return 0;
    }
    size_t n = cap < 2 ? cap : 2;
    memcpy(out, "ok", n);
    *len = n;
    return 0;
}

PyDoc_STRVAR(guard_selftest_doc,
"_guard_selftest(kind, cap, timeout) -> (status, fn_status, signal, signal_name, timed_out,\n"
"                                      exit_code, stage, payload)\n\n"
"Runs C work in a guarded child that ends as `kind` says: 'ok', 'segv', 'abort', 'fpe', 'bus',\n"
"'hang', 'exit', 'fail', 'big'. For the tests of guard.c.");

static PyObject *guard_selftest(PyObject *self, PyObject *args)
{
    (void)self;
    const char *kind;
    Py_ssize_t cap;
    double timeout;
    if (!PyArg_ParseTuple(args, "snd", &kind, &cap, &timeout))
        return NULL;
    if (cap < 0) {
        PyErr_SetString(PyExc_ValueError, "cap: expected >= 0");
        return NULL;
    }
    char *buf = PyMem_Malloc(cap ? (size_t)cap : 1);
    if (!buf)
        return PyErr_NoMemory();
    selftest t = {kind};
    gt_guard_result gres;
    memset(&gres, 0, sizeof gres);
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = gt_guard_run(selftest_fn, &t, buf, (size_t)cap, timeout, &gres);
    Py_END_ALLOW_THREADS
    char sigbuf[32];
    PyObject *r = Py_BuildValue("iiisiiiy#", status, gres.fn_status, gres.signal,
                                gres.signal ? gt_signal_name(gres.signal, sigbuf, sizeof sigbuf) : "",
                                gres.timed_out, gres.exit_code, 0, buf, (Py_ssize_t)gres.out_len);
    if (r) {
        /* the stage string goes in separately: it may be empty */
        PyObject *stage = PyUnicode_FromString(gres.stage);
        if (!stage || PyTuple_SetItem(r, 6, stage)) {
            Py_DECREF(r);
            r = NULL;
        }
    }
    PyMem_Free(buf);
    return r;
}

static PyObject *status_names(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    return Py_BuildValue("{s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i}", "OK", GT_OK, "EINVAL", GT_EINVAL,
                         "ECALLBACK", GT_ECALLBACK, "EIO", GT_EIO, "ETIMEOUT", GT_ETIMEOUT, "ECRASH",
                         GT_ECRASH, "EINTR", GT_EINTR, "EOVERRUN", GT_EOVERRUN);
}

static PyMethodDef ckernel_methods[] = {
    {"run_stage", (PyCFunction)(void (*)(void))run_stage, METH_VARARGS | METH_KEYWORDS, run_stage_doc},
    {"evaluate", evaluate, METH_VARARGS, evaluate_doc},
    {"_guard_selftest", guard_selftest, METH_VARARGS, guard_selftest_doc},
    {"status_codes", status_names, METH_NOARGS, "The core's status codes by name."},
    {NULL, NULL, 0, NULL},
};

static int ckernel_exec(PyObject *module)
{
    (void)module;
    if (PyArray_ImportNumPyAPI() < 0)
        return -1;
    return 0;
}

static PyModuleDef_Slot ckernel_slots[] = {
    {Py_mod_exec, ckernel_exec},
    {0, NULL},
};

static struct PyModuleDef ckernel_module = {
    PyModuleDef_HEAD_INIT, "gradtest._ckernel",
    "C kernels under finite differences with no Python in the loop, optionally in a forked child.",
    0, ckernel_methods, ckernel_slots, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__ckernel(void) { return PyModuleDef_Init(&ckernel_module); }
