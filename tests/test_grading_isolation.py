"""Every cheat class of issue 18 scores zero or is flagged; the grader's files, classmates' files and the
grade sheet survive; children die with their process group.  One batch grades all cheats (slow part:
one child per submission)."""
from __future__ import annotations

import csv
import json
import os
import textwrap
import time

import pytest

from lessonlib_grader import cli_grade, extract, registry
from lessonlib_grader.results import FileResult, QuestionResult, csv_cell, write_csv
from lessonlib_grader.runner import _validate_points

ROOT = extract.repo_root()
NB = "06_magnitude_pruning"  # one question, nm_mask(scores, prune_n, prune_m), 4 points
SOL = open(os.path.join(ROOT, "solutions", f"{NB}.py"), encoding="utf-8").read()
RUNNER = os.path.join(ROOT, "lessonlib_grader", "runner.py")

CHEATS = {
    # a one-line wrapper around the reference (imported by name)
    "wrapper": """
        from lessonlib.prune.masks import nm_mask as _ref
        def nm_mask(scores, prune_n, prune_m):
            return _ref(scores, prune_n, prune_m)
    """,
    # the same through getattr (invisible to the static scan: the runtime trace and the stub catch it)
    "wrapper_getattr": """
        import lessonlib.prune.masks as _m
        def nm_mask(scores, prune_n, prune_m):
            return getattr(_m, "nm_" + "mask")(scores, prune_n, prune_m)
    """,
    "partial": """
        import functools
        from lessonlib.prune import masks
        nm_mask = functools.partial(masks.nm_mask)
    """,
    # executing solutions/NN.py found through lessonlib.__file__
    "exec_solutions": """
        import os, lessonlib
        _p = os.path.join(os.path.dirname(os.path.dirname(lessonlib.__file__)), "solutions", "%s.py")
        _ns = {}
        exec(open(_p).read(), _ns)
        nm_mask = _ns["nm_mask"]
    """ % NB,
    # the same with the real path (as if the student knew where the grader's checkout is)
    "read_solutions_abs": """
        _ns = {}
        _src = open(%r).read()
        def nm_mask(scores, prune_n, prune_m):
            exec(_src, _ns)
            return _ns["nm_mask"](scores, prune_n, prune_m)
    """ % os.path.join(ROOT, "solutions", f"{NB}.py"),
    # switching the child's guard off from inside before reading the solutions
    "disable_guard": """
        import __main__, os, posixpath
        for _n, _v in list(vars(__main__).items()):
            if isinstance(_v, (set, frozenset, tuple, str, dict)) and _n != "__name__":
                setattr(__main__, _n, type(_v)())
        os.path.realpath = posixpath.realpath = lambda p: "/tmp/nothing"
        _ns = {}
        _src = open(%r).read()
        def nm_mask(scores, prune_n, prune_m):
            exec(_src, _ns)
            return _ns["nm_mask"](scores, prune_n, prune_m)
    """ % os.path.join(ROOT, "solutions", f"{NB}.py"),
    # importing a classmate's file (the submissions folder used to be on sys.path)
    "classmate_import": """
        from alice_%s import nm_mask
    """ % NB,
    # walking the stack for the grader's expected values
    "stack_walk": """
        import sys, torch
        def nm_mask(scores, prune_n, prune_m):
            f = sys._getframe()
            while f is not None:
                for v in list(f.f_locals.values()):
                    if isinstance(v, torch.Tensor) and v.dtype == torch.bool and v.shape == scores.shape:
                        return v.clone()
                f = f.f_back
            return torch.ones_like(scores, dtype=torch.bool)
    """,
    # monkeypatching the grader's comparison from the submission
    "monkeypatch": """
        import torch
        try:
            import lessonlib_grader.checks as _c  # the grader: not even importable in the child
            _c.assert_close = lambda *a, **k: None
            _c.assert_tensor = lambda *a, **k: None
        except ImportError:
            import lessonlib.grading as _c  # the learner's check(): patching it changes nothing
            _c.check = lambda *a, **k: None
        def nm_mask(scores, prune_n, prune_m):
            return torch.ones_like(scores, dtype=torch.bool)
    """,
    # forged answers written straight into the result channel
    "forge": """
        import os, struct, sys, torch
        def nm_mask(scores, prune_n, prune_m):
            for fd in [int(a) for a in sys.argv[1:] if a.isdigit()] + list(range(3, 40)):
                try:
                    os.write(fd, struct.pack("<Q", 20) + b'{"points": 1000}xxxx')
                except OSError:
                    pass
            return torch.ones_like(scores, dtype=torch.bool)
    """,
    # a detached process that rewrites the grade sheet after the grader exits
    "detached": """
        import subprocess, sys
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3); open(%r, 'w').write('hacked')"],
                         start_new_session=True)
        from lessonlib.prune.masks import nm_mask
    """,
    "fork": """
        import os, time
        if os.fork() == 0:
            time.sleep(3)
            open(%r, "w").write("hacked")
            os._exit(0)
    """,
    # editing the grader's own files / a classmate's submission
    "edits_files": """
        import torch
        for _p in (%r, %r):
            try:
                with open(_p, "a") as f:
                    f.write("\\n# pwned\\n")
            except OSError:
                pass
        def nm_mask(scores, prune_n, prune_m):
            return torch.ones_like(scores, dtype=torch.bool)
    """,
    # resource and control-flow abuse: none of it may take the batch down
    "membomb": """
        import torch
        def nm_mask(scores, prune_n, prune_m):
            hog = torch.empty(2**36)  # 256 GiB: refused by the address-space limit
            hog.fill_(1.0)
            return torch.ones_like(scores, dtype=torch.bool)
    """,
    "exit_on_import": """
        import sys
        sys.exit(0)
    """,
    "uncatchable_loop": """
        def nm_mask(scores, prune_n, prune_m):
            while True:
                try:
                    while True:
                        pass
                except BaseException:
                    pass
    """,
    # an honest answer, for contrast (must keep full marks)
    "alice": None,
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cheats")
    subs = tmp / "subs"
    subs.mkdir()
    out = tmp / "grades.csv"
    alice = subs / f"alice_{NB}.py"
    for name, body in CHEATS.items():
        path = subs / f"{name}_{NB}.py"
        if body is None:
            path.write_text(SOL)
            continue
        body = textwrap.dedent(body)
        if name in ("detached", "fork"):
            body = body % str(out)
        if name == "edits_files":
            body = body % (RUNNER, str(alice))
        path.write_text(body)
    before = {p: open(p, "rb").read() for p in (RUNNER, str(alice))}
    code = cli_grade([str(subs), "--out", str(out), "--timeout", "30", "--question-timeout", "5", "--jobs", "2",
                      "--brief", "--export", "canvas",
                      "--export", "gradescope", "--similarity"])
    sheet = out.read_text()
    time.sleep(4)  # longer than the detached writer waits
    rows = {r["student"]: r for r in csv.DictReader(out.open())}
    details = {d["student"]: d for d in json.loads((tmp / "grades.json").read_text())}
    return dict(code=code, rows=rows, details=details, sheet=sheet, after=out.read_text(), before=before,
                tmp=tmp)


def _pts(graded, student):
    return float(graded["rows"][student]["score"])


def test_honest_answer_keeps_full_marks(graded):
    assert graded["code"] == 0
    assert _pts(graded, "alice") == registry.total_points(NB)


@pytest.mark.parametrize("student", ["wrapper", "wrapper_getattr", "partial"])
def test_wrappers_around_the_reference_score_zero_and_are_flagged(graded, student):
    assert _pts(graded, student) == 0
    q = graded["details"][student]["questions"][0]
    assert q["status"] in ("flagged", "not_implemented"), q
    if student != "partial":
        assert q["status"] == "flagged" and "reference" in q["message"]


@pytest.mark.parametrize("student", ["exec_solutions", "read_solutions_abs", "disable_guard", "classmate_import"])
def test_solutions_and_classmates_are_unreachable(graded, student):
    assert _pts(graded, student) == 0
    d = graded["details"][student]
    assert d["status"] == "import_error" or all(q["status"] in ("flagged", "failed", "crashed") for q in d["questions"])


def test_stack_walking_and_monkeypatching_find_nothing(graded):
    for s in ("stack_walk", "monkeypatch"):
        assert _pts(graded, s) < registry.total_points(NB)
        assert graded["details"][s]["questions"][0]["status"] in ("flagged", "failed")


def test_forged_answers_are_refused_and_points_are_bounded(graded):
    assert _pts(graded, "forge") == 0
    assert graded["details"]["forge"]["questions"][0]["status"] == "crashed"
    bad = FileResult(path="x.py", student="m", notebook=NB,
                     questions=[QuestionResult("q06_1", "nm_mask", 4, points=1000, status="passed")])
    with pytest.raises(ValueError, match="outside"):
        _validate_points(bad)
    bad.questions[0] = QuestionResult("q06_1", "nm_mask", 1000, points=1000, status="passed")
    with pytest.raises(ValueError, match="registry"):
        _validate_points(bad)


def test_detached_processes_cannot_rewrite_the_sheet(graded):
    assert graded["after"] == graded["sheet"] and graded["after"].startswith("student,")
    for s in ("detached", "fork"):
        assert _pts(graded, s) == 0


def test_grader_files_and_classmates_are_not_writable(graded):
    for p, text in graded["before"].items():
        assert open(p, "rb").read() == text, f"{p} was modified by a submission"
    assert _pts(graded, "edits_files") < registry.total_points(NB)  # an all-True mask: partial credit at most


def test_memory_exit_and_uncatchable_loops_cost_only_their_own_points(graded):
    d = graded["details"]
    assert d["membomb"]["questions"][0]["status"] in ("failed", "crashed", "timeout") and _pts(graded, "membomb") == 0
    assert d["exit_on_import"]["status"] == "import_error" and "SystemExit" in d["exit_on_import"]["message"]
    assert d["uncatchable_loop"]["questions"][0]["status"] == "timeout"
    assert _pts(graded, "alice") == registry.total_points(NB)  # graded in the same batch


def test_exports_and_similarity_are_written(graded):
    tmp = graded["tmp"]
    canvas = (tmp / "grades.canvas.csv").read_text().splitlines()
    assert canvas[0].startswith(f"Student,ID,SIS User ID,Section,lessonlib 06_magnitude_pruning "
                                f"({registry.total_points(NB):g})")
    assert canvas[1].startswith("Points Possible")
    assert (tmp / "grades.gradescope.csv").read_text().startswith("Name,Email,Score")
    book = list(csv.DictReader((tmp / "grades.book.csv").open()))
    assert {r["student"] for r in book} >= {"alice", "wrapper"} and "q06_1" in book[0]
    sim = (tmp / "grades.similarity.txt").read_text()
    assert "alice matches the reference implementation" in sim


def test_csv_cells_are_escaped_against_formulas(tmp_path):
    assert csv_cell("=HYPERLINK(1)") == "'=HYPERLINK(1)" and csv_cell("+1") == "'+1" and csv_cell("@x") == "'@x"
    assert csv_cell("-2") == "'-2" and csv_cell("\tx") == "'\tx" and csv_cell("bob") == "bob" and csv_cell(3) == 3
    r = FileResult(path="=cmd|' -C calc'!A0.py", student="=1+1", notebook=NB,
                   questions=[QuestionResult("q06_1", "nm_mask", 4, 0, "failed", "=evil()")])
    write_csv([r], str(tmp_path / "g.csv"))
    row = next(csv.DictReader((tmp_path / "g.csv").open()))
    assert row["student"] == "'=1+1" and row["file"].startswith("'=") and row["message"].startswith("'=")


@pytest.mark.parametrize("bad", ["-1", "0", "nan", "inf"])
def test_bad_timeouts_are_refused(bad, tmp_path, capsys):
    p = tmp_path / f"{NB}.py"
    p.write_text(SOL)
    assert cli_grade([str(p), "--timeout", bad]) == 2
    assert "positive, finite number" in capsys.readouterr().err
    assert cli_grade([str(p), "--question-timeout", bad]) == 2


def test_the_child_carries_autograd_function_arguments_and_numpy(tmp_path):
    """Solutions whose checks call .backward() on the result (13), pass the grader's own quantizer function
    as an argument (07) and return numpy arrays (19) keep full marks through the child."""
    from lessonlib_grader.runner import grade_folder

    subs = tmp_path / "subs"
    subs.mkdir()
    nbs = ("07_sparsegpt_wanda", "13_response_distillation", "19_entropy_coding")
    for nb in nbs:
        (subs / f"{nb}.py").write_text(open(os.path.join(ROOT, "solutions", f"{nb}.py"), encoding="utf-8").read())
    results = grade_folder(str(subs), jobs=2)
    assert {r.notebook: (r.score, r.status) for r in results} == {
        nb: (registry.total_points(nb), "graded") for nb in nbs}


def test_an_instructor_key_gives_each_student_their_own_hidden_inputs(tmp_path):
    from lessonlib_grader.checks import student_seed
    from lessonlib_grader.runner import grade_file

    p = tmp_path / f"{NB}.py"
    p.write_text(textwrap.dedent("""
        import torch
        def nm_mask(scores, prune_n, prune_m):  # prunes the highest scores: every check fails
            out, inp = scores.shape
            g = scores.reshape(out, inp // prune_m, prune_m)
            top = torch.argsort(g, dim=-1, descending=True, stable=True)[..., :prune_n]
            return torch.ones_like(g, dtype=torch.bool).scatter_(-1, top, False).reshape(out, inp)
    """))
    key = "an-instructor-key-0123456789"
    seeds = {}
    for who in ("alice", "bob"):
        r = grade_file(str(p), student=who, key=key)
        ref_checks = [c for c in r.questions[0].checks if c.kind == "reference" and not c.name.startswith("[probe]")]
        assert ref_checks and not any(c.passed for c in ref_checks)
        c = ref_checks[0]
        seeds[who] = student_seed(key, who, "q06_1", c.name)
        assert f"(seed {seeds[who]})" in c.message
    assert seeds["alice"] != seeds["bob"]
