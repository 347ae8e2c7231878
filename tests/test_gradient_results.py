"""The structure of what gradient= returns (issue 12, item 11): for a single argument any tree
may come unwrapped; mismatches say, in the user's terms, what was returned and what was
expected."""

from __future__ import annotations

import dataclasses
from collections import namedtuple

import numpy as np
import pytest

import gradtest

Pair = namedtuple("Pair", "a b")


@dataclasses.dataclass
class Params:
    w: np.ndarray
    scale: float


def _user(f, *args, gradient):
    return gradtest.check_gradients(f, *args, gradient=gradient, backends=["user"]).outcomes["user"]


@pytest.mark.parametrize("wrapped", [False, True], ids=["unwrapped", "1-tuple"])
def test_single_argument_trees_may_come_unwrapped(wrapped):
    wrap = (lambda g: (g,)) if wrapped else (lambda g: g)
    cases = [
        (lambda p: np.sum(p["w"] ** 2), {"w": np.ones(3)}, lambda p: {"w": 2 * p["w"]}),
        (lambda p: np.sum(p.a ** 2) + np.sum(p.b), Pair(np.ones(2), np.ones(3)),
         lambda p: Pair(2 * p.a, np.ones(3))),
        (lambda p: np.sum(p.w ** 2) * p.scale, Params(np.ones(2), 2.0), lambda p: Params(4 * p.w, None)),
        (lambda t: np.sum(t[0] ** 2) + np.sum(t[1]), (np.ones(2), np.ones(3)), lambda t: (2 * t[0], np.ones(3))),
        (lambda t: np.sum(t[0] ** 2) + np.sum(t[1]), [np.ones(2), np.ones(3)], lambda t: [2 * t[0], np.ones(3)]),
    ]
    for f, arg, grad in cases:
        outcome = _user(f, arg, gradient=lambda a, grad=grad: wrap(grad(a)))
        assert outcome.status == "pass", (arg, outcome.message)


def test_a_wrong_unwrapped_gradient_still_fails_at_its_element():
    outcome = _user(lambda p: np.sum(p["w"] ** 2), {"w": np.ones(3)}, gradient=lambda p: {"w": 3 * p["w"]})
    assert outcome.status == "fail" and "args[0]['w']" in outcome.message


def test_dict_with_wrong_keys_says_what_was_returned_and_expected():
    outcome = _user(lambda p: np.sum(p["w"] ** 2), {"w": np.ones(2)}, gradient=lambda p: {"x": 2 * p["w"]})
    assert outcome.status == "error"
    assert outcome.message == (
        "ValueError: gradient= result: returned a dict with keys ['x']; expected the gradient of the "
        "one argument, {'w': array(2,)} (or that wrapped in a 1-tuple), with None for what is not "
        "differentiated (every floating array is; wrap an argument in gradtest.Constant(...) to hold "
        "it fixed)")
    assert "Expected an instance of" not in outcome.message


def test_one_array_for_two_arguments_is_refused_not_copied():
    # before, the array was copied onto both arguments and y's gradient was reported as wrong
    outcome = _user(lambda x, y: np.sum(x ** 2) + np.sum(y), np.ones(2), np.ones(2), gradient=lambda x, y: 2 * x)
    assert outcome.status == "error"
    assert "returned an array of shape (2,); expected a tuple of 2 gradients, one per argument: " \
           "(array(2,), array(2,))" in outcome.message


def test_constants_take_none_or_anything():
    outcome = _user(lambda x, c: np.sum(x ** 2) * c, np.ones(2), 3.0, gradient=lambda x, c: (6 * x, None))
    assert outcome.status == "pass"
    outcome = _user(lambda x, c: np.sum(x ** 2) * c, np.ones(2), 3.0, gradient=lambda x, c: 6 * x)
    assert outcome.status == "pass"  # one array, one differentiated argument: unambiguous


def test_multiple_arguments_describe_the_tree():
    outcome = _user(lambda x, p: np.sum(x) + np.sum(p["w"]), np.ones(2), {"w": np.ones(1), "n": 3},
                    gradient=lambda x, p: (np.ones(2),))
    assert outcome.status == "error"
    assert "returned a tuple of 1; expected a tuple of 2 gradients, one per argument: " \
           "(array(2,), {'w': array(1,), 'n': None})" in outcome.message
