from __future__ import annotations

import numpy as np
import pytest

import gradtest
from gradtest.backends import unregister_backend

pytest_plugins = ["pytester"]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261126)


@pytest.fixture
def temporary_backend():
    """Registers backends for one test and removes them afterwards."""
    names = []

    def register(name, compute, **kw):
        gradtest.register_backend(name, compute, default=False, **kw)
        names.append(name)

    yield register
    for name in names:
        unregister_backend(name)
