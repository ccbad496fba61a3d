"""Notebook hygiene: a graded exercise stub must never shadow a name the rest of the notebook uses.

A notebook's exercise cell defines a stub (its body raises ``NotImplementedError``) for the reader to fill in.
If that stub has the name of a function that another cell uses (a widget callback, a later experiment) or that
the notebook imports from lessonlib, then after Run All every use of the name calls the stub instead of the
library and fails (issue 16: notebook 01's histogram widget broke this way).  This test parses every notebook's
code cells with ``ast`` (no execution) and checks, for each cell that raises ``NotImplementedError``, that the
functions it defines are named nowhere else in the notebook and are not imported from lessonlib.
"""
from __future__ import annotations

import ast
import glob
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(p for p in glob.glob(os.path.join(ROOT, "notebooks", "[0-9][0-9]_*.ipynb"))
                   if int(os.path.basename(p)[:2]) <= 24)


def _cells(path: str) -> list[ast.Module]:
    """The notebook's code cells, parsed (IPython magics and shell lines blanked out)."""
    with open(path, encoding="utf-8") as f:
        nb = json.load(f)
    out = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        src = "".join(cell["source"])
        lines = ["" if ln.lstrip().startswith(("%", "!")) else ln for ln in src.splitlines()]
        out.append(ast.parse("\n".join(lines)))
    return out


def _raises_not_implemented(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(exc, ast.Name) and exc.id == "NotImplementedError":
                return True
    return False


def _defined_functions(tree: ast.Module) -> set[str]:
    return {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def _guarded(tree: ast.Module) -> set[int]:
    """ids of the nodes inside ``try:`` bodies that catch NotImplementedError: the fallback pattern (run the
    reader's function, fall back to the library while the stub is not written) is allowed to use a stub."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id == "NotImplementedError"
                or isinstance(h.type, ast.Tuple) and any(getattr(e, "id", "") == "NotImplementedError" for e in h.type.elts)
                for h in node.handlers):
            for stmt in node.body:
                out.update(id(n) for n in ast.walk(stmt))
    return out


def _used_names(tree: ast.Module) -> set[str]:
    """Every bare name a cell reads, binds or imports (attribute accesses like ``mod.f`` are not names), outside
    ``try: ... except NotImplementedError`` fallbacks."""
    names: set[str] = set()
    guarded = _guarded(tree)
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def _lessonlib_imports(tree: ast.Module) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lessonlib"):
            out.update(a.asname or a.name for a in node.names)
    return out


def shadowing_stubs(path: str) -> list[str]:
    """Human-readable problems: stub names that another cell uses or that the notebook imports from lessonlib."""
    cells = _cells(path)
    problems = []
    imported = set().union(*(_lessonlib_imports(t) for t in cells)) if cells else set()
    for i, tree in enumerate(cells):
        if not _raises_not_implemented(tree):
            continue
        for name in sorted(_defined_functions(tree)):
            others = [j for j, t in enumerate(cells) if j != i and name in _used_names(t)]
            if others:
                problems.append(f"stub {name!r} (code cell {i}) is also used in code cell(s) {others}")
            if name in imported:
                problems.append(f"stub {name!r} (code cell {i}) shadows a name imported from lessonlib")
    return problems


def test_the_check_catches_a_shadowing_stub(tmp_path):
    """The checker itself: a stub named like an imported library function that a widget uses is caught."""
    cells = ["from lessonlib.quant.affine import compute_qparams\n",
             "def show(b):\n    return compute_qparams(b)\n",
             "def compute_qparams(w):\n    raise NotImplementedError\n"]
    nb = {"cells": [{"cell_type": "code", "source": c, "metadata": {}, "outputs": []} for c in cells],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    p = tmp_path / "00_x.ipynb"
    p.write_text(json.dumps(nb))
    problems = shadowing_stubs(str(p))
    assert any("used in code cell(s) [0, 1]" in s for s in problems), problems
    assert any("imported from lessonlib" in s for s in problems), problems
    cells.append("try:\n    y = compute_qparams(1)\nexcept NotImplementedError:\n    y = 0\n")  # a fallback is fine
    nb["cells"].append({"cell_type": "code", "source": cells[3], "metadata": {}, "outputs": []})
    p.write_text(json.dumps(nb))
    assert not any("[3]" in s or ", 3]" in s for s in shadowing_stubs(str(p))), shadowing_stubs(str(p))
    cells[2] = "def my_qparams(w):\n    raise NotImplementedError\n"
    nb["cells"][2]["source"] = cells[2]
    p.write_text(json.dumps(nb))
    assert shadowing_stubs(str(p)) == []


def _param(path: str):
    return pytest.param(path, id=os.path.basename(path)[:2])


@pytest.mark.parametrize("path", [_param(p) for p in NOTEBOOKS])
def test_no_exercise_stub_shadows_a_notebook_name(path):
    problems = shadowing_stubs(path)
    assert not problems, f"{os.path.basename(path)}: " + "; ".join(problems)


def test_one_hessian_convention():
    """Every notebook that writes the layer Hessian as a formula uses the course's H = (2/N) X X^T
    (lessonlib.calib.HessianStats; issue 16: 07 wrote H = 2XX^T while its code used 2/N)."""
    import re

    defn = re.compile(r"H\s*=\s*([^$,]*?)X\s*X\^")
    bad = []
    for path in sorted(glob.glob(os.path.join(ROOT, "notebooks", "[0-9][0-9]_*.ipynb"))):
        with open(path, encoding="utf-8") as f:
            nb = json.load(f)
        for cell in nb["cells"]:
            if cell["cell_type"] != "markdown":
                continue
            for m in defn.finditer("".join(cell["source"]).replace(" ", "")):
                if m.group(1) not in (r"\tfrac{2}{N}", r"\frac{2}{N}", r"\tfrac2N", "2/N"):
                    bad.append(f"{os.path.basename(path)}: H = {m.group(1)}XX^T")
    assert not bad, bad
