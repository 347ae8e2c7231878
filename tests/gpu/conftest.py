"""Imports the GPU tests' array libraries once, before any test runs.

The project's pytest configuration turns warnings into errors. On a GPU machine, CuPy and
PyTorch are whatever its image holds, against a NumPy gradtest did not choose, and either may
warn as it is imported (a version notice, a CUDA initialization note). Imported first inside a
test (``pytest.importorskip``), such a warning would fail that test for a reason that is not
gradtest's; imported here, it is printed and the tests then check gradtest. Where the device
path is unavailable nothing is imported: the tests skip, saying why.
"""

from __future__ import annotations

import importlib
import warnings

from gradtest import cuda

if cuda.available():
    for _name in ("cupy", "torch"):
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            try:
                importlib.import_module(_name)
            except ImportError:
                pass  # the tests that need it skip
