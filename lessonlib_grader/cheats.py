"""Static checks of a submission (run in the grader, on the file's text, before any of it executes).

:func:`scan` reads a submission with ``ast`` and reports what a course's honest answer never needs:

* importing a graded function from its reference module (``from lessonlib.prune.masks import nm_mask``,
  ``import lessonlib.prune.masks as m; m.nm_mask``), or anything from ``solutions``/``exercises``;
* dynamic code and imports: ``exec``, ``eval``, ``compile``, ``__import__``, ``importlib``, ``runpy``;
* reaching for files or frames that hold other people's answers: ``open``/``Path.read_text`` of a path
  naming ``solutions``, ``lessonlib.__file__``, ``inspect.stack``/``sys._getframe``/``gc.get_objects``;
* process and file-system escapes: ``subprocess``, ``os.system``, ``os.fork``, ``ctypes``, ``signal``.

A finding names the question it concerns (the graded function it imports) or ``None`` for the whole file;
the runner flags those questions: zero points and the reason in the report, for the instructor to review.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass

__all__ = ["Finding", "scan", "defined_names"]

DYNAMIC = {"exec", "eval", "compile", "__import__", "breakpoint"}
BAD_MODULES = {"importlib": "dynamic imports", "runpy": "running other files", "subprocess": "subprocesses",
               "ctypes": "raw memory access", "multiprocessing": "subprocesses", "inspect": "frame inspection",
               "gc": "the garbage collector's object list", "signal": "signal handlers", "pty": "subprocesses",
               "socket": "network access", "solutions": "the reference solutions", "exercises": "other exercise files",
               "lessonlib.grading": "the grader", "lessonlib_grader": "the grader"}
BAD_ATTRS = {"_getframe": "frame inspection", "system": "running shell commands", "fork": "subprocesses",
             "popen": "subprocesses", "execv": "subprocesses", "kill": "signals", "setprofile": "tracing hooks",
             "settrace": "tracing hooks", "f_back": "frame inspection", "f_globals": "frame inspection",
             "f_locals": "frame inspection", "__code__": "code objects", "__file__": "file locations",
             "__globals__": "other functions' globals", "__builtins__": "the builtins"}


@dataclass(frozen=True)
class Finding:
    line: int
    what: str
    question_function: str | None = None  # the graded function it concerns, None = the whole file

    def __str__(self) -> str:
        return f"line {self.line}: {self.what}"


def defined_names(source: str) -> set[str]:
    """Top-level names a file binds (to infer its notebook without running it)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    out = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, ast.Assign):
            out |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out.add(node.target.id)
    return out


def scan(source: str, graded: dict[str, str]) -> list[Finding]:
    """Findings in ``source``; ``graded`` maps each graded function name to its reference module."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []  # the import will fail and be reported as such
    ref_modules = set(graded.values())
    out: list[Finding] = []
    aliases: dict[str, str] = {}  # local name -> module it stands for

    def bad_module(mod: str) -> str | None:
        for m, why in BAD_MODULES.items():
            if mod == m or mod.startswith(m + "."):
                return why
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                why = bad_module(a.name)
                if why:
                    out.append(Finding(node.lineno, f"imports {a.name} ({why})"))
                aliases[(a.asname or a.name).split(".")[0] if not a.asname else a.asname] = a.name
        elif isinstance(node, ast.ImportFrom):
            mod = ("." * node.level) + (node.module or "")
            why = bad_module(mod)
            if why:
                out.append(Finding(node.lineno, f"imports from {mod} ({why})"))
            for a in node.names:
                full = f"{mod}.{a.name}" if mod else a.name
                if a.name in graded and (mod in ref_modules or mod.startswith("lessonlib") or node.level):
                    out.append(Finding(node.lineno, f"imports the graded function {a.name} from {mod} instead of "
                                                    "writing it", a.name))
                elif full in ref_modules:
                    aliases[a.asname or a.name] = full
                elif bad_module(full):
                    out.append(Finding(node.lineno, f"imports {full} ({bad_module(full)})"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in DYNAMIC:
            out.append(Finding(node.lineno, f"calls {node.func.id}() (dynamic code is not allowed in a submission)"))
        elif isinstance(node, ast.Name) and node.id in DYNAMIC and not isinstance(node.ctx, ast.Store):
            out.append(Finding(node.lineno, f"uses {node.id} (dynamic code is not allowed in a submission)"))
        elif isinstance(node, ast.Attribute):
            if node.attr in graded and isinstance(node.value, (ast.Name, ast.Attribute)):
                base = ast.unparse(node.value)
                mod = aliases.get(base.split(".")[0], "")
                mod = mod + base[len(base.split(".")[0]):] if mod else base
                if mod in ref_modules or base in aliases and aliases[base] in ref_modules:
                    out.append(Finding(node.lineno, f"uses the graded reference {mod}.{node.attr}", node.attr))
            elif node.attr in BAD_ATTRS:
                out.append(Finding(node.lineno, f"uses .{node.attr} ({BAD_ATTRS[node.attr]})"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and len(node.value) < 300 \
                and re.search(r"(^|[/\\])solutions([/\\]|$)", node.value) and not re.search(r"\s", node.value):
            out.append(Finding(node.lineno, f"names the solutions folder ({node.value!r})"))
    seen, uniq = set(), []
    for f in sorted(out, key=lambda f: f.line):
        if (f.line, f.what) not in seen:
            seen.add((f.line, f.what))
            uniq.append(f)
    return uniq
