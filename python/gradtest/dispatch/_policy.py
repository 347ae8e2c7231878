"""The dispatch checks' naming policy: which callees are allocation, the Python C API, noreturn
or allowed by default, the checks' defaults, and how ``allow=`` patterns match.

A leaf: it imports nothing from gradtest, so both checks and the core access can use it.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re

#: default call depth below the target that the opt check follows
DEFAULT_MAX_DEPTH = 32
#: default time limit of the guarded call, in seconds
DEFAULT_TIMEOUT = 10.0

#: external functions that never return: calls on straight-line paths into them are error paths
NORETURN = (
    "abort", "exit", "_exit", "_Exit", "quick_exit", "__assert_fail", "__assert_perror_fail", "__assert",
    "__stack_chk_fail", "__stack_chk_fail_local", "__fortify_fail", "__chk_fail", "longjmp", "siglongjmp",
    "_longjmp", "__longjmp_chk", "pthread_exit", "__cxa_throw", "__cxa_rethrow", "__cxa_bad_cast",
    "__cxa_bad_typeid", "__cxa_throw_bad_array_new_length", "_Unwind_Resume", "_ZSt9terminatev",
    "_ZSt*__throw_*", "err", "errx", "verr", "verrx", "Py_FatalError", "_Py_FatalErrorFunc",
    "_Py_FatalErrorFormat", "__ubsan_handle_*_abort",
)

#: allocator entry points (C, POSIX, glibc and the Itanium C++ ABI's operator new/delete)
ALLOCATION = (
    "malloc", "calloc", "realloc", "reallocarray", "free", "aligned_alloc", "posix_memalign", "memalign",
    "valloc", "pvalloc", "strdup", "strndup", "__libc_malloc", "__libc_calloc", "__libc_realloc",
    "__libc_free", "_Znwm", "_Znam", "_ZnwmRKSt9nothrow_t", "_ZnamRKSt9nothrow_t", "_ZnwmSt11align_val_t*",
    "_ZnamSt11align_val_t*", "_ZdlPv*", "_ZdaPv*",
)

#: the Python C API
PYTHON_API = ("Py*", "_Py*")

#: helpers that are allowed by default: stack protector and errno
DEFAULT_ALLOWED_NAMES = ("__stack_chk_fail", "__stack_chk_fail_local", "__errno_location", "__errno")

# libm's functions by name, for when the provider cannot be asked (static analysis)
_LIBM_BASE = (
    "exp", "expm1", "exp2", "exp10", "log", "log1p", "log2", "log10", "logb", "pow", "sqrt", "cbrt", "hypot",
    "sin", "cos", "tan", "sincos", "asin", "acos", "atan", "atan2", "sinh", "cosh", "tanh", "asinh", "acosh",
    "atanh", "erf", "erfc", "lgamma", "tgamma", "fmod", "remainder", "remquo", "floor", "ceil", "round",
    "trunc", "rint", "nearbyint", "lround", "llround", "lrint", "llrint", "fabs", "copysign", "fmin", "fmax",
    "fdim", "fma", "frexp", "ldexp", "modf", "scalbn", "scalbln", "nextafter", "nexttoward", "ilogb",
)
_LIBM_NAMES = frozenset(
    [n for b in _LIBM_BASE for n in (b, b + "f", b + "l", f"__{b}_finite", f"__{b}f_finite")]
)

FINDING_KINDS = ("indirect_call", "python_api", "allocation", "external_call", "unresolved", "crash")


@functools.lru_cache(maxsize=64)
def _compiled(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    # one regex per pattern list, with a group per pattern to tell which one matched
    if not patterns:
        return None
    return re.compile("|".join(f"(?P<p{i}>{fnmatch.translate(p)})" for i, p in enumerate(patterns)))


def matches(name: str | None, patterns: tuple[str, ...]) -> str | None:
    """The first of `patterns` (fnmatch, case-sensitive) that matches `name`, or None."""
    if not name:
        return None
    rx = _compiled(patterns)
    m = rx.match(name) if rx is not None else None
    if m is None:
        return None
    return next(p for i, p in enumerate(patterns) if m.group(f"p{i}") is not None)


def is_libm(provider: str | None, name: str) -> bool:
    if provider:
        base = os.path.basename(provider)
        return base.startswith(("libm.", "libm-", "libmvec."))
    return name in _LIBM_NAMES
