"""Arguments are validated up front, with messages that name the argument."""

from __future__ import annotations

import numpy as np
import pytest

import gradtest


@pytest.mark.parametrize("bad", ["1e-3", True, [1e-3], None.__class__])
@pytest.mark.parametrize("argument", ["atol", "rtol"])
def test_tolerances_are_real_numbers(argument, bad):
    with pytest.raises(TypeError, match=argument):
        gradtest.check_gradients(np.sum, np.ones(3), **{argument: bad})


@pytest.mark.parametrize("option, bad", [("seed", -1), ("seed", 1.5), ("seed", True), ("rel_step", "0.1"),
                                         ("time_budget", 0), ("n_directions", 0), ("kinks", "ignore"),
                                         ("richardson", "yes")])
def test_finite_difference_options_are_validated(option, bad):
    with pytest.raises(ValueError, match=option):
        gradtest.check_gradients(np.sum, np.ones(3), **{option: bad})



@pytest.mark.parametrize("args, tangents, match", [
    (np.ones(3), [np.ones(3)], "args: expected a tuple or list"),
    ([np.ones(3)], np.ones(3), "tangents: expected a tuple or list"),
    ([np.ones(3)], None, "tangents: expected a tuple or list"),
    ([np.ones(3)], "x", "tangents: expected a tuple or list"),
])
def test_jvp_arguments(args, tangents, match):
    with pytest.raises(TypeError, match=match):
        gradtest.jvp(np.sum, args, tangents)
    assert gradtest.jvp(np.sum, [np.ones(3)], [np.ones(3)])[1] == 3.0
