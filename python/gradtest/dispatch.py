"""Dispatch checks of C functions: the ``@jet`` of gradtest.

(Python callables are routed to :mod:`gradtest._dispatch_python`, which checks NumPy code for
type instability on tracked arrays; everything below is about C targets.)

:func:`check_dispatch` runs two checks on a compiled function, as LuxTestUtils' ``@jet`` runs
JET's ``test_call`` and ``test_opt``:

* the **call** check calls the function with the given arguments, converted to its C signature,
  in a forked child process: a crash or a time-out is a finding naming the signal instead of a
  dead test run;
* the **opt** check reads the machine code of the function and of everything it reaches by direct
  calls, tail calls and the PLT inside the target modules (by default the function's own shared
  object), and reports indirect calls and jumps (dynamic dispatch), calls into the Python C API,
  allocator calls and every other call leaving the target modules. Switch jump tables and PLT/GOT
  stubs are recognised and are no dispatch; calls on error paths ending in a noreturn function
  (abort, exit, __assert_fail, ...) are listed but do not fail the check; libm and the
  stack-protector/errno helpers are allowed by default.

The analysis runs in the C core (csrc/core/elf_reader.c, dispatch.c) with capstone, taken from the
installed ``capstone`` wheel and loaded at run time.
"""

from __future__ import annotations

import ctypes
import dataclasses
import fnmatch
import functools
import html
import importlib.util
import logging
import math
import os
import re
import struct
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import _events
from .api import _names
from .report import FAILING, STATUS_COLORS, Outcome

__all__ = [
    "DispatchFinding",
    "DispatchReport",
    "check_dispatch",
    "dispatch_target_modules",
    "test_dispatch",
]

_log = logging.getLogger("gradtest")

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


# ---------------------------------------------------------------------------------------------
# target modules (dispatch_target_modules, LuxTestUtils' jet_target_modules!)

_settings_lock = threading.Lock()
_target_modules: list[str] | None = None


def dispatch_target_modules(modules: Sequence[str], force: bool = False) -> list[str] | None:
    """Sets ``target_modules`` for all later dispatch checks that do not pass their own.

    As ``jet_target_modules!`` in LuxTestUtils: the first call wins; a later call only replaces the
    list with ``force=True`` and otherwise logs that it is already set and changes nothing.

    Parameters
    ----------
    modules : sequence of str
        Shared objects whose code is followed: paths, or names matched against the file names
        of the loaded objects (``"libopenblas"`` matches ``libopenblas.so.0``; fnmatch patterns
        work too).
    force : bool
        Replace a list that is already set.

    Returns
    -------
    list of str or None
        The list now in effect, or ``None`` when it was already set and ``force`` is false.
    """
    global _target_modules
    names = _module_names(modules, "modules")
    with _settings_lock:
        if _target_modules is not None and not force:
            _log.info(
                "dispatch target modules are already set to %s. Use `force=True` to override.", _target_modules
            )
            return None
        _target_modules = names
    _log.info("dispatch target modules set to %s", names)
    return list(names)


def _module_names(modules: Any, argument: str) -> list[str]:
    if isinstance(modules, (str, os.PathLike)):
        modules = [modules]
    try:
        names = [os.fspath(m) if isinstance(m, os.PathLike) else m for m in modules]
    except TypeError:
        raise TypeError(f"{argument}: expected a list of module names or paths, got {type(modules).__name__}") from None
    for name in names:
        if not isinstance(name, str) or not name:
            raise TypeError(f"{argument}: expected module names or paths (non-empty str), got {name!r}")
    return names


def _loaded_objects() -> list[str]:
    """Paths of the files mapped into this process (shared objects and the program)."""
    paths: list[str] = []
    seen = set()
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                parts = line.split(None, 5)
                if len(parts) == 6 and parts[5].startswith("/"):
                    path = parts[5].strip()
                    if path not in seen and not path.endswith(" (deleted)"):
                        seen.add(path)
                        paths.append(path)
    except OSError:
        pass
    return paths


def _resolve_modules(names: Sequence[str], own: str) -> list[str]:
    """The target's own object first, then each named module found among the loaded objects."""
    result = [own]
    own_real = os.path.realpath(own)
    loaded = None
    for name in names:
        if "/" in name:
            candidates = [name] if os.path.exists(name) else []
        else:
            loaded = loaded if loaded is not None else _loaded_objects()
            candidates = [
                p for p in loaded
                if (base := os.path.basename(p)) == name or base.startswith((name + ".", name + "-"))
                or fnmatch.fnmatchcase(base, name)
            ]
        if not candidates:
            raise ValueError(
                f"target_modules: {name!r} is neither an existing path nor the name of a shared object "
                "loaded in this process"
            )
        for path in candidates:
            if os.path.realpath(path) != own_real and path not in result:
                result.append(path)
    return result


# ---------------------------------------------------------------------------------------------
# the core: capstone and cached ELF objects

_core_lock = threading.Lock()
_capstone_obj: Any = None
_elf_cache: dict[tuple, Any] = {}
# per-function analysis summaries, one cache per list of target modules (file identities)
_analysis_caches: dict[tuple, Any] = {}


class CapstoneMissingError(ImportError):
    """capstone 5 (the PyPI wheel) is not installed, or its library could not be loaded."""


