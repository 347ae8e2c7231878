"""The tape's C core on its own (tests/c/test_tape.c, no Python), under AddressSanitizer and
UndefinedBehaviorSanitizer when the compiler supports them: results of each node kind, owner handles
released exactly once, and allocation failures at every point of recording and sweeping without
leaks."""

from __future__ import annotations

from _cbuild import core_sources, run_c_tests


def test_tape_core_in_c(tmp_path):
    run_c_tests("test_tape.c", core_sources("gt_common", "ops", "tape"), tmp_path, blas=True)
