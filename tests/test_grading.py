"""The grading system grades: solutions 100%, stubs 0, mutants caught, bad submissions survived."""
from __future__ import annotations

import ast
import csv
import json
import os
import sys
import textwrap

import pytest
import torch

from lessonlib.grading import check
from lessonlib_grader import cli_exercises, cli_grade, extract, registry, runner
from lessonlib_grader.checks import CheckFailure, assert_close, literal
from lessonlib_grader.mutants import MIN_MUTANTS_PER_EXERCISE, all_mutants, run_mutation_suite
from lessonlib_grader.results import format_file

ROOT = extract.repo_root()
NOTEBOOKS = sorted(registry.notebooks())


def _solution(nb: str) -> str:
    return os.path.join(ROOT, "solutions", f"{nb}.py")


def _exercise(nb: str) -> str:
    return os.path.join(ROOT, "exercises", f"{nb}.py")


# ------------------------------------------------------------------ solutions, stubs, generator
@pytest.mark.parametrize("nb", NOTEBOOKS)
def test_every_solution_scores_full_marks(nb):
    r = runner.grade_file_inprocess(_solution(nb))
    assert r.status == "graded" and r.notebook == nb
    assert r.max_score == registry.total_points(nb) > 0
    assert r.score == r.max_score, format_file(r)


@pytest.mark.parametrize("nb", NOTEBOOKS)
def test_every_untouched_stub_scores_zero_with_not_implemented_yet(nb):
    r = runner.grade_file_inprocess(_exercise(nb))
    assert r.status == "graded" and r.score == 0 and len(r.questions) == len(registry.for_notebook(nb))
    for q in r.questions:
        assert q.status == "not_implemented" and "not implemented yet" in q.message, q


def test_generated_folders_are_up_to_date():
    report = extract.build(ROOT, check=True)
    assert report.ok, f"stale: {report.stale}, stray: {report.stray}; run `lessonlib exercises build`"
    assert cli_exercises(["build", "--check"]) == 0


@pytest.mark.parametrize("nb", NOTEBOOKS)
def test_no_solution_code_leaks_into_the_stub(nb):
    gen = extract.generate(nb, registry.for_notebook(nb))
    assert extract.leaked_lines(gen) == []
    stub = ast.parse(gen.exercise)
    for ex in registry.for_notebook(nb):
        assert [l for l in gen.solution_blocks[ex.id] if l.strip()], f"{ex.id}: empty solution block"
        fn = next(n for n in stub.body if isinstance(n, ast.FunctionDef) and n.name == ex.function)
        raises = [n for n in ast.walk(fn) if isinstance(n, ast.Raise) and "not implemented yet" in ast.unparse(n)]
        assert len(raises) >= 1


def test_leak_detector_sees_a_leaked_line():
    nb = NOTEBOOKS[0]
    gen = extract.generate(nb, registry.for_notebook(nb))
    first = next(l for ls in gen.solution_blocks.values() for l in ls if l.strip() and not l.strip().startswith("#"))
    gen.exercise += "\n" + first.strip() + "\n"
    assert first.strip() in extract.leaked_lines(gen)


@pytest.mark.parametrize("nb", NOTEBOOKS)
def test_solution_files_are_standalone(nb):
    tree = ast.parse(open(_solution(nb), encoding="utf-8").read())
    graded = {e.function for e in registry.for_notebook(nb)}
    allowed = extract.THIRD_PARTY_ALLOWED | set(sys.stdlib_module_names)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert all(a.name.split(".")[0] in allowed for a in node.names), ast.unparse(node)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module.split(".")[0] in allowed, ast.unparse(node)
            assert not graded & {a.name for a in node.names}, f"imports a graded function: {ast.unparse(node)}"
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert graded <= defined


