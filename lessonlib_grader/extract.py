"""The generator: ``exercises/NN_topic.py`` and ``solutions/NN_topic.py`` from marked reference functions.

A reference function in lessonlib marks its graded part with two comment lines inside its body::

    def next_token_nll(logits, tokens):
        \"\"\"docstring\"\"\"
        if logits.dim() == 2:              # kept in the stub: input handling is given
            ...
        # BEGIN SOLUTION
        pred = logits[:, :-1]              # the student writes this part
        ...
        # END SOLUTION

For each notebook the generator reads the reference modules' source (statically, with ``ast``) and writes

* ``solutions/NN_topic.py``: the reference functions verbatim, markers kept, plus everything they need
  from their own module (helper functions, classes and constants, copied whole and transitively) and the
  imports those use (relative imports made absolute).  It never imports a graded function from lessonlib,
  so it is standalone and grades on its own;
* ``exercises/NN_topic.py``: the same file with every marked block replaced by
  ``raise NotImplementedError("... not implemented yet")``, a header per question with its points,
  statement and hints.

``build(check=True)`` regenerates in memory and reports stale or stray files (the CI staleness check).
"""
from __future__ import annotations

import ast
import functools
import importlib.util
import os
import re
import sys
import textwrap
from dataclasses import dataclass, field

from .registry import Exercise

__all__ = ["BEGIN", "END", "ExtractError", "Generated", "generate", "generate_all", "build", "repo_root",
           "leaked_lines", "find_marked_functions", "marked_blocks"]

BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
_LOOSE = re.compile(r"#\s*(begin|end)[\s_-]*solution", re.IGNORECASE)
THIRD_PARTY_ALLOWED = {"torch", "numpy", "lessonlib", "tqdm"}  # besides the standard library
RULE = "# " + "-" * 98


class ExtractError(ValueError):
    """A marked reference cannot be turned into an exercise (bad markers, missing function, name clash)."""


# ------------------------------------------------------------------ reading reference modules
@dataclass
class _Module:
    name: str
    path: str
    lines: list[str]
    tree: ast.Module
    defs: dict[str, ast.stmt] = field(default_factory=dict)  # top-level def / class / assignment by bound name
    imports: dict[str, tuple[str, str | None, str | None]] = field(default_factory=dict)  # bound -> (module, name, as)


