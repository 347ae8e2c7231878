"""Build of gradtest's C extensions.

Each extension module lists the core sources it links and the headers it depends on. OpenBLAS
comes from the ``scipy-openblas32`` wheel (a build and runtime dependency, as for SciPy) or, when
``GRADTEST_OPENBLAS=system``, from a system OpenBLAS found by pkg-config.

The CUDA kernels (``csrc/cuda/``) are built into a separate shared library,
``gradtest/libgradtest_cuda.so``, loaded with ctypes by ``gradtest.cuda`` only when asked for, so
the package imports and every CPU feature works with no GPU, no driver and no toolkit.
``GRADTEST_CUDA=auto`` (the default) builds it when nvcc is found (and warns, and goes on without
it, if that build fails), ``1`` requires nvcc and a successful build (and fails loudly
otherwise), ``0`` skips it. It targets sm_80 and sm_90 and embeds compute_90 PTX, which
the driver compiles for newer GPUs. The CUDA runtime comes from the toolkit that built it, linked
statically (nvcc's default), so at run time only the NVIDIA driver is needed; cuBLAS is reached
through the caller's array library (CuPy or PyTorch, which ship it), so gradtest links no CUDA
library and needs no ``nvidia-*`` wheel.
"""

from __future__ import annotations

import os
import shlex
import shutil
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


CUDA = "csrc/cuda"
# the host C files linked into the CUDA library: the batched finite differences and the core
# files they use (fd.c's rules are the ones the CPU engine uses)
CUDA_HOST_SOURCES = [f"{CUDA}/fd_batch.c", f"{CORE}/fd.c", f"{CORE}/gt_common.c"]
CUDA_ARCHS = ["-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=[sm_90,compute_90]"]


def cuda_mode() -> str:
    mode = os.environ.get("GRADTEST_CUDA", "auto").strip().lower()
    if mode not in ("auto", "1", "0"):
        raise SystemExit(f"GRADTEST_CUDA: expected auto, 1 or 0, got {mode!r}")
    return mode


def find_nvcc() -> str | None:
    """nvcc from $CUDA_HOME/bin, else from PATH."""
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home and (Path(home) / "bin" / "nvcc").exists():
        return str(Path(home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def build_cuda_library(out_dir: Path, temp_dir: Path, cc: str) -> Path:
    """Compiles csrc/cuda/gt_cuda.cu with nvcc and the host files with the C compiler, and links
    them into out_dir/libgradtest_cuda.so. Raises CalledProcessError on a failure."""
    nvcc = find_nvcc()
    assert nvcc is not None
    temp_dir.mkdir(parents=True, exist_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    strict = strict_flags()
    warn = [f for f in strict if f.startswith("-W")]
    objects = []
    cu_obj = temp_dir / "gt_cuda.o"
    # --fmad=false: no fused multiply-adds, so the device evaluates op_rules.h's expressions with
    # the same roundings as the C build (C11 mode contracts nothing either); the kernels are
    # memory bound, so this costs little
    subprocess.check_call([nvcc, "-O3", "-std=c++17", "--fmad=false", *CUDA_ARCHS, f"-I{CORE}", f"-I{CUDA}",
                           "-Xcompiler", ",".join(["-fPIC", "-fvisibility=hidden", *warn]),
                           "-c", f"{CUDA}/gt_cuda.cu", "-o", str(cu_obj)])
    objects.append(cu_obj)
    for src in CUDA_HOST_SOURCES:
        obj = temp_dir / (Path(src).stem + "_host.o")
        subprocess.check_call([cc, *strict, "-fPIC", f"-I{CORE}", f"-I{CUDA}", "-c", src, "-o", str(obj)])
        objects.append(obj)
    lib = out_dir / "libgradtest_cuda.so"
    subprocess.check_call([nvcc, "-shared", *CUDA_ARCHS, *map(str, objects), "-o", str(lib), "-lm"])
    return lib


class BuildExt(build_ext):
    """Builds the extensions; `-Werror` comes from GRADTEST_STRICT=1 (CI sets it). Then the CUDA
    library, as GRADTEST_CUDA says."""

    def run(self) -> None:
        super().run()
        mode = cuda_mode()
        if mode == "0":
            return
        if find_nvcc() is None:
            if mode == "1":
                raise SystemExit("GRADTEST_CUDA=1: nvcc was not found (set CUDA_HOME or put nvcc on PATH)")
            print("gradtest: nvcc not found; building without the CUDA library (GRADTEST_CUDA=auto)")
            return
        out_dir = Path("python/gradtest") if self.inplace else Path(self.build_lib) / "gradtest"
        cc = os.environ.get("CC") or "cc"
        try:
            lib = build_cuda_library(out_dir, Path(self.build_temp) / "cuda", cc)
        except (subprocess.CalledProcessError, OSError) as exc:
            if mode == "1":
                raise SystemExit(f"GRADTEST_CUDA=1: building the CUDA library failed: {exc}") from None
            # auto: the package works without it (gradtest.cuda.unavailable_reason() says so);
            # CI builds with nvcc and checks that the library exists
            print(f"gradtest: WARNING: the CUDA library failed to build ({exc}); continuing without it "
                  "(GRADTEST_CUDA=1 makes this an error, GRADTEST_CUDA=0 skips it)")
            return
        print(f"gradtest: built {lib}")


setup(ext_modules=EXTENSIONS, cmdclass={"build_ext": BuildExt}, package_dir={"": "python"})
