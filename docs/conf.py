"""Sphinx configuration for the cbackprop documentation.

Build (the ``docs`` extra installs what it needs)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Why Sphinx: the scientific Python convention (NumPy, SciPy, scikit-learn, matplotlib), so
the API reference comes from the numpydoc docstrings with ``autodoc`` + ``numpydoc``; the
user guide is Markdown (MyST), the theme pydata-sphinx-theme.

The examples in ``examples/`` are run when the documentation is built (``run_examples``
below): each writes its figure and its printed output into ``docs/_generated/``, which the
pages include, so the figures and numbers shown are what the code does today.
"""
import os
import subprocess
import sys
import time
from pathlib import Path

import cbackprop

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GENERATED = HERE / "_generated"

project = "cbackprop"
author = "the cbackprop authors"
copyright = "2026, the cbackprop authors"
version = release = cbackprop.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "numpydoc",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "_generated/*.txt"]
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "none"
numpydoc_show_class_members = False      # members are listed by autodoc's :members:
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

html_theme = "pydata_sphinx_theme"
html_title = f"cbackprop {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_static_path = []

# ---- examples, run at build time ------------------------------------------------------------
#: (script, arguments): the scale each example runs at when the docs are built (seconds each
#: on the embedded MNIST sample); the pages say so next to the figures.
EXAMPLES = [
    ("network_py.py", ["--epochs", "30"]),
    ("overfitting.py", []),
    ("gradient_check.py", ["--max-per-layer", "1000"]),
    ("layer_speeds.py", []),
]


def run_examples(app):
    GENERATED.mkdir(exist_ok=True)
    for script, args in EXAMPLES:
        name = Path(script).stem
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(ROOT / "examples" / script), *args,
             "--plot", str(GENERATED / f"{name}.png")],
            capture_output=True, text=True, timeout=600,
            # (an editable install's rebuild check says nothing when this is 0)
            env={**os.environ, "MPLBACKEND": "Agg", "SKBUILD_EDITABLE_VERBOSE": "0"})
        if proc.returncode != 0:
            raise RuntimeError(f"examples/{script} failed ({proc.returncode}):\n{proc.stderr}")
        (GENERATED / f"{name}.txt").write_text(proc.stdout)
        print(f"examples/{script}: {time.perf_counter() - start:.1f} s")


def setup(app):
    app.connect("builder-inited", run_examples)
