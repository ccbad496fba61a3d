"""The one mechanism for concept questions: a number within a tolerance, or one choice of several.

Two ways to ask one, graded by the same checks:

* :func:`lessonlib_grader.registry.concept_number` / :func:`~lessonlib_grader.registry.concept_choice`: the
  student's answer is a top-level value ``answer_qNN_k`` (``None`` = not answered yet);
* a zero-argument function in :mod:`lessonlib.concepts` (the chapters' answer functions, e.g. ``q03_c1``)
  with :func:`answer_checks` / :func:`concept_checks` (specs 01-09), or :func:`choice` / :func:`number` plus
  :func:`answer_function_checks` (specs 10-24): the answer, its type, and agreement with the reference
  function.

The expected answer is an argument of these constructors in a spec, so the student release blanks it
(:func:`lessonlib_grader.release.strip_spec`); a blanked answer makes the check "graded by your instructor".
"""
from __future__ import annotations

import math
from typing import Callable

from .checks import Check, CheckFailure, ReferenceUnavailable, assert_python_float, call

__all__ = ["concept_number_check", "concept_choice_check", "answer_type_check", "agrees_with_answer_function",
           "answer_checks", "concept_checks", "choice", "number", "answer_function_checks", "LETTERS"]

LETTERS = ("A", "B", "C", "D")


def _reader_answer(fn: Callable, ref: Callable, answer: object):
    """The reader's answer (``fn()``), once the question has a reference answer and the reader has one."""
    if answer is None:
        raise ReferenceUnavailable("concept answer")
    got = call(fn, _ref=ref)
    if got is None:
        raise NotImplementedError("no answer yet")
    return got


def concept_number_check(answer: float | None, *, rel_tol: float = 0.0, abs_tol: float = 0.0,
                         name: str = "the number") -> Check:
    """The answer is a number within ``rel_tol``/``abs_tol`` of ``answer`` (both bounds inclusive)."""
    if answer is not None and (isinstance(answer, bool) or not isinstance(answer, (int, float))
                               or not math.isfinite(answer)):
        raise ValueError(f"concept answer {answer!r} must be a finite number")
    if not (rel_tol >= 0 and abs_tol >= 0 and math.isfinite(rel_tol) and math.isfinite(abs_tol)):
        raise ValueError(f"rel_tol={rel_tol!r}, abs_tol={abs_tol!r} must be finite and >= 0")

    def run(fn: Callable, ref: Callable) -> None:
        got = _reader_answer(fn, ref, answer)
        assert_python_float(got, what="your answer")
        if not math.isfinite(float(got)) or not math.isclose(float(got), answer, rel_tol=rel_tol, abs_tol=abs_tol):
            raise CheckFailure(f"your answer {got!r} is not right (tolerance: rel {rel_tol:g}, abs {abs_tol:g})")

    c = Check(name, "concept", run)
    c.answer = answer  # type: ignore[attr-defined]  (for the generated solutions/ file)
    return c


def concept_choice_check(answer: str | None, choices: tuple[str, ...], name: str = "the choice") -> Check:
    """The answer is the right one of ``choices`` (compared after strip/lower-casing)."""
    norm = [str(c).strip().lower() for c in choices]
    if len(set(norm)) != len(norm) or len(norm) < 2:
        raise ValueError(f"choices={choices!r} must be at least two distinct strings")
    if answer is not None and str(answer).strip().lower() not in norm:
        raise ValueError(f"answer {answer!r} is not one of the choices {choices!r}")

    def run(fn: Callable, ref: Callable) -> None:
        got = _reader_answer(fn, ref, answer)
        if not isinstance(got, str) or got.strip().lower() not in norm:
            raise CheckFailure(f"your answer {got!r} must be one of {list(choices)}")
        if got.strip().lower() != str(answer).strip().lower():
            raise CheckFailure(f"your answer {got!r} is not right")

    c = Check(name, "concept", run)
    c.answer, c.choices = answer, tuple(choices)  # type: ignore[attr-defined]
    return c


