"""Tiny helper to write a notebook from a list of ("md"|"code", source) cells: no outputs, venv kernel."""
from __future__ import annotations

import sys

import nbformat


def build(path: str, cells: list[tuple[str, str]]) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (lessonlib .venv)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for kind, src in cells:
        src = src.strip("\n")
        nb.cells.append(nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src))
    for i, c in enumerate(nb.cells):
        c["id"] = f"c{i:02d}"
    nbformat.validate(nb)
    nbformat.write(nb, path)


if __name__ == "__main__":
    sys.exit("import build() from this module")
