"""Sphinx configuration for gradtest's documentation.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html`` (warnings are errors).
The API reference imports gradtest: the installed package when there is one (CI installs it),
else the source checkout's ``python/`` folder, whose extensions must then be built in place
(``python setup.py build_ext --inplace``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if importlib.util.find_spec("gradtest") is None:
    sys.path.insert(0, str(HERE.parent / "python"))

project = "gradtest"
author = "the gradtest developers"
copyright = "2026, the gradtest developers"
try:
    import gradtest

    release = version = gradtest.__version__
except ImportError:  # autodoc reports the failed import itself, as an error under -W
    release = version = ""

extensions = ["sphinx.ext.autodoc", "numpydoc"]
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_theme_options = {"description": "Are your derivatives right?", "fixed_sidebar": True}
html_static_path: list[str] = []

autodoc_typehints = "none"  # the numpydoc sections carry the types, in words
autodoc_member_order = "bysource"
numpydoc_show_class_members = False  # members are listed explicitly in api.rst
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# Pages that other parts of the project contribute (engines, C kernels, dispatch). index.rst
# lists them through the placeholder below, in this order and then any other page nobody listed,
# so that a page that does not exist yet breaks nothing and a new page needs no edit here.
USER_PAGES = ["quickstart", "pytest", "tolerances", "api", "cli"]
CONTRIBUTOR_PAGES = ["contributing"]  # listed in index.rst's own toctree
PREFERRED_ORDER = ["forward", "reverse", "ckernels", "dispatch"]
PLACEHOLDER = "   .. engine-pages (filled in by conf.py)"


def _engine_pages(srcdir: Path) -> list[str]:
    present = {p.stem for p in srcdir.glob("*.rst")} - {"index", *USER_PAGES, *CONTRIBUTOR_PAGES}
    return [p for p in PREFERRED_ORDER if p in present] + sorted(present - set(PREFERRED_ORDER))


def _fill_toctree(app, docname: str, source: list[str]) -> None:
    if docname == "index" and PLACEHOLDER in source[0]:
        pages = _engine_pages(Path(app.srcdir))
        source[0] = source[0].replace(PLACEHOLDER, "\n".join(f"   {p}" for p in pages))


def _reread_index(app, env, added, changed, removed) -> list[str]:
    # The toctree depends on which files exist, which Sphinx's change tracking does not see.
    return ["index"]


def setup(app):
    app.connect("source-read", _fill_toctree)
    app.connect("env-get-outdated", _reread_index)
