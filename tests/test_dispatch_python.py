"""The dispatch check of Python functions: type instability of NumPy code on tracked arrays."""

from __future__ import annotations

import inspect
import json
import os

import numpy as np
import pytest

import gradtest
from gradtest import _events
from gradtest.dispatch import PythonDispatchFinding, PythonDispatchReport

HERE = os.path.basename(__file__)
W64 = np.linspace(0.5, 1.5, 12).reshape(4, 3)  # float64: the classic accidental promotion


def line_of(fn, marker: str) -> str:
    """``test_dispatch_python.py:N`` of the line of fn's source holding ``marker``."""
    lines, first = inspect.getsourcelines(fn)
    for i, text in enumerate(lines):
        if marker in text:
            return f"{HERE}:{first + i}"
    raise AssertionError(f"no {marker!r} in {fn.__name__}")


def mlp32(x, params):
    h = np.tanh(x @ params["W1"] + params["b1"])
    h = np.maximum(h, 0.1 * h)
    y = h @ params["W2"]
    return np.mean((y - 1.0) ** 2) + 1e-3 * np.sum(params["W1"] ** 2)


def mlp_promoting(x, params):
    h = np.tanh(x @ params["W1"] + params["b1"])
    h = h * W64  # promotes
    return np.sum(h @ params["W2"])


@pytest.fixture
def params32():
    rng = np.random.default_rng(0)
    return {"W1": rng.standard_normal((3, 3)).astype(np.float32),
            "b1": rng.standard_normal(3).astype(np.float32),
            "W2": rng.standard_normal((3, 2)).astype(np.float32)}


@pytest.fixture
def x32():
    return np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)


def test_float32_mlp_is_stable(x32, params32):
    before = {k: v.copy() for k, v in params32.items()}
    report = gradtest.check_dispatch(mlp32, x32, params32)
    assert isinstance(report, PythonDispatchReport)
    assert isinstance(report, gradtest.DispatchReport)
    assert report.passed, str(report)
    assert report.findings == []
    assert report.outcomes["call"].status == "pass"
    assert report.outcomes["opt"].status == "pass"
    assert report.reference_dtype == "float32"
    assert report.operations >= 8
    assert report.result.dtype == np.float32
    np.testing.assert_allclose(report.result, mlp32(x32, params32), rtol=1e-6)
    for k in params32:  # the caller's arrays are untouched
        np.testing.assert_array_equal(params32[k], before[k])
    assert gradtest.test_dispatch(mlp32, x32, params32) is not None


def test_float64_array_points_at_the_line(x32, params32):
    report = gradtest.check_dispatch(mlp_promoting, x32, params32)
    assert not report.passed
    assert report.outcomes["call"].status == "pass"
    assert report.outcomes["opt"].status == "fail"
    (f,) = report.findings
    assert isinstance(f, PythonDispatchFinding)
    assert (f.kind, f.symbol, f.dtype_out) == ("type_instability", "multiply", "float64")
    assert f.dtype_in == "float32, float64"
    assert f.location == line_of(mlp_promoting, "# promotes")
    assert f.source.endswith(line_of(mlp_promoting, "# promotes")) and os.path.isabs(f.source.rsplit(":", 1)[0])
    assert f.code == "h = h * W64  # promotes"
    assert f.fails and "float32 to float64" in f.reason
    # the later float64 operations are a consequence, not new findings
    assert report.result.dtype == np.float64


