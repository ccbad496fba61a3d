"""The autograder: grade a function, a student's file or a folder of submissions.

* :func:`grade_function` runs one exercise's checks on a function, in this process (what
  ``lessonlib_grader.check`` and the tests use);
* :func:`grade_file` grades a submission file in an isolated child process (:mod:`.sandbox`): the child only
  computes the student's functions' outputs on inputs sent from here; every check, comparison and point
  is computed here, so an import error, an exception, an infinite loop, a crash or a cheat costs the
  student points, never the grader.  A question that hangs or kills its child is marked and the next
  question gets a fresh child;
* :func:`grade_folder` grades every submission in a folder (see docs/INSTRUCTORS.md).

Scoring (partial credit): a question earns ``points * (weight of the checks passed) / (weight of all its
checks)``, rounded to 2 decimals; 0 when it is not implemented, times out, crashes or is *flagged* (it
calls into the reference implementation, or the file does something no honest answer needs; see
:mod:`.cheats`).  Points are checked against the registry's maximum before anything is written.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import itertools
import math
import os
import re
import signal
import sys
import textwrap
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator

from . import registry
from .checks import SEED_FOR, CheckFailure, GradingTimeout, ReferenceUnavailable
from . import cheats
from .checks import student_seed
from .remote import RemoteFunction
from .sandbox import Limits, Sandbox, SandboxDied
from .results import CheckResult, FileResult, QuestionResult, write_csv, write_json

__all__ = ["grade_function", "grade_module", "grade_file", "grade_file_inprocess", "grade_folder",
           "discover_submissions", "infer_notebook", "time_limit", "write_csv", "write_json"]

DEFAULT_TIMEOUT_S = 60.0  # per submission, after the worker has started
STARTUP_TIMEOUT_S = 180.0  # the worker importing torch and lessonlib before the submission's clock starts
_counter = itertools.count()


# ------------------------------------------------------------------ one function
@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`GradingTimeout` in this thread after ``seconds`` (no-op off the main thread / on Windows)."""
    if not seconds or not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise GradingTimeout(seconds)

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _ref_or_unavailable(ref: Callable) -> Callable:
    """The reference, raising :class:`ReferenceUnavailable` where a release has stubbed it."""

    @functools.wraps(ref)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return ref(*args, **kwargs)
        except NotImplementedError:
            raise ReferenceUnavailable(getattr(ref, "__name__", "reference")) from None

    return wrapped


def grade_function(ex: registry.Exercise, fn: Callable | None, *, time_limit_s: float | None = None,
                   seed_for: Callable[[str], int] | None = None) -> QuestionResult:
    """Run every check of ``ex`` on ``fn``: partial credit by check weight, the first failure explained.

    ``seed_for(check_name)`` replaces the seeds of reference checks (per-student hidden inputs).
    """
    t0 = time.perf_counter()
    res = QuestionResult(ex.id, ex.function, ex.points)
    if fn is not None and not callable(fn) and ex.concept:
        value, fn = fn, (lambda: value)
    if fn is None or not callable(fn):
        res.status = "missing"
        res.message = f"no function named `{ex.function}` found; keep the name and signature from the exercise file"
        return res
    ref = _ref_or_unavailable(ex.reference_fn())
    skipped: list[str] = []
    token = SEED_FOR.set(seed_for)
    try:
        with time_limit(time_limit_s):
            for c in ex.checks:
                try:
                    c.run(fn, ref)
                    res.checks.append(CheckResult(c.name, c.kind, True, weight=c.weight))
                except NotImplementedError:
                    res.status = "not_implemented"
                    res.message = (f"not implemented yet: `{ex.function}` still raises NotImplementedError; "
                                   "replace that line with your code")
                    res.checks = []
                    break
                except ReferenceUnavailable:
                    skipped.append(c.name)
                except CheckFailure as e:
                    res.checks.append(CheckResult(c.name, c.kind, False, str(e), weight=c.weight))
                except Exception as e:  # the check could not even inspect the result (wrong return type, ...)
                    res.checks.append(CheckResult(c.name, c.kind, False,
                                                  f"could not check the result: {type(e).__name__}: {e} "
                                                  "(does the function return what the docstring says?)",
                                                  weight=c.weight))
    except GradingTimeout:
        res.status = "timeout"
        res.message = (f"time limit exceeded: `{ex.function}` ran longer than "
                       f"{time_limit_s or ex.time_limit_s:g} s (an infinite loop, or a much slower algorithm?)")
    except SandboxDied as e:
        res.status, res.message = "crashed", str(e)
    finally:
        SEED_FOR.reset(token)
    if not res.status:
        failed = [c for c in res.checks if not c.passed]
        res.status = "failed" if failed else "passed"
        if failed:
            res.message = (f"{len(res.checks) - len(failed)} of {len(res.checks)} checks passed; "
                           f"first failure, '{failed[0].name}':\n" + textwrap.indent(failed[0].message, "  "))
        if skipped:
            res.message += (("\n" if res.message else "") + f"{len(skipped)} check(s) need the reference "
                            f"implementation and are graded by your instructor: {', '.join(skipped)}")
    total = sum(c.weight for c in res.checks)
    if res.status in ("passed", "failed") and total > 0:
        pts = round(ex.points * sum(c.weight for c in res.checks if c.passed) / total, 2)
        res.points = int(pts) if pts == int(pts) else pts
    else:
        res.points = 0
    res.seconds = round(time.perf_counter() - t0, 3)
    return res


