"""Bundled examples, used by ``python -m gradtest demo`` and the docs.

Each example is a function with a hand-written gradient; one of them is subtly wrong (a missing
factor in one term), the kind of bug gradtest exists to catch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from ._tree import Constant
from .api import check_gradients
from .report import GradientReport


@dataclasses.dataclass(frozen=True)
class Example:
    title: str
    f: Callable[..., Any]
    gradient: Callable[..., Any]
    make_args: Callable[[np.random.Generator], tuple[Any, ...]]
    wrong: bool

    def check(self) -> GradientReport:
        args = self.make_args(np.random.default_rng(0))
        return check_gradients(self.f, *args, gradient=self.gradient)


def seed_f(x, y, z):
    """LuxTestUtils' seed example: x is a Python number and z is None, so both are constant."""
    return x + np.sum(y["t"] ** 2) + np.sum(y["x"]["z"])


def seed_gradient(x, y, z):
    return None, {"t": 2 * y["t"], "x": {"z": np.ones_like(y["x"]["z"])}}, None


def mlp_loss(params, batch):
    """A one-hidden-layer tanh network with a squared-error loss."""
    h = np.tanh(batch["x"] @ params["w1"] + params["b1"])
    pred = h @ params["w2"]
    return 0.5 * np.mean((pred - batch["y"]) ** 2)


def mlp_loss_gradient(params, batch):
    x, y = batch["x"], batch["y"]
    pre = x @ params["w1"] + params["b1"]
    h = np.tanh(pre)
    resid = (h @ params["w2"] - y) / y.size
    dh = np.outer(resid, params["w2"]) if resid.ndim == 1 else resid @ params["w2"].T
    dpre = dh * (1 - h**2)
    grads = {"w1": x.T @ dpre, "b1": dpre.sum(axis=0), "w2": h.T @ resid}
    return grads, None


def logsumexp(x):
    m = np.max(x)
    return m + np.log(np.sum(np.exp(x - m)))


def softmax_wrong_gradient(x):
    """The gradient of logsumexp is softmax(x); this one forgets to normalise by the sum in one
    place, scaling the last component."""
    p = np.exp(x - np.max(x))
    p = p / p.sum()
    p[-1] *= 1.01
    return (p,)


def _mlp_args(rng):
    params = {"w1": rng.standard_normal((4, 8)), "b1": rng.standard_normal(8), "w2": rng.standard_normal(8)}
    # the data are floating arrays too: Constant keeps them out of the differentiation
    batch = Constant({"x": rng.standard_normal((16, 4)), "y": rng.standard_normal(16)})
    return params, batch


EXAMPLES = [
    Example(
        "seed example: f(x, y, z) = x + sum(y['t']**2) + sum(y['x']['z'])",
        seed_f,
        seed_gradient,
        lambda rng: (1.0, {"t": rng.random(10), "x": {"z": np.array([2.0])}}, None),
        wrong=False,
    ),
    Example("MLP loss with a hand-written backward pass", mlp_loss, mlp_loss_gradient, _mlp_args, wrong=False),
    Example(
        "logsumexp with a deliberately wrong gradient (caught)",
        logsumexp,
        softmax_wrong_gradient,
        lambda rng: (rng.standard_normal(6),),
        wrong=True,
    ),
]
