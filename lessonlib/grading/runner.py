"""The autograder: grade a function, a student's file or a folder of submissions.

* :func:`grade_function` runs one exercise's checks on a function, in this process (what
  ``lessonlib.grading.check`` and the tests use);
* :func:`grade_file` grades a submission file in a separate worker process
  (``python -m lessonlib.grading.runner --worker FILE``), so an import error, an exception, an infinite loop
  or a crash costs the student points, never the grader.  The worker reports one JSON line per question
  as it goes; each question has a soft time limit (SIGALRM inside the worker) and the whole submission a
  hard one (the worker's process group is killed).  Questions graded before a hang keep their points;
* :func:`grade_folder` grades every submission in a folder into a CSV (see docs/INSTRUCTORS.md).

Scoring: a question earns all its points when every one of its checks passes, else 0.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator

from . import registry
from .checks import CheckFailure, GradingTimeout
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


def grade_function(ex: registry.Exercise, fn: Callable | None, *, time_limit_s: float | None = None) -> QuestionResult:
    """Run every check of ``ex`` on ``fn``; all pass = all points, else 0, with the first failure explained."""
    t0 = time.perf_counter()
    res = QuestionResult(ex.id, ex.function, ex.points)
    if fn is None or not callable(fn):
        res.status = "missing"
        res.message = f"no function named `{ex.function}` found; keep the name and signature from the exercise file"
        return res
    ref = ex.reference_fn()
    try:
        with time_limit(time_limit_s):
            for c in ex.checks:
                try:
                    c.run(fn, ref)
                    res.checks.append(CheckResult(c.name, c.kind, True))
                except NotImplementedError:
                    res.status = "not_implemented"
                    res.message = (f"not implemented yet: `{ex.function}` still raises NotImplementedError; "
                                   "replace that line with your code")
                    res.checks = []
                    break
                except CheckFailure as e:
                    res.checks.append(CheckResult(c.name, c.kind, False, str(e)))
                except Exception as e:  # the check could not even inspect the result (wrong return type, ...)
                    res.checks.append(CheckResult(c.name, c.kind, False,
                                                  f"could not check the result: {type(e).__name__}: {e} "
                                                  "(does the function return what the docstring says?)"))
    except GradingTimeout:
        res.status = "timeout"
        res.message = (f"time limit exceeded: `{ex.function}` ran longer than {time_limit_s:g} s "
                       "(an infinite loop, or a much slower algorithm than asked for?)")
    if not res.status:
        failed = [c for c in res.checks if not c.passed]
        res.status = "failed" if failed else "passed"
        if failed:
            res.message = (f"{len(res.checks) - len(failed)} of {len(res.checks)} checks passed; "
                           f"first failure, '{failed[0].name}':\n" + textwrap.indent(failed[0].message, "  "))
    res.points = ex.points if res.status == "passed" else 0
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


def _read_events(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    events = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # a half-written last line of a killed worker
    return events


def grade_file(path: str, notebook: str | None = None, *, timeout: float = DEFAULT_TIMEOUT_S,
               question_timeout: float | None = None, student: str = "") -> FileResult:
    """Grade a file in a worker process with a hard time limit (seconds, after the worker has started)."""
    t0 = time.perf_counter()
    path = os.path.abspath(path)
    res = FileResult(path=path, student=student, notebook=notebook or infer_notebook(path))
    with tempfile.TemporaryDirectory(prefix="lessonlib-grade-") as tmp:
        results, log_path = os.path.join(tmp, "results.jsonl"), os.path.join(tmp, "output.txt")
        cmd = [sys.executable, "-m", "lessonlib.grading.runner", "--worker", path, "--results", results]
        if notebook:
            cmd += ["--notebook", notebook]
        if question_timeout:
            cmd += ["--question-timeout", str(question_timeout)]
        env = dict(os.environ, LESSONLIB_QUIET="1", PYTHONDONTWRITEBYTECODE="1")
        env.setdefault("OMP_NUM_THREADS", "1")
        timed_out, ready = False, False
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=tmp,
                                    env=env, start_new_session=True)
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            while proc.poll() is None:
                if not ready and any(e.get("event") == "ready" for e in _read_events(results)):
                    ready, deadline = True, time.monotonic() + timeout
                if time.monotonic() > deadline:
                    timed_out = True
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)  # the worker's own process group
                    proc.wait()
                    break
                time.sleep(0.05)
        with open(log_path, encoding="utf-8", errors="replace") as f:
            output_tail = f.read()[-1500:]
        events = _read_events(results)
    _fold_events(res, events, timed_out=timed_out, ready=ready, timeout=timeout,
                 returncode=proc.returncode, output_tail=output_tail)
    res.seconds = round(time.perf_counter() - t0, 3)
    return res


def _fold_events(res: FileResult, events: list[dict], *, timed_out: bool, ready: bool, timeout: float,
                 returncode: int | None, output_tail: str) -> None:
    by_kind: dict[str, list[dict]] = {}
    for e in events:
        by_kind.setdefault(e.get("event", ""), []).append(e)
    if "imported" in by_kind:
        res.notebook = by_kind["imported"][0]["notebook"]
    graded = {q["id"]: QuestionResult.from_dict(q) for q in by_kind.get("question", [])}
    started = [e["id"] for e in by_kind.get("started", [])]
    res.questions = [graded.get(q.id, q) for q in _questions_for(res.notebook)]
    if "import_error" in by_kind:
        res.status, res.message = "import_error", by_kind["import_error"][0]["message"]
    elif "unknown_notebook" in by_kind:
        res.status, res.message = "unknown_notebook", by_kind["unknown_notebook"][0]["message"]
    elif "done" in by_kind:
        res.status = "graded"
    elif timed_out:
        res.status = "timeout"
        res.message = (f"time limit exceeded: the submission ran longer than {timeout:g} s"
                       + (" while being imported (code at the top level of the file runs on import)"
                          if "imported" not in by_kind and ready else "")
                       + ("" if ready else " (the grader itself did not start in time)"))
    else:
        res.status = "crashed"
        res.message = f"the grader process stopped unexpectedly (exit code {returncode}); its last output:\n{output_tail}"
    if res.status in ("timeout", "crashed"):
        for q in res.questions:
            if q.id not in graded and q.id in started:
                q.status, q.message = res.status, res.message
            elif q.id not in graded:
                q.message = f"not graded: the submission stopped earlier ({res.status})"


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
                 question_timeout: float | None = None, jobs: int = 1,
                 on_result: Callable[[FileResult], None] | None = None) -> list[FileResult]:
    """Grade every submission in ``folder``, each in its own worker with its own time limit."""
    subs = discover_submissions(folder)

    def one(sp: tuple[str, str]) -> FileResult:
        r = grade_file(sp[1], notebook, timeout=timeout, question_timeout=question_timeout, student=sp[0])
        if on_result:
            on_result(r)
        return r

    if jobs <= 1:
        return [one(sp) for sp in subs]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(one, subs))


# ------------------------------------------------------------------ the worker process
def _worker(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m lessonlib.grading.runner")
    p.add_argument("--worker", required=True)
    p.add_argument("--results", required=True)
    p.add_argument("--notebook")
    p.add_argument("--question-timeout", type=float)
    a = p.parse_args(argv)
    out = open(a.results, "a", encoding="utf-8")

    def emit(**event: Any) -> None:
        out.write(json.dumps(event) + "\n")
        out.flush()

    nb = a.notebook or infer_notebook(a.worker)
    for ex in (registry.for_notebook(nb) if nb else registry.all_exercises()):
        ex.reference_fn()  # import the references before the submission's clock starts
    emit(event="ready")
    try:
        module = import_submission(a.worker)
    except BaseException as e:  # noqa: BLE001
        emit(event="import_error", message=_import_error_message(e, a.worker))
        return 0
    nb = nb or infer_notebook(a.worker, vars(module))
    if nb is None:
        emit(event="unknown_notebook", message=_unknown_notebook_message(a.worker))
        return 0
    emit(event="imported", notebook=nb)
    grade_module(module, nb, time_limit_s=a.question_timeout, exercise_limits=True,
                 on_start=lambda ex: emit(event="started", id=ex.id),
                 on_result=lambda r: emit(event="question", **r.to_dict()))
    emit(event="done")
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