def grade_module(namespace: Any, notebook: str, *, time_limit_s: float | None = None, exercise_limits: bool = False,
                 on_start: Callable[[registry.Exercise], None] | None = None,
                 on_result: Callable[[QuestionResult], None] | None = None) -> list[QuestionResult]:
    """Grade every exercise of ``notebook`` on the functions of a module (or dict of names).

    ``time_limit_s`` limits each question; with ``exercise_limits`` a missing limit falls back to the
    exercise's own ``time_limit_s``.  A function that *is* lessonlib's reference (imported rather than
    written) scores 0.
    """
    get = namespace.get if isinstance(namespace, dict) else (lambda n, d=None: getattr(namespace, n, d))
    out = []
    for ex in registry.for_notebook(notebook):
        if on_start:
            on_start(ex)
        limit = time_limit_s or (ex.time_limit_s if exercise_limits else None)
        fn = get(ex.function, None)
        if getattr(fn, "__code__", None) is not None and fn.__code__ is getattr(ex.reference_fn(), "__code__", 0):
            r = QuestionResult(ex.id, ex.function, ex.points, status="failed",
                               message=f"`{ex.function}` is lessonlib's reference implementation ({ex.reference}), "
                                       "imported instead of written: write your own")
        else:
            r = grade_function(ex, fn, time_limit_s=limit)
        out.append(r)
        if on_result:
            on_result(r)
    return out


# ------------------------------------------------------------------ one file
def infer_notebook(path: str, names: Any = None) -> str | None:
    """The notebook a submission answers: from its file name ('03_gptq.py', 'alice_03_gptq.py'), else from
    which exercise functions it defines (``names``), else None."""
    stem = os.path.splitext(os.path.basename(path))[0]
    nbs = registry.notebooks()
    for nb in sorted(nbs, key=len, reverse=True):
        if stem == nb or stem.endswith("_" + nb) or stem.endswith("-" + nb):
            return nb
    if names is not None:
        counts = {nb: sum(1 for e in exs if e.function in names) for nb, exs in nbs.items()}
        best = max(counts.values(), default=0)
        winners = [nb for nb, c in counts.items() if c == best]
        if best > 0 and len(winners) == 1:
            return winners[0]
    return None


def import_submission(path: str):
    """Import a student's file as a fresh module (no bytecode written next to it)."""
    sys.dont_write_bytecode = True
    name = f"_submission_{next(_counter)}_{re.sub(r'[^0-9a-zA-Z_]', '_', os.path.basename(path)[:-3])}"
    spec = importlib.util.spec_from_file_location(name, os.path.abspath(path))
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    folder = os.path.dirname(os.path.abspath(path))
    if folder not in sys.path:
        sys.path.append(folder)  # siblings importable, never shadowing the standard library
    sys.modules[name] = module  # dataclasses (and pickling) look the defining module up in sys.modules
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _import_error_message(exc: BaseException, path: str) -> str:
    if isinstance(exc, SyntaxError):
        return f"the file could not be imported: SyntaxError at line {exc.lineno}: {exc.msg}\n  {(exc.text or '').strip()}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if os.path.abspath(f.filename) == os.path.abspath(path)]
    where = f" (line {frames[-1].lineno}: {(frames[-1].line or '').strip()})" if frames else ""
    return f"the file could not be imported: {type(exc).__name__}: {exc}{where}"


def _questions_for(notebook: str | None) -> list[QuestionResult]:
    if notebook is None:
        return []
    return [QuestionResult(e.id, e.function, e.points, status="not_graded") for e in registry.for_notebook(notebook)]