@functools.lru_cache(maxsize=None)
def _read_module(modname: str) -> _Module:
    spec = importlib.util.find_spec(modname)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise ExtractError(f"cannot find the source of module {modname!r}")
    with open(spec.origin, encoding="utf-8") as f:
        src = f.read()
    mod = _Module(modname, spec.origin, src.splitlines(), ast.parse(src, filename=spec.origin))
    package = modname if spec.origin.endswith("__init__.py") else modname.rpartition(".")[0]
    for node in mod.tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            mod.defs[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        mod.defs[n.id] = node
        elif isinstance(node, ast.Import):
            for a in node.names:
                mod.imports[a.asname or a.name.split(".")[0]] = (a.name, None, a.asname)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                if node.level - 1 > len(parts) - 1:
                    raise ExtractError(f"{modname}: relative import beyond the top package")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            for a in node.names:
                mod.imports[a.asname or a.name] = (base, a.name, a.asname)
    return mod


def _names_used(node: ast.AST) -> set[str]:
    used: set[str] = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            used.add(n.id)
        elif isinstance(n, ast.arg) and isinstance(n.annotation, ast.Constant) and isinstance(n.annotation.value, str):
            try:  # a quoted annotation: "torch.Tensor"
                used |= _names_used(ast.parse(n.annotation.value, mode="eval"))
            except SyntaxError:
                pass
    return used


def _segment(mod: _Module, node: ast.stmt) -> str:
    """The statement's source with its decorators and trailing comments indented inside it (an end marker
    after the final ``return`` is such a comment: the AST node ends before it)."""
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    end = node.end_lineno  # 1-based, inclusive
    i = end
    while i < len(mod.lines):
        line = mod.lines[i]
        if not line.strip():
            i += 1
            continue
        if line.lstrip().startswith("#") and len(line) - len(line.lstrip()) > node.col_offset:
            i += 1
            end = i
            continue
        break
    return "\n".join(mod.lines[first - 1: end])


def marked_blocks(lines: list[str], where: str) -> list[tuple[int, int]]:
    """(begin, end) line indices of each marked block; malformed or unbalanced markers raise ExtractError."""
    blocks, start = [], None
    for i, line in enumerate(lines):
        s = line.strip()
        if s.startswith(BEGIN):
            if start is not None:
                raise ExtractError(f"{where}: '{BEGIN}' at line {i + 1} inside an open block")
            start = i
        elif s.startswith(END):
            if start is None:
                raise ExtractError(f"{where}: '{END}' at line {i + 1} without a '{BEGIN}'")
            if len(line) - len(line.lstrip()) != len(lines[start]) - len(lines[start].lstrip()):
                raise ExtractError(f"{where}: markers at lines {start + 1} and {i + 1} are indented differently")
            blocks.append((start, i))
            start = None
        elif _LOOSE.search(s):
            raise ExtractError(f"{where}: malformed marker at line {i + 1}: {s!r}; write exactly "
                               f"'{BEGIN}' or '{END}' on a line of its own")
    if start is not None:
        raise ExtractError(f"{where}: '{BEGIN}' at line {start + 1} is never closed")
    return blocks


# ------------------------------------------------------------------ generating one notebook
@dataclass
class Generated:
    notebook: str
    solution: str  # text of solutions/NN_topic.py
    exercise: str  # text of exercises/NN_topic.py
    solution_blocks: dict[str, list[str]]  # exercise id -> the lines of its marked blocks


def replace_blocks(lines: list[str], blocks: list[tuple[int, int]], text: str) -> list[str]:
    """``lines`` with each marked block (first, last line index) replaced by one line ``text``, indented as
    the block's first line."""
    out, prev = [], 0
    for b, e in blocks:
        indent = lines[b][: len(lines[b]) - len(lines[b].lstrip())]
        out += lines[prev:b]
        out.append(indent + text)
        prev = e + 1
    return out + lines[prev:]


def _stub(lines: list[str], blocks: list[tuple[int, int]], ex: Exercise) -> list[str]:
    return replace_blocks(lines, blocks, f'raise NotImplementedError("{ex.id} {ex.function}: not implemented yet")')


def _question_header(ex: Exercise) -> str:
    wrap = functools.partial(textwrap.wrap, width=96, break_long_words=False)
    lines = [RULE, f"# {ex.id} ({ex.points} point{'s' if ex.points != 1 else ''}): {ex.function}"]
    lines += ["# " + l for l in wrap(ex.statement)]
    if ex.hints:
        lines.append("# Hints:")
        for h in ex.hints:
            w = wrap(h, width=92)
            lines += ["#   - " + w[0]] + ["#     " + l for l in w[1:]]
    lines.append(RULE)
    return "\n".join(lines)


def _import_lines(imports: dict[str, tuple[str, str | None, str | None]]) -> list[str]:
    def group(module: str) -> int:
        top = module.split(".")[0]
        if top == "lessonlib":
            return 2
        return 0 if top in sys.stdlib_module_names else 1

    plain = sorted({(m, a) for m, n, a in imports.values() if n is None})
    froms: dict[str, list[str]] = {}
    for m, n, a in sorted(imports.values(), key=lambda t: (t[0], t[1] or "")):
        if n is not None:
            froms.setdefault(m, []).append(f"{n} as {a}" if a else n)
    out: list[str] = []
    for g in (0, 1, 2):
        block = [f"import {m} as {a}" if a else f"import {m}" for m, a in plain if group(m) == g]
        block += [f"from {m} import {', '.join(sorted(set(ns)))}" for m, ns in sorted(froms.items()) if group(m) == g]
        if block:
            out += block + [""]
    return out


def generate(notebook: str, exercises: list[Exercise]) -> Generated:
    """The solution and exercise texts of one notebook."""
    if not exercises:
        raise ExtractError(f"notebook {notebook!r} has no exercises")
    graded = {ex.function: ex for ex in exercises}
    helpers: dict[tuple[str, int], tuple[_Module, ast.stmt]] = {}  # (module, line) -> node, for ordering
    imports: dict[str, tuple[str, str | None, str | None]] = {}
    origin: dict[str, str] = {ex.function: ex.reference for ex in exercises}  # bound name -> where from
    modules_order: list[str] = []
    parts_sol, parts_ex, blocks_by_id = [], [], {}

    def need(mod: _Module, node: ast.stmt, skip: str | None) -> None:
        for name in sorted(_names_used(node) - {skip}):
            if name in mod.defs and name not in graded:
                dnode = mod.defs[name]
                key = (mod.name, dnode.lineno)
                if origin.setdefault(name, f"{mod.name}:{name}") != f"{mod.name}:{name}":
                    raise ExtractError(f"{notebook}: helper {name!r} of {mod.name} clashes with {origin[name]}")
                if key not in helpers:
                    helpers[key] = (mod, dnode)
                    need(mod, dnode, None)
            elif name in mod.imports:
                m, n, a = mod.imports[name]
                if name in graded:
                    if f"{m}:{n}" != graded[name].reference:
                        raise ExtractError(f"{notebook}: {mod.name} imports {name!r} from {m}, which clashes "
                                           f"with the graded function {graded[name].reference}")
                    continue  # the student's own version in the same file is used
                prev = imports.get(name)
                if prev is not None and prev != (m, n, a):
                    if n is None and prev[1] is None and not a and not prev[2]:  # import torch / import torch.nn
                        imports[f"{name} ({m})"] = (m, n, a)
                    else:
                        raise ExtractError(f"{notebook}: name {name!r} is imported from two places: "
                                           f"{prev} and {(m, n, a)}")
                imports.setdefault(name, (m, n, a))
                top = m.split(".")[0]
                own = mod.name.split(".")[0]  # the reference's own package (lessonlib) provides helpers
                if top not in THIRD_PARTY_ALLOWED | {own} and top not in sys.stdlib_module_names:
                    raise ExtractError(f"{notebook}: {mod.name} needs {m!r}; generated files may import only "
                                       f"the standard library and {sorted(THIRD_PARTY_ALLOWED)}")

    for ex in exercises:
        if ex.concept:  # a concept question: a top-level answer variable, no reference code
            answer = getattr(ex.checks[0], "answer", None)
            kind = "one of " + ", ".join(repr(c) for c in getattr(ex.checks[0], "choices", ())) \
                if getattr(ex.checks[0], "choices", None) else "a number"
            header = _question_header(ex)
            parts_sol.append(f"{header}\n{ex.function} = {answer!r}")
            parts_ex.append(f"{header}\n{ex.function} = None  # your answer: {kind}")
            blocks_by_id[ex.id] = []
            continue
        mod = _read_module(ex.module)
        node = mod.defs.get(ex.function)
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            raise ExtractError(f"{ex.id}: {ex.reference} is not a top-level function of {mod.path}")
        if mod.name not in modules_order:
            modules_order.append(mod.name)
        need(mod, node, ex.function)
        text = _segment(mod, node)
        lines = text.splitlines()
        blocks = marked_blocks(lines, f"{ex.reference} ({mod.path})")
        if not blocks:
            raise ExtractError(f"{ex.id}: {ex.reference} has no '{BEGIN}' / '{END}' block")
        blocks_by_id[ex.id] = [l for b, e in blocks for l in lines[b + 1: e]]
        header = _question_header(ex)
        parts_sol.append(header + "\n" + text)
        parts_ex.append(header + "\n" + "\n".join(_stub(lines, blocks, ex)))

    copied = {(m.name, name) for m, n in helpers.values() for name, d in m.defs.items() if d is n}
    for bound, (m, n, a) in list(imports.items()):
        if n is not None and (m, n) in copied:
            if (a or n) != n:
                raise ExtractError(f"{notebook}: {m}.{n} is both copied and imported as {a!r}")
            del imports[bound]  # the helper is copied into the file already
        elif n is not None and bound in origin and origin[bound] != f"{m}:{n}":
            raise ExtractError(f"{notebook}: imported name {bound!r} ({m}.{n}) clashes with {origin[bound]}")
    helper_text = [_segment(m, n) for _, (m, n) in
                   sorted(helpers.items(), key=lambda kv: (modules_order.index(kv[0][0])
                                                          if kv[0][0] in modules_order else 99, kv[0][1]))]
    points = sum(ex.points for ex in exercises)
    listing = "\n".join(f"    {ex.id:<8} {ex.function:<36} {ex.points:>3} point{'s' if ex.points != 1 else ''}"
                        for ex in exercises)
    note = textwrap.fill(f"Generated by ``lessonlib exercises build`` from {', '.join(modules_order)}; "
                         "regenerate it, do not edit the copy in the repository by hand.", width=100)
    common = f"\n\n{listing}\n\n{note}\n"
    doc_sol = (f'"""Notebook {notebook}: reference solutions ({points} points).\n\nStandalone copies of the '
               f"graded lessonlib functions; grading this file scores 100%:\n\n    lessonlib grade "
               f"solutions/{notebook}.py" + common + '"""')
    doc_ex = (f'"""Notebook {notebook}: graded exercises ({points} points).\n\nWrite the body of every function '
              f"that raises NotImplementedError, then grade your work with\n\n    lessonlib grade "
              f"exercises/{notebook}.py\n\nor inside the notebook with "
              f'lessonlib.grading.check("{exercises[0].id}", {exercises[0].function}).' + common + '"""')
    top = ["from __future__ import annotations", ""] + _import_lines(imports)
    body_common = "\n\n\n".join(helper_text)

    def assemble(doc: str, parts: list[str]) -> str:
        chunks = [body_common] if body_common else []
        return doc + "\n" + "\n".join(top) + "\n\n" + "\n\n\n".join(chunks + parts) + "\n"

    return Generated(notebook, assemble(doc_sol, parts_sol), assemble(doc_ex, parts_ex), blocks_by_id)


def generate_all() -> dict[str, Generated]:
    from .registry import notebooks

    _read_module.cache_clear()  # pick up edits of the reference modules in a long-lived process
    return {nb: generate(nb, exs) for nb, exs in notebooks().items()}


def leaked_lines(gen: Generated) -> list[str]:
    """Solution lines that appear in the exercise file although they occur nowhere else in the solution file."""
    inside = {l.strip() for ls in gen.solution_blocks.values() for l in ls}
    sol_lines = [l.strip() for l in gen.solution.splitlines()]
    counts: dict[str, int] = {}
    for l in sol_lines:
        counts[l] = counts.get(l, 0) + 1
    block_counts: dict[str, int] = {}
    for ls in gen.solution_blocks.values():
        for l in ls:
            block_counts[l.strip()] = block_counts.get(l.strip(), 0) + 1
    stub = {l.strip() for l in gen.exercise.splitlines()}
    leaks = [l for l in sorted(inside) if l and not l.startswith("#") and l in stub
             and counts.get(l, 0) <= block_counts.get(l, 0)]
    leaks += [m for m in (BEGIN, END) if m in gen.exercise]
    return leaks


# ------------------------------------------------------------------ writing and checking the folders
def repo_root() -> str:
    """The checkout holding lessonlib (where exercises/ and solutions/ live), else the working directory."""
    import lessonlib

    here = os.path.dirname(os.path.dirname(os.path.abspath(lessonlib.__file__)))
    return here if os.path.exists(os.path.join(here, "pyproject.toml")) else os.getcwd()


@dataclass
class BuildReport:
    written: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)  # differ from what the generator writes, or missing
    stray: list[str] = field(default_factory=list)  # .py files the generator does not produce

    @property
    def ok(self) -> bool:
        return not (self.stale or self.stray)


