"""Your answers to the graded exercises, as the library uses them in a student release.

In the repository the library's graded functions (``nm_mask``, ``compute_qparams``, ...) hold the reference
code, and the notebooks' experiments run it.  In the student release (``lessonlib exercises release``) those
bodies are gone: each graded function first asks this module for *your* implementation and runs it, and
only raises ``NotImplementedError`` (saying which exercise to write) when you have not given one yet.  So the
cells after an exercise run the model on your own function, as the MIT EfficientML labs do.

``lessonlib.grading.check("q06_1", nm_mask)`` calls :func:`use` when your function passes the checks it can
run; you can also call ``use`` yourself.  In the full repository nothing reads this registry.
"""
from __future__ import annotations

import re
from typing import Callable

__all__ = ["use", "use_file", "get", "forget", "answered"]

_ID_RE = re.compile(r"^q\d\d_\d+$")
_ANSWERS: dict[str, Callable] = {}


def use(exercise_id: str, fn: Callable) -> None:
    """Make the library call ``fn`` wherever it needs the function of ``exercise_id`` (a release only)."""
    if not isinstance(exercise_id, str) or not _ID_RE.match(exercise_id):
        raise ValueError(f"exercise_id={exercise_id!r} must look like 'q06_1'")
    if not callable(fn):
        raise TypeError(f"fn must be a function, got {type(fn).__name__}")
    _ANSWERS[exercise_id] = fn


def get(exercise_id: str) -> Callable | None:
    """Your function for ``exercise_id``, or None."""
    return _ANSWERS.get(exercise_id)


def answered() -> list[str]:
    """The exercise ids you have given a function for."""
    return sorted(_ANSWERS)


def forget(exercise_id: str | None = None) -> None:
    """Drop your function for one exercise (or all of them)."""
    if exercise_id is None:
        _ANSWERS.clear()
    else:
        _ANSWERS.pop(exercise_id, None)


def use_file(path: str, functions: dict[str, str]) -> list[str]:
    """Register the functions you wrote in your exercise file (``exercises/NN_topic.py``).

    ``functions`` maps a function name to its exercise id.  A function still holding the generated stub
    (``raise NotImplementedError("qNN_k ...: not implemented yet")``) is skipped; a missing file registers
    nothing.  Returns the ids registered.  The student release's notebooks call this in their first cell,
    so even the cells before an exercise run on your answers.
    """
    import importlib.util
    import inspect
    import os
    import sys

    if not os.path.exists(path):
        return []
    spec = importlib.util.spec_from_file_location(f"_your_answers_{abs(hash(path))}", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"{path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses in the file look their module up
    spec.loader.exec_module(module)
    done = []
    for name, exercise_id in functions.items():
        fn = getattr(module, name, None)
        if not callable(fn):
            continue
        try:
            source = inspect.getsource(fn)
        except (OSError, TypeError):
            source = ""
        if "not implemented yet" in source and "raise NotImplementedError" in source:
            continue
        use(exercise_id, fn)
        done.append(exercise_id)
    return done
