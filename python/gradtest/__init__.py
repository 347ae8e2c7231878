"""gradtest: tells authors of numerical code whether their derivatives are right.

Every enabled differentiation backend is checked against a float64 finite-difference ground truth
computed by the C core, over nested arguments, with LuxTestUtils' semantics for skipped, broken
and soft-failing backends.
"""

from ._tree import Constant
from .api import CheckSettings, NoBackendWarning, check_gradients, gradient, test_gradients
from .dispatch import DispatchFinding, DispatchReport, check_dispatch, dispatch_target_modules, test_dispatch
from .backends import Backend, available_backends, get_backend, register_backend, unregister_backend
from .ckernel import CKernel, get_include
from .report import GradientReport, Outcome, WorstElement
from ._softfail import SoftFailWarning, softfail
from .backends import _register_builtin

_register_builtin()
del _register_builtin

from .reverse import Tracked, vjp  # noqa: E402  (registers the "reverse" backend)
from .forward import Dual, jvp  # noqa: E402  (registers the "forward" backend)

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "CKernel",
    "CheckSettings",
    "DispatchFinding",
    "DispatchReport",
    "Constant",
    "Dual",
    "GradientReport",
    "NoBackendWarning",
    "Outcome",
    "SoftFailWarning",
    "WorstElement",
    "available_backends",
    "check_dispatch",
    "check_gradients",
    "dispatch_target_modules",
    "get_backend",
    "get_include",
    "gradient",
    "jvp",
    "register_backend",
    "softfail",
    "test_dispatch",
    "test_gradients",
    "Tracked",
    "vjp",
    "unregister_backend",
]
