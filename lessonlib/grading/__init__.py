"""The learner's side of grading: ``check()`` in a notebook, and the student release's answer loader.

Inside a notebook::

    from lessonlib.grading import check
    check("q00_3", next_token_nll)      # or check("q00_3"): finds `next_token_nll` in the notebook

Everything else (the specs with their expected values, the planted wrong answers, the isolated runner,
the batch CLI, the release and otter builders) is the instructor's and lives in the separate top-level
package :mod:`lessonlib_grader`; this module only forwards to it.  Other names (``cli_grade``,
``all_exercises``, ...) are still reachable here for old code, also forwarded.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable

__all__ = ["check", "use_exercise_files"]


def check(exercise_id: str, fn: Callable | None = None, *, verbose: bool = True,
          time_limit_s: float | None = None) -> Any:
    """Grade one exercise inline and print the verdict (:func:`lessonlib_grader.check`).

    ``fn`` defaults to the function of the exercise's name in the caller's namespace (the notebook's
    globals, or the calling function's locals).
    """
    import lessonlib_grader

    if fn is None:
        name = lessonlib_grader.get(exercise_id).function
        frame = inspect.currentframe()
        caller = frame.f_back if frame is not None else None
        if caller is not None:
            fn = caller.f_locals.get(name, caller.f_globals.get(name))
        del frame, caller
    return lessonlib_grader.check(exercise_id, fn, verbose=verbose, time_limit_s=time_limit_s)


def use_exercise_files(folder: str = "exercises") -> list[str]:
    """Register the reader's answers in ``folder/*.py`` (:func:`lessonlib_grader.use_exercise_files`)."""
    import lessonlib_grader

    return lessonlib_grader.use_exercise_files(folder)


def __getattr__(name: str) -> Any:
    import lessonlib_grader

    try:
        return getattr(lessonlib_grader, name)
    except AttributeError:
        pass
    try:  # a module of the grader (lessonlib.grading.extract -> lessonlib_grader.extract)
        return importlib.import_module(f"lessonlib_grader.{name}")
    except ModuleNotFoundError:
        raise AttributeError(f"module 'lessonlib.grading' has no attribute {name!r}; the grader is "
                             "lessonlib_grader") from None
