"""Checks of concept questions: a number within a tolerance, or one choice of several.

Built by :func:`lessonlib.grading.registry.concept_number` / :func:`~lessonlib.grading.registry.concept_choice`;
the student's answer is a top-level value ``answer_qNN_k`` (``None`` = not answered yet).
"""
from __future__ import annotations

import math
from typing import Callable

from .checks import Check, CheckFailure, ReferenceUnavailable, assert_python_float, call

__all__ = ["concept_number_check", "concept_choice_check"]


def concept_number_check(answer: float | None, *, rel_tol: float = 0.0, abs_tol: float = 0.0) -> Check:
    """The answer is a number within ``rel_tol``/``abs_tol`` of ``answer`` (both bounds inclusive)."""
    if answer is not None and (isinstance(answer, bool) or not isinstance(answer, (int, float))
                               or not math.isfinite(answer)):
        raise ValueError(f"concept answer {answer!r} must be a finite number")
    if not (rel_tol >= 0 and abs_tol >= 0 and math.isfinite(rel_tol) and math.isfinite(abs_tol)):
        raise ValueError(f"rel_tol={rel_tol!r}, abs_tol={abs_tol!r} must be finite and >= 0")

    def run(fn: Callable, ref: Callable) -> None:
        if answer is None:
            raise ReferenceUnavailable("concept answer")
        got = call(fn, _ref=ref)
        if got is None:
            raise NotImplementedError("no answer yet")
        assert_python_float(got, what="your answer")
        if not math.isfinite(float(got)) or not math.isclose(float(got), answer, rel_tol=rel_tol, abs_tol=abs_tol):
            raise CheckFailure(f"your answer {got!r} is not right (tolerance: rel {rel_tol:g}, abs {abs_tol:g})")

    c = Check("the number", "concept", run)
    c.answer = answer  # type: ignore[attr-defined]  (for the generated solutions/ file)
    return c


def concept_choice_check(answer: str | None, choices: tuple[str, ...]) -> Check:
    """The answer is the right one of ``choices`` (compared after strip/lower-casing)."""
    norm = [str(c).strip().lower() for c in choices]
    if len(set(norm)) != len(norm) or len(norm) < 2:
        raise ValueError(f"choices={choices!r} must be at least two distinct strings")
    if answer is not None and str(answer).strip().lower() not in norm:
        raise ValueError(f"answer {answer!r} is not one of the choices {choices!r}")

    def run(fn: Callable, ref: Callable) -> None:
        if answer is None:
            raise ReferenceUnavailable("concept answer")
        got = call(fn, _ref=ref)
        if got is None:
            raise NotImplementedError("no answer yet")
        if not isinstance(got, str) or got.strip().lower() not in norm:
            raise CheckFailure(f"your answer {got!r} must be one of {list(choices)}")
        if got.strip().lower() != str(answer).strip().lower():
            raise CheckFailure(f"your answer {got!r} is not right")

    c = Check("the choice", "concept", run)
    c.answer, c.choices = answer, tuple(choices)  # type: ignore[attr-defined]
    return c
