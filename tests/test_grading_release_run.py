"""The student release runs: its stubbed library functions run the reader's answer once check() passed it,
and say which exercise to write before that; two released notebooks execute end to end on a reader's answers."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lessonlib_grader.extract import generate_all
from lessonlib_grader.release import build_release


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("release") / "course")
    assert build_release(out) == []  # no reference answer in it
    return out


def _run_in_release(release: str, code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=release, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", code], cwd=release, env=env, capture_output=True, text=True,
                          timeout=300)


def test_release_stub_names_the_exercise_then_runs_the_readers_answer(release):
    code = """
import torch, lessonlib
from lessonlib.prune.masks import nm_mask
assert lessonlib.__file__.startswith({root!r}), lessonlib.__file__
try:
    nm_mask(torch.randn(2, 8), 2, 4)
    raise SystemExit("the release's nm_mask ran without an answer")
except NotImplementedError as e:
    print("MESSAGE", e)
def mine(scores, keep_n, group_m):  # a reader's answer: prune the lowest, ties leftmost first
    g = scores.reshape(scores.shape[0], -1, group_m)
    idx = torch.argsort(g, dim=-1, stable=True)[..., :group_m - keep_n]
    return torch.ones_like(g, dtype=torch.bool).scatter_(-1, idx, False).reshape(scores.shape)
from lessonlib.grading import check
r = check("q06_1", mine, verbose=False)
print("CHECK", r.status)
s = torch.tensor([[4.0, 1.0, 3.0, 2.0, 0.0, 5.0, 6.0, 7.0]])
print("MASK", nm_mask(s, 2, 4).int().tolist())   # the library now runs the reader's function
""".format(root=release)
    r = _run_in_release(release, code)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "MESSAGE q06_1: `nm_mask` is yours to write" in r.stdout
    assert "CHECK passed" in r.stdout
    assert "MASK [[1, 0, 1, 0, 0, 0, 1, 1]]" in r.stdout


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.parametrize("notebook", ["01_linear_quantization", "19_entropy_coding"])
def test_released_notebook_runs_end_to_end_with_the_readers_answers(release, notebook):
    import nbformat

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
    import nbexec  # the executor of `make test` (its channels are polled in slices: no missed-reply wait)

    # a reader who has solved the exercises so far in their exercise files (chapter 01 uses 00's answer)
    for nb_name, gen in generate_all().items():
        if nb_name <= notebook:
            with open(os.path.join(release, "exercises", f"{nb_name}.py"), "w") as f:
                f.write(gen.solution)
    path = os.path.join(release, "notebooks", f"{notebook}.ipynb")
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[[c.cell_type for c in nb.cells].index("code")].id == "student-release-answers"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=release, LESSONLIB_PROFILE="ci", MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    result = nbexec.execute(path, env, timeout=600)
    assert result.ok, result.error
    nb = result.nb
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "yours to write" not in text
