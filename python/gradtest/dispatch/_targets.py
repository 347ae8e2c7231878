"""What the dispatch checks look at: the target modules (``dispatch_target_modules``, LuxTestUtils'
``jet_target_modules!``) and the resolution of a target (a ctypes or cffi function, an address,
``"lib.so:symbol"``, a CKernel) to a function in an object file, loaded when it can be.
"""

from __future__ import annotations

import ctypes
import dataclasses
import fnmatch
import logging
import os
import platform
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import _dispatch
from . import _core
from ._signature import Signature, parse_signature, signature_from_ctypes

_log = logging.getLogger("gradtest")

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
    names = module_names(modules, "modules")
    with _settings_lock:
        if _target_modules is not None and not force:
            _log.info(
                "dispatch target modules are already set to %s. Use `force=True` to override.", _target_modules
            )
            return None
        _target_modules = names
    _log.info("dispatch target modules set to %s", names)
    return list(names)


def module_names(modules: Any, argument: str) -> list[str]:
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


def resolve_modules(names: Sequence[str], own: str) -> list[str]:
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


def configured_target_modules() -> list[str]:
    """The list set by :func:`dispatch_target_modules`, or an empty one."""
    with _settings_lock:
        return list(_target_modules) if _target_modules is not None else []


# ---------------------------------------------------------------------------------------------
# targets

@dataclasses.dataclass
class Target:
    name: str             # symbol name, or hex address
    path: str             # the object file holding it
    vaddr: int            # its virtual address in that file
    address: int | None   # its runtime address, None for a static (not loaded) analysis
    signature: Signature | None


# keeps libraries loaded by "lib.so:symbol" targets alive (and loaded once)
_loaded_libraries: dict[str, ctypes.CDLL] = {}
_load_lock = threading.Lock()


def resolve_target(target: Any, signature: str | None) -> Target:
    sig = parse_signature(signature) if signature is not None else None
    hook = getattr(target, "__gradtest_dispatch__", None)
    if hook is not None and not isinstance(target, type):
        inner, inner_sig = hook()
        resolved = resolve_target(inner, None)
        if sig is None and inner_sig is not None:
            sig = inner_sig if isinstance(inner_sig, Signature) else parse_signature(inner_sig)
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
        elf = _core.elf(path)
        lib = _load_library(path, elf)
        if lib is None:
            found = elf.lookup(symbol)
            if found is None:
                raise ValueError(f"target: {path} defines no function {symbol!r}")
            return Target(symbol, path, found[1], None, sig)
        try:
            fn = getattr(lib, symbol)
        except AttributeError:
            raise ValueError(f"target: {path} exports no function {symbol!r}") from None
        address = ctypes.cast(fn, ctypes.c_void_p).value or 0
        return _locate(address, symbol, sig)
    if isinstance(target, ctypes._CFuncPtr):  # type: ignore[attr-defined]
        address = ctypes.cast(target, ctypes.c_void_p).value or 0
        if sig is None:
            sig = signature_from_ctypes(target)
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


def is_python_target(target: Any) -> bool:
    """True for a Python callable that is none of the C targets (those are tried first, in the
    order of resolve_target)."""
    if isinstance(target, type):
        return False
    if getattr(target, "__gradtest_dispatch__", None) is not None:
        return False
    if isinstance(target, (str, int, np.integer, ctypes._CFuncPtr)) or _is_cffi(target):  # type: ignore[attr-defined]
        return False
    return callable(target)


def _host_machine() -> int | None:
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
        loadable, message = _dispatch.probe_load(path, 30.0)
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


def _from_cffi(target: Any, sig: Signature | None) -> Target:
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
        sig = parse_signature(f"{ctype.result.cname}({', '.join(a.cname for a in ctype.args)})")
    return _locate(address, None, sig)


def _locate(address: int, name: str | None, sig: Signature | None) -> Target:
    if address == 0:
        raise ValueError("target: the function pointer is NULL")
    found = _dispatch.locate(address)
    if found is None:
        raise ValueError(f"target: address {address:#x} is not in any object loaded in this process")
    path, base = found
    elf = _core.elf(path)
    vaddr = address - base + elf.base_vaddr
    if name is None:
        sym = elf.function_at(vaddr)
        name = sym[0] if sym else f"{address:#x}"
    return Target(name, path, vaddr, address, sig)
