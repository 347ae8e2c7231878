from __future__ import annotations

import os
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


# The sanitizer step of .ci/run runs the C-heavy tests with AddressSanitizer preloaded into
# Python. capstone's library is loaded with RTLD_DEEPBIND, which AddressSanitizer refuses
# (google/sanitizers#611), and the dispatch checks' opt half needs it: such tests carry the
# `needs_capstone` marker and skip there, saying why.
SANITIZED = "libasan" in os.environ.get("LD_PRELOAD", "")


def pytest_configure(config):
    config.addinivalue_line("markers", "needs_capstone: uses the disassembler (skipped under AddressSanitizer)")


def pytest_collection_modifyitems(config, items):
    if not SANITIZED:
        return
    skip = pytest.mark.skip(reason="AddressSanitizer is preloaded and capstone's library is loaded with "
                                   "RTLD_DEEPBIND, which it cannot run (google/sanitizers#611)")
    for item in items:
        if "needs_capstone" in item.keywords:
            item.add_marker(skip)


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
