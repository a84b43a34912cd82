"""Sphinx configuration of the cgkd documentation (MyST Markdown pages, API reference from
the docstrings, the configuration reference from the config schema).

Build: ``make docs`` (warnings are errors), or ``sphinx-build -W -b html docs docs/_build/html``.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))

# isort: off
import cgkd  # noqa: E402  (torch before openmm)
import openmmml  # noqa: E402, F401  (loads cgkd's openmm-ml plugin the way OpenMM users do)

# isort: on

project = "cgkd"
author = "the cgkd developers"
copyright = "2026, the cgkd developers"
release = cgkd.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "sphinx.ext.napoleon",
    "sphinxcontrib.bibtex",
    "sphinxcontrib.mermaid",
    "config_reference",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "_ext", "Thumbs.db", ".DS_Store"]

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_fence_as_directive = ["mermaid"]
myst_heading_anchors = 3

napoleon_use_ivar = True  # dataclass Attributes: sections, without duplicate objects
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": False}

bibtex_bibfiles = ["references.bib"]
bibtex_default_style = "unsrt"
bibtex_reference_style = "author_year"

doctest_global_setup = "import numpy as np"

html_theme = "furo"
html_title = f"cgkd {release}"
html_static_path: list[str] = []