def test_registry_is_consistent():
    exs = registry.all_exercises()
    assert len({e.id for e in exs}) == len(exs) and registry.total_points() == sum(e.points for e in exs)
    marked = set(extract.find_marked_functions())
    for e in exs:
        assert e.reference in marked, f"{e.id}: {e.reference} has no marked block"
        kinds = {c.kind for c in e.checks}  # a concept question's answer check is of kind "concept"
        assert kinds in ({"literal", "property", "reference"}, {"concept", "property", "reference"}), e.id
        assert e.statement and e.hints
    with pytest.raises(ValueError, match="notebook number"):
        registry.Exercise(id="q01_1", points=1, notebook="00_model_anatomy", reference="m:f", statement="s",
                          checks=(literal("c", (), expected=1.0),))
    with pytest.raises(ValueError, match="positive integer"):
        registry.Exercise(id="q00_9", points=0, notebook="00_model_anatomy", reference="m:f", statement="s",
                          checks=(literal("c", (), expected=1.0),))


# ------------------------------------------------------------------ mutation suite
def test_every_mutant_is_caught():
    outcomes = run_mutation_suite()
    survivors = [f"{o.mutant.exercise_id}: {o.mutant.description}" for o in outcomes if not o.caught]
    assert not survivors, f"mutants that score points: {survivors}"
    planted = all_mutants()
    for e in registry.all_exercises():
        assert len(planted.get(e.id, [])) >= MIN_MUTANTS_PER_EXERCISE, f"{e.id} needs more mutants"
    assert len(outcomes) >= MIN_MUTANTS_PER_EXERCISE * len(registry.all_exercises())


# ------------------------------------------------------------------ messages and the inline check
def test_failure_message_names_input_expected_got_and_first_difference():
    with pytest.raises(CheckFailure) as e:
        assert_close(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[1.0, 2.0], [3.0, 5.0]]), what="f(x)")
    msg = str(e.value)
    assert "first at index (1, 1): expected 5, got 4" in msg and "1 of 4 elements differ" in msg
    from lessonlib_grader.mutants.mutants_00 import kv_only_k

    r = runner.grade_function(registry.get("q00_2"), kv_only_k)
    assert r.points < 3 and r.status == "failed"  # partial credit: some checks still pass
    assert "kv_cache_bytes_per_token(n_layers=30, n_kv_heads=3, head_dim=64)" in r.message
    assert "expected: 23040.0" in r.message and "got:      11520.0" in r.message


def test_inline_check_gives_the_file_graders_verdict(capsys):
    from lessonlib.evaluate import next_token_nll  # noqa: F401  (found by name in this module's globals)
    from lessonlib_grader.mutants.mutants_00 import nll_no_shift

    good = check("q00_3")
    assert good.passed and good.points == 5 and "ok" in capsys.readouterr().out
    bad = check("q00_3", nll_no_shift)
    assert not bad.passed and bad.points < 5 and "FAIL" in capsys.readouterr().out
    missing = check("q00_1", None, verbose=False)  # no bytes_at_precision in these globals
    assert missing.status == "missing"


def test_exceptions_in_place_edits_and_loops_are_reported():
    ex = registry.get("q00_3")

    def divides(logits, tokens):
        return 1 // 0

    r = runner.grade_function(ex, divides)
    assert r.status == "failed" and "ZeroDivisionError" in r.message and "1 // 0" in r.message

    def edits_inplace(logits, tokens):
        from lessonlib.evaluate import next_token_nll

        out = next_token_nll(logits, tokens)
        logits.zero_()
        return out

    r = runner.grade_function(ex, edits_inplace)
    assert r.status == "failed" and "modified its input `logits` in place" in r.message

    def loops(logits, tokens):
        while True:
            pass

    r = runner.grade_function(ex, loops, time_limit_s=0.3)
    assert r.status == "timeout" and "time limit exceeded" in r.message and r.points == 0


