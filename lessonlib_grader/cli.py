"""Entry points of ``lessonlib grade`` and ``lessonlib exercises`` (wired into lessonlib.cli by the lead)."""
from __future__ import annotations

import argparse
import math
import os
import sys

__all__ = ["cli_grade", "cli_exercises"]


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace | int:
    try:
        return parser.parse_args(argv)
    except SystemExit as e:  # --help or a usage error: return the code instead of exiting
        return int(e.code or 0)


def cli_grade(argv: list[str]) -> int:
    """``lessonlib grade FILE_OR_FOLDER [--out result.json|grades.csv] [--timeout S] ...``; returns the exit code."""
    from .results import format_file, write_csv, write_json
    from .runner import DEFAULT_TIMEOUT_S, discover_submissions, grade_file, grade_file_inprocess, grade_folder

    p = argparse.ArgumentParser(prog="lessonlib grade", description="Grade a submission file or a folder of them.")
    p.add_argument("path", help="a .py file (e.g. exercises/03_gptq.py) or a folder of submissions")
    p.add_argument("--out", help="result file: JSON for a file (default: FILE.result.json beside it), CSV for a "
                                 "folder (default: FOLDER/grades.csv; full details go to the same name .json)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                   help=f"seconds per submission (default {DEFAULT_TIMEOUT_S:g})")
    p.add_argument("--question-timeout", type=float, help="seconds per question (default: each exercise's limit)")
    p.add_argument("--notebook", help="which notebook's exercises (default: from the file name)")
    p.add_argument("--jobs", type=int, default=1, help="submissions graded in parallel (folders)")
    p.add_argument("--fail-under", type=float, help="exit 1 if any submission scores below this percentage")
    p.add_argument("--in-process", action="store_true",
                   help="no isolated child (fast, NO protection: only for your own file)")
    p.add_argument("--key-file", help="instructor key file: per-student seeds for reference checks (default: "
                                      "$LESSONLIB_GRADE_KEY_FILE, else $LESSONLIB_GRADE_KEY)")
    p.add_argument("--export", choices=("canvas", "gradescope"), action="append", default=[],
                   help="also write grades.canvas.csv / grades.gradescope.csv (folders; repeatable)")
    p.add_argument("--similarity", action="store_true",
                   help="also write a similarity report (folders): submissions matching the reference or each other")
    p.add_argument("--brief", action="store_true", help="one line per question, no failure details")
    a = _parse(p, argv)
    if isinstance(a, int):
        return a
    for name in ("timeout", "question_timeout"):
        v = getattr(a, name)
        if v is not None and not (math.isfinite(v) and v > 0):
            print(f"lessonlib grade: --{name.replace('_', '-')} {v:g} is not allowed: give a positive, finite number "
                  "of seconds", file=sys.stderr)
            return 2
    if a.jobs < 1:
        print(f"lessonlib grade: --jobs {a.jobs} must be at least 1", file=sys.stderr)
        return 2
    key = _read_key(a.key_file)
    if not os.path.exists(a.path):
        print(f"lessonlib grade: {a.path} does not exist", file=sys.stderr)
        return 2
    if os.path.isdir(a.path):
        own_work = len({student for student, _ in discover_submissions(a.path)}) == 1  # e.g. `lessonlib grade exercises`

        def show(r):
            if own_work:
                print(format_file(r, detail=not a.brief), flush=True)
            else:
                print(f"  {r.student:<20} {os.path.basename(r.path):<28} {r.score:>4}/{r.max_score:<4} {r.status}",
                      flush=True)

        results = grade_folder(a.path, a.notebook, timeout=a.timeout, question_timeout=a.question_timeout,
                               jobs=a.jobs, key=key, on_result=show)
        if not results:
            print(f"lessonlib grade: no .py submissions in {a.path}", file=sys.stderr)
            return 2
        out = a.out or os.path.join(a.path, "grades.csv")
        # every child has ended (grade_folder returns after killing each one's process group): write now
        write_csv(results, out)
        write_json(results, os.path.splitext(out)[0] + ".json")
        from .results import write_gradebook

        book = os.path.splitext(out)[0] + ".book.csv"
        write_gradebook(results, book)
        for kind in a.export:
            write_gradebook(results, os.path.splitext(out)[0] + f".{kind}.csv", kind=kind)
        if a.similarity:
            from .similarity import similarity_report

            rep = os.path.splitext(out)[0] + ".similarity.txt"
            flagged = similarity_report([(r.student, r.path, r.notebook) for r in results], rep)
            print(f"similarity: {flagged} pair(s) flagged; wrote {rep}")
        print(f"{len(results)} submissions graded; wrote {out} and the grade book {book}")
    else:
        if a.in_process:
            results = [grade_file_inprocess(a.path, a.notebook, time_limit_s=a.question_timeout)]
        else:
            results = [grade_file(a.path, a.notebook, timeout=a.timeout, question_timeout=a.question_timeout, key=key)]
        print(format_file(results[0], detail=not a.brief))
        out = a.out or os.path.splitext(a.path)[0] + ".result.json"
        write_json(results[0], out)
        print(f"wrote {out}")
    if a.fail_under is not None and any(r.percent < a.fail_under for r in results):
        return 1
    return 0


def _read_key(path: str | None) -> bytes | None:
    """The instructor key: a file (``--key-file`` / ``$LESSONLIB_GRADE_KEY_FILE``) or ``$LESSONLIB_GRADE_KEY``."""
    path = path or os.environ.get("LESSONLIB_GRADE_KEY_FILE")
    if path:
        with open(path, "rb") as f:
            key = f.read().strip()
        if len(key) < 16:
            raise SystemExit(f"lessonlib grade: the key in {path} is too short (at least 16 bytes)")
        return key
    env = os.environ.get("LESSONLIB_GRADE_KEY", "")
    return env.encode() if env else None


def cli_exercises(argv: list[str]) -> int:
    """``lessonlib exercises build [--check] | list | mutants | release --out DIR | otter NN... --out DIR``;
    returns the exit code."""
    p = argparse.ArgumentParser(prog="lessonlib exercises", description="Generate and inspect graded exercises.")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="write exercises/NN_topic.py and solutions/NN_topic.py from the markers")
    b.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file is stale or stray")
    b.add_argument("--root", help="where exercises/ and solutions/ live (default: the lessonlib checkout)")
    sub.add_parser("list", help="every exercise with its points")
    sub.add_parser("mutants", help="grade the planted wrong implementations; print the mutation score")
    r = sub.add_parser("release", help="build the student release (no reference answers) into --out DIR")
    r.add_argument("--out", required=True, help="a new folder")
    o = sub.add_parser("otter", help="otter-grader assignments (master notebook, student notebook, autograder zip)")
    o.add_argument("notebooks", nargs="+", help="chapter numbers or names, e.g. 01 03_gptq")
    o.add_argument("--out", required=True, help="folder; one sub-folder per chapter")
    a = _parse(p, argv)
    if isinstance(a, int):
        return a
    if a.cmd == "build":
        return _build(a.root, a.check)
    if a.cmd == "list":
        return _list()
    if a.cmd == "otter":
        return _otter(a.notebooks, a.out)
    if a.cmd == "release":
        from .release import build_release

        try:
            leaks = build_release(a.out)
        except ValueError as e:
            print(f"lessonlib exercises release: {e}", file=sys.stderr)
            return 2
        for l in leaks:
            print(f"leak: {l}", file=sys.stderr)
        print(f"wrote the student release to {a.out}" + (f"; {len(leaks)} LEAKS" if leaks else "; no reference "
                                                         "answer found in it"))
        return 1 if leaks else 0
    return _mutants()


