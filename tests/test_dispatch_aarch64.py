"""aarch64 decoding: the opt check on aarch64 builds of kernels.c.

The objects in dispatch_fixtures/aarch64 are prebuilt with Debian's cross compiler
(dispatch_fixtures/aarch64/build.sh); when aarch64-linux-gnu-gcc is installed the tests also build
fresh ones. On an x86-64 machine they cannot be loaded, so the analysis is static: providers of
external calls are unknown and libm is recognised by name.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import gradtest
import pytest
from gradtest import _dispatch

pytest.importorskip("capstone")

HERE = Path(__file__).parent / "dispatch_fixtures"
PREBUILT = {p.stem.split("_", 1)[1]: str(p) for p in sorted((HERE / "aarch64").glob("kernels_*.so"))}


def _fresh(tmp_path_factory) -> dict[str, str]:
    cc = shutil.which("aarch64-linux-gnu-gcc")
    if cc is None:
        return {}
    out = tmp_path_factory.mktemp("aarch64")
    built = {}
    for name, flags in {"fresh_O2": ["-O2"], "fresh_stripped": ["-O2", "-s"]}.items():
        path = out / f"k_{name}.so"
        proc = subprocess.run([cc, "-shared", "-fPIC", *flags, "-o", str(path), str(HERE / "kernels.c"), "-lm"],
                              check=False, capture_output=True)
        if proc.returncode == 0:
            built[name] = str(path)
    return built


@pytest.fixture(scope="module")
def libs(tmp_path_factory) -> dict[str, str]:
    return {**PREBUILT, **_fresh(tmp_path_factory)}


VARIANTS = ["O0", "O2", "noplt"]


def test_prebuilt_fixtures_are_aarch64():
    assert set(VARIANTS) <= set(PREBUILT)
    for path in PREBUILT.values():
        assert _dispatch.Elf(path).machine == 183


def failing(report):
    return sorted((f.kind, f.callee) for f in report.findings if f.fails)


def _all(libs):
    return [libs[v] for v in VARIANTS] + [p for k, p in libs.items() if k.startswith("fresh")]


EXPECTED = {
    "gt_pure_dot": [],
    "gt_alloc_sum": [("allocation", "free"), ("allocation", "malloc")],
    "gt_callback_sum": [("indirect_call", None)],
    "gt_python_value": [("python_api", "PyFloat_AsDouble")],
    "gt_softplus_sum": [],
    "gt_switch_op": [],
    "gt_switch_big": [],
    "gt_switch_masked": [],
    "gt_tail_alloc": [("allocation", "calloc")],
    "gt_calls_sibling": [],
    "gt_checked_mean": [],
    "gt_prints": [("external_call", "printf")],
    "gt_asserting": [],
    "gt_calls_fatal": [],
}


@pytest.mark.parametrize("kernel", list(EXPECTED))
def test_expected_findings_on_aarch64(libs, kernel):
    for path in _all(libs):
        report = gradtest.check_dispatch(f"{path}:{kernel}")
        assert failing(report) == EXPECTED[kernel], f"{path}\n{report}"
        assert any("static analysis" in n for n in report.notes)


def test_aarch64_details(libs):
    for path in _all(libs):
        big = gradtest.check_dispatch(f"{path}:gt_switch_big")
        assert big.jump_tables == 1 and big.instructions > 40  # the table's targets were decoded
        soft = gradtest.check_dispatch(f"{path}:gt_softplus_sum")
        exp = next(f for f in soft.findings if f.callee == "exp")
        assert exp.reason == "allowed by default (libm)" and not exp.fails
        mean = gradtest.check_dispatch(f"{path}:gt_checked_mean")
        assert {f.callee for f in mean.findings} >= {"abort"} and all(f.error_path for f in mean.findings)
        sib = gradtest.check_dispatch(f"{path}:gt_calls_sibling")
        assert "gt_sibling_scale" in sib.functions


def test_aarch64_cannot_be_called_here(libs):
    import numpy as np

    with pytest.raises(ValueError, match="could not be loaded"):
        gradtest.check_dispatch(f"{libs['O2']}:gt_pure_dot", np.ones(2), np.ones(2), 2,
                                signature="double(const double*, const double*, size_t)")