def _capstone_library() -> str:
    override = os.environ.get("GRADTEST_CAPSTONE")
    if override:
        return override
    spec = importlib.util.find_spec("capstone")
    if spec is None or not spec.submodule_search_locations:
        raise CapstoneMissingError(
            "the dispatch analysis needs capstone 5: pip install 'capstone>=5,<6' "
            "(or set GRADTEST_CAPSTONE to a libcapstone.so)"
        )
    for location in spec.submodule_search_locations:
        lib_dir = Path(location) / "lib"
        for name in ("libcapstone.so", "libcapstone.so.5"):
            if (lib_dir / name).exists():
                return str(lib_dir / name)
        found = sorted(lib_dir.glob("libcapstone*.so*"))
        if found:
            return str(found[0])
    raise CapstoneMissingError(f"no libcapstone shared library in the capstone package at {spec.origin}")


def _core() -> Any:
    from . import _dispatch

    return _dispatch


def _capstone() -> Any:
    global _capstone_obj
    with _core_lock:
        if _capstone_obj is None:
            path = _capstone_library()
            try:
                _capstone_obj = _core().Capstone(path)
            except OSError as exc:
                raise CapstoneMissingError(str(exc)) from exc
        return _capstone_obj


def _file_key(path: str) -> tuple:
    st = os.stat(path)
    return (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _analysis_cache(modules: list[str]) -> Any:
    """The summary cache for this list of modules; a changed file gives a fresh one, and so does a
    module that was loaded since (summaries of a static analysis know no providers)."""
    core = _core()
    key = tuple(_file_key(p) + (core.is_loaded(p),) for p in modules) + (NORETURN,)
    with _core_lock:
        cache = _analysis_caches.get(key)
        if cache is None:
            if len(_analysis_caches) > 64:
                _analysis_caches.clear()
            cache = _analysis_caches[key] = _core().Cache()
        return cache


def _elf(path: str) -> Any:
    """The parsed object at path, cached while the file is unchanged (same inode, size, mtime)."""
    key = _file_key(path)
    with _core_lock:
        elf = _elf_cache.get(key)
    if elf is None:
        elf = _core().Elf(path)
        with _core_lock:
            if len(_elf_cache) > 256:
                _elf_cache.clear()
            elf = _elf_cache.setdefault(key, elf)
    return elf


# ---------------------------------------------------------------------------------------------
# targets

@dataclasses.dataclass
class _Target:
    name: str             # symbol name, or hex address
    path: str             # the object file holding it
    vaddr: int            # its virtual address in that file
    address: int | None   # its runtime address, None for a static (not loaded) analysis
    signature: _Signature | None


# keeps libraries loaded by "lib.so:symbol" targets alive (and loaded once)
_loaded_libraries: dict[str, ctypes.CDLL] = {}
_load_lock = threading.Lock()


def _resolve_target(target: Any, signature: str | None) -> _Target:
    sig = _parse_signature(signature) if signature is not None else None
    hook = getattr(target, "__gradtest_dispatch__", None)
    if hook is not None and not isinstance(target, type):
        inner, inner_sig = hook()
        resolved = _resolve_target(inner, None)
        if sig is None and inner_sig is not None:
            sig = inner_sig if isinstance(inner_sig, _Signature) else _parse_signature(inner_sig)
        resolved.signature = sig or resolved.signature
        return resolved
    if isinstance(target, str):
        path, sep, symbol = target.rpartition(":")
        if not sep or not path or not symbol:
            raise ValueError(f"target: expected 'lib.so:symbol', got {target!r}")
        if not os.path.exists(path):
            raise FileNotFoundError(f"target: no such file {path!r}")
        # read it ourselves first: a damaged file gives a clear error here instead of a crash in
        # the dynamic loader
        elf = _elf(path)
        lib = _load_library(path, elf)
        if lib is None:
            found = elf.lookup(symbol)
            if found is None:
                raise ValueError(f"target: {path} defines no function {symbol!r}")
            return _Target(symbol, path, found[1], None, sig)
        try:
            fn = getattr(lib, symbol)
        except AttributeError:
            raise ValueError(f"target: {path} exports no function {symbol!r}") from None
        address = ctypes.cast(fn, ctypes.c_void_p).value or 0
        return _locate(address, symbol, sig)
    if isinstance(target, ctypes._CFuncPtr):  # type: ignore[attr-defined]
        address = ctypes.cast(target, ctypes.c_void_p).value or 0
        if sig is None:
            sig = _signature_from_ctypes(target)
        return _locate(address, getattr(target, "__name__", None), sig)
    if _is_cffi(target):
        return _from_cffi(target, sig)
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        return _locate(int(target), None, sig)
    raise TypeError(
        "target: expected a ctypes or cffi function pointer, an integer address, a 'lib.so:symbol' string, "
        f"a CKernel or a Python function, got {type(target).__name__}"
    )


def _is_cffi(target: Any) -> bool:
    return type(target).__module__ in ("_cffi_backend",) or type(target).__name__ in ("_CDataBase", "CData", "__CDataOwn")


def _is_python_target(target: Any) -> bool:
    """True for a Python callable that is none of the C targets (those are tried first, in the
    order of _resolve_target)."""
    if isinstance(target, type):
        return False
    if getattr(target, "__gradtest_dispatch__", None) is not None:
        return False
    if isinstance(target, (str, int, np.integer, ctypes._CFuncPtr)) or _is_cffi(target):  # type: ignore[attr-defined]
        return False
    return callable(target)


def _host_machine() -> int | None:
    import platform

    return {"x86_64": 62, "amd64": 62, "aarch64": 183, "arm64": 183}.get(platform.machine().lower())


def _load_library(path: str, elf: Any) -> ctypes.CDLL | None:
    """Loads the library for the call check and the run-time view of its calls, or returns None
    for a static analysis (another machine, or the dynamic loader refuses it). Loading is tried in
    a forked child first: the dynamic loader can crash on a damaged file."""
    with _load_lock:
        lib = _loaded_libraries.get(path)
        if lib is not None:
            return lib
        if elf.machine != _host_machine():
            return None
        loadable, message = _core().probe_load(path, 30.0)
        if not loadable:
            if message in ("SIGSEGV", "SIGBUS", "SIGILL", "SIGFPE", "SIGABRT", "timed out"):
                raise ValueError(f"target: loading {path} crashes the dynamic loader ({message}): a damaged file?")
            return None  # e.g. missing dependencies: analyse the file alone
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            return None
        _loaded_libraries[path] = lib
        return lib


def _from_cffi(target: Any, sig: _Signature | None) -> _Target:
    import cffi  # only reached for cffi objects, so cffi is installed

    ffi = cffi.FFI()
    ctype = ffi.typeof(target)
    if ctype.kind == "pointer" and ctype.item.kind == "function":
        ctype = ctype.item
    if ctype.kind != "function":
        raise TypeError(f"target: expected a cffi function, got a cffi {ctype.cname}")
    if ctype.ellipsis:
        raise TypeError("target: variadic functions are not supported by the call check")
    address = int(ffi.cast("uintptr_t", target))
    if sig is None:
        sig = _parse_signature(f"{ctype.result.cname}({', '.join(a.cname for a in ctype.args)})")
    return _locate(address, None, sig)


def _locate(address: int, name: str | None, sig: _Signature | None) -> _Target:
    if address == 0:
        raise ValueError("target: the function pointer is NULL")
    found = _core().locate(address)
    if found is None:
        raise ValueError(f"target: address {address:#x} is not in any object loaded in this process")
    path, base = found
    elf = _elf(path)
    vaddr = address - base + elf.base_vaddr
    if name is None:
        sym = elf.function_at(vaddr)
        name = sym[0] if sym else f"{address:#x}"
    return _Target(name, path, vaddr, address, sig)


# ---------------------------------------------------------------------------------------------
# signatures and argument conversion (the call check)

_INT_TYPES: dict[str, tuple[int, bool]] = {  # name -> (bytes, signed)
    "char": (1, True), "signed char": (1, True), "unsigned char": (1, False), "_Bool": (1, False),
    "bool": (1, False), "short": (2, True), "unsigned short": (2, False), "int": (4, True),
    "unsigned int": (4, False), "unsigned": (4, False), "long": (8, True), "unsigned long": (8, False),
    "long long": (8, True), "unsigned long long": (8, False), "size_t": (8, False), "ssize_t": (8, True),
    "ptrdiff_t": (8, True), "intptr_t": (8, True), "uintptr_t": (8, False), "int8_t": (1, True),
    "uint8_t": (1, False), "int16_t": (2, True), "uint16_t": (2, False), "int32_t": (4, True),
    "uint32_t": (4, False), "int64_t": (8, True), "uint64_t": (8, False),
}
_FLOAT_TYPES = {"double": 8, "float": 4}
_QUALIFIERS = {"const", "volatile", "restrict", "__restrict", "__restrict__", "struct", "signed"}
_TYPE_WORDS = {"char", "short", "int", "long", "unsigned", "double", "float", "void", "_Bool", "bool"}


@dataclasses.dataclass(frozen=True)
class _CType:
    kind: str                  # "int", "float", "pointer", "void"
    size: int = 8
    signed: bool = True
    pointee: str | None = None  # pointer: numpy dtype name of the elements, None for void*
    text: str = ""


@dataclasses.dataclass(frozen=True)
class _Signature:
    ret: _CType
    args: tuple[_CType, ...]

    def __str__(self) -> str:
        return f"{self.ret.text}({', '.join(a.text for a in self.args)})"


def _parse_ctype(text: str, where: str) -> _CType:
    tokens = re.findall(r"[A-Za-z_]\w*|\*|\[\s*\]", text)
    stars = sum(1 for t in tokens if t == "*" or t.startswith("["))
    words = [t for t in tokens if t != "*" and not t.startswith("[") and t not in _QUALIFIERS]
    # a trailing identifier that is no type word is the parameter's name
    if len(words) > 1 and words[-1] not in _TYPE_WORDS and words[-1] not in _INT_TYPES:
        words = words[:-1]
    base = " ".join(words)
    base = {"long int": "long", "long long int": "long long", "unsigned long int": "unsigned long",
            "short int": "short", "unsigned short int": "unsigned short", "long unsigned": "unsigned long",
            "unsigned long long int": "unsigned long long"}.get(base, base)
    shown = " ".join(text.split())
    if stars > 1:
        raise ValueError(f"signature: {where} has type {shown!r}: pointers to pointers are not supported")
    if stars == 1:
        if base == "void":
            return _CType("pointer", pointee=None, text=shown)
        if base in _FLOAT_TYPES:
            return _CType("pointer", pointee="float64" if base == "double" else "float32", text=shown)
        if base in _INT_TYPES:
            size, signed = _INT_TYPES[base]
            return _CType("pointer", pointee=f"{'int' if signed else 'uint'}{8 * size}", text=shown)
        raise ValueError(f"signature: {where} has unsupported type {shown!r}")
    if base == "void":
        return _CType("void", 0, text="void")
    if base in _FLOAT_TYPES:
        return _CType("float", _FLOAT_TYPES[base], text=shown)
    if base in _INT_TYPES:
        size, signed = _INT_TYPES[base]
        return _CType("int", size, signed, text=shown)
    raise ValueError(f"signature: {where} has unsupported type {shown!r} (scalars, pointers to scalars and void*)")


def _parse_signature(text: str) -> _Signature:
    if not isinstance(text, str):
        raise TypeError(f"signature: expected a string such as 'double(const double*, size_t)', got {text!r}")
    m = re.fullmatch(r"\s*(.+?)\s*(?:\b[A-Za-z_]\w*\s*)?\(\s*(.*?)\s*\)\s*", text)
    if not m:
        raise ValueError(f"signature: expected 'return_type(arg_type, ...)', got {text!r}")
    ret_text, args_text = m.group(1), m.group(2)
    ret = _parse_ctype(ret_text, "the return value")
    if args_text in ("", "void"):
        return _Signature(ret, ())
    if "..." in args_text:
        raise ValueError("signature: variadic functions are not supported by the call check")
    args = tuple(_parse_ctype(a, f"argument {i}") for i, a in enumerate(args_text.split(",")))
    if any(a.kind == "void" for a in args):
        raise ValueError(f"signature: a parameter of type void in {text!r}")
    return _Signature(ret, args)


def _ctypes_type(t: Any, where: str) -> _CType:
    if t is None:
        return _CType("void", 0, text="void")
    if t is ctypes.c_double:
        return _CType("float", 8, text="double")
    if t is ctypes.c_float:
        return _CType("float", 4, text="float")
    if t in (ctypes.c_void_p, ctypes.c_char_p):
        return _CType("pointer", pointee=None if t is ctypes.c_void_p else "int8", text=t.__name__)
    if isinstance(t, type) and issubclass(t, ctypes._Pointer):  # type: ignore[attr-defined]
        inner = _ctypes_type(t._type_, where)
        if inner.kind == "float":
            return _CType("pointer", pointee="float64" if inner.size == 8 else "float32", text=f"{inner.text}*")
        if inner.kind == "int":
            return _CType("pointer", pointee=f"{'int' if inner.signed else 'uint'}{8 * inner.size}",
                          text=f"{inner.text}*")
        raise ValueError(f"argtypes: {where} is {t.__name__}, which the call check does not support")
    if isinstance(t, type) and issubclass(t, ctypes._SimpleCData) and t._type_ in "bBhHiIlLqQ?":  # type: ignore[attr-defined]
        signed = t._type_ in "bhilq"
        return _CType("int", ctypes.sizeof(t), signed, text=t.__name__)
    raise ValueError(f"argtypes: {where} is {getattr(t, '__name__', t)!r}, which the call check does not support")


def _signature_from_ctypes(fn: Any) -> _Signature | None:
    argtypes = getattr(fn, "argtypes", None)
    if argtypes is None:
        return None
    restype = getattr(fn, "restype", ctypes.c_int)
    return _Signature(
        _ctypes_type(restype, "the return type"),
        tuple(_ctypes_type(t, f"argument {i}") for i, t in enumerate(argtypes)),
    )


def _convert_args(sig: _Signature, args: tuple) -> tuple[list[int], list[int]]:
    """Classes and bit patterns of the arguments; raises on any mismatch before anything runs."""
    if len(args) != len(sig.args):
        raise TypeError(f"args: the signature {sig} takes {len(sig.args)} argument(s), got {len(args)}")
    classes, bits = [], []
    for i, (ct, value) in enumerate(zip(sig.args, args)):
        where = f"args[{i}] ({ct.text})"
        if ct.kind == "pointer":
            if value is None:
                raise ValueError(f"{where}: None would pass a NULL pointer; pass an array")
            if not isinstance(value, np.ndarray):
                raise TypeError(f"{where}: expected a numpy array, got {type(value).__name__}")
            if ct.pointee is not None and value.dtype != np.dtype(ct.pointee):
                raise TypeError(f"{where}: expected an array of dtype {ct.pointee}, got {value.dtype}")
            if not value.flags.c_contiguous:
                raise ValueError(f"{where}: the array is not C-contiguous; pass np.ascontiguousarray(...)")
            if value.size == 0:
                raise ValueError(f"{where}: the array is empty (its data pointer may be NULL or dangling)")
            classes.append(0)
            bits.append(value.ctypes.data)
        elif ct.kind == "int":
            if isinstance(value, (bool, np.bool_)) and ct.text not in ("_Bool", "bool", "c_bool"):
                raise TypeError(f"{where}: expected an integer, got a bool")
            if not isinstance(value, (int, np.integer)):
                raise TypeError(f"{where}: expected an integer, got {type(value).__name__}")
            v = int(value)
            lo, hi = (-(1 << (8 * ct.size - 1)), (1 << (8 * ct.size - 1)) - 1) if ct.signed else (0, (1 << (8 * ct.size)) - 1)
            if not lo <= v <= hi:
                raise OverflowError(f"{where}: {v} does not fit ({lo}..{hi})")
            classes.append(0)
            bits.append(v & 0xFFFFFFFFFFFFFFFF)
        else:  # float
            if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{where}: expected a real number, got {type(value).__name__}")
            if ct.size == 8:
                classes.append(1)
                bits.append(struct.unpack("<Q", struct.pack("<d", float(value)))[0])
            else:
                classes.append(2)
                bits.append(struct.unpack("<I", struct.pack("<f", float(value)))[0])
    n_int = sum(1 for c in classes if c == 0)
    n_fp = len(classes) - n_int
    core = _core()
    if n_int > core.MAX_INT_ARGS or n_fp > core.MAX_FP_ARGS:
        raise ValueError(
            f"args: the call check passes arguments in registers only: at most {core.MAX_INT_ARGS} integer/"
            f"pointer and {core.MAX_FP_ARGS} floating-point ones; {sig} has {n_int} and {n_fp}"
        )
    return classes, bits


def _buffer_specs(sig: _Signature, args: tuple) -> list[tuple[int, str, bool] | None]:
    """Per argument of the call check, ``(nbytes, name, is_const)`` for an array passed to a
    pointer (the call gets a copy fenced by guard pages), else None. The name is the parameter's
    own when the signature gives one (``double *grad``), else ``args[i]``."""
    specs: list[tuple[int, str, bool] | None] = []
    for i, (ct, value) in enumerate(zip(sig.args, args)):
        if ct.kind != "pointer":
            specs.append(None)
            continue
        words = re.findall(r"[A-Za-z_]\w*", ct.text)
        named = len(words) > 1 and words[-1] not in _TYPE_WORDS and words[-1] not in _INT_TYPES \
            and words[-1] not in _QUALIFIERS
        specs.append((int(value.nbytes), words[-1] if named else f"args[{i}]", "const" in words))
    return specs


def _convert_result(ret: _CType, raw: int) -> Any:
    if ret.kind == "void":
        return None
    if ret.kind == "float":
        if ret.size == 8:
            return struct.unpack("<d", struct.pack("<Q", raw))[0]
        return struct.unpack("<f", struct.pack("<I", raw & 0xFFFFFFFF))[0]
    if ret.kind == "pointer":
        return raw
    v = raw & ((1 << (8 * ret.size)) - 1)
    if ret.signed and v >> (8 * ret.size - 1):
        v -= 1 << (8 * ret.size)
    return v


# ---------------------------------------------------------------------------------------------
# findings and report

@dataclasses.dataclass
class DispatchFinding:
    """One thing the dispatch checks found.

    Attributes
    ----------
    kind : str
        ``indirect_call`` (a call or jump through a pointer: dynamic dispatch), ``python_api``,
        ``allocation``, ``external_call``, ``unresolved`` (control flow the analysis could not
        follow) or ``crash`` (the call check).
    symbol : str
        Where: ``function+0xoffset`` in the object holding the instruction.
    address : int
        The instruction's virtual address in that object's file (0 for ``crash``).
    chain : tuple of str
        The functions from the target down to the one holding the instruction.
    library : str or None
        The library that provides the callee at run time (external calls), else ``None``.
    module : str
        The object file holding the instruction.
    callee : str or None
        The called function's name, for calls by name.
    instruction : str
        The instruction, e.g. ``call qword ptr [rax + 8]``, or the crash's description.
    fails : bool
        Whether it fails its half of the check (with ``call_broken``/``opt_broken`` the half is
        then reported as ``broken``, the expected failure).
    reason : str
        Why it fails or not (e.g. ``allowed by default (libm)``, ``on an error path``).
    error_path : bool
        On a path that ends in a noreturn call.
    source : str or None
        ``file:line`` of the instruction when the object carries DWARF line information
        (built with ``-g``), else ``None``.
    """

    kind: str
    symbol: str
    address: int
    chain: tuple[str, ...]
    library: str | None
    module: str
    callee: str | None
    instruction: str
    fails: bool
    reason: str
    error_path: bool = False
    source: str | None = None

    @property
    def what(self) -> str:
        """A short description: the callee (with its library) or the instruction."""
        if self.kind == "crash":
            return self.instruction
        if self.callee:
            lib = f" ({os.path.basename(self.library)})" if self.library else ""
            return f"{self.callee}{lib}"
        return self.instruction

    def as_dict(self) -> dict[str, Any]:
        """The finding as JSON-friendly data."""
        d = dataclasses.asdict(self)
        d["chain"] = list(self.chain)
        return d


@dataclasses.dataclass
class DispatchReport:
    """The result of :func:`check_dispatch`.

    Attributes
    ----------
    target : str
        The checked function's name.
    library : str
        The object file holding it.
    outcomes : dict
        ``{"call": Outcome, "opt": Outcome}`` (:class:`gradtest.Outcome`; ``.status`` is one of
        pass/fail/broken/unexpected_pass/skipped/error, ``.message`` says why).
    findings : list of DispatchFinding
        Everything found, failing or not, in the order found (breadth first from the target).
    modules : list of str
        The target modules whose code was followed.
    functions : list of str
        The functions analysed (each once).
    instructions, jump_tables, plt_calls : int
        Decoded instructions, switch jump tables recognised, calls resolved through PLT/GOT.
    seconds : float
        Time of the analysis.
    result : object
        The call's return value when it returned, else ``None``.
    notes : list of str
        Remarks (e.g. the analysis was static because the library could not be loaded).
    """

    target: str
    library: str
    outcomes: dict[str, Outcome]
    findings: list[DispatchFinding] = dataclasses.field(default_factory=list)
    modules: list[str] = dataclasses.field(default_factory=list)
    functions: list[str] = dataclasses.field(default_factory=list)
    instructions: int = 0
    jump_tables: int = 0
    plt_calls: int = 0
    seconds: float = 0.0
    result: Any = None
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when neither half failed, errored or passed unexpectedly."""
        return not any(o.status in FAILING for o in self.outcomes.values())

    @property
    def failures(self) -> list[DispatchFinding]:
        """The findings that fail the check."""
        return [f for f in self.findings if f.fails]

    def _header(self) -> str:
        return (
            f"gradtest dispatch: {self.target} in {os.path.basename(self.library)} — {len(self.functions)} "
            f"function(s), {self.instructions} instructions, {self.jump_tables} jump table(s), "
            f"{self.plt_calls} PLT/GOT call(s), {self.seconds * 1e3:.1f} ms"
        )

    # the findings table: five fixed columns, then one that differs between C and Python targets
    _LAST_COLUMN = "chain"

    def _finding_rows(self) -> list[list[str]]:
        return [
            ["FAIL" if f.fails else "ok", f.kind, f.what,
             f.symbol + (f" ({os.path.basename(f.source.rsplit(':', 1)[0])}:{f.source.rsplit(':', 1)[1]})"
                         if f.source else ""),
             f.reason, " -> ".join(f.chain)]
            for f in self.findings
        ]

    def _last_cell_html(self, text: str) -> str:
        return html.escape(text)

    def __str__(self) -> str:
        lines = [self._header()]
        for name, o in self.outcomes.items():
            lines.append(f"  {name:<5} {o.status:<15} {o.message}".rstrip())
        rows = self._finding_rows()
        if rows:
            lines.append("  findings:")
            widths = [max(len(r[i]) for r in rows) for i in range(5)]
            for r in rows:
                cells = "  ".join(c.ljust(w) for c, w in zip(r[:5], widths))
                lines.append(f"    {cells}  {self._LAST_COLUMN}: {r[5]}".rstrip())
        lines += [f"  note: {n}" for n in self.notes]
        lines.append("  result: " + ("PASSED" if self.passed else "FAILED"))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        outs = "".join(
            f"<tr><td>{html.escape(n)}</td><td style='color:{STATUS_COLORS.get(o.status, '#000')};font-weight:bold'>"
            f"{html.escape(o.status)}</td><td>{html.escape(o.message)}</td></tr>"
            for n, o in self.outcomes.items()
        )
        head = "".join(f"<th>{c}</th>" for c in ("", "kind", "what", "where", "why", self._LAST_COLUMN))
        body = "".join(
            "<tr>" + "".join(
                f"<td style='color:{'#cf222e' if i == 0 and r[0] == 'FAIL' else '#000'}'>"
                + (self._last_cell_html(c) if i == 5 else html.escape(c)) + "</td>"
                for i, c in enumerate(r)
            ) + "</tr>"
            for r in self._finding_rows()
        )
        table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>" if body else ""
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        verdict = "PASSED" if self.passed else "FAILED"
        return (
            f"<div><p>{html.escape(self._header())}</p><table><tbody>{outs}</tbody></table>{table}"
            f"<ul>{notes}</ul><p><b>{verdict}</b></p></div>"
        )

    def __repr__(self) -> str:
        statuses = ", ".join(f"{k}={o.status}" for k, o in self.outcomes.items())
        return f"<{type(self).__name__} {self.target}: {statuses}, {len(self.failures)} failing finding(s)>"

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-friendly data."""
        return {
            "target": self.target,
            "library": self.library,
            "passed": self.passed,
            "outcomes": {k: {"status": o.status, "message": o.message} for k, o in self.outcomes.items()},
            "findings": [f.as_dict() for f in self.findings],
            "modules": list(self.modules),
            "functions": list(self.functions),
            "instructions": self.instructions,
            "jump_tables": self.jump_tables,
            "plt_calls": self.plt_calls,
            "seconds": self.seconds,
            "notes": list(self.notes),
        }


@functools.lru_cache(maxsize=64)
def _compiled(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    # one regex per pattern list, with a group per pattern to tell which one matched
    if not patterns:
        return None
    return re.compile("|".join(f"(?P<p{i}>{fnmatch.translate(p)})" for i, p in enumerate(patterns)))


def _matches(name: str | None, patterns: tuple[str, ...]) -> str | None:
    """The first of `patterns` (fnmatch, case-sensitive) that matches `name`, or None."""
    if not name:
        return None
    rx = _compiled(patterns)
    m = rx.match(name) if rx is not None else None
    if m is None:
        return None
    return next(p for i, p in enumerate(patterns) if m.group(f"p{i}") is not None)


def _is_libm(provider: str | None, name: str) -> bool:
    if provider:
        base = os.path.basename(provider)
        return base.startswith(("libm.", "libm-", "libmvec."))
    return name in _LIBM_NAMES


def _classify(raw: dict, target: _Target, modules: list[str], elfs: list[Any], allow: tuple[str, ...]) -> list[DispatchFinding]:
    functions = raw["functions"]

    def chain_of(fi: int) -> tuple[str, ...]:
        names = []
        while fi >= 0:
            names.append(functions[fi][2])
            fi = functions[fi][3]
        return tuple(reversed(names))

    findings = []
    for kind_raw, mod, address, fi, tail, error_path, callee, provider, text in raw["events"]:
        sym = elfs[mod].symbolize(address)
        where = f"{sym[0]}+{sym[1]:#x}" if sym else f"{address:#x}"
        pos = elfs[mod].line(address)
        source = None
        if pos is not None:
            directory, file, line = pos
            path = file if os.path.isabs(file) or not directory else os.path.join(directory, file)
            source = f"{path}:{line}"
        func_name = functions[fi][2]
        if kind_raw == "external_call":
            if _matches(callee, PYTHON_API):
                kind = "python_api"
            elif _matches(callee, ALLOCATION):
                kind = "allocation"
            else:
                kind = "external_call"
        elif kind_raw in ("indirect_call", "indirect_jump"):
            kind = "indirect_call"
            text = text + (" (indirect jump)" if kind_raw == "indirect_jump" else "")
        else:
            kind = "unresolved"
        allowed_by = _matches(callee, allow) or _matches(func_name, allow) or _matches(kind, allow)
        if error_path:
            fails, reason = False, "on an error path ending in a noreturn call"
        elif allowed_by:
            fails, reason = False, f"allowed by allow={allowed_by!r}"
        elif kind == "external_call" and callee and _is_libm(provider, callee):
            fails, reason = False, "allowed by default (libm)"
        elif kind == "external_call" and callee in DEFAULT_ALLOWED_NAMES:
            fails, reason = False, "allowed by default (stack protector / errno)"
        else:
            fails = True
            reason = {
                "indirect_call": "dynamic dispatch",
                "python_api": "calls into the Python interpreter",
                "allocation": "allocates",
                "external_call": "calls out of the target modules",
                "unresolved": "control flow the analysis could not follow",
            }[kind]
            if tail and kind != "indirect_call":
                reason += " (tail call)"
        findings.append(DispatchFinding(
            kind=kind, symbol=where, address=address, chain=chain_of(fi), library=provider, module=modules[mod],
            callee=callee, instruction=text, fails=fails, reason=reason, error_path=bool(error_path),
            source=source,
        ))
    return findings


def _status(failed: bool, broken: bool) -> str:
    if broken:
        return "broken" if failed else "unexpected_pass"
    return "fail" if failed else "pass"


def check_dispatch(
    target: Any,
    *args: Any,
    target_modules: Sequence[str] | None = None,
    allow: Iterable[str] = (),
    call_broken: bool = False,
    opt_broken: bool = False,
    max_depth: int = DEFAULT_MAX_DEPTH,
    signature: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    **unexpected: Any,
) -> DispatchReport:
    """Checks a compiled C function for crashes (call) and for dispatch, allocation and calls out
    of its library (opt), as LuxTestUtils' ``@jet`` does for Julia functions.

    Parameters
    ----------
    target : ctypes or cffi function pointer, int, str, CKernel or Python callable
        The function: a ctypes function (its ``argtypes``/``restype`` give the signature), a cffi
        function, a runtime address, ``"path/lib.so:symbol"`` or an object with a
        ``__gradtest_dispatch__()`` method returning ``(target, signature)`` (gradtest's CKernel).
        Any other callable is a NumPy function: it runs on reverse-mode tracked arrays and the
        check reports type instability instead (see :mod:`gradtest._dispatch_python`; only
        ``allow``, ``call_broken`` and ``opt_broken`` apply, and the report is a
        ``PythonDispatchReport``).
    *args
        Arguments of the call check, converted to the C signature (numpy arrays for pointers,
        C-contiguous and of the pointee's dtype; Python numbers for scalars). Without arguments
        the call check is skipped. For a Python function: its positional arguments, whose
        floating-point arrays (inside any tree) are tracked.
    target_modules : list of str, optional
        Objects whose code is followed besides the target's own (paths or names of loaded shared
        objects). Default: the list set by :func:`dispatch_target_modules`, else only the target's
        own object.
    allow : iterable of str
        fnmatch patterns that silence findings: matched against the callee's name, the name of
        the function holding the finding and the finding's kind (``"indirect_call"``).
    call_broken, opt_broken : bool
        Mark that half as broken: it is expected to fail; passing unexpectedly fails the check.
    max_depth : int
        Call depth below the target that the opt check follows; deeper calls become
        ``unresolved`` findings.
    signature : str, optional
        The C signature, e.g. ``"double(const double*, size_t)"``, when the target does not carry
        one (an address, a ``"lib.so:symbol"`` string, a ctypes function without ``argtypes``).
    timeout : float
        Time limit of the guarded call in seconds.

    Returns
    -------
    DispatchReport
        ``report.passed``, ``report.outcomes["call"]``/``["opt"]``, ``report.findings``.
    """
    _refuse_unexpected(unexpected)
    allow_t = tuple(_names(allow, "allow", "symbol patterns"))
    if _is_python_target(target):
        return _check_python(target, args, target_modules=target_modules, allow=allow_t,
                             call_broken=call_broken, opt_broken=opt_broken, max_depth=max_depth,
                             signature=signature, timeout=timeout)
    if isinstance(max_depth, bool) or not isinstance(max_depth, (int, np.integer)) or max_depth < 0:
        raise ValueError(f"max_depth: expected a non-negative integer, got {max_depth!r}")
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout > 0 or math.isinf(timeout):
        raise ValueError(f"timeout: expected a positive finite number of seconds, got {timeout!r}")
    names = _module_names(target_modules, "target_modules") if target_modules is not None else None
    if names is None:
        with _settings_lock:
            names = list(_target_modules) if _target_modules is not None else []
    tgt = _resolve_target(target, signature)
    modules = _resolve_modules(names, tgt.path)
    # validate the call before any work so that bad arguments raise instead of being reported
    call_plan = None
    if args:
        if tgt.signature is None:
            raise TypeError(
                "signature: the target carries no C signature; pass signature='double(const double*, size_t)' "
                "or a ctypes function with argtypes"
            )
        if tgt.address is None:
            raise ValueError(f"args: {tgt.path} could not be loaded in this process, so it cannot be called")
        call_plan = _convert_args(tgt.signature, args)

    report = DispatchReport(target=tgt.name, library=tgt.path, outcomes={}, modules=modules)
    if tgt.address is None:
        report.notes.append("the library could not be loaded here: static analysis, providers of external calls unknown")

    # the call check
    if call_plan is None:
        report.outcomes["call"] = Outcome("call", "skipped", message="no arguments given: the call was not run")
    else:
        classes, bits = call_plan
        ret = tgt.signature.ret  # type: ignore[union-attr]
        ret_class = {"void": 3, "float": 1 if ret.size == 8 else 2}.get(ret.kind, 0)
        t0 = time.perf_counter()
        buffers = _buffer_specs(tgt.signature, args)  # type: ignore[arg-type]
        out = _core().call(tgt.address, classes, bits, ret_class, float(timeout), buffers)
        seconds = time.perf_counter() - t0
        if out["how"] == "returned":
            report.result = _convert_result(ret, out["ret_bits"])
            msg = f"returned {report.result!r}" if ret.kind != "void" else "returned"
            report.outcomes["call"] = Outcome("call", _status(False, call_broken), message=msg, seconds=seconds)
        else:
            if out["how"] == "timeout":
                desc = f"timed out after {timeout:g} s (killed with SIGKILL)"
            elif out["how"] == "overrun":
                name = out["overrun"].rsplit(" ", 1)[-1]
                size = next((a.size for a, b in zip(args, buffers) if b and b[1] == name), 0)
                desc = f"failed: {tgt.name} {out['overrun']} ({size} elements)"
            elif out["how"] == "signal":
                desc = f"crashed with {out['signal_name']}"
            else:
                desc = f"left the process with exit code {out['exit_code']} instead of returning"
            report.findings.append(DispatchFinding(
                kind="crash", symbol=tgt.name, address=0, chain=(tgt.name,), library=None, module=tgt.path,
                callee=None, instruction=desc, fails=True, reason=f"the call {desc}",
            ))
            report.outcomes["call"] = Outcome("call", _status(True, call_broken), message=f"the call {desc}",
                                              seconds=seconds)

    # the opt check
    t0 = time.perf_counter()
    try:
        elfs = [_elf(p) for p in modules]
        raw = _core().analyse(_capstone(), list(zip(modules, elfs)), 0, tgt.vaddr, int(max_depth), list(NORETURN),
                              _analysis_cache(modules))
    except (OSError, ValueError, ImportError) as exc:
        report.seconds = time.perf_counter() - t0
        status = "broken" if opt_broken else "error"
        report.outcomes["opt"] = Outcome("opt", status, exception=exc, message=f"analysis failed: {exc}",
                                         seconds=report.seconds)
    else:
        report.seconds = time.perf_counter() - t0
        report.functions = [f[2] for f in raw["functions"]]
        report.instructions = raw["instructions"]
        report.jump_tables = raw["jump_tables"]
        report.plt_calls = raw["plt_calls"]
        opt_findings = _classify(raw, tgt, modules, elfs, allow_t)
        report.findings.extend(opt_findings)
        failing = [f for f in opt_findings if f.fails]
        if failing:
            kinds = sorted({f.kind for f in failing})
            msg = f"{len(failing)} finding(s) fail the check: {', '.join(kinds)}"
        else:
            msg = f"no dispatch, allocation or unexpected external call in {len(report.functions)} function(s)"
            listed = len(opt_findings)
            if listed:
                msg += f" ({listed} allowed finding(s) listed)"
        report.outcomes["opt"] = Outcome("opt", _status(bool(failing), opt_broken), message=msg,
                                         seconds=report.seconds)
        if raw["depth_limited"]:
            report.notes.append(f"calls deeper than max_depth={max_depth} were not followed")
    return report


def _check_python(f: Any, args: tuple, *, target_modules: Any, allow: tuple[str, ...], call_broken: bool,
                  opt_broken: bool, max_depth: Any, signature: Any, timeout: Any) -> DispatchReport:
    """Routes a Python callable to the type-stability check in gradtest._dispatch_python,
    refusing the options that only mean something for machine code."""
    for name, value, default in (("target_modules", target_modules, None), ("signature", signature, None),
                                 ("max_depth", max_depth, DEFAULT_MAX_DEPTH), ("timeout", timeout, DEFAULT_TIMEOUT)):
        if value is not default and value != default:
            raise TypeError(f"{name}: only applies to C targets; {_callable_name(f)} is a Python function")
    from ._dispatch_python import check_dispatch_python

    return check_dispatch_python(f, tuple(args), allow, bool(call_broken), bool(opt_broken))


def _callable_name(f: Any) -> str:
    return getattr(f, "__qualname__", None) or getattr(f, "__name__", None) or type(f).__name__


def _refuse_unexpected(unexpected: dict[str, Any]) -> None:
    """A TypeError for keyword arguments check_dispatch does not take; ``broken=`` (the gradient
    checks' word) gets the seed's hint."""
    if not unexpected:
        return
    if "broken" in unexpected:
        raise TypeError("check_dispatch() got an unexpected keyword argument 'broken': the two halves are "
                        "marked separately, use call_broken or opt_broken (as LuxTestUtils' @jet)")
    raise TypeError(f"check_dispatch() got unexpected keyword argument(s) {', '.join(map(repr, unexpected))}")


def test_dispatch(target: Any, *args: Any, **kwargs: Any) -> DispatchReport:
    """Like :func:`check_dispatch`, and raises ``AssertionError`` with the report when a half
    fails, errors or passes unexpectedly (broken halves that fail are fine).

    Returns
    -------
    DispatchReport
        The report, when the check passed.
    """
    __tracebackhide__ = True  # pytest: point at the caller's line, not at gradtest's
    report = check_dispatch(target, *args, **kwargs)
    error = None if report.passed else AssertionError("\n" + str(report))
    # only the test_ form reports to the pytest plugin: its result decides the test
    _events.emit(report, error)
    if error is not None:
        raise error
    return report


test_dispatch.__test__ = False  # type: ignore[attr-defined]