def test_numpy_float64_scalar_but_not_python_float():
    # NumPy 2 (NEP 50): a Python float keeps float32, an np.float64 scalar promotes
    assert (np.ones(2, np.float32) * 2.0).dtype == np.float32
    assert (np.ones(2, np.float32) * np.float64(2.0)).dtype == np.float64

    def python_scalar(x):
        return np.sum(x * 2.0 + 1)

    def numpy_scalar(x):
        scale = np.float64(2.0)
        return np.sum(x * scale)  # scalar

    def reflected(x):
        return np.sum(np.float64(2.0) * x + W64[0, 0] * x)  # reflected

    x = np.ones(5, np.float32)
    assert gradtest.check_dispatch(python_scalar, x).passed
    report = gradtest.check_dispatch(reflected, x)
    assert [(f.symbol, f.dtype_in, f.count) for f in report.failures] == [("multiply", "float64, float32", 2)]
    assert report.failures[0].location == line_of(reflected, "# reflected")
    report = gradtest.check_dispatch(numpy_scalar, x)
    (f,) = report.failures
    assert (f.kind, f.symbol, f.dtype_out) == ("type_instability", "multiply", "float64")
    assert f.dtype_in == "float32, float64"
    assert f.location == line_of(numpy_scalar, "# scalar")


def test_float64_inputs_are_stable_by_construction(x32, params32):
    x64 = x32.astype(np.float64)
    p64 = {k: v.astype(np.float64) for k, v in params32.items()}
    report = gradtest.check_dispatch(mlp_promoting, x64, p64)
    assert report.passed and report.findings == []
    assert report.reference_dtype == "float64"


def test_mixed_inputs_use_the_widest_as_reference():
    def f(a, b):
        return np.sum(a * b)  # float32 * float64 is no instability: an input is float64

    assert gradtest.check_dispatch(f, np.ones(3, np.float32), np.ones(3)).passed


def test_object_arrays():
    def f(x):
        weights = np.array([1.0, 2.0, 3.0], dtype=object)
        return np.sum(x * weights)  # object

    report = gradtest.check_dispatch(f, np.ones(3, np.float32))
    (finding,) = report.findings  # object dtype only, not also the float64 it turns into
    assert finding.kind == "object_dtype" and finding.symbol == "multiply"
    assert "object" in finding.dtype_in
    assert finding.location == line_of(f, "# object")
    assert report.outcomes["opt"].status == "fail"


def test_unsupported_function_is_reported_not_a_crash():
    def f(x):
        y = np.sin(x)
        return np.sum(np.trim_zeros(y))  # unsupported

    report = gradtest.check_dispatch(f, np.ones(3, np.float32))
    assert report.outcomes["call"].status == "fail"
    assert "NotImplementedError" in report.outcomes["call"].message
    assert isinstance(report.outcomes["call"].exception, NotImplementedError)
    (finding,) = report.findings
    assert (finding.kind, finding.symbol) == ("unsupported", "trim_zeros")
    assert finding.location == line_of(f, "# unsupported")
    assert "numpy.trim_zeros" in finding.message
    assert report.result is None
    assert any("raised" in n for n in report.notes)
    # the opt half judges what ran before the exception
    assert report.outcomes["opt"].status == "pass"
    with pytest.raises(AssertionError, match="unsupported"):
        gradtest.test_dispatch(f, np.ones(3, np.float32))


def test_user_exceptions_are_call_findings():
    def helper(x):
        raise ValueError("bad shape")  # raises

    def f(x):
        return helper(x)

    def own_not_implemented(x):
        raise NotImplementedError("not written yet")  # mine

    report = gradtest.check_dispatch(f, np.ones(3))
    (finding,) = report.findings
    assert (finding.kind, finding.symbol, finding.message) == ("exception", "ValueError", "bad shape")
    assert finding.location == line_of(helper, "# raises")
    # a NotImplementedError raised by the user's code is an exception, not an unsupported function
    (finding,) = gradtest.check_dispatch(own_not_implemented, np.ones(3)).findings
    assert finding.kind == "exception" and finding.location == line_of(own_not_implemented, "# mine")


def test_calling_f_itself_fails():
    report = gradtest.check_dispatch(lambda x, y: x, np.ones(2))
    (finding,) = report.findings
    assert finding.kind == "exception" and finding.symbol == "TypeError"
    assert finding.source is None  # the call itself failed: no line of f ran
    assert "gradtest" not in str(report.findings[0].location)