# ------------------------------------------------------------------ files and folders
def test_cli_single_file_writes_json_and_fail_under(tmp_path):
    nb = NOTEBOOKS[0]
    out = tmp_path / "r.json"
    assert cli_grade([_solution(nb), "--in-process", "--out", str(out), "--fail-under", "100"]) == 0
    data = json.loads(out.read_text())
    assert data["score"] == data["max_score"] == registry.total_points(nb) and data["percent"] == 100.0
    assert cli_grade([_exercise(nb), "--in-process", "--out", str(out), "--fail-under", "100"]) == 1
    assert json.loads(out.read_text())["score"] == 0


def test_import_failure_in_process(tmp_path):
    p = tmp_path / "00_model_anatomy.py"
    p.write_text("import not_a_real_module_xyz\n")
    r = runner.grade_file_inprocess(str(p))
    assert r.status == "import_error" and "ModuleNotFoundError" in r.message and r.score == 0
    assert r.max_score == registry.total_points("00_model_anatomy")


def _submission(folder, student: str, text: str) -> None:
    d = folder / student
    d.mkdir()
    (d / "00_model_anatomy.py").write_text(text)


def test_batch_mode_survives_raising_looping_and_broken_submissions(tmp_path):
    sol = open(_solution("00_model_anatomy"), encoding="utf-8").read()
    anchor = "    # BEGIN SOLUTION\n    pred = logits"
    assert anchor in sol
    subs = tmp_path / "subs"
    subs.mkdir()
    _submission(subs, "alice", sol)
    _submission(subs, "bob", sol.replace(anchor, "    x = 1 // 0\n" + anchor))  # raises in q00_3
    _submission(subs, "carol", sol.replace("    # BEGIN SOLUTION\n    return 2 * n_layers",
                                           "    while True:\n        pass\n    # BEGIN SOLUTION\n"
                                           "    return 2 * n_layers"))  # loops in q00_2
    _submission(subs, "dave", "def bytes_at_precision(n_params, bits:\n    return 0\n")  # syntax error
    _submission(subs, "erin", "while True:\n    pass\n")  # loops while being imported
    _submission(subs, "frank", sol.replace("    nlls = torch.as_tensor", "    import os; os._exit(3)\n"
                                                                         "    nlls = torch.as_tensor"))  # q00_4 kills
    out = tmp_path / "grades.csv"
    code = cli_grade([str(subs), "--out", str(out), "--timeout", "12", "--question-timeout", "3", "--jobs", "2"])
    assert code == 0
    rows = {r["student"]: r for r in csv.DictReader(out.open())}
    assert set(rows) == {"alice", "bob", "carol", "dave", "erin", "frank"}

    def got(s):
        return rows[s]["status"], int(rows[s]["score"]), int(rows[s]["max_score"])

    assert got("alice") == ("graded", 15, 15)
    assert got("bob") == ("graded", 10, 15) and rows["bob"]["q00_3"] == "0" and "ZeroDivisionError" in rows["bob"]["message"]
    assert got("carol") == ("graded", 12, 15) and rows["carol"]["q00_2"] == "0"
    assert "time limit exceeded" in rows["carol"]["message"]
    assert got("dave") == ("import_error", 0, 15) and "SyntaxError" in rows["dave"]["message"]
    assert got("erin") == ("timeout", 0, 15) and "while being imported" in rows["erin"]["message"]
    assert got("frank") == ("graded", 12, 15) and rows["frank"]["q00_4"] == "0"
    details = json.loads((tmp_path / "grades.json").read_text())
    frank = next(d for d in details if d["student"] == "frank")
    assert [q["status"] for q in frank["questions"]] == ["passed", "passed", "passed", "crashed"]


# ------------------------------------------------------------------ the generator on a synthetic module
def _fake_package(tmp_path, name: str, body: str) -> None:
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "helpers.py").write_text("def shared_helper(x):\n    return x + 1\n")
    (pkg / "mod.py").write_text(textwrap.dedent(body))


