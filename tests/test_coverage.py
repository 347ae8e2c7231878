"""NumPy/SciPy coverage of both AD engines (issue 10, part 5).

Every case of ``tests/_coverage_cases.py`` (third-party-style gradient checks) runs in the
forward and in the reverse engine against the finite-difference ground truth and must pass. The
few that an engine does not support yet are listed in :data:`UNSUPPORTED` by name with the
reason; those must raise NotImplementedError (never a wrong gradient, never a silent zero), and
a listed case that starts passing fails here, so the list cannot go stale.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from _coverage_cases import all_cases, run_case

ENGINES = ("forward", "reverse")

# (case, engine) -> why it is not supported; regenerate with
# ``PYTHONPATH=python python tests/coverage_report.py --expected``
UNSUPPORTED: dict[tuple[str, str], str] = {
}

_ALL = all_cases()


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", _ALL, ids=[c.name for c in _ALL])
def test_case(case, engine):
    if case.scipy:
        pytest.importorskip("scipy")
    with warnings.catch_warnings():
        # the cases run NumPy on NaN-masked and boundary inputs, as users' code does
        warnings.simplefilter("ignore", RuntimeWarning)
        kind, message = run_case(case, engine)
    reason = UNSUPPORTED.get((case.name, engine))
    if reason is None:
        assert kind == "pass", f"{engine}: {kind}: {message}"
    else:
        assert kind != "pass", f"{case.name} now passes in {engine}: remove it from UNSUPPORTED"
        assert kind == "unsupported", f"{engine}: expected NotImplementedError ({reason}), got {kind}: {message}"


def test_unsupported_list_names_real_cases():
    names = {c.name for c in _ALL}
    assert not [key for key in UNSUPPORTED if key[0] not in names or key[1] not in ENGINES]


def test_cases_cover_issue_functions():
    """Every function issue 10 part 5 lists has at least one case (by the name it is written in)."""
    import _coverage_cases
    with open(_coverage_cases.__file__, encoding="utf-8") as fh:
        source = fh.read()
    wanted = (
        "np.array( np.r_ np.c_ np.append svd solve eigh cholesky det slogdet inv pinv eig( \"nuc\" "
        "qr es( tril triu diag roll rot90 split array_split hsplit vsplit dsplit pad cross kron "
        "partition select linspace gradient fliplr flipud rollaxis average nansum nanmean nanmax "
        "nanmin nanprod nanstd nanvar nancumsum copysign heaviside sinc ptp nan_to_num "
        "gammaln digamma polygamma \"erf\" erfc erfinv erfcinv expit logit xlogy xlog1py ndtr "
        "log_ndtr ndtri \"i0\" \"i1\" i0e i1e ive \"iv\" \"jv\" \"yv\" \"kv\" \"gamma\" \"beta\" "
        "betaln loggamma psi spherical_jn logsumexp softmax log_softmax entr rel_entr kl_div "
        "logpdf .pdf( .cdf( logcdf multivariate_normal"
    ).split()
    assert [w for w in wanted if w not in source] == []


@pytest.mark.parametrize("engine", ENGINES)
def test_unsupported_scipy_function_is_named(engine):
    """A SciPy ufunc without a rule is refused naming scipy.special, not numpy."""
    special = pytest.importorskip("scipy.special")
    import gradtest
    report = gradtest.check_gradients(lambda x: np.sum(special.struve(1.0, x)), np.array([0.5, 1.5]),
                                      backends=[engine])
    outcome = report.outcomes[engine]
    assert outcome.status == "error"
    assert isinstance(outcome.exception, NotImplementedError)
    assert "scipy.special.struve" in str(outcome.exception)


def test_import_gradtest_does_not_import_scipy():
    code = ("import sys, numpy as np, gradtest, gradtest.forward, gradtest.reverse;"
            "from gradtest.forward import Dual;"
            "d = Dual(np.ones(2), np.eye(2)); np.sum(np.sin(d));"
            "print('scipy' in sys.modules)")
    env = dict(os.environ)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120, check=True)
    assert out.stdout.strip() == "False"


def _agreement_cases():
    import _coverage_cases as cc
    return [c for c in cc.CASES if (c.name, "forward") not in UNSUPPORTED
            and (c.name, "reverse") not in UNSUPPORTED]


_AGREE = _agreement_cases()


@pytest.mark.parametrize("case", _AGREE, ids=[c.name for c in _AGREE])
def test_engines_agree_and_keep_numpys_values(case):
    """Forward and reverse give the same gradient (rtol 1e-12, same NaN positions), and the
    primal each engine computes is NumPy's/SciPy's own value."""
    if case.scipy:
        pytest.importorskip("scipy")
    import gradtest
    from gradtest._building import building_arrays
    from gradtest.forward import Dual
    from _coverage_cases import scalarized

    f = scalarized(case)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        fwd = gradtest.gradient(f, *case.args, backend="forward")
        rev = gradtest.gradient(f, *case.args, backend="reverse")
        for g_f, g_r in zip(fwd, rev):
            if g_f is not None:
                np.testing.assert_allclose(g_f, g_r, rtol=1e-12, atol=1e-13, equal_nan=True)
        plain = case.f(*case.args, **case.kwargs)
        duals = [Dual(a, np.zeros((1,) + a.shape)) if isinstance(a, np.ndarray) and a.dtype.kind == "f"
                 else a for a in case.args]
        with building_arrays():  # as the engines' entry points run f
            traced = case.f(*duals, **case.kwargs)
    for p, t in zip(_leaves(plain), _leaves(traced)):
        t = t.value if isinstance(t, Dual) else t
        np.testing.assert_allclose(np.asarray(t), np.asarray(p), rtol=1e-14, atol=0, equal_nan=True)


def _leaves(out):
    if isinstance(out, (tuple, list)):
        return [leaf for o in out for leaf in _leaves(o)]
    return [out]


@pytest.mark.parametrize("case", _AGREE, ids=[c.name for c in _AGREE])
def test_second_order_is_right(case):
    """Reverse over reverse (order=2): every Hessian-vector product through the coverage rules is
    right; none is refused (the value-computed rules have their trapezoid-form second order) and
    none is silently wrong."""
    if case.scipy:
        pytest.importorskip("scipy")
    import gradtest
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        report = gradtest.check_gradients(case.f, *case.args, backends=["reverse"], order=2,
                                          kwargs=case.kwargs)
    outcome = report.outcomes["reverse:hvp"]
    assert outcome.status == "pass", outcome.message