def grade_file_inprocess(path: str, notebook: str | None = None, *, student: str = "",
                         time_limit_s: float | None = None) -> FileResult:
    """Grade a file in this process (fast; no protection against hangs or crashes -- tests and notebooks)."""
    t0 = time.perf_counter()
    res = FileResult(path=path, student=student, notebook=notebook or infer_notebook(path))
    try:
        module = import_submission(path)
    except BaseException as e:  # noqa: BLE001 - SystemExit from a student's file is an import failure too
        if isinstance(e, KeyboardInterrupt):
            raise
        res.status, res.message = "import_error", _import_error_message(e, path)
        res.questions = _questions_for(res.notebook)
        return res
    res.notebook = res.notebook or infer_notebook(path, vars(module))
    if res.notebook is None:
        res.status, res.message = "unknown_notebook", _unknown_notebook_message(path)
        return res
    res.questions = grade_module(module, res.notebook, time_limit_s=time_limit_s)
    res.status, res.seconds = "graded", round(time.perf_counter() - t0, 3)
    return res


def _unknown_notebook_message(path: str) -> str:
    return (f"cannot tell which notebook {os.path.basename(path)} answers: name it like "
            f"{sorted(registry.notebooks())[0]}.py or pass --notebook")


def grade_file(path: str, notebook: str | None = None, *, timeout: float = DEFAULT_TIMEOUT_S,
               question_timeout: float | None = None, student: str = "", key: bytes | str | None = None,
               limits: Limits | None = None, deny: list[str] | None = None) -> FileResult:
    """Grade a file in an isolated child (:mod:`.sandbox`); ``timeout`` bounds the child's time in all
    (import and every question, after the child has started), ``question_timeout`` each question
    (default: the exercise's ``time_limit_s``).  With an instructor ``key`` the reference checks use
    per-student seeds (:func:`~.checks.student_seed`)."""
    _check_seconds("timeout", timeout)
    if question_timeout is not None:
        _check_seconds("question_timeout", question_timeout)
    t0 = time.perf_counter()
    path = os.path.abspath(path)
    res = FileResult(path=path, student=student)
    with open(path, encoding="utf-8", errors="replace") as f:
        source = f.read()
    res.notebook = notebook or infer_notebook(path, cheats.defined_names(source))
    if res.notebook is None:
        res.status, res.message = "unknown_notebook", _unknown_notebook_message(path)
        return res
    exs = registry.for_notebook(res.notebook)
    findings = cheats.scan(source, {e.function: e.module for e in exs if not e.concept})
    graded = [(e.module, e.function) for e in exs if not e.concept]
    box = Sandbox(path, graded=graded, limits=limits, deny=deny, startup_timeout=STARTUP_TIMEOUT_S)
    end_at: float | None = None
    names: dict = {}
    load_refs: list[str] = []

    def start() -> dict | None:
        nonlocal end_at
        t_start = time.monotonic()
        box.start()  # python and torch starting do not count against the submission's time
        end_at = time.monotonic() + timeout if end_at is None else end_at + (time.monotonic() - t_start)
        return box.load(end_at)

    res.questions = _questions_for(res.notebook)
    try:
        try:
            ans = start()
        except GradingTimeout:
            res.status = "timeout"
            res.message = (f"time limit exceeded: the submission ran longer than {timeout:g} s while being imported "
                           "(code at the top level of the file runs on import)")
            return res
        except SandboxDied as e:
            res.status, res.message = "crashed", f"while importing: {e}"
            return res
        if not ans.get("ok"):
            res.status, res.message = "import_error", _remote_import_message(ans)
            return res
        names, load_refs = dict(ans.get("names", {})), list(ans.get("ref_calls", []))
        out = []
        for ex in exs:
            if ex.function not in names:
                out.append(grade_function(ex, None))
                continue
            if time.monotonic() >= end_at:
                out.append(QuestionResult(ex.id, ex.function, ex.points, status="timeout",
                                          message=f"not graded: the submission used up its {timeout:g} s"))
                continue
            if not box.alive:
                try:
                    start()
                except (GradingTimeout, SandboxDied) as e:
                    out.append(QuestionResult(ex.id, ex.function, ex.points, status="crashed",
                                              message=f"not graded: the submission's process could not restart ({e})"))
                    continue
            limit = question_timeout or ex.time_limit_s
            fn = RemoteFunction(box, ex.function, deadline=min(end_at, time.monotonic() + limit))
            seed_for = (functools.partial(student_seed, key, student or os.path.basename(path), ex.id)
                        if key else None)
            r = grade_function(ex, fn, seed_for=seed_for)
            if r.status == "timeout":
                r.message = (f"time limit exceeded: `{ex.function}` ran longer than {limit:g} s "
                             "(an infinite loop, or a much slower algorithm than asked for?)")
            why = [str(f) for f in findings if f.question_function in (None, ex.function)]
            why += [f"called the reference implementation {c} (a wrapper around the reference)"
                    for c in sorted(set(fn.ref_calls + load_refs))]
            if why:
                r.status, r.points = "flagged", 0
                r.message = "flagged for review, 0 points: " + "; ".join(why) + (
                    f"\n(without the flag: {r.message})" if r.message else "")
            out.append(r)
        res.questions = out
        res.status = "graded"
    finally:
        box.kill()  # the whole process group, whatever happened
        _validate_points(res)
        res.seconds = round(time.perf_counter() - t0, 3)
    return res