def answer_type_check(kind: str | None) -> Check:
    """The answer function returns the right type: ``kind`` "letter" (one letter as a string), "number"
    (an int or float, not a bool) or None (either: the release, where the answer is blanked)."""
    if kind not in ("letter", "number", None):
        raise ValueError(f"kind={kind!r} must be 'letter', 'number' or None")

    def run(fn: Callable, ref: Callable) -> None:
        got = call(fn, _ref=ref)
        if got is None:
            raise NotImplementedError("no answer yet")
        letter = isinstance(got, str) and len(got.strip()) == 1 and got.strip().isalpha()
        number = not isinstance(got, bool) and isinstance(got, (int, float))
        if kind == "letter" and not letter:
            raise CheckFailure(f"the answer must be one letter as a string, got {got!r}")
        if kind == "number" and not number:
            raise CheckFailure(f"the answer must be a number (int or float), got {type(got).__name__} {got!r}")
        if kind is None and not (letter or number):
            raise CheckFailure(f"the answer must be one letter or a number, got {got!r}")

    return Check(f"returns {'one letter' if kind == 'letter' else 'a number' if kind == 'number' else 'an answer'}",
                 "property", run)


def agrees_with_answer_function(kind: str | None, rel_tol: float = 1e-3, abs_tol: float = 1e-2) -> Check:
    """The answer equals what the reference answer function returns (letters case-insensitively)."""

    def run(fn: Callable, ref: Callable) -> None:
        got, want = call(fn, _ref=ref), ref()
        if got is None:
            raise NotImplementedError("no answer yet")
        if isinstance(want, str):
            if not isinstance(got, str) or got.strip().upper() != want.strip().upper():
                raise CheckFailure(f"the answer {got!r} differs from the reference answer")
        elif isinstance(got, bool) or not isinstance(got, (int, float)) or not math.isclose(
                float(got), float(want), rel_tol=rel_tol, abs_tol=abs_tol):
            raise CheckFailure(f"the answer {got!r} differs from the reference answer")

    return Check("agrees with the reference answer", "reference", run)


def answer_checks(answer: str | float | None, *, choices: tuple[str, ...] = LETTERS, rel_tol: float = 1e-3,
                  abs_tol: float = 1e-2, name: str = "the answer") -> tuple[Check, Check, Check]:
    """The checks of a question answered by a zero-argument function: the answer (a letter of ``choices`` or a
    number within the tolerances), its type, and agreement with the reference function."""
    if isinstance(answer, str):
        kind: str | None = "letter"
        first = concept_choice_check(answer, tuple(choices), name=name)
    else:
        kind = None if answer is None else "number"
        first = concept_number_check(answer, rel_tol=rel_tol, abs_tol=abs_tol, name=name)
    return first, answer_type_check(kind), agrees_with_answer_function(kind, rel_tol, abs_tol)


def concept_checks(qid: str, answer: str | float | None, rtol: float = 1e-3, atol: float = 1e-2) -> tuple:
    """The checks of concept question ``qid`` answered by a function of :mod:`lessonlib.concepts` (specs 01-09):
    :func:`answer_checks` with a letter A-D or a number within ``rtol``/``atol``."""
    return answer_checks(answer, rel_tol=rtol, abs_tol=atol, name="the answer")


def choice(name: str, answer: str | None, choices: str = "ABCD") -> Check:
    """A concept question answered by one letter of ``choices`` (:func:`concept_choice_check`)."""
    return concept_choice_check(answer, tuple(choices), name=name)


def number(name: str, answer: float | None, rel_tol: float = 1e-3) -> Check:
    """A concept question answered by a number within ``rel_tol`` (:func:`concept_number_check`)."""
    return concept_number_check(answer, rel_tol=rel_tol, name=name)


def answer_function_checks(kind: str) -> tuple[Check, Check]:
    """The property and reference companions of a concept question answered by a function: the answer's type
    (``kind`` "letter" or "number") and agreement with the reference answer function."""
    return answer_type_check(kind), agrees_with_answer_function(kind)
