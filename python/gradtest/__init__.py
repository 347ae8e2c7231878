"""gradtest: tells authors of numerical code whether their derivatives are right.

Every enabled differentiation backend is checked against a float64 finite-difference ground truth
computed by the C core, over nested arguments, with LuxTestUtils' semantics for skipped, broken
and soft-failing backends.

The public names are loaded on first use (PEP 562), so that importing gradtest, as pytest does
for its plugin in every test run, does not import NumPy or the C extensions.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the submodule that defines it
_EXPORTS: dict[str, str] = {
    "SoftFailWarning": "_softfail",
    "softfail": "_softfail",
    "Constant": "_tree",
    "check_approx": "approx",
    "GroundTruthError": "_finite_diff",
    "CheckSettings": "api",
    "NoBackendWarning": "api",
    "check_gradients": "api",
    "gradient": "api",
    "test_gradients": "api",
    "Backend": "backends",
    "available_backends": "backends",
    "get_backend": "backends",
    "register_backend": "backends",
    "unregister_backend": "backends",
    "CKernel": "ckernel",
    "get_include": "ckernel",
    "CudaKernel": "cuda",
    "PythonDispatchFinding": "dispatch",
    "PythonDispatchReport": "dispatch",
    "DispatchFinding": "dispatch",
    "DispatchReport": "dispatch",
    "check_dispatch": "dispatch",
    "dispatch_target_modules": "dispatch",
    "test_dispatch": "dispatch",
    "Dual": "forward",
    "jvp": "forward",
    "GradientReport": "report",
    "Outcome": "report",
    "WorstElement": "report",
    "Tracked": "reverse",
    "vjp": "reverse",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from ._softfail import SoftFailWarning, softfail
    from ._finite_diff import GroundTruthError
    from ._tree import Constant
    from .approx import check_approx
    from .api import CheckSettings, NoBackendWarning, check_gradients, gradient, test_gradients
    from .backends import Backend, available_backends, get_backend, register_backend, unregister_backend
    from .ckernel import CKernel, get_include
    from .cuda import CudaKernel
    from .dispatch import (
        DispatchFinding,
        DispatchReport,
        PythonDispatchFinding,
        PythonDispatchReport,
        check_dispatch,
        dispatch_target_modules,
        test_dispatch,
    )
    from .forward import Dual, jvp
    from .report import GradientReport, Outcome, WorstElement
    from .reverse import Tracked, vjp


def __getattr__(name: str) -> Any:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'gradtest' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"gradtest.{module}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
