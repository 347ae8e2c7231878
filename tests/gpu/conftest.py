"""Imports the GPU tests' array libraries once, before any test runs.

The project's pytest configuration turns warnings into errors. On a GPU machine, CuPy and
PyTorch are whatever its image holds, against a NumPy gradtest did not choose, and either may
warn as it is imported (a version notice, a CUDA initialization note). Imported first inside a
test (``pytest.importorskip``), such a warning would fail that test for a reason that is not
gradtest's; imported here (and their CUDA contexts started, which may warn too), it is printed
and the tests then check gradtest. Where the device path is unavailable nothing is imported:
the tests skip, saying why.
"""

from __future__ import annotations

import importlib
import warnings

from gradtest import cuda


def _start(name: str) -> None:
    """Imports the library and starts its CUDA context (the first allocation), where warnings
    of its own (a CUDA initialization note) are printed, not raised."""
    try:
        module = importlib.import_module(name)
    except ImportError:
        return  # the tests that need it skip
    try:
        if name == "cupy":
            module.zeros(1)
        elif module.cuda.is_available():
            module.zeros(1, device="cuda")
    except Exception as exc:  # the tests then fail with the library's own error
        print(f"tests/gpu/conftest.py: {name} could not start on the device: {type(exc).__name__}: {exc}")


if cuda.available():
    for _name in ("cupy", "torch"):
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            _start(_name)
