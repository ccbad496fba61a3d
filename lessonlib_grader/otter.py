"""The course on otter-grader: one assignment notebook per chapter, hidden tests that call lessonlib's checks.

Otter-grader (UC Berkeley's autograder, the one behind many Gradescope courses) takes an instructor's
*master notebook* -- questions, reference solutions between ``# BEGIN SOLUTION`` / ``# END SOLUTION`` and
test cells -- and ``otter assign`` turns it into a student notebook (solutions replaced by ``...``, public
tests only) and an autograder zip (every test, hidden ones included) that Gradescope runs, or that
``otter run`` runs on the instructor's machine without Docker.

:func:`master_notebook` writes that master notebook from the same registry ``lessonlib grade`` uses, so the
two flows grade with the same checks:

* each question's code cell is the generated ``solutions/NN_topic.py`` function (its markers are otter's);
  a concept answer is a line ``answer_qNN_k = ...  # SOLUTION``;
* each check of the spec becomes one otter test case worth ``points * weight / total weight`` (the same
  partial credit as ``lessonlib grade``); literal and property checks are public (students run them with
  ``grader.check``), reference checks, concept answers and checks a spec marks ``hidden`` are hidden;
* a test case calls :func:`run_check`, which runs that one check through
  :func:`lessonlib_grader.runner.grade_function`: the tensor-aware comparison, the in-place check on every
  argument, the dtype rule and the failure message with the call and the first differing element.

:func:`build_assignment` runs ``otter assign``; :func:`grade_submission` runs ``otter run`` and returns its
score.  ``tools/otter_flow.py`` (``make otter-check``, in CI) does the whole round on two chapters.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Any

from . import registry
from .extract import BEGIN, END  # the same markers as otter's
from .registry import Exercise

__all__ = ["run_check", "is_public", "master_notebook", "build_assignment", "grade_submission", "check_cases"]

_POINT_DIGITS = 4
_ANSWER_MODULES = ("lessonlib.concepts", "lessonlib.practice")  # zero-argument functions returning an answer


def run_check(exercise_id: str, check_name: str, answer: Any) -> None:
    """Run one check of ``exercise_id`` on the student's ``answer`` (a function, or a concept answer).

    Raises ``AssertionError`` with lessonlib's explanation when the check fails (otter counts the test
    case as failed); returns quietly when it passes.
    """
    from .runner import grade_function

    ex = registry.get(exercise_id)
    found = [c for c in ex.checks if c.name == check_name]
    if not found:
        raise ValueError(f"{exercise_id} has no check named {check_name!r}; its checks: "
                         f"{[c.name for c in ex.checks]}")
    if answer is Ellipsis or answer is None:
        raise AssertionError(f"{exercise_id}: not answered yet (replace the `...`)")
    res = grade_function(dataclasses.replace(ex, checks=tuple(found)), answer, time_limit_s=ex.time_limit_s)
    if res.status == "passed" and not res.checks:  # the reference is stubbed here (a student's copy)
        print(f"{exercise_id} '{check_name}': needs the reference implementation; graded by your instructor")
        return
    if res.status != "passed":
        raise AssertionError(f"{exercise_id} '{check_name}' ({res.status}): {res.message}")


def is_public(ex: Exercise, check: Any) -> bool:
    """Whether a check is an otter *public* test: visible literal and property checks of a coding question."""
    concept = ex.concept or ex.module in _ANSWER_MODULES  # a concept answer is never public
    return not concept and not check.hidden and check.kind in ("literal", "property")


def check_cases(ex: Exercise) -> list[tuple[str, float, bool]]:
    """``(check name, points, hidden)`` for every check; the points add up to ``ex.points`` exactly."""
    total = sum(c.weight for c in ex.checks)
    pts = [round(ex.points * c.weight / total, _POINT_DIGITS) for c in ex.checks]
    pts[-1] = round(ex.points - sum(pts[:-1]), _POINT_DIGITS)  # rounding goes to the last test case
    return [(c.name, p, not is_public(ex, c)) for c, p in zip(ex.checks, pts)]


# ------------------------------------------------------------------ the master notebook
def _split_solution(text: str, exercises: list[Exercise]) -> tuple[str, dict[str, str]]:
    """The generated solution file -> (setup code, {exercise id: its cell}); comments stay with their code."""
    lines = text.splitlines()
    tree = ast.parse(text)
    by_name = {ex.function: ex for ex in exercises}
    setup: list[str] = []
    cells: dict[str, str] = {}
    prev_end = 0
    for i, node in enumerate(tree.body):
        if i == 0 and isinstance(node, ast.Expr) and isinstance(getattr(node, "value", None), ast.Constant):
            prev_end = node.end_lineno  # the module docstring
            continue
        end = node.end_lineno  # extend over indented comments after it (an END SOLUTION after a return)
        while end < len(lines) and (not lines[end].strip() or (lines[end].lstrip().startswith("#") and
                                                               lines[end].startswith(" "))):
            end += 1
        chunk = lines[prev_end: end]  # the comments above the statement, the statement, its end markers
        prev_end = end
        name = (node.name if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else
                node.targets[0].id if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
                else None)
        ex = by_name.get(name) if name else None
        if ex is None:
            setup += chunk
            continue
        body = "\n".join(chunk).strip("\n")
        if ex.concept:  # "answer_q03_2 = 0.125" -> otter shows "answer_q03_2 = ..."
            body = re.sub(rf"^({re.escape(ex.function)} = .*)$", r"\1  # SOLUTION", body, flags=re.M)
        cells[ex.id] = body
    missing = [ex.id for ex in exercises if ex.id not in cells]
    if missing:
        raise ValueError(f"the generated solution file has no code for {missing}")
    return "\n".join(setup).strip("\n"), cells


def _test_cell(ex: Exercise, name: str, points: float, hidden: bool, k: int) -> str:
    var = ex.function
    config = f'""" # BEGIN TEST CONFIG\npoints: {points}\nhidden: {str(hidden).lower()}\n""" # END TEST CONFIG'
    fn = f"test_{ex.id}_{k}"
    return (f"{config}\ndef {fn}({var}):\n    from lessonlib_grader.otter import run_check\n"
            f"    run_check({ex.id!r}, {name!r}, {var})\n\n{fn}({var})")


