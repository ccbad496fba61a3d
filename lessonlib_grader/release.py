"""The student release: what an instructor hands out, with no reference answer to a graded question in it.

``lessonlib exercises release --out DIR`` writes

* ``DIR/lessonlib/``: the library with every ``# BEGIN SOLUTION`` body replaced by
  ``raise NotImplementedError`` (:func:`~lessonlib_grader.sandbox.copy_stripped_package`), the grading
  specs rewritten without their hidden checks (``hidden=True``) and with concept answers blanked, no
  mutants (planted wrong answers), no bytecode;
* ``DIR/exercises/``: the exercise stubs; ``DIR/notebooks/``: the notebooks (as committed, no outputs);
* ``DIR/pyproject.toml``, ``README.md``, ``constraints.txt``, ``reports/`` (the ledger the chapters quote) and
  ``docs/`` (without ``INSTRUCTORS.md``);
* in every notebook, a first cell that loads the reader's ``exercises/*.py`` into :mod:`lessonlib.your_answers`,
  and in the library, each graded function runs that answer (:func:`delegate_to_answers`);

and never ``solutions/``, ``tests/`` or the instructor key.  :func:`scan_release` looks for any reference
body in the tree (every non-trivial line of a marked block, in one file) and the release is refused
if it finds one.  In the release, ``check()`` runs the visible checks; checks that need the reference
say they are graded by the instructor.
"""
from __future__ import annotations

import ast
import os
import shutil

from .extract import BEGIN, generate_all, repo_root
from .sandbox import copy_stripped_package

__all__ = ["build_release", "scan_release", "strip_spec", "delegate_to_answers"]

TRIVIAL = {"", "return out", "return mask", "else:", "try:", "pass", "continue", "break"}


# constructor name -> position of its expected-answer argument (None: keyword ``answer=`` only)
_ANSWER_CALLS = {"concept_number": None, "concept_choice": None, "concept_number_check": 0,
                 "concept_choice_check": 0, "answer_checks": 0, "concept_checks": 1, "choice": 1, "number": 1}


class _StripHidden(ast.NodeTransformer):
    """Spec source -> the same without ``hidden=True`` checks and with concept answers blanked."""

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
        if name in _ANSWER_CALLS:  # the expected answer of a concept question (lessonlib_grader.concept)
            for kw in node.keywords:
                if kw.arg == "answer":
                    kw.value = ast.Constant(None)
            pos = _ANSWER_CALLS[name]
            if pos is not None and len(node.args) > pos:
                node.args[pos] = ast.Constant(None)
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


def _forward(args: ast.arguments) -> str:
    """The call arguments that pass a function's own parameters on unchanged."""
    pos = [a.arg for a in args.posonlyargs + args.args]
    if args.vararg:
        pos.append("*" + args.vararg.arg)
    kw = [f"{a.arg}={a.arg}" for a in args.kwonlyargs]
    if args.kwarg:
        kw.append("**" + args.kwarg.arg)
    return ", ".join(pos + kw)


def delegate_to_answers(pkg: str) -> list[str]:
    """In the release copy ``pkg`` of lessonlib, make every graded function run the reader's answer.

    Each one starts with a look-up in :mod:`lessonlib.your_answers` (filled by ``check()`` when the reader's
    function passes); without an answer its stub raises ``NotImplementedError`` naming the exercise to
    write.  So the notebooks' cells after an exercise run the reader's function, and nothing of the
    reference is shipped.  Returns the ``module:function`` names changed.
    """
    from .registry import all_exercises

    by_file: dict[str, list] = {}
    for ex in all_exercises():
        if ex.concept or not ex.module.startswith("lessonlib."):
            continue
        path = os.path.join(os.path.dirname(pkg), *ex.module.split(".")) + ".py"
        by_file.setdefault(path, []).append(ex)
    done = []
    for path, exs in sorted(by_file.items()):
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines(keepends=True)
        defs = {n.name: n for n in ast.parse("".join(lines)).body if isinstance(n, ast.FunctionDef)}
        for ex in sorted(exs, key=lambda e: -defs[e.function].lineno if e.function in defs else 0):
            node = defs.get(ex.function)
            if node is None:
                raise ValueError(f"{ex.id}: {ex.reference} is not a top-level function of {path}")
            for i in range(node.lineno - 1, node.end_lineno):
                if "the reference body is not shipped" in lines[i]:
                    ind = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
                    lines[i] = (f'{ind}raise NotImplementedError("{ex.id}: `{ex.function}` is yours to write in this '
                                f'release: fill in the exercise and run check(\'{ex.id}\', {ex.function}); then '
                                'the library uses your function")\n')
            body = node.body
            first = body[1] if (len(body) > 1 and isinstance(body[0], ast.Expr)
                                and isinstance(body[0].value, ast.Constant)) else body[0]
            ind = " " * first.col_offset
            lines[first.lineno - 1: first.lineno - 1] = [
                f'{ind}_yours = __import__("lessonlib.your_answers", fromlist=["get"]).get("{ex.id}")\n',
                f"{ind}if _yours is not None:  # the reader's answer (see lessonlib/your_answers.py)\n",
                f"{ind}    return _yours({_forward(node.args)})\n"]
            done.append(ex.reference)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write("".join(lines))
    return done


