"""A spec module imports its helpers from where they live (``checks``, ``concept``, ``registry``, ...), never
from another chapter's spec: the concept-question helpers (``choice``, ``number``, ``answer_function_checks``)
live in ``lessonlib_grader.concept`` (#15)."""
import ast
import pathlib

import pytest

import lessonlib_grader
from lessonlib_grader import concept
from lessonlib_grader.checks import CheckFailure

SPECS = sorted(pathlib.Path(lessonlib_grader.__file__).parent.glob("specs_*.py"))


def spec_imports_of_specs() -> list[tuple[str, str]]:
    bad = []
    for path in SPECS:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[-1].startswith("specs_"):
                bad.append((path.stem, node.module))
    return bad


def test_no_spec_imports_another_spec():
    assert len(SPECS) >= 25
    assert not spec_imports_of_specs(), f"specs importing other specs: {spec_imports_of_specs()}"


def test_concept_helpers_build_the_checks():
    c = concept.choice("the letter", "C")
    assert c.answer == "C" and c.choices == ("A", "B", "C", "D") and c.kind == "concept"
    n = concept.number("the bound", 0.30)
    assert n.answer == 0.30 and n.kind == "concept"
    kinds = [ch.kind for ch in concept.answer_function_checks("letter")]
    assert kinds == ["property", "reference"]
    n.run(lambda: 0.3002, lambda: 0.30)  # within rel 1e-3: passes
    with pytest.raises(CheckFailure, match="not right"):
        n.run(lambda: 0.31, lambda: 0.30)
    with pytest.raises(CheckFailure, match="not right"):
        c.run(lambda: "B", lambda: "C")