def test_innermost_user_frame_and_counts():
    def layer(h):
        return h * np.float64(0.5)  # in the helper

    def f(x):
        for _ in range(3):
            x = layer(x.astype(np.float32))
        return np.sum(x)

    report = gradtest.check_dispatch(f, np.ones(3, np.float32))
    (finding,) = report.findings
    assert finding.location == line_of(layer, "# in the helper")
    assert finding.count == 3
    assert "(x3)" in str(report)


def test_methods_operators_and_composites():
    def stable(x):
        return (x.T @ x).sum() + x.mean() + np.var(x) + np.linalg.norm(x) + x[0, 0] + x.max()

    def via_method(x):
        return x.mean(axis=0) @ W64  # matmul

    def via_astype(x):
        return np.sum(x.astype(np.float64))  # astype

    x = np.ones((2, 4), np.float32)
    report = gradtest.check_dispatch(stable, x)
    assert report.passed and not report.findings, str(report)
    (finding,) = gradtest.check_dispatch(via_method, x).findings
    assert (finding.symbol, finding.location) == ("matmul", line_of(via_method, "# matmul"))
    (finding,) = gradtest.check_dispatch(via_astype, x).findings
    assert (finding.kind, finding.symbol, finding.dtype_out) == ("type_instability", "astype", "float64")


def test_dropped_tracking():
    def to_float(x):
        return float(np.sum(x)) * np.ones(1, np.float32)  # float

    def to_item(x):
        return np.sum(x).item()  # item

    def to_half(x):
        return np.sum(x.astype(np.float16))  # half

    def to_array(x):
        return np.sum(np.asarray(x))  # asarray

    x = np.ones(3, np.float32)
    for fn, symbol, marker in ((to_float, "float", "# float"), (to_item, "item", "# item"),
                               (to_half, "astype", "# half")):
        report = gradtest.check_dispatch(fn, x)
        kinds = [f.kind for f in report.failures]
        assert kinds == ["dropped_tracking"], (fn.__name__, str(report))
        assert report.failures[0].symbol == symbol
        assert report.failures[0].location == line_of(fn, marker)
        assert report.outcomes["call"].status == "pass"
    report = gradtest.check_dispatch(to_array, x)
    assert report.outcomes["call"].status == "fail"
    assert {(f.kind, f.symbol) for f in report.findings} == {("dropped_tracking", "asarray"),
                                                             ("exception", "TypeError")}
    assert all(f.location == line_of(to_array, "# asarray") for f in report.findings)


def test_untracked_output():
    def constant(x):
        return np.zeros(3, np.float32)

    def not_floating(x):
        return int(np.argmax(x))

    report = gradtest.check_dispatch(constant, np.ones(3, np.float32))
    (finding,) = report.findings
    assert finding.kind == "untracked_output" and finding.dtype_out == "float32"
    assert finding.location == line_of(constant, "def constant")
    assert gradtest.check_dispatch(not_floating, np.ones(3, np.float32)).passed


def test_allow_silences_opt_findings(x32, params32):
    for allow in (["multiply"], ["type_instability"], "mult*", [line_of(mlp_promoting, "# promotes")]):
        report = gradtest.check_dispatch(mlp_promoting, x32, params32, allow=allow)
        assert report.passed, allow
        (f,) = report.findings
        assert not f.fails and "allowed by allow=" in f.reason
        assert "allowed finding" in report.outcomes["opt"].message
    # other names do not match
    assert not gradtest.check_dispatch(mlp_promoting, x32, params32, allow=["add", "object_dtype"]).passed

    def unsupported(x):
        return np.sum(np.trim_zeros(x))

    # allow= does not touch the call half: use call_broken
    assert not gradtest.check_dispatch(unsupported, x32, allow=["*"]).passed
    with pytest.raises(TypeError, match="allow"):
        gradtest.check_dispatch(mlp32, x32, params32, allow=[3])


