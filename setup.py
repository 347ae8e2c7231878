"""Build of gradtest's C extensions.

Each extension module lists the core sources it links and the headers it depends on. OpenBLAS
comes from the ``scipy-openblas32`` wheel (a build and runtime dependency, as for SciPy) or, when
``GRADTEST_OPENBLAS=system``, from a system OpenBLAS found by pkg-config.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent
CORE = "csrc/core"
GLUE = "csrc/python"
# the public C header (gradtest.h, the kernel ABI), installed with the package
INCLUDE = "python/gradtest/include"


def openblas_flags() -> dict[str, list[str]]:
    """Compiler and linker flags for OpenBLAS, with the CBLAS symbol prefix it uses."""
    if os.environ.get("GRADTEST_OPENBLAS") == "system":
        cflags = subprocess.check_output(["pkg-config", "--cflags", "openblas"], text=True)
        libs = subprocess.check_output(["pkg-config", "--libs", "openblas"], text=True)
        return {"compile": shlex.split(cflags), "link": shlex.split(libs), "define": []}
    import scipy_openblas32

    lib_dir = scipy_openblas32.get_lib_dir()
    return {
        "compile": [f"-I{scipy_openblas32.get_include_dir()}"],
        "link": [
            f"-L{lib_dir}",
            f"-l{scipy_openblas32.get_library()}",
            # installed next to the scipy_openblas32 package in site-packages
            "-Wl,-rpath,$ORIGIN/../scipy_openblas32/lib",
            f"-Wl,-rpath,{lib_dir}",
        ],
        # the wheel prefixes its symbols: scipy_cblas_dgemm
        "define": ["-DGT_BLAS_PREFIX=scipy_"],
    }


def strict_flags() -> list[str]:
    flags = ["-std=c11", "-O3", "-fvisibility=hidden"]
    if os.environ.get("GRADTEST_STRICT", os.environ.get("CI", "")).lower() in ("1", "true", "yes"):
        flags += ["-Wall", "-Wextra", "-Werror"]
    else:
        flags += ["-Wall", "-Wextra"]
    return flags


def core(*names: str) -> list[str]:
    return [f"{CORE}/{name}.c" for name in names]


def extension(name: str, glue: str, core_sources: list[str], blas: bool = False) -> Extension:
    blas_flags = openblas_flags() if blas else {"compile": [], "link": [], "define": []}
    sources = [f"{GLUE}/{glue}"] + core_sources
    depends = [str(p) for p in sorted((ROOT / CORE).glob("*.h"))] + [f"{GLUE}/gt_glue.h", f"{INCLUDE}/gradtest.h"]
    return Extension(
        f"gradtest.{name}",
        sources=sources,
        depends=depends,
        include_dirs=[CORE, GLUE, INCLUDE, numpy.get_include()],
        extra_compile_args=strict_flags() + blas_flags["compile"] + blas_flags["define"],
        # -ldl: dlopen/dlsym are in libdl on glibc < 2.34 (an empty stub library after that)
        extra_link_args=blas_flags["link"] + ["-lm", "-ldl"],
    )


# the dispatch analysis, one file per concern (dispatch.h is the contract)
DISPATCH = (
    "dispatch_containers",  # the map and growable arrays
    "dispatch_isa",  # operand text shared by the instruction-set tables
    "dispatch_x86",  # the x86-64 instruction table
    "dispatch_a64",  # the aarch64 instruction table
    "dispatch_load",  # loaded objects through dlopen/dlsym/dladdr
    "dispatch_walk",  # the call-graph walk
    "dispatch_call",  # the forked call check and load probe
)

EXTENSIONS = [
    extension("_core", "_core.c", core("gt_common", "fd", "ops"), blas=True),
    extension("_reverse", "_reverse.c", core("gt_common", "ops", "tape"), blas=True),
    extension("_forward", "_forward.c", core("gt_common", "ops", "dual"), blas=True),
    extension("_ckernel", "_ckernel.c", core("gt_common", "fd", "guard", "guardbuf", "ckernel")),
    extension("_dispatch", "_dispatch.c", core("gt_common", "guard", "guardbuf", "elf_reader", "disasm", *DISPATCH)),
]


class BuildExt(build_ext):
    """Builds the extensions; `-Werror` comes from GRADTEST_STRICT=1 (CI sets it)."""


setup(ext_modules=EXTENSIONS, cmdclass={"build_ext": BuildExt}, package_dir={"": "python"})