def build(root: str | None = None, check: bool = False) -> BuildReport:
    """Write (or with ``check`` only compare) ``exercises/*.py`` and ``solutions/*.py`` under ``root``."""
    root = root or repo_root()
    report = BuildReport()
    wanted: dict[str, str] = {}
    for nb, gen in generate_all().items():
        wanted[os.path.join(root, "solutions", f"{nb}.py")] = gen.solution
        wanted[os.path.join(root, "exercises", f"{nb}.py")] = gen.exercise
    for path, text in wanted.items():
        old = open(path, encoding="utf-8").read() if os.path.exists(path) else None
        if old == text:
            continue
        if check:
            report.stale.append(path)
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            report.written.append(path)
    for folder in ("solutions", "exercises"):
        d = os.path.join(root, folder)
        if os.path.isdir(d):
            report.stray += sorted(os.path.join(d, f) for f in os.listdir(d)
                                   if f.endswith(".py") and os.path.join(d, f) not in wanted)
    return report


def find_marked_functions(package: str = "lessonlib") -> list[str]:
    """'module:function' of every top-level lessonlib function with a marked block (registered or not)."""
    spec = importlib.util.find_spec(package)
    found = []
    for base in spec.submodule_search_locations or []:
        for dirpath, dirnames, files in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__")))
            for f in sorted(files):
                if not f.endswith(".py"):
                    continue
                path = os.path.join(dirpath, f)
                src = open(path, encoding="utf-8").read()
                if BEGIN not in src:
                    continue
                rel = os.path.relpath(path, os.path.dirname(base))[:-3].replace(os.sep, ".")
                modname = rel[: -len(".__init__")] if rel.endswith(".__init__") else rel
                lines = src.splitlines()
                for node in ast.parse(src).body:
                    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                            any(BEGIN in l for l in lines[node.lineno - 1: node.end_lineno]):
                        found.append(f"{modname}:{node.name}")
    return found
