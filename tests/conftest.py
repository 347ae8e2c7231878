from __future__ import annotations

import sys

import numpy as np
import pytest

import gradtest
from gradtest.backends import unregister_backend

# An installed gradtest brings its pytest plugin through the `pytest11` entry point, which pytest
# loads before this file. A source checkout (PYTHONPATH=python) has no entry point, so the plugin
# is loaded here; only then, because pluggy refuses one module under two names.
pytest_plugins = ["pytester"] + (
    [] if "gradtest.pytest_plugin" in sys.modules else ["gradtest.pytest_plugin"]
)


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
