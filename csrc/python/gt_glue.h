/* gt_glue.h: helpers shared by the CPython extension modules of gradtest.
 * Included once per extension; every function is static inline so each module stands alone. */
#ifndef GT_GLUE_H
#define GT_GLUE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "gt_common.h"

/* Turns a non-zero core status into a Python exception, unless one is already set (a callback
 * into Python failed and its exception is the one to show). Always returns NULL. */
static inline PyObject *gt_raise_status(int status, const char *what)
{
    if (PyErr_Occurred())
        return NULL;
    PyObject *type = status == GT_ENOMEM ? PyExc_MemoryError
                     : status == GT_EINVAL ? PyExc_ValueError
                                           : PyExc_RuntimeError;
    PyErr_Format(type, "%s: %s", what, gt_status_string(status));
    return NULL;
}

#endif /* GT_GLUE_H */
