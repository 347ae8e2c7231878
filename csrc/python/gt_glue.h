/* gt_glue.h: helpers shared by the CPython extension modules of gradtest.
 * Included once per extension; every function is static inline so each module stands alone. */
#ifndef GT_GLUE_H
#define GT_GLUE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>

#include "gt_common.h"

/* ---------- references held across calls back into Python ----------
 *
 * The rule for every glue module: a reference that must stay valid across a call that can run
 * Python code is a strong one. Such calls are more than they look: a ufunc call (warning filters,
 * __array_ufunc__ overrides), __index__/__float__ while converting a shape or a number, any
 * PyObject_* call on a user's object, and the core's callbacks. That code may rebind the slot or
 * drop the container a borrowed pointer came from. So: take the reference (Py_NewRef) before the
 * call, release it at the function's one exit, and re-check anything read through it afterwards
 * (as CPython's _heapq does). A list whose items are converted one by one is read from a tuple
 * of them (PySequence_Tuple), which holds them and cannot change. Borrowing is for reads that
 * call nothing in between. _forward.c (read_operand, the shape conversion) and _reverse.c
 * (fast_operand, snapshot) follow it. */

/* ---------- core status -> Python exception: the one table of the glue ----------
 *
 * Every glue module raises core failures through these, so that one status is one exception type
 * everywhere: out of memory is MemoryError; a bad argument, malformed input data or a request the
 * core does not support for these inputs is ValueError; an operating-system failure is OSError;
 * the rest (a callback's failure without an exception of its own, a non-finite value, a guarded
 * call's time-out or crash when a caller raises them) is RuntimeError. */
static inline PyObject *gt_status_type(int status)
{
    switch (status) {
    case GT_ENOMEM: return PyExc_MemoryError;
    case GT_EINVAL:
    case GT_EFORMAT:
    case GT_EUNSUPPORTED: return PyExc_ValueError;
    case GT_EIO: return PyExc_OSError;
    default: return PyExc_RuntimeError;
    }
}

/* Raises a non-zero core status as "what: <status text>", unless an exception is already set (a
 * callback into Python failed and its exception is the one to show). GT_EIO with errno set
 * raises OSError from errno (its number and text). Always returns NULL. */
static inline PyObject *gt_raise_status(int status, const char *what)
{
    if (PyErr_Occurred())
        return NULL;
    if (status == GT_EIO && errno != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    PyErr_Format(gt_status_type(status), "%s: %s", what, gt_status_string(status));
    return NULL;
}

/* Raises a non-zero core status with the core's own message (its err buffer), or the status text
 * when the message is empty. Always returns NULL. */
static inline PyObject *gt_raise_message(int status, const char *message)
{
    PyErr_SetString(gt_status_type(status), message && message[0] ? message : gt_status_string(status));
    return NULL;
}

#endif /* GT_GLUE_H */
