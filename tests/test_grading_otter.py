"""The otter-grader master notebooks built from the specs (the full assign/run round is `make otter-check`)."""
from __future__ import annotations

import re

import pytest
import torch

from lessonlib_grader import registry
from lessonlib_grader.otter import is_public, master_notebook, run_check, check_cases


def _question_cells(nb, qid: str) -> list:
    cells, inside = [], False
    for c in nb.cells:
        if c.cell_type == "raw" and c.source.startswith("# BEGIN QUESTION") and f"name: {qid}" in c.source:
            inside = True
        elif c.cell_type == "raw" and c.source.startswith("# END QUESTION"):
            inside = False
        elif inside:
            cells.append(c)
    return cells


@pytest.mark.parametrize("notebook", ["01_linear_quantization", "03_gptq", "13_response_distillation"])
def test_master_notebook_has_every_question_and_every_check(notebook):
    nb = master_notebook(notebook)
    assert nb.cells[0].cell_type == "raw" and nb.cells[0].source.startswith("# ASSIGNMENT CONFIG")
    assert "ok_format: false" in nb.cells[0].source  # exception-based tests
    for ex in registry.for_notebook(notebook):
        cells = _question_cells(nb, ex.id)
        code = [c.source for c in cells if c.cell_type == "code"]
        solution, tests = code[0], code[1:]
        assert "# BEGIN SOLUTION" in solution or "# SOLUTION" in solution, ex.id
        assert len(tests) == len(ex.checks), ex.id
        for c, t in zip(ex.checks, tests):
            assert repr(c.name) in t and f"run_check({ex.id!r}" in t
        pts = [float(re.search(r"points: ([0-9.]+)", t).group(1)) for t in tests]
        assert sum(pts) == pytest.approx(ex.points, abs=1e-9)  # partial credit adds up to the question


def test_points_follow_the_weights_and_reference_checks_are_hidden():
    ex = registry.get("q03_1")
    cases = check_cases(ex)
    total = sum(c.weight for c in ex.checks)
    for c, (name, pts, hidden) in zip(ex.checks[:-1], cases[:-1]):
        assert name == c.name and pts == pytest.approx(ex.points * c.weight / total, abs=1e-4)
        assert hidden == (c.kind == "reference" or c.hidden)
    assert any(h for _, _, h in cases) and any(not h for _, _, h in cases)
    concept = registry.get("q03_2")  # a concept answer: never a public test
    assert not any(is_public(concept, c) for c in concept.checks)


def test_run_check_passes_the_reference_and_explains_a_wrong_answer():
    ex = registry.get("q03_1")
    ref = ex.reference_fn()
    for c in ex.checks:
        run_check("q03_1", c.name, ref)

    def column_not_row(W1, U1, i, q):  # the classic mistake: U1[i:, i] instead of U1[i, i:]
        err = (W1[:, i] - q) / U1[i, i]
        W1[:, i:] -= err.unsqueeze(1) @ U1[i:, i].unsqueeze(0)
        return err

    failures = []
    for c in ex.checks:
        try:
            run_check("q03_1", c.name, column_not_row)
        except AssertionError as e:
            failures.append(str(e))
    assert failures and all("q03_1" in f for f in failures)
    with pytest.raises(AssertionError, match="not answered"):
        run_check("q03_1", ex.checks[0].name, ...)
    with pytest.raises(ValueError, match="no check named"):
        run_check("q03_1", "no such check", ref)
    assert torch.is_tensor(ref(torch.ones(2, 2), torch.eye(2), 0, torch.zeros(2)))


def test_otter_cli_refuses_an_unknown_chapter(capsys):
    from lessonlib_grader.cli import cli_exercises

    assert cli_exercises(["otter", "99", "--out", "unused"]) == 2
    assert "unknown chapter" in capsys.readouterr().err
