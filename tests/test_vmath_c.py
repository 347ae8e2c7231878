"""Builds tests/c/test_vmath.c (the vectorized sin/cos of csrc/core/vmath.h against libm, and the
op table's sin/cos partial loops that use it against the table's scalar rules) and runs it, under
AddressSanitizer and UndefinedBehaviorSanitizer where the compiler supports them."""

from __future__ import annotations

from _cbuild import core_sources, run_c_tests


def test_vmath_against_libm(tmp_path):
    out = run_c_tests("test_vmath.c", core_sources("gt_common", "ops"), tmp_path)
    # the program names the path it measured: a build without the vector kernel would pass
    # while testing libm against itself
    assert "vector path: no" not in out, out
