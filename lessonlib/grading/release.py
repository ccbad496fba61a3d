"""The student release: what an instructor hands out, with no reference answer to a graded question in it.

``lessonlib exercises release --out DIR`` writes

* ``DIR/lessonlib/``: the library with every ``# BEGIN SOLUTION`` body replaced by
  ``raise NotImplementedError`` (:func:`~lessonlib.grading.sandbox.copy_stripped_package`), the grading
  specs rewritten without their hidden checks (``hidden=True``) and with concept answers blanked, no
  mutants (planted wrong answers), no bytecode;
* ``DIR/exercises/``: the exercise stubs; ``DIR/notebooks/``: the notebooks (as committed, no outputs);
* ``DIR/pyproject.toml``, ``README.md``, ``constraints.txt`` and ``docs/`` (without ``INSTRUCTORS.md``);

and never ``solutions/``, ``tests/`` or the instructor key.  :func:`scan_release` looks for any reference
body in the tree (every non-trivial line of a marked block, in one file) and the release is refused
if it finds one.  In the release, ``check()`` runs the visible checks; checks that need the reference
say they are graded by the instructor.
"""
from __future__ import annotations

import ast
import os
import shutil

from .extract import generate_all, repo_root
from .sandbox import copy_stripped_package

__all__ = ["build_release", "scan_release", "strip_spec"]

TRIVIAL = {"", "return out", "return mask", "else:", "try:", "pass", "continue", "break"}


class _StripHidden(ast.NodeTransformer):
    """Spec source -> the same without ``hidden=True`` checks and with concept answers blanked."""

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
        if name in ("concept_number", "concept_choice"):
            for kw in node.keywords:
                if kw.arg == "answer":
                    kw.value = ast.Constant(None)
        return node

    def _drop_hidden(self, elts: list[ast.expr]) -> list[ast.expr]:
        return [e for e in elts if not (isinstance(e, ast.Call) and any(
            k.arg == "hidden" and isinstance(k.value, ast.Constant) and k.value.value is True for k in e.keywords))]

    def visit_Tuple(self, node: ast.Tuple) -> ast.AST:
        self.generic_visit(node)
        node.elts = self._drop_hidden(node.elts)
        return node

    visit_List = visit_Tuple  # type: ignore[assignment]

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        self.generic_visit(node)
        for d in node.decorator_list:  # @prop("...", hidden=True) def _x(...): the check itself goes
            if isinstance(d, ast.Call) and any(k.arg == "hidden" and isinstance(k.value, ast.Constant)
                                               and k.value.value is True for k in d.keywords):
                d.keywords = [k for k in d.keywords if k.arg != "hidden"]
                node.decorator_list = []  # kept as a plain function; the check tuples drop its name
                self.hidden_names.add(node.name)
        return node


def strip_spec(source: str) -> str:
    """A spec module's source without hidden checks or concept answers (comments are lost: ``ast.unparse``)."""
    t = _StripHidden()
    t.hidden_names = set()  # type: ignore[attr-defined]
    tree = t.visit(ast.parse(source))
    if t.hidden_names:  # drop references to hidden @prop checks from the check tuples
        class _Drop(ast.NodeTransformer):
            def visit_Tuple(self, node):
                self.generic_visit(node)
                node.elts = [e for e in node.elts if not (isinstance(e, ast.Name) and e.id in t.hidden_names)]
                return node

        tree = _Drop().visit(tree)
    return ast.unparse(ast.fix_missing_locations(tree)) + "\n"


def build_release(out: str, root: str | None = None) -> list[str]:
    """Write the student release to ``out`` (which must not exist or be empty); returns the leaks found
    by :func:`scan_release` (empty: the release is clean)."""
    root = root or repo_root()
    if os.path.exists(out) and os.listdir(out):
        raise ValueError(f"--out {out} exists and is not empty; give a new folder")
    os.makedirs(out, exist_ok=True)
    pkg = copy_stripped_package(out)  # every marked body stubbed, no specs, no mutants
    src_grading = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "grading")
    for f in sorted(os.listdir(src_grading)):
        if f.startswith("specs_") and f.endswith(".py"):
            with open(os.path.join(src_grading, f), encoding="utf-8") as fh:
                text = strip_spec(fh.read())
            with open(os.path.join(pkg, "grading", f), "w", encoding="utf-8") as fh:
                fh.write(text)
    for folder, ext in (("exercises", ".py"), ("notebooks", ".ipynb")):
        src = os.path.join(root, folder)
        if os.path.isdir(src):
            os.makedirs(os.path.join(out, folder), exist_ok=True)
            for f in sorted(os.listdir(src)):
                if f.endswith(ext):
                    shutil.copy2(os.path.join(src, f), os.path.join(out, folder, f))
    for f in ("pyproject.toml", "README.md", "constraints.txt", "LICENSE"):
        if os.path.exists(os.path.join(root, f)):
            shutil.copy2(os.path.join(root, f), os.path.join(out, f))
    if os.path.isdir(os.path.join(root, "docs")):
        shutil.copytree(os.path.join(root, "docs"), os.path.join(out, "docs"),
                        ignore=shutil.ignore_patterns("INSTRUCTORS.md"))
    return scan_release(out)


def _distinctive(lines: list[str]) -> list[str]:
    out = []
    for l in lines:
        s = l.split("#", 1)[0].strip()
        if s and s not in TRIVIAL and len(s) >= 12:
            out.append(s)
    return out


def scan_release(folder: str) -> list[str]:
    """'file: q06_1' for every file holding every distinctive line of a graded reference body (and any
    ``solutions`` folder or ``# BEGIN SOLUTION`` marker)."""
    bodies = {qid: _distinctive(lines) for gen in generate_all().values() for qid, lines in gen.solution_blocks.items()}
    leaks = []
    for d, dirs, files in os.walk(folder):
        if "solutions" in dirs:
            leaks.append(f"{os.path.join(d, 'solutions')}: a solutions folder")
        for f in files:
            if not f.endswith((".py", ".ipynb", ".md", ".txt", ".json")):
                continue
            p = os.path.join(d, f)
            with open(p, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
            tool = os.path.basename(d) == "grading" and not f.startswith("specs_")  # the grader's own docs
            if not tool and any(l.strip().strip('"').startswith("# BEGIN SOLUTION") for l in text.splitlines()):
                leaks.append(f"{p}: a '# BEGIN SOLUTION' marker")
            if f.endswith(".ipynb"):  # code lines live inside JSON strings
                text = text.replace('\\n",', "\n").replace('\\"', '"')
            have = {l.split("#", 1)[0].strip().strip('"').strip() for l in text.splitlines()}
            for qid, lines in bodies.items():
                if lines and all(l in have for l in lines):
                    leaks.append(f"{p}: the reference body of {qid}")
    return leaks
