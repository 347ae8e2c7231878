"""Builds and runs the C test programs of tests/c/ against the C core: the one way for every test.

A program is compiled with the core's strict flags (C11, -Wall -Wextra -Werror) and, where the
compiler and its runtime support them, AddressSanitizer and UndefinedBehaviorSanitizer; where they
do not, a plain build still checks the results. A program that does not compile fails the test: it
is never skipped for that. The test is skipped only when there is no C compiler at all, or for a
BLAS program when scipy-openblas32 (a build dependency of gradtest) is missing.

Programs print ``"... N failed"`` on their last line and exit non-zero on a failure;
:func:`run_c_tests` checks both.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "csrc" / "core"
INCLUDE = ROOT / "python" / "gradtest" / "include"
PROGRAMS = ROOT / "tests" / "c"

FLAGS = ["-std=c11", "-O1", "-g", "-Wall", "-Wextra", "-Werror", "-pthread"]
SANITIZERS = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all"]
LIBS = ["-lm", "-ldl"]


def compiler() -> str:
    """The C compiler ($CC, else cc, else gcc); skips the test when there is none."""
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        if shutil.which("gcc") is None:
            pytest.skip("no C compiler (cc/gcc)")
        cc = "gcc"
    return cc


def core_sources(*patterns: str) -> list[Path]:
    """The core's files matching the glob patterns (without ".c"), e.g. ``"fd"``, ``"dispatch_*"``."""
    found = [p for pat in patterns for p in sorted(CORE.glob(f"{pat}.c"))]
    missing = [pat for pat in patterns if not any(p.match(f"{pat}.c") for p in found)]
    assert not missing, f"no core source matches {missing} in {CORE}"
    return found


@functools.lru_cache(maxsize=1)
def blas_flags() -> tuple[str, ...] | None:
    """Compiler and linker flags for the scipy-openblas32 wheel (as setup.py uses it), or None."""
    try:
        import scipy_openblas32
    except ImportError:
        return None
    lib = scipy_openblas32.get_lib_dir()
    return (f"-I{scipy_openblas32.get_include_dir()}", "-DGT_BLAS_PREFIX=scipy_", f"-L{lib}",
            f"-l{scipy_openblas32.get_library()}", f"-Wl,-rpath,{lib}")


def build(program: str, core: Sequence[Path], out_dir: Path, *, blas: bool = False,
          sanitize: bool = True) -> tuple[Path, bool]:
    """Compiles tests/c/<program> with the core files `core` into out_dir.

    Returns the executable and whether it carries the sanitizers (``sanitize=False`` leaves them
    out, for a program run under valgrind, which cannot watch a sanitized one). Fails the calling
    test when the program does not compile even without them.
    """
    cc = compiler()
    extra: tuple[str, ...] = ()
    if blas:
        flags = blas_flags()
        if flags is None:
            pytest.skip("scipy-openblas32 is not installed")
        extra = flags
    exe = out_dir / Path(program).stem

    def compile_with(sanitizers: list[str]) -> subprocess.CompletedProcess:
        cmd = [cc, *FLAGS, *sanitizers, f"-I{CORE}", f"-I{INCLUDE}", str(PROGRAMS / program),
               *map(str, core), *extra, *LIBS, "-o", str(exe)]
        return subprocess.run(cmd, capture_output=True, text=True, check=False)

    if sanitize and compile_with(SANITIZERS).returncode == 0:
        return exe, True
    plain = compile_with([])  # no sanitizer runtime here
    assert plain.returncode == 0, f"{program} does not compile:\n{plain.stderr[-4000:]}"
    return exe, False


def run(exe: Path, *args: str, asan_options: str = "", leak_suppressions: Sequence[str] = (),
        timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs a built program with the sanitizers reporting leaks (suppressions: LSan patterns such
    as ``"leak:libscipy_openblas"``) and single-threaded OpenBLAS. Leak checking is dropped only
    where LeakSanitizer cannot work (under ptrace)."""
    env = dict(os.environ, UBSAN_OPTIONS="print_stacktrace=1", OPENBLAS_NUM_THREADS="1")
    options = ":".join(filter(None, ["detect_leaks=1", asan_options]))
    if leak_suppressions:
        supp = exe.with_suffix(".lsan.supp")
        supp.write_text("".join(f"{s}\n" for s in leak_suppressions))
        env["LSAN_OPTIONS"] = f"suppressions={supp}"
    cmd = [str(exe), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(env, ASAN_OPTIONS=options),
                          timeout=timeout, check=False)
    if proc.returncode != 0 and "LeakSanitizer does not work under ptrace" in proc.stderr:
        options = options.replace("detect_leaks=1", "detect_leaks=0")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(env, ASAN_OPTIONS=options),
                              timeout=timeout, check=False)
    return proc


def run_c_tests(program: str, core: Sequence[Path], out_dir: Path, *, blas: bool = False,
                asan_options: str = "", leak_suppressions: Sequence[str] = ()) -> str:
    """Builds and runs a test program of tests/c/; asserts it exited 0 with no failed check and
    returns its output."""
    exe, _ = build(program, core, out_dir, blas=blas)
    proc = run(exe, asan_options=asan_options, leak_suppressions=leak_suppressions)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert " 0 failed" in proc.stdout, proc.stdout[-4000:]
    return proc.stdout
