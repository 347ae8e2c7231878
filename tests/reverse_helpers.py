"""Shared helpers of the reverse-mode tests: a plain NumPy finite-difference reference."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from gradtest.reverse import gradient_reverse


def fd_gradient(f: Callable[..., Any], args: tuple[np.ndarray, ...], h: float = 1e-6) -> list[np.ndarray]:
    """Central differences of the scalar f with respect to every argument (in float64)."""
    args64 = [np.array(a, dtype=np.float64) for a in args]
    grads = []
    for i, a in enumerate(args64):
        g = np.zeros_like(a)
        for j in np.ndindex(a.shape):
            old = a[j]
            a[j] = old + h
            up = float(f(*args64))
            a[j] = old - h
            down = float(f(*args64))
            a[j] = old
            g[j] = (up - down) / (2 * h)
        grads.append(g)
    return grads


def scalarize(f: Callable[..., Any], seed: int = 0) -> Callable[..., Any]:
    """<u, f(x)> for a fixed random u of f's output shape, so that every output element counts."""
    cache: dict[tuple[int, ...], np.ndarray] = {}

    def g(*args: Any) -> Any:
        out = f(*args)
        shape = np.shape(out.value if hasattr(out, "value") else out)
        if shape not in cache:
            cache[shape] = np.random.default_rng(seed).standard_normal(shape)
        return np.sum(out * cache[shape])

    return g


def assert_reverse_matches_fd(f: Callable[..., Any], *args: np.ndarray, rtol: float = 1e-5,
                              atol: float = 1e-7) -> None:
    """The reverse gradient of <u, f(args)> agrees with central differences."""
    s = scalarize(f)
    rev = gradient_reverse(s, *args)
    ref = fd_gradient(s, args)
    for i, (r, e, a) in enumerate(zip(rev, ref, args)):
        assert r.shape == np.shape(a), f"argument {i}: gradient shape {r.shape} != {np.shape(a)}"
        np.testing.assert_allclose(r, e, rtol=rtol, atol=atol, err_msg=f"argument {i}")