def _build(root: str | None, check: bool) -> int:
    from .extract import build, find_marked_functions, generate_all, leaked_lines
    from .registry import all_exercises

    leaks = {nb: leaked_lines(g) for nb, g in generate_all().items()}
    report = build(root, check=check)
    for path in report.written:
        print(f"wrote {os.path.relpath(path)}")
    for path in report.stale:
        print(f"stale: {os.path.relpath(path)} (run `lessonlib exercises build`)")
    for path in report.stray:
        print(f"stray: {os.path.relpath(path)} (no exercise spec generates it; delete it or add a specs_NN module)")
    bad = False
    for nb, lines in leaks.items():
        if lines:
            bad = True
            print(f"leak: exercises/{nb}.py contains solution code: {lines}")
    registered = {e.reference for e in all_exercises()}
    loose = [f for f in find_marked_functions() if f not in registered]
    if loose:
        print(f"note: marked but not yet registered in a specs_NN module: {', '.join(loose)}")
    if not (report.written or report.stale or report.stray):
        print("exercises/ and solutions/ are up to date")
    return 1 if (bad or not report.ok) else 0


def _otter(names: list[str], out: str) -> int:
    from .otter import build_assignment
    from .registry import notebooks

    known = {nb[:2]: nb for nb in notebooks()}
    chosen = [known.get(n[:2]) if n[:2] in known and (len(n) == 2 or n == known[n[:2]]) else None for n in names]
    if None in chosen:
        bad = [n for n, c in zip(names, chosen) if c is None]
        print(f"lessonlib exercises otter: unknown chapter(s) {bad}; chapters with exercises: "
              f"{', '.join(sorted(known.values()))}", file=sys.stderr)
        return 2
    for nb in chosen:
        try:
            paths = build_assignment(nb, os.path.join(out, nb))
        except RuntimeError as e:
            print(f"lessonlib exercises otter: {nb}: {e}", file=sys.stderr)
            return 1
        print(f"{nb}: students get {paths['student']}; the autograder (Gradescope, or `otter run -a`) is "
              f"{paths['autograder']}")
    return 0


def _list() -> int:
    from .registry import all_exercises, total_points

    for e in all_exercises():
        print(f"{e.id:<8} {e.points:>3}  {e.notebook:<24} {e.function:<32} {len(e.checks)} checks")
    print(f"{len(all_exercises())} exercises, {total_points()} points")
    return 0


def _mutants() -> int:
    from .mutants import MIN_MUTANTS_PER_EXERCISE, all_mutants, run_mutation_suite
    from .registry import all_exercises

    outcomes = run_mutation_suite()
    for o in outcomes:
        how = f"caught by: {', '.join(o.caught_by) or o.status}" if o.caught else "SURVIVED"
        print(f"{o.mutant.exercise_id:<7} {'ok ' if o.caught else 'BAD'} {o.mutant.description}\n"
              f"{'':12}{how}")
    caught = sum(o.caught for o in outcomes)
    print(f"mutation score: {caught}/{len(outcomes)} caught")
    planted = all_mutants()
    thin = [e.id for e in all_exercises() if len(planted.get(e.id, [])) < MIN_MUTANTS_PER_EXERCISE]
    if thin:
        print(f"exercises with fewer than {MIN_MUTANTS_PER_EXERCISE} mutants: {', '.join(thin)}")
    return 0 if caught == len(outcomes) and not thin else 1
