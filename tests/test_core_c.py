"""Builds the C core's own test program (tests/c/test_core.c) and runs it, under AddressSanitizer
and UndefinedBehaviorSanitizer when the compiler supports them, so leaks and overflows fail."""

from __future__ import annotations

from _cbuild import core_sources, run_c_tests


def test_core_in_c(tmp_path):
    # the guard tests crash children on purpose: let those signals through the sanitizer
    run_c_tests("test_core.c", core_sources("gt_common", "ops", "fd", "guard"), tmp_path,
                asan_options="handle_segv=0:handle_sigbus=0:handle_abort=0:handle_sigfpe=0")
