"""The forward-mode kernels (csrc/core/dual.c) tested from C (tests/c/test_dual.c), under
AddressSanitizer and UndefinedBehaviorSanitizer where available: results against naive loops,
argument checks, allocation failures, and the per-thread matmul scratch (no leaks, including at
thread exit)."""

from __future__ import annotations

from _cbuild import core_sources, run_c_tests


def test_dual_kernels_in_c(tmp_path):
    # OpenBLAS keeps its own buffers for the life of the process: not ours to report
    run_c_tests("test_dual.c", core_sources("gt_common", "ops", "dual"), tmp_path, blas=True,
                leak_suppressions=["leak:libscipy_openblas"])