_FAKE = '''
    from __future__ import annotations

    import math
    import os

    import torch

    from .helpers import shared_helper

    SCALE = 2.0
    _UNUSED = 3


    def _inner(x):
        return x * SCALE


    def unrelated():
        return os.getcwd()


    def graded(x: torch.Tensor) -> torch.Tensor:
        """Doc."""
        x = x.float()
        # BEGIN SOLUTION
        y = _inner(x) + shared_helper(x)
        y = y + math.pi
        # END SOLUTION
        return y
'''


def test_generator_copies_helpers_and_needed_imports_only(tmp_path, monkeypatch):
    name = f"fakepkg_{os.getpid()}_a"
    _fake_package(tmp_path, name, _FAKE)
    monkeypatch.syspath_prepend(str(tmp_path))
    ex = registry.Exercise(id="q98_1", points=2, notebook="98_fake", reference=f"{name}.mod:graded",
                           statement="Scale and shift.", hints=("Use _inner.",),
                           checks=(literal("c", (), expected=1.0),))
    gen = extract.generate("98_fake", [ex])
    sol = gen.solution
    assert "def _inner(x):" in sol and "SCALE = 2.0" in sol and f"from {name}.helpers import shared_helper" in sol
    assert "import math" in sol and "import torch" in sol
    assert "import os" not in sol and "_UNUSED" not in sol and "def unrelated" not in sol
    ns: dict = {}
    exec(compile(sol, "solution.py", "exec"), ns)
    torch.testing.assert_close(ns["graded"](torch.ones(2)), torch.full((2,), 2.0 + 2.0 + torch.pi))
    stub: dict = {}
    exec(compile(gen.exercise, "exercise.py", "exec"), stub)
    with pytest.raises(NotImplementedError, match="q98_1 graded: not implemented yet"):
        stub["graded"](torch.ones(2))
    assert "shared_helper(x)" not in gen.exercise and "q98_1 (2 points)" in gen.exercise
    assert extract.leaked_lines(gen) == []


@pytest.mark.parametrize("bad, match", [
    ("#BEGIN SOLUTION", "malformed marker"),
    ("# BEGIN SOLUTION\n    # BEGIN SOLUTION", "inside an open block"),
])
def test_generator_rejects_bad_markers(tmp_path, monkeypatch, bad, match):
    name = f"fakepkg_{os.getpid()}_{abs(hash(bad)) % 10_000}"
    _fake_package(tmp_path, name, _FAKE.replace("# BEGIN SOLUTION", bad.replace("\n", "\n    "), 1))
    monkeypatch.syspath_prepend(str(tmp_path))
    ex = registry.Exercise(id="q98_1", points=1, notebook="98_fake", reference=f"{name}.mod:graded",
                           statement="s", checks=(literal("c", (), expected=1.0),))
    with pytest.raises(extract.ExtractError, match=match):
        extract.generate("98_fake", [ex])


def test_importing_the_reference_instead_of_writing_it_scores_zero(tmp_path):
    p = tmp_path / "00_model_anatomy.py"
    p.write_text("from lessonlib.evaluate import bytes_at_precision, kv_cache_bytes_per_token\n")
    r = runner.grade_file_inprocess(str(p))
    assert [q.status for q in r.questions] == ["failed", "failed", "missing", "missing"] and r.score == 0
    assert "reference implementation" in r.questions[0].message


def test_sparsity_and_idempotence_helpers():
    from lessonlib_grader.checks import assert_exact_zeros, assert_idempotent

    m = torch.tensor([[0.0, 1.0, 0.0, 2.0], [3.0, 0.0, 0.0, 0.0]])
    assert_exact_zeros(m, 5, what="mask")
    with pytest.raises(CheckFailure, match="row 1 has 3"):
        assert_exact_zeros(m, 2, what="mask", per_row=True)
    assert_idempotent(torch.round, torch.tensor([0.4, 1.6, -2.5]), what="round")
    with pytest.raises(CheckFailure, match="applied twice"):
        assert_idempotent(lambda x: x * 0.5, torch.tensor([1.0, 2.0]), what="halve")