def _answers_cell(folder: str) -> None:
    """Give every released notebook with exercises a first code cell that loads the reader's exercise files
    into :mod:`lessonlib.your_answers`, so the library runs the reader's functions from the first cell on
    (chapter 01 already uses chapter 00's ``bytes_at_precision``)."""
    import nbformat

    from .registry import notebooks

    if not os.path.isdir(folder):
        return
    for notebook in notebooks():
        path = os.path.join(folder, f"{notebook}.ipynb")
        if not os.path.exists(path):
            continue
        nb = nbformat.read(path, as_version=4)
        src = ("# Student release: the library's graded functions are yours to write. It runs your answers in\n"
               "# exercises/*.py (every chapter's), and every exercise below that passes check().\n"
               "from lessonlib.grading import use_exercise_files\n"
               "use_exercise_files('../exercises');")
        cell = nbformat.v4.new_code_cell(src)
        cell["id"] = "student-release-answers"
        first = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"), len(nb.cells))
        nb.cells.insert(first, cell)
        nbformat.write(nb, path)


def build_release(out: str, root: str | None = None) -> list[str]:
    """Write the student release to ``out`` (which must not exist or be empty); returns the leaks found
    by :func:`scan_release` (empty: the release is clean)."""
    root = root or repo_root()
    if os.path.exists(out) and os.listdir(out):
        raise ValueError(f"--out {out} exists and is not empty; give a new folder")
    os.makedirs(out, exist_ok=True)
    pkg = copy_stripped_package(out)  # every marked body stubbed, no specs, no mutants
    delegate_to_answers(pkg)  # ... and each stubbed function runs the reader's answer once check() passed it
    src_grading = os.path.dirname(os.path.abspath(__file__))  # lessonlib_grader: check() needs its specs
    dst_grading = os.path.join(out, os.path.basename(src_grading))
    os.makedirs(dst_grading, exist_ok=True)
    for f in sorted(os.listdir(src_grading)):
        if not f.endswith(".py"):
            continue  # no mutants/ (planted wrong answers), no bytecode
        with open(os.path.join(src_grading, f), encoding="utf-8") as fh:
            text = fh.read()
        if f.startswith("specs_"):
            text = strip_spec(text)  # no hidden checks, no concept answers
        with open(os.path.join(dst_grading, f), "w", encoding="utf-8") as fh:
            fh.write(text)
    for folder, ext in (("exercises", ".py"), ("notebooks", ".ipynb")):
        src = os.path.join(root, folder)
        if os.path.isdir(src):
            os.makedirs(os.path.join(out, folder), exist_ok=True)
            for f in sorted(os.listdir(src)):
                if f.endswith(ext):
                    shutil.copy2(os.path.join(src, f), os.path.join(out, folder, f))
    _answers_cell(os.path.join(out, "notebooks"))
    for f in ("pyproject.toml", "README.md", "constraints.txt", "LICENSE"):
        if os.path.exists(os.path.join(root, f)):
            shutil.copy2(os.path.join(root, f), os.path.join(out, f))
    if os.path.isdir(os.path.join(root, "reports")):  # the ledger's measured rows and runtimes the chapters quote
        shutil.copytree(os.path.join(root, "reports"), os.path.join(out, "reports"),
                        ignore=shutil.ignore_patterns(".cache", "__pycache__"))
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
    ``solutions`` folder or solution marker)."""
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
            tool = os.path.basename(d) in ("grading", "lessonlib_grader") and not f.startswith("specs_")  # its docs
            if not tool and any(l.strip().strip('"').startswith(BEGIN) for l in text.splitlines()):
                leaks.append(f"{p}: a '{BEGIN}' marker")
            if f.endswith(".ipynb"):  # code lines live inside JSON strings
                text = text.replace('\\n",', "\n").replace('\\"', '"')
            have = {l.split("#", 1)[0].strip().strip('"').strip() for l in text.splitlines()}
            for qid, lines in bodies.items():
                if lines and all(l in have for l in lines):
                    leaks.append(f"{p}: the reference body of {qid}")
    return leaks
