"""Dispatch checks: the ``@jet`` of gradtest.

:func:`check_dispatch` runs two halves on a target, as LuxTestUtils' ``@jet`` runs JET's
``test_call`` and ``test_opt``. A compiled C function is called in a forked child (call) and its
machine code is read for dynamic dispatch, allocation and calls out of its library (opt); a Python
function runs on observed reverse-mode arrays (call) and every NumPy operation it applies is
checked for type instability (opt).

The package has one module per concern; each imports only the ones above it in this list:

* ``_policy``: the naming rules (allocation, Python C API, noreturn, allowed by default) and the
  matching of ``allow=`` patterns; a leaf;
* ``_report``: findings and reports of both checks and their shared verdict rules; a leaf;
* ``_core``: capstone and the cached parsed objects and analysis summaries of the C core;
* ``_signature``: the C-signature parser and argument conversion of the call check;
* ``_targets``: the target modules and the resolution of a target to a function in an object file;
* ``_native``: the check of a C target;
* ``_python``: the check of a Python target;
* ``_check``: :func:`check_dispatch` and :func:`test_dispatch`, which route to the two checks.
"""

from __future__ import annotations

from ._check import check_dispatch, test_dispatch
from ._core import CapstoneMissingError
from ._policy import (
    ALLOCATION,
    DEFAULT_ALLOWED_NAMES,
    DEFAULT_MAX_DEPTH,
    DEFAULT_TIMEOUT,
    FINDING_KINDS,
    NORETURN,
    PYTHON_API,
)
from ._report import (
    CALL_KINDS,
    OPT_KINDS,
    DispatchFinding,
    DispatchReport,
    PythonDispatchFinding,
    PythonDispatchReport,
)
from ._targets import dispatch_target_modules

__all__ = [
    "ALLOCATION",
    "CALL_KINDS",
    "DEFAULT_ALLOWED_NAMES",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_TIMEOUT",
    "FINDING_KINDS",
    "NORETURN",
    "OPT_KINDS",
    "PYTHON_API",
    "CapstoneMissingError",
    "DispatchFinding",
    "DispatchReport",
    "PythonDispatchFinding",
    "PythonDispatchReport",
    "check_dispatch",
    "dispatch_target_modules",
    "test_dispatch",
]