def test_broken_semantics(x32, params32):
    report = gradtest.check_dispatch(mlp_promoting, x32, params32, opt_broken=True)
    assert report.outcomes["opt"].status == "broken" and report.passed
    report = gradtest.check_dispatch(mlp32, x32, params32, opt_broken=True)
    assert report.outcomes["opt"].status == "unexpected_pass" and not report.passed
    with pytest.raises(AssertionError, match="unexpected_pass"):
        gradtest.test_dispatch(mlp32, x32, params32, opt_broken=True)

    def unsupported(x):
        return np.sum(np.trim_zeros(x))

    report = gradtest.check_dispatch(unsupported, x32, call_broken=True)
    assert report.outcomes["call"].status == "broken" and report.passed
    report = gradtest.check_dispatch(mlp32, x32, params32, call_broken=True)
    assert report.outcomes["call"].status == "unexpected_pass" and not report.passed


def test_no_floating_arguments():
    report = gradtest.check_dispatch(lambda n: np.arange(n) * 2, 4)
    assert report.outcomes["opt"].status == "skipped"
    assert report.outcomes["call"].status == "pass" and report.passed
    np.testing.assert_array_equal(report.result, [0, 2, 4, 6])


def test_c_only_options_are_refused(x32, params32):
    for kwargs in ({"signature": "double(double)"}, {"target_modules": ["libm"]}, {"max_depth": 3},
                   {"timeout": 1.0}):
        with pytest.raises(TypeError, match="only applies to C targets"):
            gradtest.check_dispatch(mlp32, x32, params32, **kwargs)
    with pytest.raises(TypeError, match="expected a ctypes or cffi function pointer"):
        gradtest.check_dispatch(3.5)


def test_report_text_html_and_data(x32, params32):
    report = gradtest.check_dispatch(mlp_promoting, x32, params32)
    text = str(report)
    assert "gradtest dispatch: mlp_promoting (Python" in text
    assert "reference dtype float32" in text
    assert "type_instability" in text and "multiply (float32, float64 -> float64)" in text
    assert line_of(mlp_promoting, "# promotes") in text and "h = h * W64" in text
    assert text.rstrip().endswith("FAILED")
    page = report._repr_html_()
    assert page.startswith("<div>") and "type_instability" in page and "FAILED" in page
    assert "<code>h = h * W64  # promotes</code>" in page
    assert repr(report).startswith("<PythonDispatchReport mlp_promoting: call=pass, opt=fail, 1 failing")
    data = json.loads(json.dumps(report.as_dict()))
    assert data["language"] == "python" and data["findings"][0]["kind"] == "type_instability"
    clean = gradtest.check_dispatch(mlp32, x32, params32)
    assert str(clean).rstrip().endswith("PASSED") and "findings" not in str(clean)
    with pytest.raises(AssertionError, match="h = h \\* W64"):
        gradtest.test_dispatch(mlp_promoting, x32, params32)


def test_report_is_emitted_by_test_dispatch(x32, params32):
    seen = []
    with _events.listening(lambda report, raised: seen.append(report)):
        gradtest.check_dispatch(mlp_promoting, x32, params32)
        assert seen == []  # check_ forms decide nothing, so they report nothing
        with pytest.raises(AssertionError):
            gradtest.test_dispatch(mlp_promoting, x32, params32)
    assert len(seen) == 1 and isinstance(seen[0], PythonDispatchReport)
    assert seen[0].target == "mlp_promoting"


def test_arrays_kept_after_the_check_behave_as_tracked():
    kept = []

    def f(x):
        kept.append(x * 2.0)
        return np.sum(x)

    assert gradtest.check_dispatch(f, np.ones(2, np.float32)).passed
    # the tape is released after the check; the kept array is a plain (dead) tracked array
    assert isinstance(kept[0], gradtest.reverse.Tracked)
