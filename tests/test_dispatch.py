"""The dispatch checks on a C test library built here with the system compiler.

kernels.c holds one pattern per kernel; each build variant (-O0, -O2, -fno-plt, -fcf-protection,
stripped) must give the same findings.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os

import gradtest
import numpy as np
import pytest
from dispatch_fixtures.build import VARIANTS, build
from gradtest import _events
from gradtest.dispatch import _core as dispatch_core
from gradtest.dispatch import _targets as dispatch_targets
from gradtest.cli import main as cli_main

pytest.importorskip("capstone")


@pytest.fixture(scope="session")
def libs(tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("dispatch_libs")
    return {name: str(build(out / f"libgtk_{name}.so", ["kernels.c"], flags)) for name, flags in VARIANTS.items()}


@pytest.fixture(scope="session")
def helper_libs(tmp_path_factory) -> tuple[str, str]:
    out = tmp_path_factory.mktemp("dispatch_helper")
    helper = build(out / "libgthelper.so", ["helper.c"], ["-O2"])
    caller = build(out / "libgtcaller.so", ["caller.c"], ["-O2"], [f"-L{out}", "-lgthelper", f"-Wl,-rpath,{out}"])
    return str(caller), str(helper)


@pytest.fixture
def reset_target_modules(monkeypatch):
    monkeypatch.setattr(dispatch_targets, "_target_modules", None)


def failing(report) -> list[tuple[str, str | None]]:
    return sorted((f.kind, f.callee) for f in report.findings if f.fails)


def listed(report) -> list[tuple[str, str | None]]:
    return sorted((f.kind, f.callee) for f in report.findings if not f.fails)


ALL = list(VARIANTS)


# ---------------------------------------------------------------------------------------------
# the opt check on every build variant


@pytest.mark.parametrize("variant", ALL)
def test_pure_loop_has_no_findings(libs, variant):
    report = gradtest.check_dispatch(f"{libs[variant]}:gt_pure_dot")
    assert report.passed, str(report)
    assert report.findings == []
    assert report.outcomes["opt"].status == "pass"
    assert report.outcomes["call"].status == "skipped"
    assert report.functions == ["gt_pure_dot"]


@pytest.mark.parametrize("variant", ALL)
def test_malloc_free_kernel_allocates(libs, variant):
    report = gradtest.check_dispatch(f"{libs[variant]}:gt_alloc_sum")
    assert not report.passed
    assert failing(report) == [("allocation", "free"), ("allocation", "malloc")]
    f = next(f for f in report.findings if f.callee == "malloc")
    assert f.symbol.startswith("gt_alloc_sum+0x")
    assert f.chain == ("gt_alloc_sum",)
    assert f.library is not None and "libc" in os.path.basename(f.library)
    assert f.address > 0


@pytest.mark.parametrize("variant", ALL)
def test_function_pointer_callback_is_dispatch(libs, variant):
    report = gradtest.check_dispatch(f"{libs[variant]}:gt_callback_sum")
    assert failing(report) == [("indirect_call", None)]
    f = report.failures[0]
    assert f.instruction.startswith("call")
    assert report.outcomes["opt"].status == "fail"


@pytest.mark.parametrize("variant", ALL)
def test_python_api_call(libs, variant):
    report = gradtest.check_dispatch(f"{libs[variant]}:gt_python_value")
    assert failing(report) == [("python_api", "PyFloat_AsDouble")]


@pytest.mark.parametrize("variant", ALL)
def test_static_helper_calling_exp_is_allowed(libs, variant):
    report = gradtest.check_dispatch(f"{libs[variant]}:gt_softplus_sum")
    assert report.passed, str(report)
    assert ("external_call", "exp") in listed(report)
    f = next(f for f in report.findings if f.callee == "exp")
    assert f.reason == "allowed by default (libm)"
    assert os.path.basename(f.library).startswith("libm")
    # the helper is a separate function on the chain (named when symbols are there)
    assert len(f.chain) == 2 and f.chain[0] == "gt_softplus_sum"
    if variant != "stripped":
        assert f.chain[1] == "softplus"


@pytest.mark.parametrize("variant", ALL)
def test_switch_jump_table_is_not_dispatch(libs, variant):
    for kernel in ("gt_switch_op", "gt_switch_big"):
        report = gradtest.check_dispatch(f"{libs[variant]}:{kernel}")
        assert report.passed, str(report)
        assert report.findings == []
        assert report.jump_tables >= 1


@pytest.mark.parametrize("variant", ALL)
def test_tail_call_is_followed(libs, variant):
    report = gradtest.check_dispatch(f"{libs[variant]}:gt_tail_alloc")
    assert failing(report) == [("allocation", "calloc")]
    if variant != "stripped":
        assert report.failures[0].chain == ("gt_tail_alloc", "fresh_buffer")


@pytest.mark.parametrize("variant", ALL)
def test_exported_sibling_is_followed_through_the_plt(libs, variant):
    report = gradtest.check_dispatch(f"{libs[variant]}:gt_calls_sibling")
    assert report.passed, str(report)
    assert report.findings == []
    assert "gt_sibling_scale" in report.functions


@pytest.mark.parametrize("variant", ALL)
def test_error_path_before_abort_is_listed_not_failed(libs, variant):
    report = gradtest.check_dispatch(f"{libs[variant]}:gt_checked_mean")
    assert report.passed, str(report)
    names = {f.callee for f in report.findings}
    assert "abort" in names and names & {"fwrite", "fprintf", "fputs"}
    assert all(f.error_path and not f.fails for f in report.findings)


@pytest.mark.parametrize("variant", ALL)
def test_assert_and_noreturn_helper_are_error_paths(libs, variant):
    report = gradtest.check_dispatch(f"{libs[variant]}:gt_asserting")
    assert report.passed, str(report)
    assert [(f.callee, f.error_path, f.fails) for f in report.findings] == [("__assert_fail", True, False)]
    fatal = gradtest.check_dispatch(f"{libs[variant]}:gt_calls_fatal")
    assert fatal.passed, str(fatal)
    names = {f.callee for f in fatal.findings}
    assert "exit" in names and names & {"fputs", "fwrite"}
    assert all(f.error_path and not f.fails for f in fatal.findings)
    # the helper is its own function on the chain
    assert all(len(f.chain) == 2 for f in fatal.findings)


@pytest.mark.parametrize("variant", ALL)
def test_other_external_call_fails_unless_allowed(libs, variant):
    target = f"{libs[variant]}:gt_prints"
    report = gradtest.check_dispatch(target)
    assert failing(report) == [("external_call", "printf")]
    assert gradtest.check_dispatch(target, allow=["print*"]).passed
    assert gradtest.check_dispatch(target, allow="external_call").passed
    assert gradtest.check_dispatch(target, allow=["gt_prints"]).passed  # the function holding it
    assert not gradtest.check_dispatch(target, allow=["malloc"]).passed


@pytest.mark.parametrize("variant", ALL)
def test_masked_switch_table_is_sized_by_the_mask(libs, variant):
    report = gradtest.check_dispatch(f"{libs[variant]}:gt_switch_masked")
    assert report.passed and report.findings == [], str(report)


def test_unbounded_jump_table_sweeps_the_function(tmp_path):
    import platform

    if platform.machine() != "x86_64":
        pytest.skip("x86-64 assembly fixture")
    lib = build(tmp_path / "libunbounded.so", ["unbounded_x86_64.S"], [])
    report = gradtest.check_dispatch(f"{lib}:gt_asm_unbounded")
    assert report.jump_tables == 1
    # case 1 is reachable only through the table, whose size is unknown: the sweep found it
    assert failing(report) == [("allocation", "malloc")]


def _line_of(text: str) -> int:
    from dispatch_fixtures.build import FIXTURES

    lines = (FIXTURES / "kernels.c").read_text().splitlines()
    return next(i + 1 for i, line in enumerate(lines) if text in line)


def test_debug_info_gives_file_and_line(libs):
    report = gradtest.check_dispatch(f"{libs['debug']}:gt_alloc_sum")
    malloc = next(f for f in report.findings if f.callee == "malloc")
    path, line = malloc.source.rsplit(":", 1)
    assert path.endswith("kernels.c")
    assert int(line) == _line_of("double *tmp = malloc(")
    assert "kernels.c:" in str(report)
    callback = gradtest.check_dispatch(f"{libs['debug']}:gt_callback_sum").failures[0]
    assert int(callback.source.rsplit(":", 1)[1]) == _line_of("acc += f(x[i]);")
    # without -g there is no position
    assert all(f.source is None for f in gradtest.check_dispatch(f"{libs['O2']}:gt_alloc_sum").findings)


def test_allow_silences_dispatch(libs):
    report = gradtest.check_dispatch(f"{libs['O2']}:gt_callback_sum", allow=["indirect_call"])
    assert report.passed
    assert report.findings[0].reason == "allowed by allow='indirect_call'"


def test_max_depth_zero_stops_at_the_target(libs):
    report = gradtest.check_dispatch(f"{libs['O2']}:gt_softplus_sum", max_depth=0)
    assert report.functions == ["gt_softplus_sum"]
    assert [f.kind for f in report.findings] == ["unresolved"]
    assert not report.passed
    assert any("max_depth" in n for n in report.notes)


# ---------------------------------------------------------------------------------------------
# targets


def test_target_forms_agree(libs):
    path = libs["O2"]
    lib = ctypes.CDLL(path)
    address = ctypes.cast(lib.gt_alloc_sum, ctypes.c_void_p).value
    reports = [
        gradtest.check_dispatch(lib.gt_alloc_sum),
        gradtest.check_dispatch(address),
        gradtest.check_dispatch(f"{path}:gt_alloc_sum"),
    ]
    for r in reports:
        assert r.target == "gt_alloc_sum"
        assert os.path.samefile(r.library, path)
        assert failing(r) == [("allocation", "free"), ("allocation", "malloc")]


def test_cffi_target(libs):
    cffi = pytest.importorskip("cffi")
    ffi = cffi.FFI()
    ffi.cdef("double gt_pure_dot(const double *x, const double *y, size_t n);")
    lib = ffi.dlopen(libs["O2"])
    x = np.arange(3.0)
    report = gradtest.check_dispatch(lib.gt_pure_dot, x, x, 3)
    assert report.passed, str(report)
    assert report.result == 5.0


def test_ckernel_protocol(libs):
    class Kernel:
        def __gradtest_dispatch__(self):
            return f"{libs['O2']}:gt_pure_dot", "double(const double*, const double*, size_t)"

    x = np.ones(4)
    report = gradtest.check_dispatch(Kernel(), x, x, 4)
    assert report.passed and report.result == 4.0


def test_bad_targets(libs):
    # a Python function is checked on tracked arrays; called without its argument, the call fails
    assert gradtest.check_dispatch(lambda x: x).outcomes["call"].status == "fail"
    with pytest.raises(TypeError, match="expected a ctypes or cffi function pointer"):
        gradtest.check_dispatch(3.5)
    with pytest.raises(ValueError, match="expected 'lib.so:symbol'"):
        gradtest.check_dispatch("no-colon")
    with pytest.raises(FileNotFoundError):
        gradtest.check_dispatch("/nonexistent/lib.so:f")
    with pytest.raises(ValueError, match="exports no function 'nope'"):
        gradtest.check_dispatch(f"{libs['O2']}:nope")
    with pytest.raises(ValueError, match="NULL"):
        gradtest.check_dispatch(0)
    with pytest.raises(ValueError, match="not in any object loaded"):
        gradtest.check_dispatch(8)
    with pytest.raises(ValueError, match="max_depth"):
        gradtest.check_dispatch(f"{libs['O2']}:gt_pure_dot", max_depth=-1)
    with pytest.raises(TypeError, match="allow"):
        gradtest.check_dispatch(f"{libs['O2']}:gt_pure_dot", allow=[3])


# ---------------------------------------------------------------------------------------------
# target modules


def test_calls_into_another_library_are_external_by_default(helper_libs):
    caller, _helper = helper_libs
    report = gradtest.check_dispatch(f"{caller}:gt_calls_helper_alloc")
    assert failing(report) == [("external_call", "gt_helper_alloc")]
    assert os.path.basename(report.failures[0].library) == "libgthelper.so"


def test_target_modules_follow_into_the_helper(helper_libs):
    caller, helper = helper_libs
    report = gradtest.check_dispatch(f"{caller}:gt_calls_helper_alloc", target_modules=[helper])
    assert failing(report) == [("allocation", "malloc")]
    f = report.failures[0]
    assert f.chain == ("gt_calls_helper_alloc", "gt_helper_alloc")
    assert os.path.samefile(f.module, helper)
    assert f.symbol.startswith("gt_helper_alloc+")
    # by loaded-library name, too
    by_name = gradtest.check_dispatch(f"{caller}:gt_calls_helper_pure", target_modules=["libgthelper"])
    assert by_name.passed and "gt_helper_pure" in by_name.functions


def test_unknown_target_module_is_an_error(libs):
    with pytest.raises(ValueError, match="target_modules: 'libnothere'"):
        gradtest.check_dispatch(f"{libs['O2']}:gt_pure_dot", target_modules=["libnothere"])


def test_dispatch_target_modules_first_set_wins(helper_libs, reset_target_modules, caplog):
    caller, helper = helper_libs
    caplog.set_level(logging.INFO, logger="gradtest")
    assert gradtest.dispatch_target_modules([helper]) == [helper]
    assert gradtest.dispatch_target_modules(["libm"]) is None
    assert "already set" in caplog.text and "force=True" in caplog.text
    report = gradtest.check_dispatch(f"{caller}:gt_calls_helper_alloc")
    assert failing(report) == [("allocation", "malloc")]
    assert gradtest.dispatch_target_modules(["libgthelper"], force=True) == ["libgthelper"]
    # an explicit argument overrides the global list
    report = gradtest.check_dispatch(f"{caller}:gt_calls_helper_alloc", target_modules=[])
    assert failing(report) == [("external_call", "gt_helper_alloc")]
    with pytest.raises(TypeError):
        gradtest.dispatch_target_modules([1], force=True)


# ---------------------------------------------------------------------------------------------
# the call check


def test_call_with_ctypes_signature(libs):
    lib = ctypes.CDLL(libs["O2"])
    f = lib.gt_pure_dot
    f.argtypes = [ctypes.POINTER(ctypes.c_double), ctypes.POINTER(ctypes.c_double), ctypes.c_size_t]
    f.restype = ctypes.c_double
    x, y = np.arange(5.0), np.full(5, 2.0)
    report = gradtest.check_dispatch(f, x, y, 5)
    assert report.outcomes["call"].status == "pass"
    assert report.result == 20.0
    assert report.passed


def test_mixed_register_classes(libs):
    report = gradtest.check_dispatch(f"{libs['O0']}:gt_mixed", 3, 0.5, -4, 0.25,
                                     signature="float(int, double, long, float)")
    assert report.result == pytest.approx(0.5)


def test_call_runs_in_a_child_and_leaves_the_array_alone(libs):
    x = np.array([1.0, 2.0, 3.0])
    report = gradtest.check_dispatch(f"{libs['O2']}:gt_scale_inplace", x, 3, signature="double(double *x, size_t n)")
    assert report.result == 2.0
    np.testing.assert_array_equal(x, [1.0, 2.0, 3.0])


def test_crash_is_a_finding_naming_the_signal(libs):
    report = gradtest.check_dispatch(f"{libs['O2']}:gt_deref", np.ones(2), 1 << 40,
                                     signature="double(const double*, size_t)")
    assert report.outcomes["call"].status == "fail"
    crash = [f for f in report.findings if f.kind == "crash"]
    # the array is handed over fenced by guard pages, so the SIGSEGV of reading past its end is
    # named for what it is
    assert len(crash) == 1
    assert crash[0].instruction == "failed: gt_deref accessed memory past the end of args[0] (2 elements)"
    assert report.outcomes["opt"].status == "pass"
    assert not report.passed


def test_timeout_is_a_finding(libs):
    report = gradtest.check_dispatch(f"{libs['O2']}:gt_spin", np.zeros(1, dtype=np.int32),
                                     signature="void(volatile int *flag)", timeout=0.3)
    assert report.outcomes["call"].status == "fail"
    assert "timed out" in report.outcomes["call"].message


def test_call_broken_semantics(libs):
    target = f"{libs['O2']}:gt_abort_if"
    broken = gradtest.check_dispatch(target, 1, signature="int(int)", call_broken=True)
    assert broken.outcomes["call"].status == "broken"
    assert "SIGABRT" in broken.outcomes["call"].message
    assert broken.passed
    unexpected = gradtest.check_dispatch(target, 0, signature="int(int)", call_broken=True)
    assert unexpected.outcomes["call"].status == "unexpected_pass"
    assert not unexpected.passed
    with pytest.raises(AssertionError, match="unexpected_pass"):
        gradtest.test_dispatch(target, 0, signature="int(int)", call_broken=True)
    assert gradtest.test_dispatch(target, 0, signature="int(int)").result == 7


def test_opt_broken_semantics(libs):
    alloc = f"{libs['O2']}:gt_alloc_sum"
    assert gradtest.check_dispatch(alloc, opt_broken=True).outcomes["opt"].status == "broken"
    gradtest.test_dispatch(alloc, opt_broken=True)
    with pytest.raises(AssertionError, match="allocation"):
        gradtest.test_dispatch(alloc)
    pure = f"{libs['O2']}:gt_pure_dot"
    assert gradtest.check_dispatch(pure, opt_broken=True).outcomes["opt"].status == "unexpected_pass"
    with pytest.raises(AssertionError):
        gradtest.test_dispatch(pure, opt_broken=True)


SIG = "double(const double*, size_t)"


@pytest.mark.parametrize(
    "args, exc, match",
    [
        ((np.ones(3),), TypeError, "takes 2 argument"),
        ((np.ones(3, dtype=np.float32), 3), TypeError, "dtype float64"),
        ((np.ones((3, 2))[:, 0], 3), ValueError, "not C-contiguous"),
        ((None, 3), ValueError, "NULL"),
        (([1.0, 2.0], 2), TypeError, "expected a numpy array"),
        ((np.ones(3), 2.5), TypeError, "expected an integer"),
        ((np.ones(3), True), TypeError, "bool"),
        ((np.ones(3), -1), OverflowError, "does not fit"),
        ((np.ones(0), 0), ValueError, "empty"),
    ],
)
def test_argument_mismatches_are_rejected_before_calling(libs, args, exc, match):
    with pytest.raises(exc, match=match):
        gradtest.check_dispatch(f"{libs['O2']}:gt_deref", *args, signature=SIG)


@pytest.mark.parametrize(
    "signature, match",
    [
        ("double", "expected 'return_type"),
        ("double(double**)", "pointers to pointers"),
        ("double(struct foo)", "unsupported type"),
        ("double(int, ...)", "variadic"),
        ("double(void, int)", "void"),
    ],
)
def test_bad_signatures(libs, signature, match):
    with pytest.raises(ValueError, match=match):
        gradtest.check_dispatch(f"{libs['O2']}:gt_deref", np.ones(1), 1, signature=signature)


def test_too_many_register_arguments(libs):
    sig = "double(" + ", ".join(["int"] * 7) + ")"
    with pytest.raises(ValueError, match="registers only"):
        gradtest.check_dispatch(f"{libs['O2']}:gt_deref", *range(7), signature=sig)


def test_call_needs_a_signature(libs):
    with pytest.raises(TypeError, match="no C signature"):
        gradtest.check_dispatch(f"{libs['O2']}:gt_deref", np.ones(1), 1)


# ---------------------------------------------------------------------------------------------
# report, events, CLI


def test_report_renders_and_holds_records(libs):
    report = gradtest.check_dispatch(f"{libs['O2']}:gt_alloc_sum")
    text = str(report)
    assert "gt_alloc_sum" in text and "FAILED" in text and "malloc" in text and "allocation" in text
    html = report._repr_html_()
    assert "<table>" in html and "malloc" in html and "fail" in html
    rec = report.findings[0]
    assert {"kind", "symbol", "address", "chain", "library", "fails"} <= set(rec.as_dict())
    json.dumps(report.as_dict())
    assert "opt=fail" in repr(report)


def test_events_are_emitted_by_test_dispatch_only(libs):
    """As for the gradient checks, only the test_ form, whose result decides a test, reports to
    the pytest plugin; with the exception it raises, if any."""
    seen = []
    with _events.listening(lambda report, raised: seen.append((report, raised))):
        gradtest.check_dispatch(f"{libs['O2']}:gt_pure_dot")
        assert seen == []
        report = gradtest.test_dispatch(f"{libs['O2']}:gt_pure_dot")
        with pytest.raises(AssertionError) as info:
            gradtest.test_dispatch(f"{libs['O2']}:gt_alloc_sum")
    assert seen[0] == (report, None)
    assert set(report.outcomes) == {"call", "opt"}
    assert seen[1][1] is info.value


def test_cli_exit_codes(libs, capsys):
    assert cli_main(["dispatch", f"{libs['O2']}:gt_pure_dot"]) == 0
    assert cli_main(["dispatch", f"{libs['O2']}:gt_alloc_sum"]) == 1
    out = capsys.readouterr().out
    assert "malloc" in out
    assert cli_main(["dispatch", f"{libs['O2']}:gt_prints", "--allow", "printf"]) == 0
    capsys.readouterr()
    assert cli_main(["dispatch", f"{libs['O2']}:gt_alloc_sum", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["passed"] is False and {f["callee"] for f in data["findings"]} == {"malloc", "free"}
    assert cli_main(["dispatch", f"{libs['O2']}:gt_softplus_sum", "--max-depth", "0"]) == 1
    assert "max_depth" in capsys.readouterr().out
    assert cli_main(["dispatch", "nocolon"]) == 2
    assert cli_main(["dispatch", f"{libs['O2']}:nope"]) == 2
    assert cli_main(["dispatch"]) == 2
    capsys.readouterr()


def test_cli_target_module(helper_libs, reset_target_modules):
    caller, helper = helper_libs
    assert cli_main(["dispatch", f"{caller}:gt_calls_helper_pure", "--target-module", helper]) == 0
    assert cli_main(["dispatch", f"{caller}:gt_calls_helper_pure"]) == 1


def test_exports():
    for name in ("check_dispatch", "test_dispatch", "dispatch_target_modules", "DispatchReport"):
        assert name in gradtest.__all__
    assert gradtest.test_dispatch.__test__ is False


# ---------------------------------------------------------------------------------------------
# C++


@pytest.fixture(scope="module")
def cxx_lib(tmp_path_factory) -> str:
    import shutil
    import subprocess

    from dispatch_fixtures.build import FIXTURES

    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        pytest.skip("no C++ compiler")
    out = tmp_path_factory.mktemp("cxx") / "libgtcxx.so"
    proc = subprocess.run([cxx, "-shared", "-fPIC", "-O2", "-o", str(out), str(FIXTURES / "cxx_kernels.cpp")],
                          check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"C++ build failed: {proc.stderr[:200]}")
    return str(out)


def test_cxx_new_delete_virtual_and_throw(cxx_lib):
    new = gradtest.check_dispatch(f"{cxx_lib}:gt_cxx_new_sum")
    assert [c for k, c in failing(new)] == ["_ZdaPv", "_Znam"]
    assert all(k == "allocation" for k, c in failing(new))
    virtual = gradtest.check_dispatch(f"{cxx_lib}:gt_cxx_virtual_sum")
    assert failing(virtual) == [("indirect_call", None)]
    checked = gradtest.check_dispatch(f"{cxx_lib}:gt_cxx_checked")
    assert checked.passed, str(checked)
    assert "__cxa_throw" in {f.callee for f in checked.findings}
    assert all(f.error_path for f in checked.findings)


def test_summaries_are_cached_and_reused(tmp_path):
    lib = str(build(tmp_path / "libcached.so", ["kernels.c"], ["-O2"]))
    target = f"{lib}:gt_softplus_sum"
    first = gradtest.check_dispatch(target)
    cache = dispatch_core.analysis_cache([lib])
    assert len(cache) == len(first.functions) == 2
    assert len(cache) >= len(first.functions)
    size = len(cache)
    again = gradtest.check_dispatch(target)
    assert len(cache) == size  # nothing decoded twice
    assert [f.as_dict() for f in again.findings] == [f.as_dict() for f in first.findings]
    assert again.functions == first.functions and again.instructions == first.instructions
    # a summary reached from another target is reused too: softplus is not decoded again
    gradtest.check_dispatch(f"{lib}:gt_pure_dot")
    assert len(cache) == size + 1


def test_cache_follows_file_changes(tmp_path):
    path = tmp_path / "libchanging.so"
    build(path, ["kernels.c"], ["-O2"])
    assert gradtest.check_dispatch(f"{path}:gt_pure_dot").passed
    old = dispatch_core.analysis_cache([str(path)])
    path.unlink()
    build(path, ["helper.c"], ["-O2"])  # a different library at the same path
    assert dispatch_core.analysis_cache([str(path)]) is not old


def test_pytest_shows_each_half(pytester, libs, monkeypatch):
    # the plugin (gradtest.pytest_plugin) lists every half's outcome from the emitted report;
    # loaded with -p only (an installed gradtest would also bring it through its entry point)
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(
        f"""
        import gradtest

        def test_alloc():
            gradtest.test_dispatch({libs['O2'] + ':gt_alloc_sum'!r}, opt_broken=True)

        def test_pure():
            gradtest.test_dispatch({libs['O2'] + ':gt_pure_dot'!r})
        """
    )
    result = pytester.runpytest("-p", "gradtest.pytest_plugin", "-rA")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "*SKIPPED*test_alloc*gt_alloc_sum: call*no arguments given*",
        "*BROKEN*test_alloc*gt_alloc_sum: opt*allocation*",
        "gradtest: 4 results:*",
    ])
