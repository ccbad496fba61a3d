"""Sphinx configuration of the lessonlib book (`make book` -> build/book/html/index.html).

Tool: Sphinx + MyST-NB + sphinx-book-theme, used directly rather than through Jupyter Book 1.x. Jupyter
Book 1.x is a thin layer over exactly these three; its release pins markdown-it-py < 4 and Sphinx 7, which
would downgrade packages of the course's own environment, while the direct stack installs next to it
unchanged. (Jupyter Book 2 is a different, Node-based tool.) The toolchain lives in .venv-book
(book/requirements.txt); the notebooks execute on the course's .venv through the kernelspec
`lessonlib-book` that the Makefile writes into the project's JUPYTER_DATA_DIR.

The source directory is the repository root, so pages keep their real paths (notebooks/NN_*.ipynb,
reports/claims.md with reports/figures/, docs/*.md) and their relative links and images work unchanged.
Chapters are picked up by glob, so a new notebooks/NN_*.ipynb appears without editing anything here.
BOOK_CHAPTERS="00 01" restricts the build to those chapters (for development).
Offline: no intersphinx, MathJax 3.2.2 is served from the book itself (PyPI django-static-mathjax), the
ipywidgets JavaScript (a CDN load) is switched off, and the themes bundle their fonts and icons.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

BOOK = Path(__file__).resolve().parent
ROOT = BOOK.parent
sys.path.insert(0, str(BOOK / "_ext"))

project = "lessonlib: compressing LLMs, an interactive course"
author = "the lessonlib authors"
copyright = "the lessonlib authors (MIT)"

extensions = ["myst_nb", "sphinx_book_theme", "lessonlib_book"]

root_doc = "book/index"
_chapters = os.environ.get("BOOK_CHAPTERS", "").split()
include_patterns = (
    ["book/index.md", "reports/claims.md", "docs/INSTRUCTORS.md", "docs/LEARNING_PATH.md", "docs/CHAPTERS.md"]
    + ([f"notebooks/{c}_*.ipynb" for c in _chapters] if _chapters else ["notebooks/[0-9][0-9]_*.ipynb"])
)
exclude_patterns = [
    ".venv", ".venv-book", ".git", ".jupyter", ".ipython", "build", "dist", "**/.ipynb_checkpoints",
    "notebooks/_broken_*", "exercises", "solutions", "tests", "lessonlib", "benchmarks", "tools", "shared",
]
suppress_warnings = ["myst.header",          # chapters start at "#", later cells may skip a level
                    "misc.highlighting_failure"]   # the learning path's mermaid diagram stays a code block (no CDN)

# MyST
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# MyST-NB: execute every chapter once, keep the outputs in a jupyter-cache under build/.
nb_execution_mode = os.environ.get("BOOK_EXECUTE", "cache")
nb_execution_cache_path = str(ROOT / "build" / "book" / "jupyter_cache")
nb_execution_timeout = int(os.environ.get("BOOK_CELL_TIMEOUT", "900"))
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_execution_allow_errors = False
nb_kernel_rgx_aliases = {".*": "lessonlib-book"}   # every notebook runs on the course's .venv
nb_ipywidgets_js = {}                              # no CDN; widgets are live in `make lab` only
nb_merge_streams = True

# HTML
html_theme = "sphinx_book_theme"
html_title = "lessonlib"
html_static_path = [str(BOOK / "_static")]
html_css_files = ["lessonlib.css"]
html_theme_options = {
    "home_page_in_toc": True,
    "show_toc_level": 2,
    "use_download_button": False,
    "use_fullscreen_button": False,
    "use_repository_button": False,
    "navigation_with_keys": False,
}
html_last_updated_fmt = None
html_copy_source = False
# MathJax from the book itself (copied into _static/mathjax by lessonlib_book); nothing from a CDN.
mathjax_path = "mathjax/tex-mml-chtml.js"
mathjax3_config = {"options": {"enableMenu": False}, "loader": {"load": []}}
