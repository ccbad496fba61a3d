"""The exercise registry: every graded exercise of the curriculum, discovered from ``specs_NN`` modules.

Adding exercises for notebook ``NN_topic`` means writing one module ``lessonlib_grader/specs_NN.py``::

    from lessonlib_grader.registry import Exercise
    from lessonlib_grader.checks import literal, prop, agrees_with_reference

    NOTEBOOK = "03_gptq"
    EXERCISES = [
        Exercise(id="q03_1", points=5, notebook=NOTEBOOK, reference="lessonlib.quant.gptq:gptq_quantize",
                 statement="...", hints=("...",), checks=(literal(...), prop(...)(...), ...)),
    ]

and marking the graded part of the reference function's body with ``# BEGIN SOLUTION`` /
``# END SOLUTION``.  Nothing else needs registering: ``lessonlib exercises build`` then writes
``exercises/03_gptq.py`` and ``solutions/03_gptq.py``, and ``lessonlib grade`` knows the questions.

Optional, per check (all constructors in :mod:`.checks` take them): ``weight=2.0`` (partial credit: a
question earns ``points * passed weight / total weight``; default 1) and ``hidden=True`` (instructor-only:
dropped from the student release; graded with per-student seeds when an instructor key is given).

Concept questions (a number with a tolerance, or one choice of several) use the same machinery::

    from lessonlib_grader.registry import concept_number, concept_choice

    EXERCISES = [
        ...,
        concept_number("q03_2", points=2, notebook=NOTEBOOK, answer=0.125, abs_tol=1e-3,
                       statement="What fraction of the weights does 2:4 keep in a 1:8 pattern?"),
        concept_choice("q03_3", points=1, notebook=NOTEBOOK, answer="b", choices=("a", "b", "c"),
                       statement="Which ordering does GPTQ use? a) ... b) ... c) ..."),
    ]

The student answers with a top-level variable (or a function of no arguments returning it) named
``answer_q03_2`` in their file (``exercises/03_gptq.py``), or in a notebook with
``check("q03_2", 0.125)``.  The expected answer lives only in the spec: the release blanks it.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import pkgutil
import re
from dataclasses import dataclass, field
from typing import Callable

from .checks import Check
from .probes import extra_checks

__all__ = ["concept_number", "concept_choice", "CONCEPT_MODULE", "Exercise", "all_exercises", "get", "notebooks", "for_notebook", "total_points", "spec_modules"]

CONCEPT_MODULE = "concept"  # Exercise.reference = "concept:answer_q03_2" for concept questions
ID_RE = re.compile(r"^q(\d\d)_(\d+)$")
NOTEBOOK_RE = re.compile(r"^(\d\d)_[a-z0-9_]+$")
SPEC_RE = re.compile(r"^specs_(\d\d)$")


@dataclass(frozen=True)
class Exercise:
    """One graded question: what to write, where the reference lives, how it is checked."""

    id: str  # "q03_2": notebook number, question number
    points: int
    notebook: str  # "03_gptq": names the generated files exercises/03_gptq.py, solutions/03_gptq.py
    reference: str  # "lessonlib.quant.gptq:gptq_quantize": module and function with the marked body
    statement: str  # one short paragraph: what the function must do
    hints: tuple[str, ...] = ()
    checks: tuple[Check, ...] = field(default=(), repr=False)
    time_limit_s: float = 10.0  # per question, when graded by the runner

    def __post_init__(self) -> None:
        m = ID_RE.match(self.id)
        if not m:
            raise ValueError(f"exercise id {self.id!r} must look like 'q03_2' (q, notebook number, _, question)")
        nb = NOTEBOOK_RE.match(self.notebook)
        if not nb:
            raise ValueError(f"{self.id}: notebook={self.notebook!r} must look like '03_gptq'")
        if m.group(1) != nb.group(1):
            raise ValueError(f"{self.id}: the id's notebook number {m.group(1)} differs from notebook "
                             f"{self.notebook!r}")
        if not isinstance(self.points, int) or self.points <= 0:
            raise ValueError(f"{self.id}: points={self.points!r} must be a positive integer")
        if ":" not in self.reference:
            raise ValueError(f"{self.id}: reference={self.reference!r} must be 'package.module:function'")
        if not self.checks:
            raise ValueError(f"{self.id}: an exercise needs at least one check")
        names = [c.name for c in self.checks]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.id}: check names must be unique, got {names}")
        if isinstance(self.hints, str):
            raise ValueError(f"{self.id}: hints must be a tuple of strings, not one string")

    @property
    def concept(self) -> bool:
        """A concept question (a number or a choice; see :func:`concept_number`, :func:`concept_choice`)."""
        return self.module == CONCEPT_MODULE

    @property
    def module(self) -> str:
        return self.reference.split(":", 1)[0]

    @property
    def function(self) -> str:
        """The function's name: the student's file must define a function of this name."""
        return self.reference.split(":", 1)[1]

    def reference_fn(self) -> Callable:
        """The lessonlib reference implementation (imported on first use)."""
        if self.concept:
            return _no_reference
        return getattr(importlib.import_module(self.module), self.function)


def _no_reference(*args, **kwargs):
    """Concept questions have no reference function; their checks hold the answer."""
    raise NotImplementedError("a concept question has no reference implementation")


def concept_number(id: str, *, points: int, notebook: str, answer: float | None, statement: str,
                   rel_tol: float = 0.0, abs_tol: float = 0.0, hints: tuple[str, ...] = ()) -> Exercise:
    """A question answered by one number, right within ``rel_tol``/``abs_tol`` (``answer=None``: blanked in a
    student release; the check is then graded by the instructor)."""
    from .concept import concept_number_check

    return Exercise(id=id, points=points, notebook=notebook, reference=f"{CONCEPT_MODULE}:answer_{id}",
                    statement=statement, hints=hints,
                    checks=(concept_number_check(answer, rel_tol=rel_tol, abs_tol=abs_tol),), time_limit_s=5.0)


def concept_choice(id: str, *, points: int, notebook: str, answer: str | None, choices: tuple[str, ...],
                   statement: str, hints: tuple[str, ...] = ()) -> Exercise:
    """A question answered by one of ``choices`` (compared after strip/lower-casing)."""
    from .concept import concept_choice_check

    return Exercise(id=id, points=points, notebook=notebook, reference=f"{CONCEPT_MODULE}:answer_{id}",
                    statement=statement, hints=hints, checks=(concept_choice_check(answer, choices),),
                    time_limit_s=5.0)


def spec_modules() -> list[str]:
    """Names of the ``lessonlib_grader.specs_NN`` modules, in notebook order."""
    import lessonlib_grader as grading

    return sorted(f"{grading.__name__}.{m.name}" for m in pkgutil.iter_modules(grading.__path__)
                  if SPEC_RE.match(m.name))


@functools.lru_cache(maxsize=1)
def _load() -> tuple[Exercise, ...]:
    found: list[Exercise] = []
    for name in spec_modules():
        mod = importlib.import_module(name)
        nb_number = SPEC_RE.match(name.rsplit(".", 1)[1]).group(1)
        notebook = getattr(mod, "NOTEBOOK", None)
        if not isinstance(notebook, str) or not notebook.startswith(nb_number + "_"):
            raise ValueError(f"{name}.NOTEBOOK={notebook!r} must name notebook {nb_number}_<topic>")
        for ex in getattr(mod, "EXERCISES", ()):
            if ex.notebook != notebook:
                raise ValueError(f"{ex.id}: notebook={ex.notebook!r} but {name}.NOTEBOOK={notebook!r}")
            extra = [c for c in extra_checks(ex.id, ex.function) if c.name not in {x.name for x in ex.checks}]
            found.append(dataclasses.replace(ex, checks=tuple(ex.checks) + tuple(extra)) if extra else ex)
    ids = [e.id for e in found]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ValueError(f"duplicate exercise ids {dup}")
    per_nb: dict[str, list[str]] = {}
    for e in found:
        per_nb.setdefault(e.notebook, []).append(e.function)
    for nb, fns in per_nb.items():
        if len(set(fns)) != len(fns):
            raise ValueError(f"notebook {nb}: two exercises grade the same function name ({fns})")
    return tuple(found)


def all_exercises() -> list[Exercise]:
    """Every registered exercise, in notebook then question order."""
    return sorted(_load(), key=lambda e: (e.notebook, int(ID_RE.match(e.id).group(2))))


def get(exercise_id: str) -> Exercise:
    for e in _load():
        if e.id == exercise_id:
            return e
    raise ValueError(f"unknown exercise id {exercise_id!r}; known ids: {[e.id for e in all_exercises()]}")


def notebooks() -> dict[str, list[Exercise]]:
    """Notebook key ("00_model_anatomy") -> its exercises in question order."""
    out: dict[str, list[Exercise]] = {}
    for e in all_exercises():
        out.setdefault(e.notebook, []).append(e)
    return out


def for_notebook(notebook: str) -> list[Exercise]:
    nbs = notebooks()
    if notebook not in nbs:
        raise ValueError(f"no exercises for notebook {notebook!r}; notebooks with exercises: {sorted(nbs)}")
    return nbs[notebook]


def total_points(notebook: str | None = None) -> int:
    return sum(e.points for e in (for_notebook(notebook) if notebook else all_exercises()))
