"""gradtest: tells authors of numerical code whether their derivatives are right.

Every enabled differentiation backend is checked against a float64 finite-difference ground truth
computed by the C core, over nested arguments, with LuxTestUtils' semantics for skipped, broken
and soft-failing backends.
"""

from ._tree import Constant
from .api import CheckSettings, NoBackendWarning, check_gradients, gradient, test_gradients
from .backends import Backend, available_backends, get_backend, register_backend, unregister_backend
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
    "CheckSettings",
    "Constant",
    "Dual",
    "GradientReport",
    "NoBackendWarning",
    "Outcome",
    "SoftFailWarning",
    "WorstElement",
    "available_backends",
    "check_gradients",
    "get_backend",
    "gradient",
    "jvp",
    "register_backend",
    "softfail",
    "test_gradients",
    "Tracked",
    "vjp",
    "unregister_backend",
]
