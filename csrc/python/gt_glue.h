/* gt_glue.h: helpers shared by the CPython extension modules of gradtest.
 * Included once per extension; every function is static inline so each module stands alone. */
#ifndef GT_GLUE_H
#define GT_GLUE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>

#include "gt_common.h"

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