def master_notebook(notebook: str):
    """The otter master notebook of one chapter (an ``nbformat`` notebook; see the module docstring)."""
    import nbformat.v4 as v4

    from .extract import generate

    exercises = registry.for_notebook(notebook)
    gen = generate(notebook, exercises)
    setup, cells = _split_solution(gen.solution, exercises)
    config = {"name": notebook, "requirements": None, "run_tests": True, "init_cell": True,
              "check_all_cell": False, "export_cell": False, "generate": True,
              "tests": {"ok_format": False, "files": False}}
    nb = v4.new_notebook()
    nb.cells.append(v4.new_raw_cell("# ASSIGNMENT CONFIG\n" + _yaml(config)))
    nb.cells.append(v4.new_markdown_cell(f"# {notebook}: graded exercises ({registry.total_points(notebook)} "
                                         "points)\n\nWrite the code where you see `...`, then run the cell "
                                         "below it: `grader.check(...)` runs the public tests."))
    nb.cells.append(v4.new_code_cell(setup or "import torch"))
    for ex in exercises:
        nb.cells.append(v4.new_raw_cell(f"# BEGIN QUESTION\nname: {ex.id}"))
        hints = "".join(f"\n- {h}" for h in ex.hints)
        nb.cells.append(v4.new_markdown_cell(f"**{ex.id}** (`{ex.function}`, {ex.points} points). "
                                             f"{ex.statement}{chr(10) + hints if hints else ''}"))
        nb.cells.append(v4.new_raw_cell(BEGIN))
        nb.cells.append(v4.new_code_cell(cells[ex.id]))
        nb.cells.append(v4.new_raw_cell(END))
        nb.cells.append(v4.new_raw_cell("# BEGIN TESTS"))
        for k, (name, pts, hidden) in enumerate(check_cases(ex)):
            nb.cells.append(v4.new_code_cell(_test_cell(ex, name, pts, hidden, k)))
        nb.cells.append(v4.new_raw_cell("# END TESTS"))
        nb.cells.append(v4.new_raw_cell("# END QUESTION"))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def _yaml(d: dict, indent: str = "") -> str:
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out.append(f"{indent}{k}:\n" + _yaml(v, indent + "  ").rstrip("\n"))
        else:
            out.append(f"{indent}{k}: {'null' if v is None else str(v).lower() if isinstance(v, bool) else v}")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------ otter assign / otter run
def _otter(args: list[str], cwd: str | None = None, timeout: float = 600.0) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=_root() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        return subprocess.run([sys.executable, "-m", "otter", *args], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=timeout, check=True)
    except FileNotFoundError as e:  # pragma: no cover
        raise RuntimeError(f"otter-grader is not installed: run `make otter-deps` ({e})") from None
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"otter {args[0]} failed (exit {e.returncode}):\n{e.stdout[-3000:]}\n"
                           f"{e.stderr[-3000:]}") from None


def _root() -> str:
    from .extract import repo_root

    return repo_root()


def build_assignment(notebook: str, out: str) -> dict[str, str]:
    """Write the master notebook to ``out/NN_topic.ipynb`` and run ``otter assign`` into ``out/dist``.

    Returns the paths: ``master``, ``student`` (what students get), ``solution`` (the autograder's copy,
    answers included) and ``autograder`` (the zip for Gradescope or ``otter run``).  ``otter assign`` runs
    every test against the reference solutions first, so a broken assignment never ships.
    """
    import nbformat

    os.makedirs(out, exist_ok=True)
    master = os.path.join(out, f"{notebook}.ipynb")
    nbformat.write(master_notebook(notebook), master)
    dist = os.path.join(out, "dist")
    shutil.rmtree(dist, ignore_errors=True)  # a previous build's zip would make two
    _otter(["assign", "--no-pdfs", "-v", master, dist])
    ag = os.path.join(dist, "autograder")
    zips = sorted(f for f in os.listdir(ag) if f.endswith(".zip"))
    if len(zips) != 1:
        raise RuntimeError(f"otter assign wrote {zips} into {ag}; expected one autograder zip")
    return {"master": master, "student": os.path.join(dist, "student", f"{notebook}.ipynb"),
            "solution": os.path.join(ag, f"{notebook}.ipynb"), "autograder": os.path.join(ag, zips[0])}


def grade_submission(submission: str, autograder: str, timeout: float = 600.0) -> dict[str, Any]:
    """``otter run`` on one notebook (no Docker): ``{"score", "possible", "tests": {name: (score, max)}}``."""
    with tempfile.TemporaryDirectory(prefix="otter-run-") as tmp:
        _otter(["run", "--no-logo", "-a", os.path.abspath(autograder), "-o", tmp, os.path.abspath(submission)],
               cwd=tmp, timeout=timeout)
        with open(os.path.join(tmp, "results.json")) as f:
            results = json.load(f)
    tests = {t["name"]: (float(t.get("score") or 0.0), float(t.get("max_score") or 0.0))
             for t in results.get("tests", [])}
    return {"score": round(sum(s for s, _ in tests.values()), 2),
            "possible": round(sum(m for _, m in tests.values()), 2), "tests": tests}
