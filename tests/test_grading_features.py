"""Partial credit, concept questions, per-student hidden seeds, the release, the similarity normaliser and
the in-place / dtype classes (fast: everything in this process except nothing)."""
from __future__ import annotations

import os
import random

import pytest
import torch

from lessonlib_grader import extract, registry, runner
from lessonlib_grader.checks import (SEED_FOR, Check, CheckFailure, agrees_with_reference, assert_close, call,
                                      literal, student_seed)
from lessonlib_grader.registry import Exercise, concept_choice, concept_number
from lessonlib_grader.release import build_release, scan_release, strip_spec
from lessonlib_grader.similarity import normalise, similarity


def _double(x):
    return 2 * x


def test_partial_credit_follows_check_weights(monkeypatch):
    monkeypatch.setattr(Exercise, "reference_fn", lambda self: _double)
    checks = tuple(literal(f"c{i}", (i,), expected=2.0 * i) for i in range(7)) + (
        literal("big", (10,), expected=20.0, weight=3.0),)
    ex = Exercise(id="q00_9", points=10, notebook="00_model_anatomy", reference="m:double", statement="s",
                  checks=checks)
    r = runner.grade_function(ex, lambda x: 2 * x if x < 5 else 0)  # 5 of 7 unit checks, not the heavy one
    assert r.status == "failed" and r.points == pytest.approx(10 * 5 / 10)
    assert runner.grade_function(ex, _double).points == 10
    with pytest.raises(ValueError, match="weight"):
        literal("w", (1,), expected=2.0, weight=0)


def test_concept_questions_number_and_choice():
    num = concept_number("q00_8", points=2, notebook="00_model_anatomy", answer=0.125, abs_tol=1e-3,
                         statement="fraction")
    assert num.concept and num.function == "answer_q00_8"
    assert runner.grade_function(num, 0.1254).points == 2
    assert runner.grade_function(num, 0.13).points == 0
    assert runner.grade_function(num, lambda: None).status == "not_implemented"
    ch = concept_choice("q00_7", points=1, notebook="00_model_anatomy", answer="b", choices=("a", "b", "c"),
                        statement="which")
    assert runner.grade_function(ch, " B ").points == 1 and runner.grade_function(ch, "a").points == 0
    assert "must be one of" in runner.grade_function(ch, "d").message
    with pytest.raises(ValueError, match="not one of"):
        concept_choice("q00_6", points=1, notebook="00_model_anatomy", answer="z", choices=("a", "b"), statement="s")
    gen = extract.generate("00_model_anatomy", [num, ch])
    assert "answer_q00_8 = None" in gen.exercise and "answer_q00_8 = 0.125" in gen.solution


def test_student_seeds_differ_per_student_and_need_the_key(monkeypatch):
    a, b = student_seed("k" * 16, "alice", "q06_1", "c"), student_seed("k" * 16, "bob", "q06_1", "c")
    assert a != b and a == student_seed("k" * 16, "alice", "q06_1", "c") and 0 <= a < 2**63
    assert a != student_seed("other-key-123456", "alice", "q06_1", "c")
    seen = []

    def case(gen, rng):
        x = torch.randn(3, generator=gen)
        seen.append(x)
        return (x,), {}

    chk = agrees_with_reference("r", case, n_cases=1)
    chk.run(_double, _double)
    tok = SEED_FOR.set(lambda name: student_seed("k" * 16, "alice", "q", name))
    try:
        chk.run(_double, _double)
    finally:
        SEED_FOR.reset(tok)
    assert not torch.equal(seen[0], seen[1])


def test_in_place_changes_inside_containers_are_caught():
    def pops(d):
        d.pop("a")
        return 1.0

    with pytest.raises(CheckFailure, match="modified its input `d` in place"):
        call(pops, {"a": torch.ones(2), "b": torch.zeros(2)})

    def edits_nested(xs):
        xs[1][0].add_(1)
        return 1.0

    with pytest.raises(CheckFailure, match="in place"):
        call(edits_nested, [torch.ones(1), [torch.ones(2)]])
    assert call(lambda d: sum(v.sum() for v in d.values()), {"a": torch.ones(2)}) == 2


def test_dtype_is_enforced_exactly():
    with pytest.raises(CheckFailure, match="expected dtype torch.float32, got dtype torch.float64"):
        assert_close(torch.ones(2, dtype=torch.float64), torch.ones(2), what="f")
    with pytest.raises(CheckFailure, match="dtype"):
        assert_close(torch.ones(2, dtype=torch.int32), torch.ones(2, dtype=torch.int64), what="f")


def test_similarity_sees_through_renaming():
    a = "def f(x, y):\n    '''doc'''\n    total = x + y\n    return total * 2\n"
    b = "def g(p, q):\n    s = p + q  # same thing\n    return s * 2\n"
    c = "def h(x, y):\n    return torch.maximum(x, y) - 1\n"
    assert similarity(normalise(a), normalise(b)) == 1.0
    assert similarity(normalise(a), normalise(c)) < 0.9
    assert normalise("def f(x):\n    raise NotImplementedError\n") == []


def test_spec_release_drops_hidden_checks_and_concept_answers():
    src = ("checks = (literal('a', (1,), expected=2.0), literal('b', (2,), expected=4.0, hidden=True))\n"
           "q = concept_number('q00_8', points=1, notebook='00_x', answer=0.25, statement='s')\n"
           "@prop('secret', hidden=True)\ndef _p(fn, ref):\n    pass\nmore = (_p, literal('c', (3,), expected=6.0))\n")
    out = strip_spec(src)
    assert "hidden" not in out and "expected=4.0" not in out and "answer=None" in out and "0.25" not in out
    assert "more = (literal(" in out


def test_release_holds_no_reference_answer(tmp_path):
    out = tmp_path / "release"
    leaks = build_release(str(out))
    assert leaks == []
    assert not (out / "solutions").exists() and not (out / "tests").exists()
    assert not (out / "lessonlib_grader" / "mutants").exists() and not (out / "lessonlib" / "grading" / "mutants").exists()
    assert (out / "exercises").is_dir() and (out / "notebooks").is_dir()
    assert not (out / "docs" / "INSTRUCTORS.md").exists()
    # the scanner does see a planted reference body
    sol = open(os.path.join(extract.repo_root(), "solutions", "06_magnitude_pruning.py"), encoding="utf-8").read()
    (out / "exercises" / "leaked.py").write_text(sol.replace("# BEGIN SOLUTION", "# (copied)"))
    assert any("q06_1" in l for l in scan_release(str(out)))
    with pytest.raises(ValueError, match="not empty"):
        build_release(str(out))


def test_every_exercise_keeps_its_probes_only_while_its_function_matches():
    from lessonlib_grader.probes import PROBES, extra_checks

    for qid, (fn, checks) in PROBES.items():
        ex = next((e for e in registry.all_exercises() if e.id == qid), None)
        if ex is not None and ex.function == fn:
            assert all(c.name in {x.name for x in ex.checks} for c in checks)
    assert extra_checks("q06_1", "some_other_function") == ()
