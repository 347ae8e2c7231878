"""The op table: every entry has all of its rules, and each rule is right.

Both engines (forward and reverse) read this one table, so these checks guard both."""

from __future__ import annotations

import numpy as np
import pytest

from gradtest import _core, _forward

TABLE = _core.op_table()
NAMES = [entry["name"] for entry in TABLE]

# points inside each op's domain, away from kinks (shared by both arguments of binary ops)
DOMAIN = {
    "log": (0.2, 3.0), "log2": (0.2, 3.0), "log10": (0.2, 3.0), "sqrt": (0.2, 3.0),
    "reciprocal": (0.3, 3.0), "power": (0.3, 2.0), "divide": (0.5, 2.0), "cbrt": (0.2, 3.0),
    "log1p": (-0.5, 3.0), "arcsin": (-0.9, 0.9), "arccos": (-0.9, 0.9), "arctanh": (-0.9, 0.9),
    "arccosh": (1.2, 3.0), "tan": (-1.2, 1.2), "remainder": (0.5, 2.0), "fmod": (0.5, 2.0),
}
NON_DIFFERENTIABLE = {"sign"}


def test_table_is_complete():
    assert len(TABLE) == len(set(NAMES)), "duplicate op names"
    assert NAMES == list(_forward.op_names()), "the two extensions disagree on the table"
    for entry in TABLE:
        assert entry["arity"] in (1, 2), entry
        assert entry["has_value"], entry["name"]
        assert len(entry["differentiable"]) == entry["arity"], entry["name"]
        assert entry["kink_rule"], entry["name"]
        if entry["name"] in NON_DIFFERENTIABLE:
            assert not any(entry["differentiable"]), entry["name"]
        else:
            assert all(entry["differentiable"]), f"{entry['name']} lacks a derivative rule"


def test_every_entry_is_a_numpy_ufunc():
    for name in NAMES:
        ufunc = getattr(np, "absolute" if name == "abs" else name)
        assert isinstance(ufunc, np.ufunc), name
        assert ufunc.nin == next(e["arity"] for e in TABLE if e["name"] == name)


@pytest.mark.parametrize("entry", TABLE, ids=NAMES)
def test_values_match_numpy(entry):
    rng = np.random.default_rng(1)
    lo, hi = DOMAIN.get(entry["name"], (-2.0, 2.0))
    args = [rng.uniform(lo, hi, 50) for _ in range(entry["arity"])]
    ufunc = getattr(np, "absolute" if entry["name"] == "abs" else entry["name"])
    out = _core.op_partials(entry["name"], *args)
    np.testing.assert_allclose(out[0], ufunc(*args), rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("entry", [e for e in TABLE if e["name"] not in NON_DIFFERENTIABLE],
                         ids=[n for n in NAMES if n not in NON_DIFFERENTIABLE])
def test_partials_match_finite_differences(entry):
    rng = np.random.default_rng(2)
    lo, hi = DOMAIN.get(entry["name"], (-2.0, 2.0))
    args = [rng.uniform(lo, hi, 40) for _ in range(entry["arity"])]
    if entry["name"] in ("maximum", "minimum", "fmax", "fmin", "abs"):
        # keep the arguments apart from the kink
        args[0] = np.where(np.abs(args[0]) < 0.05, 0.5, args[0])
    out = _core.op_partials(entry["name"], *args)
    for k in range(entry["arity"]):
        h = 1e-6
        plus = [a.copy() for a in args]
        minus = [a.copy() for a in args]
        plus[k] += h
        minus[k] -= h
        fd = (_core.op_partials(entry["name"], *plus)[0] - _core.op_partials(entry["name"], *minus)[0]) / (2 * h)
        np.testing.assert_allclose(out[1 + k], fd, rtol=1e-5, atol=1e-7, err_msg=f"d/d arg{k}")


def test_documented_kinks():
    y, d = _core.op_partials("abs", np.array([0.0, -1.0, 2.0]))
    np.testing.assert_array_equal(d, [0.0, -1.0, 1.0])
    _, da, db = _core.op_partials("maximum", np.array([1.0, 2.0]), np.array([1.0, 1.0]))
    np.testing.assert_array_equal(da, [0.5, 1.0])
    np.testing.assert_array_equal(db, [0.5, 0.0])
    _, da, db = _core.op_partials("fmax", np.array([np.nan, 1.0]), np.array([3.0, np.nan]))
    np.testing.assert_array_equal(da, [0.0, 1.0])
    np.testing.assert_array_equal(db, [1.0, 0.0])
    _, d = _core.op_partials("sqrt", np.array([0.0]))
    assert d[0] == np.inf
