"""The dispatch checks' access to the C core (the ``_dispatch`` extension): capstone, located and
loaded once, and the parsed objects and analysis summaries, cached while their files are unchanged.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path
from typing import Any

from .. import _dispatch
from ._policy import NORETURN

_core_lock = threading.Lock()
_capstone_obj: Any = None
_elf_cache: dict[tuple, Any] = {}
# per-function analysis summaries, one cache per list of target modules (file identities)
_analysis_caches: dict[tuple, Any] = {}


class CapstoneMissingError(ImportError):
    """capstone 5 (the PyPI wheel) is not installed, or its library could not be loaded."""


def capstone_library() -> str:
    """The path of libcapstone: $GRADTEST_CAPSTONE, else the one in the installed capstone wheel."""
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


def capstone() -> Any:
    """The loaded capstone library (loaded once per process); CapstoneMissingError without it."""
    global _capstone_obj
    with _core_lock:
        if _capstone_obj is None:
            path = capstone_library()
            try:
                _capstone_obj = _dispatch.Capstone(path)
            except (OSError, ValueError) as exc:  # not loadable / not capstone 5
                raise CapstoneMissingError(str(exc)) from exc
        return _capstone_obj


def _file_key(path: str) -> tuple:
    st = os.stat(path)
    return (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def analysis_cache(modules: list[str]) -> Any:
    """The summary cache for this list of modules; a changed file gives a fresh one, and so does a
    module that was loaded since (summaries of a static analysis know no providers)."""
    key = tuple(_file_key(p) + (_dispatch.is_loaded(p),) for p in modules) + (NORETURN,)
    with _core_lock:
        cache = _analysis_caches.get(key)
        if cache is None:
            if len(_analysis_caches) > 64:
                _analysis_caches.clear()
            cache = _analysis_caches[key] = _dispatch.Cache()
        return cache


def elf(path: str) -> Any:
    """The parsed object at path, cached while the file is unchanged (same inode, size, mtime)."""
    key = _file_key(path)
    with _core_lock:
        elf = _elf_cache.get(key)
    if elf is None:
        elf = _dispatch.Elf(path)
        with _core_lock:
            if len(_elf_cache) > 256:
                _elf_cache.clear()
            elf = _elf_cache.setdefault(key, elf)
    return elf
