"""Builds the C test libraries of the dispatch tests with the system compiler."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from _cbuild import compiler

FIXTURES = Path(__file__).parent

#: build variants of kernels.c: name -> compiler flags (after -shared -fPIC)
VARIANTS = {
    "O0": ["-O0"],
    "O2": ["-O2"],
    "noplt": ["-O2", "-fno-plt"],
    "cet": ["-O2", "-fcf-protection=full"],
    "stripped": ["-O2", "-s"],
    "debug": ["-O2", "-g"],
}


def build(out: Path, sources: list[str], flags: list[str], libs: list[str] = ()) -> Path:
    cmd = [compiler(), "-shared", "-fPIC", *flags, "-o", str(out), *[str(FIXTURES / s) for s in sources], *libs, "-lm"]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        if "-fcf-protection" in " ".join(flags):
            pytest.skip(f"the compiler does not support {flags}: {proc.stderr.strip()[:200]}")
        raise RuntimeError(f"building {out.name} failed: {' '.join(cmd)}\n{proc.stderr}")
    return out