def _check_seconds(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}={value!r}: must be a positive, finite number of seconds")


def _validate_points(res: FileResult) -> None:
    """Every question's points within [0, its registry maximum]; the file's total within the notebook's."""
    if not res.notebook:
        return
    maxima = {e.id: e.points for e in registry.for_notebook(res.notebook)}
    for q in res.questions:
        if q.id not in maxima or q.max_points != maxima[q.id]:
            raise ValueError(f"{res.path}: question {q.id} is not in the registry with {q.max_points} points")
        if not (isinstance(q.points, (int, float)) and 0 <= q.points <= maxima[q.id]):
            raise ValueError(f"{res.path}: {q.id} scored {q.points!r}, outside [0, {maxima[q.id]}]")
    if res.score > registry.total_points(res.notebook) + 1e-9:
        raise ValueError(f"{res.path}: {res.score} points exceed the notebook's {registry.total_points(res.notebook)}")


def _remote_import_message(ans: dict) -> str:
    if ans.get("type") == "SyntaxError" and ans.get("lineno"):
        return (f"the file could not be imported: SyntaxError at line {ans['lineno']}: {ans.get('message', '')}"
                f"\n  {str(ans.get('text', '')).strip()}")
    where = f" ({ans['where']})" if ans.get("where") else ""
    return f"the file could not be imported: {ans.get('type')}: {ans.get('message', '')}{where}"


# ------------------------------------------------------------------ a folder
def discover_submissions(folder: str) -> list[tuple[str, str]]:
    """(student, path) pairs: ``folder/<student>.py``, ``folder/<student>_NN_topic.py`` and
    ``folder/<student>/*.py`` files.

    A top-level file named after a notebook (``03_gptq.py``) belongs to the folder's owner, so grading
    ``exercises/`` grades your own work.
    """
    nbs = set(registry.notebooks())
    out = []
    for entry in sorted(os.listdir(folder)):
        p = os.path.join(folder, entry)
        if entry.startswith((".", "_")):
            continue
        if os.path.isfile(p) and entry.endswith(".py"):
            stem = entry[:-3]
            if stem in nbs:
                student = os.path.basename(os.path.abspath(folder))
            else:  # alice_03_gptq.py -> alice
                student = next((stem[: -len(nb) - 1] for nb in nbs if stem.endswith(("_" + nb, "-" + nb))), stem)
            out.append((student or stem, p))
        elif os.path.isdir(p):
            out += [(entry, os.path.join(p, f)) for f in sorted(os.listdir(p))
                    if f.endswith(".py") and not f.startswith((".", "_"))]
    return out


def grade_folder(folder: str, notebook: str | None = None, *, timeout: float = DEFAULT_TIMEOUT_S,
                 question_timeout: float | None = None, jobs: int = 1, key: bytes | str | None = None,
                 on_result: Callable[[FileResult], None] | None = None) -> list[FileResult]:
    """Grade every submission in ``folder``, each in its own isolated child with its own time limit; returns
    when every child has ended (write the grade sheet after this)."""
    subs = discover_submissions(folder)
    folder_real = os.path.realpath(folder)

    def one(sp: tuple[str, str]) -> FileResult:
        r = grade_file(sp[1], notebook, timeout=timeout, question_timeout=question_timeout, student=sp[0],
                       key=key, deny=[folder_real])
        if on_result:
            on_result(r)
        return r

    if jobs <= 1:
        return [one(sp) for sp in subs]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(one, subs))


