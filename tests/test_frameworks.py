"""Framework backends (torch, JAX, HIPS autograd) and framework arrays as leaves.

Each framework's tests skip when it is not installed (``pip install ".[torch,jax,autograd]"``);
the registry tests at the top run everywhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import gradtest
from gradtest.backends import get_backend

PYTHON_DIR = str(Path(gradtest.__file__).resolve().parents[1])
N = 1000  # size of the "done when" cases: gradcheck and check_grads both miss a 1e-4 error here
WRONG = 37  # the element the wrong rules get wrong
REL_ERROR = 1e-4


def _run(code: str, extra_path: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (extra_path, PYTHON_DIR) if p))
    return subprocess.run([sys.executable, "-W", "error", "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=120)


# ---------------------------------------------------------------------------------------------
# the registry: lazy imports, the entry-point group, why a backend did not run


def test_importing_and_checking_numpy_code_imports_no_framework():
    result = _run("""
        import sys, numpy as np, gradtest
        report = gradtest.check_gradients(lambda x: np.sum(x ** 2), np.arange(3.0))
        assert report.passed, report
        loaded = sorted(m for m in ("torch", "jax", "autograd") if m in sys.modules)
        assert not loaded, loaded
        print("ok")
    """)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_entry_point_group_registers_a_third_party_backend(tmp_path):
    (tmp_path / "gt_plugin.py").write_text(textwrap.dedent("""
        import gradtest
        def register():
            gradtest.register_backend("plugin_double", lambda problem: [2 * x for x in problem.diff_leaves],
                                      description="2x, a plugin backend")
    """))
    (tmp_path / "gt_broken.py").write_text("raise RuntimeError('broken on purpose')\n")
    dist = tmp_path / "gt_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: gt-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[gradtest.backends]\nplugin_double = gt_plugin:register\nbroken = gt_broken\n")
    result = _run("""
        import warnings, numpy as np, gradtest
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            names = gradtest.available_backends()
        assert "plugin_double" in names, names
        assert any("'broken'" in str(w.message) and "broken on purpose" in str(w.message)
                   and w.category is RuntimeWarning for w in caught), [str(w.message) for w in caught]
        report = gradtest.check_gradients(lambda x: np.sum(x ** 2), np.arange(1.0, 4.0))
        assert report.outcomes["plugin_double"].status == "pass", report
        print("ok")
    """, extra_path=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_report_says_why_a_default_backend_did_not_run():
    x = np.linspace(0.1, 1.0, 5000)  # above forward mode's default size limit
    report = gradtest.check_gradients(lambda x: np.sum(x ** 2), x, mode="directional", n_directions=8)
    assert "forward" not in report.outcomes
    note = next(n for n in report.notes if n.startswith("not run by default"))
    assert "forward (not applicable to these inputs" in note


def test_backends_for_other_array_types_share_one_clause_of_the_note():
    report = gradtest.check_gradients(lambda x: np.sum(x ** 2), np.linspace(0.1, 1.0, 5))
    note = next(n for n in report.notes if n.startswith("not run by default"))
    assert note.count("args[0] is") == 1, note  # one clause, whichever frameworks are installed
    assert "cuda_reverse (" in note and "device arrays; args[0] is a NumPy array)" in note


def test_a_backend_that_does_not_apply_is_skipped_with_its_reason():
    from gradtest.backends import BackendNotApplicable

    def compute(problem):
        raise BackendNotApplicable("needs a forward rule")

    gradtest.register_backend("not_applicable_here", compute, default=False)
    try:
        report = gradtest.check_gradients(lambda x: np.sum(x ** 2), np.arange(3.0),
                                          backends=["not_applicable_here", "reverse"])
    finally:
        gradtest.unregister_backend("not_applicable_here")
    outcome = report.outcomes["not_applicable_here"]
    assert outcome.status == "skipped" and outcome.message == "not applicable: needs a forward rule"
    assert report.passed


def test_register_backend_rejects_bad_array_types():
    with pytest.raises(TypeError, match="array_types"):
        gradtest.register_backend("bad_kinds", lambda p: [], array_types=())


def test_engines_arrays_expose_the_numpy_array_namespace():
    def f(x):
        xp = x.__array_namespace__()
        return xp.sum(xp.sin(x) * xp.exp(-x))

    report = gradtest.test_gradients(f, np.linspace(0.1, 1.0, 7), backends=["forward", "reverse"])
    assert [o.status for o in report.outcomes.values()] == ["pass", "pass"]


# ---------------------------------------------------------------------------------------------
# torch


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def _cube_function(torch, rel_error: float):
    """x**3 as a torch.autograd.Function whose backward is off by rel_error in element WRONG."""

    class Cube(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x ** 3

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            g = 3 * x ** 2 * grad
            scale = torch.ones_like(g)
            scale[WRONG] += rel_error
            return g * scale

    return Cube


def _inputs(n: int = N) -> np.ndarray:
    return np.random.default_rng(0).uniform(0.5, 1.5, n)


def test_torch_leaves_pass_in_float64_and_float32(torch):
    for dtype in (torch.float64, torch.float32):
        x = torch.linspace(0.1, 1.0, 12, dtype=dtype).reshape(3, 4)
        report = gradtest.test_gradients(lambda x: (torch.sin(x) ** 2).sum() + x.prod(), x)
        assert set(report.outcomes) == {"torch", "torch_fwd"}, report
        assert all(o.status == "pass" for o in report.outcomes.values()), report
        note = next(n for n in report.notes if n.startswith("not run by default"))
        assert "forward, reverse" in note and "args[0] is a torch tensor" in note


def test_wrong_torch_function_is_caught_where_gradcheck_passes_it(torch):
    wrong = _cube_function(torch, REL_ERROR)
    x = torch.from_numpy(_inputs())
    assert torch.autograd.gradcheck(wrong.apply, (x.clone().requires_grad_(True),))
    report = gradtest.check_gradients(lambda x: wrong.apply(x).sum(), x)
    outcome = report.outcomes["torch"]
    assert outcome.status == "fail"
    assert outcome.worst.name == f"args[0][{WRONG}]"
    assert f"args[0][{WRONG}]" in outcome.message
    assert any("Cube.backward" in n for n in report.notes), report.notes
    with pytest.raises(AssertionError, match=rf"args\[0\]\[{WRONG}\]"):
        gradtest.test_gradients(lambda x: wrong.apply(x).sum(), x)


def test_correct_torch_function_passes_in_float64_and_float32(torch):
    right = _cube_function(torch, 0.0)
    for dtype in (torch.float64, torch.float32):
        x = torch.from_numpy(_inputs()).to(dtype)
        report = gradtest.test_gradients(lambda x: right.apply(x).sum(), x)
        assert report.outcomes["torch"].status == "pass"
        # forward mode needs a jvp rule, which this Function does not define: skipped, not an error
        fwd = report.outcomes["torch_fwd"]
        assert fwd.status == "skipped" and "jvp" in fwd.message


def test_torch_function_with_a_wrong_jvp_is_caught_by_torch_fwd(torch):
    class Square(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            ctx.x = x
            return x ** 2

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return 2 * x * grad

        @staticmethod
        def jvp(ctx, tangent):
            return 2.001 * ctx.x * tangent

    x = torch.linspace(0.5, 1.5, 6, dtype=torch.float64)
    report = gradtest.check_gradients(lambda x: Square.apply(x).sum(), x)
    assert report.outcomes["torch"].status == "pass"
    assert report.outcomes["torch_fwd"].status == "fail"


def test_torch_ground_truth_runs_f_on_float64_cpu_tensors_and_leaves_inputs_alone(torch):
    seen = set()

    def f(x, params):
        seen.add((type(x).__name__, str(x.dtype)))
        return (params["w"] * torch.tanh(x)).sum() + params["b"].sum()

    x = torch.linspace(0.1, 1.0, 5, dtype=torch.float32, requires_grad=True)
    params = {"w": torch.arange(5.0), "b": torch.ones(2, dtype=torch.float64), "k": torch.arange(3)}
    before = x.detach().clone()
    report = gradtest.test_gradients(f, x, params)
    assert ("Tensor", "torch.float64") in seen  # the ground truth
    assert ("Tensor", "torch.float32") in seen  # the backends, in the input's dtype
    assert torch.equal(x.detach(), before) and x.requires_grad and x.grad is None
    assert report.ground_truth[1]["k"] is None  # an integer tensor is held constant
    np.testing.assert_allclose(report.ground_truth[1]["b"], np.ones(2))


def test_torch_module_parameters_and_array_outputs(torch):
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 3).double()  # parameters require grad: f's output does too

    def f(x):
        return torch.tanh(layer(x))  # an array output, checked through a random cotangent

    x = torch.linspace(-1.0, 1.0, 8, dtype=torch.float64).reshape(2, 4)
    report = gradtest.test_gradients(f, x, order=2)
    assert report.outcomes["torch"].status == "pass"
    assert report.outcomes["torch:hvp"].status == "pass"


def test_torch_backend_errors_name_the_problem(torch):
    x = torch.linspace(0.1, 1.0, 4, dtype=torch.float64)
    report = gradtest.check_gradients(lambda x: x.detach().sum(), x, backends=["torch"])
    outcome = report.outcomes["torch"]
    assert outcome.status == "error" and "torch cannot differentiate" in outcome.message


def test_float32_parameters_in_a_float64_ground_truth_get_a_hint(torch):
    layer = torch.nn.Linear(3, 2)  # float32 parameters, not among the arguments

    def f(x):
        return layer(x).sum()

    x = torch.ones(4, 3)
    report = gradtest.check_gradients(f, x)
    assert not report.passed
    assert any("ground_truth_dtype=numpy.float32" in n for n in report.notes), report.notes
    report = gradtest.check_gradients(f, x, ground_truth_dtype=np.float32)
    assert report.outcomes["torch"].status == "pass", report


def test_hand_written_gradient_of_tensors(torch):
    x = torch.linspace(0.1, 1.0, 5, dtype=torch.float64)
    report = gradtest.test_gradients(lambda x: (x ** 3).sum(), x, gradient=lambda x: 3 * x ** 2)
    assert report.outcomes["user"].status == "pass"
    report = gradtest.check_gradients(lambda x: (x ** 3).sum(), x, gradient=lambda x: 3.01 * x ** 2)
    assert report.outcomes["user"].status == "fail"


def test_named_torch_backend_runs_on_numpy_leaves(torch):
    def f(x):  # NumPy for the ground truth, torch for the backend
        if isinstance(x, torch.Tensor):
            return (x ** 3).sum()
        return np.sum(x ** 3)

    report = gradtest.test_gradients(f, np.linspace(0.1, 1.0, 5), backends=["torch", "reverse"])
    assert report.outcomes["torch"].status == "pass"


def _array_api_f(x, w):
    xp = x.__array_namespace__()
    return xp.sum(xp.tanh(xp.matmul(w, x)) ** 2) + xp.sum(xp.exp(-x))


def test_array_api_function_runs_under_torch_on_numpy_inputs(torch):
    pytest.importorskip("array_api_compat")
    x, w = np.linspace(0.1, 1.0, 6), np.arange(24.0).reshape(4, 6) / 20
    names = ["forward", "reverse", "torch", "torch_fwd"]
    report = gradtest.test_gradients(_array_api_f, x, w, backends=names, order=2)
    assert list(report.outcomes) == names + ["reverse:hvp", "torch:hvp"]
    assert all(o.status == "pass" for o in report.outcomes.values())


# ---------------------------------------------------------------------------------------------
# JAX


@pytest.fixture
def jax():
    return pytest.importorskip("jax")


def _cube_vjp(jax, rel_error: float):
    """x**3 as a jax.custom_vjp whose bwd rule is off by rel_error in element WRONG."""

    @jax.custom_vjp
    def cube(x):
        return x ** 3

    def cube_fwd(x):
        return x ** 3, x

    def cube_bwd(x, g):
        return ((3 * x ** 2 * g).at[WRONG].multiply(1 + rel_error),)

    cube.defvjp(cube_fwd, cube_bwd)
    return cube


def test_jax_leaves_pass_in_float32_and_float64(jax):
    jnp = jax.numpy

    def f(x, y):
        return jnp.sum(jnp.sin(x) * y["w"]) + jnp.prod(x)

    x32 = jnp.linspace(0.1, 1.0, 6, dtype=jnp.float32)
    report32 = gradtest.test_gradients(f, x32, {"w": jnp.ones(6, dtype=jnp.float32)})
    assert set(report32.outcomes) == {"jax", "jax_fwd"}
    with jax.enable_x64(True):
        x64 = jnp.linspace(0.1, 1.0, 6, dtype=jnp.float64)
        report = gradtest.test_gradients(f, x64, {"w": jnp.ones(6)}, order=2)
    # a float64 gradient is held to float64's (tighter) tolerance
    assert report.outcomes["jax"].rtol < report32.outcomes["jax"].rtol
    assert report.outcomes["jax:hvp"].status == "pass"


def test_wrong_jax_custom_vjp_is_caught_where_check_grads_passes_it(jax):
    from jax.test_util import check_grads

    jnp = jax.numpy
    cube = _cube_vjp(jax, REL_ERROR)
    f = jax.jit(lambda x: jnp.sum(cube(x)))
    with jax.enable_x64(True):
        x = jnp.asarray(_inputs())
        check_grads(f, (x,), order=1, modes=["rev"])  # passes: the wrong element is missed
        report = gradtest.check_gradients(f, x)
    outcome = report.outcomes["jax"]
    assert outcome.status == "fail"
    assert outcome.worst.name == f"args[0][{WRONG}]"
    assert any("cube_bwd at" in n and "jax.custom_vjp" in n for n in report.notes), report.notes
    assert report.outcomes["jax_fwd"].status == "skipped"  # custom_vjp has no forward mode


def test_correct_jax_custom_vjp_passes_in_float64_and_float32(jax):
    jnp = jax.numpy
    cube = _cube_vjp(jax, 0.0)
    f = jax.jit(lambda x: jnp.sum(cube(x)))
    gradtest.test_gradients(f, jnp.asarray(_inputs(), dtype=jnp.float32))
    with jax.enable_x64(True):
        report = gradtest.test_gradients(f, jnp.asarray(_inputs()))
    assert report.outcomes["jax"].status == "pass"


def test_wrong_jax_custom_jvp_is_caught_and_named(jax):
    jnp = jax.numpy

    @jax.custom_jvp
    def square(x):
        return x ** 2

    @square.defjvp
    def square_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        return x ** 2, 2.01 * x * t

    report = gradtest.check_gradients(lambda x: jnp.sum(square(x)), jnp.linspace(0.5, 1.5, 5))
    assert report.outcomes["jax"].status == "fail"
    assert report.outcomes["jax_fwd"].status == "fail"
    assert any("square_jvp" in n for n in report.notes), report.notes


def test_jax_ground_truth_sees_fresh_jax_arrays_in_float64(jax):
    jnp = jax.numpy
    seen = []

    def f(x):
        seen.append((isinstance(x, jax.Array), str(x.dtype), float(x[0])))
        return jnp.sum(x ** 2)

    x = jnp.linspace(1.0, 2.0, 3, dtype=jnp.float32)
    report = gradtest.check_gradients(f, x, backends=["jax"])
    np.testing.assert_allclose(report.ground_truth[0], 2 * np.linspace(1.0, 2.0, 3), rtol=1e-9)
    assert (True, "float64", 1.0) in seen
    # the engine's perturbations of x[0] reached f: each evaluation converted the buffer anew
    assert len({v for ok, dtype, v in seen if dtype == "float64"}) > 2


def test_array_api_function_runs_under_jax_and_gradtests_engines(jax):
    jnp = jax.numpy
    f = _array_api_f
    x, w = np.linspace(0.1, 1.0, 6), np.arange(24.0).reshape(4, 6) / 20
    names = ["forward", "reverse", "jax", "jax_fwd"]
    report = gradtest.test_gradients(f, x, w, backends=names)
    assert list(report.outcomes) == names
    with jax.enable_x64(True):
        report = gradtest.test_gradients(f, jnp.asarray(x), jnp.asarray(w), backends=names)
    assert all(o.status == "pass" for o in report.outcomes.values())


# ---------------------------------------------------------------------------------------------
# HIPS autograd


@pytest.fixture
def autograd():
    return pytest.importorskip("autograd")


def test_autograd_runs_by_default_on_autograd_code_only(autograd):
    import autograd.numpy as anp

    def f(x):
        return anp.sum(anp.tanh(x) ** 2)

    x = np.linspace(0.1, 1.0, 6)
    report = gradtest.test_gradients(f, x)
    assert report.outcomes["autograd"].status == "pass"
    report = gradtest.test_gradients(lambda x: np.sum(np.tanh(x) ** 2), x)
    assert "autograd" not in report.outcomes
    assert any("autograd (not applicable" in n for n in report.notes)


def test_wrong_autograd_defvjp_is_caught(autograd):
    from autograd.extend import defvjp, primitive

    @primitive
    def cube(x):
        return x ** 3

    defvjp(cube, lambda ans, x: lambda g: 3 * x ** 2 * g * np.where(np.arange(x.size) == 2, 1.001, 1.0))
    x = np.linspace(0.5, 1.5, 5)
    report = gradtest.check_gradients(lambda x: np.sum(cube(x)), x)  # cube is an autograd primitive
    assert report.outcomes["autograd"].status == "fail"
    assert report.outcomes["autograd"].worst.name == "args[0][2]"


def test_framework_backends_are_registered_with_their_array_types(torch, jax):
    assert get_backend("torch").array_types == ("torch",)
    assert get_backend("jax_fwd").array_types == ("jax",)
    assert get_backend("torch").hvp is not None and get_backend("jax").hvp is not None


def test_array_api_function_runs_under_every_engine_in_one_call(torch, jax):
    pytest.importorskip("array_api_compat")
    names = ["forward", "reverse", "torch", "torch_fwd", "jax", "jax_fwd"]
    report = gradtest.test_gradients(_array_api_f, np.linspace(0.1, 1.0, 6), np.arange(24.0).reshape(4, 6) / 20,
                                     backends=names)
    assert list(report.outcomes) == names
