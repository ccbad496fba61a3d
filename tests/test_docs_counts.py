"""The instructors' guide states how many questions, points and planted wrong answers the course has: those
numbers must be the registry's, so the guide cannot drift when a chapter adds an exercise."""
from __future__ import annotations

import pathlib
import re

from lessonlib_grader import registry
from lessonlib_grader.mutants import all_mutants

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "INSTRUCTORS.md"


def test_instructors_guide_counts_match_the_registry() -> None:
    text = DOC.read_text(encoding="utf-8")
    ex = registry.all_exercises()
    m = re.search(r"\*\*(\d+) questions, (\d+) points\*\*", text)
    assert m, "docs/INSTRUCTORS.md must state '**N questions, P points**'"
    assert (int(m.group(1)), int(m.group(2))) == (len(ex), sum(e.points for e in ex))
    total = re.search(r"curriculum's total \((\d+)\)", text)
    assert total and int(total.group(1)) == sum(e.points for e in ex)
    n_mut = sum(len(v) for v in all_mutants().values())
    caught = re.search(r"today (\d+) of (\d+)", text)
    assert caught and int(caught.group(1)) == int(caught.group(2)) == n_mut
    last = max(e.id for e in ex)
    assert f"`{last}`" in text, f"the guide's range of ids must end at {last}"
