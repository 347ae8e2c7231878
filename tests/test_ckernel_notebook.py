"""examples/ckernels.ipynb stays runnable: its code cells run in order (from examples/, as
Jupyter would) and the reports say what the markdown promises."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "examples" / "ckernels.ipynb"


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_notebook_runs(monkeypatch):
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    sources = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    assert sources
    monkeypatch.chdir(ROOT / "examples")
    namespace: dict = {"__name__": "__notebook__"}
    for src in sources:
        exec(compile(src, str(NOTEBOOK), "exec"), namespace)
    assert namespace["report"].outcomes["user"].status == "fail"
    assert os.path.isdir(namespace["BUILD"])
    shutil.rmtree(namespace["BUILD"])
