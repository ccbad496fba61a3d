"""Mutation testing of the graders: plausible wrong implementations that the checks must catch.

A module ``mutants_NN.py`` next to this file holds the mutants of notebook NN's exercises, each a complete
function a student might plausibly hand in, registered with :func:`mutant`::

    @mutant("q00_2", "forgets that both K and V are cached")
    def kv_only_k(n_layers, n_kv_heads, head_dim, bytes_per_elem=2):
        return n_layers * n_kv_heads * head_dim * bytes_per_elem

:func:`run_mutation_suite` grades every mutant with its exercise's checks; a mutant is *caught* when it
scores less than full marks (partial credit: some of its checks may pass).  ``lessonlib exercises mutants`` prints the table and the mutation score (caught / planted).
"""
from __future__ import annotations

import importlib
import pkgutil
import re
from dataclasses import dataclass, field
from typing import Callable

__all__ = ["Mutant", "MutantOutcome", "mutant", "all_mutants", "run_mutation_suite", "MIN_MUTANTS_PER_EXERCISE"]

MIN_MUTANTS_PER_EXERCISE = 3
_REGISTRY: list["Mutant"] = []


@dataclass(frozen=True)
class Mutant:
    exercise_id: str
    description: str  # the student's mistake, in words
    fn: Callable = field(repr=False)


@dataclass
class MutantOutcome:
    mutant: Mutant
    caught: bool
    caught_by: list[str]  # names of the checks that failed
    status: str  # the grader's status for the mutant (failed / timeout / ...)


def mutant(exercise_id: str, description: str) -> Callable[[Callable], Callable]:
    """Register the decorated function as a wrong implementation of ``exercise_id``."""

    def wrap(fn: Callable) -> Callable:
        _REGISTRY.append(Mutant(exercise_id, description, fn))
        return fn

    return wrap


def all_mutants() -> dict[str, list[Mutant]]:
    """Exercise id -> its mutants, from every ``mutants_NN`` module."""
    for m in pkgutil.iter_modules(__path__):
        if re.match(r"^mutants_(\d\d|classes)$", m.name):
            importlib.import_module(f"{__name__}.{m.name}")
    out: dict[str, list[Mutant]] = {}
    for mu in _REGISTRY:
        out.setdefault(mu.exercise_id, []).append(mu)
    return out


def run_mutation_suite(exercise_ids: list[str] | None = None, time_limit_s: float | None = 20.0) -> list[MutantOutcome]:
    """Grade every mutant (in this process); ``caught`` is True when the mutant earns less than full marks."""
    from ..registry import get
    from ..runner import grade_function

    outcomes = []
    for ex_id, mutants in sorted(all_mutants().items()):
        if exercise_ids is not None and ex_id not in exercise_ids:
            continue
        ex = get(ex_id)
        for mu in mutants:
            r = grade_function(ex, mu.fn, time_limit_s=time_limit_s)
            outcomes.append(MutantOutcome(mu, r.points < ex.points, [c.name for c in r.checks if not c.passed],
                                          r.status))
    return outcomes
