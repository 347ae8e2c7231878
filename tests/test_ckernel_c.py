"""The C-kernel runner (csrc/core/ckernel.c) driven from C (tests/c/test_ckernel.c), under
AddressSanitizer and UndefinedBehaviorSanitizer when available: stage results against closed forms,
threads, the forked variant, every injected allocation failure (no leak, a clean GT_ENOMEM)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from _cbuild import build, core_sources, run_c_tests

CORE = ("gt_common", "fd", "guard", "guardbuf", "ckernel")


def test_ckernel_runner_in_c(tmp_path):
    run_c_tests("test_ckernel.c", core_sources(*CORE), tmp_path)


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="needs valgrind")
def test_guarded_child_sends_no_uninitialised_bytes(tmp_path):
    """valgrind (which follows the forked child) sees every byte the child writes to its pipe."""
    exe, _ = build("guard_pipe_valgrind.c", core_sources(*CORE), tmp_path, sanitize=False)
    run = subprocess.run(["valgrind", "-q", "--error-exitcode=99", "--child-silent-after-fork=no", str(exe)],
                         capture_output=True, text=True, timeout=300)
    assert "uninitialised" not in run.stderr, run.stderr
    assert run.returncode == 0, run.stdout + run.stderr
    assert "statuses 0 0" in run.stdout
