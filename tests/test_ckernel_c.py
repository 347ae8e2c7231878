"""The C-kernel runner (csrc/core/ckernel.c) driven from C (tests/c/test_ckernel.c), under
AddressSanitizer and UndefinedBehaviorSanitizer when available: stage results against closed forms,
threads, the forked variant, every injected allocation failure (no leak, a clean GT_ENOMEM)."""

from __future__ import annotations

from _cbuild import core_sources, run_c_tests


def test_ckernel_runner_in_c(tmp_path):
    run_c_tests("test_ckernel.c", core_sources("gt_common", "fd", "guard", "ckernel"), tmp_path)
