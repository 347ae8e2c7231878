"""Builds the C core's own test program (tests/c/test_core.c) and runs it, under AddressSanitizer
and UndefinedBehaviorSanitizer when the compiler supports them, so leaks and overflows fail."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "csrc" / "core"
SOURCES = ["gt_common.c", "ops.c", "fd.c", "guard.c"]


def _compile(out: Path, extra: list[str]) -> subprocess.CompletedProcess:
    cc = os.environ.get("CC", "cc")
    cmd = [cc, "-std=c11", "-O1", "-g", "-Wall", "-Wextra", "-Werror", f"-I{CORE}", *extra,
           str(ROOT / "tests" / "c" / "test_core.c"), *(str(CORE / s) for s in SOURCES), "-lm", "-o", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True)


@pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None, reason="no C compiler")
def test_core_in_c(tmp_path):
    exe = tmp_path / "test_core"
    sanitizers = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all"]
    build = _compile(exe, sanitizers)
    if build.returncode != 0:  # no sanitizer runtime on this machine: plain build
        build = _compile(exe, [])
    assert build.returncode == 0, build.stderr
    # the guard tests crash children on purpose: let those signals through the sanitizer
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:handle_segv=0:handle_sigbus=0:handle_abort=0:handle_sigfpe=0", UBSAN_OPTIONS="print_stacktrace=1")
    run = subprocess.run([str(exe)], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert " 0 failed" in run.stdout
