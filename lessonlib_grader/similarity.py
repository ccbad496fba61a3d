"""A similarity report: submissions whose graded functions match the reference or each other.

Each graded function is normalised before comparing: docstrings and comments dropped, every local name
(arguments, variables) renamed by order of first appearance, constants kept.  Renaming variables or
reformatting therefore does not hide a copy.  Two normalised functions are compared with
``difflib.SequenceMatcher`` on their ``ast.dump`` token lists; a ratio of at least ``threshold`` (0.9 by
default) is flagged for the instructor to look at -- a flag is a reason to read two files, not a verdict
(short functions have few ways to be written).
"""
from __future__ import annotations

import ast
import difflib
import inspect
import itertools
import textwrap

from . import registry

__all__ = ["normalise", "similarity", "similarity_report", "functions_of"]


class _Rename(ast.NodeTransformer):
    def __init__(self, keep: set[str]):
        self.keep, self.names = keep, {}

    def _new(self, name: str) -> str:
        if name in self.keep:
            return name
        return self.names.setdefault(name, f"v{len(self.names)}")

    def visit_Name(self, node: ast.Name) -> ast.AST:
        return ast.copy_location(ast.Name(self._new(node.id), node.ctx), node)

    def visit_arg(self, node: ast.arg) -> ast.AST:
        return ast.copy_location(ast.arg(self._new(node.arg), None), node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        node.returns, node.decorator_list = None, []
        if node.body and isinstance(node.body[0], ast.Expr) and isinstance(getattr(node.body[0], "value", None),
                                                                           ast.Constant) \
                and isinstance(node.body[0].value.value, str):
            node.body = node.body[1:] or [ast.Pass()]
        self.generic_visit(node)
        return node


def normalise(fn_source: str, globals_kept: set[str] = frozenset()) -> list[str]:
    """The function's normalised AST as a token list (empty for a stub that only raises NotImplementedError)."""
    tree = ast.parse(textwrap.dedent(fn_source))
    fn = next((n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))), None)
    if fn is None:
        return []
    body = [s for s in fn.body if not (isinstance(s, ast.Expr) and isinstance(getattr(s, "value", None), ast.Constant))]
    if all(isinstance(s, ast.Raise) and "NotImplementedError" in ast.dump(s) for s in body):
        return []
    fn.name = "f"
    keep = set(globals_kept) | {n for n in dir(__builtins__)} | {"torch", "math", "F", "nn"}
    dumped = ast.dump(_Rename(keep).visit(fn), annotate_fields=False, include_attributes=False)
    return [t for t in dumped.replace("(", " ( ").replace(")", " ) ").replace(",", " ").split() if t]


def functions_of(path: str) -> dict[str, str]:
    """Top-level function name -> source, read statically."""
    with open(path, encoding="utf-8", errors="replace") as f:
        src = f.read()
    try:
        tree = ast.parse(src)
    except SyntaxError:
        return {}
    return {n.name: ast.get_source_segment(src, n) or "" for n in tree.body
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def similarity(a: list[str], b: list[str]) -> float:
    if not a or not b:
        return 0.0
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def similarity_report(subs: list[tuple[str, str, str | None]], out: str | None = None, threshold: float = 0.9) -> int:
    """Compare each (student, path, notebook) submission's graded functions with the reference and with each
    other; write the flagged pairs to ``out``; returns how many pairs were flagged."""
    lines, flagged = [], 0
    per_q: dict[str, list[tuple[str, list[str]]]] = {}
    for student, path, nb in subs:
        if not nb:
            continue
        fns = functions_of(path)
        for ex in registry.for_notebook(nb):
            if ex.concept or ex.function not in fns:
                continue
            per_q.setdefault(ex.id, []).append((student, normalise(fns[ex.function])))
    for qid, entries in sorted(per_q.items()):
        ex = registry.get(qid)
        ref = normalise(inspect.getsource(ex.reference_fn()))
        for student, toks in entries:
            r = similarity(toks, ref)
            if r >= threshold:
                flagged += 1
                lines.append(f"{qid}: {student} matches the reference implementation (similarity {r:.2f})")
        for (s1, t1), (s2, t2) in itertools.combinations(entries, 2):
            r = similarity(t1, t2)
            if r >= threshold:
                flagged += 1
                lines.append(f"{qid}: {s1} and {s2} match each other (similarity {r:.2f})")
    text = "\n".join(lines) if lines else "no submission matches the reference or another above the threshold"
    if out:
        with open(out, "w", encoding="utf-8") as f:
            f.write(f"similarity report (normalised AST, threshold {threshold})\n{text}\n")
    return flagged
