"""Graded exercises: registry, generator, autograder and the inline notebook check.

Inside a notebook::

    from lessonlib.grading import check
    check("q00_3", next_token_nll)      # or check("q00_3"): finds `next_token_nll` in the notebook

From the shell (wired into the ``lessonlib`` command and the Makefile)::

    lessonlib grade exercises/00_model_anatomy.py       # one file, writes a JSON result
    lessonlib grade submissions/ --out grades.csv       # a folder: CSV, grade book, --export canvas/gradescope
    lessonlib exercises build [--check]                 # (re)generate exercises/ and solutions/
    lessonlib exercises release --out DIR               # what students get: no reference answers
    lessonlib exercises mutants                         # the mutation score of the checks

``check`` runs in this process (self-study); ``lessonlib grade`` runs each submission in an isolated child
(:mod:`.sandbox`) and compares in the grader.

See docs/INSTRUCTORS.md.
"""
from __future__ import annotations

import inspect
from typing import Callable

from .cli import cli_exercises, cli_grade
from .registry import Exercise, all_exercises, for_notebook, get, notebooks, total_points
from .results import FileResult, QuestionResult, format_question

__all__ = ["check", "use_exercise_files", "cli_grade", "cli_exercises", "Exercise", "all_exercises", "get", "notebooks", "for_notebook",
           "total_points", "QuestionResult", "FileResult"]


def check(exercise_id: str, fn: Callable | None = None, *, verbose: bool = True,
          time_limit_s: float | None = None) -> QuestionResult:
    """Grade one exercise inline and print the verdict (the same checks ``lessonlib grade`` runs).

    ``fn`` defaults to the function of the exercise's name in the caller's namespace (the notebook's
    globals, or the calling function's locals).
    Returns the :class:`QuestionResult`; ``result.passed`` is True when every check passes.  A function that
    passes is registered with :mod:`lessonlib.your_answers`: in a student release the library then runs it.
    """
    from .runner import grade_function

    ex = get(exercise_id)
    if fn is None:
        frame = inspect.currentframe()
        caller = frame.f_back if frame is not None else None
        if caller is not None:
            fn = caller.f_locals.get(ex.function, caller.f_globals.get(ex.function))
        del frame, caller
    result = grade_function(ex, fn, time_limit_s=time_limit_s)
    if result.passed and callable(fn) and not ex.concept:
        from lessonlib import your_answers

        your_answers.use(ex.id, fn)  # a student release's library now runs this function (your_answers.py)
    if verbose:
        print(format_question(result, detail=True))
    return result


def use_exercise_files(folder: str = "exercises") -> list[str]:
    """Register every function the reader has written in ``folder/NN_topic.py`` with
    :mod:`lessonlib.your_answers` (stubs still raising are skipped); returns the exercise ids registered.
    A student release's notebooks call it first, so the library runs the reader's answers."""
    import os

    from lessonlib.your_answers import use_file

    done: list[str] = []
    for nb, exercises in notebooks().items():
        done += use_file(os.path.join(folder, f"{nb}.py"),
                         {ex.function: ex.id for ex in exercises if not ex.concept})
    return done
