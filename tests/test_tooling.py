"""Project plumbing: tools/timings.py records measured runtimes; the Makefile's nbstripout filter keeps git clean."""
import importlib.util
import json
import os
import shutil
from pathlib import Path
import subprocess
import sys

import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tools", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _notebook(path, code, outputs=False):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# tiny"), nbformat.v4.new_code_cell(code)]
    for i, c in enumerate(nb.cells):
        c["id"] = f"c{i:02d}"
    if outputs:
        nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="an output\n")]
        nb.cells[1].execution_count = 7
    nbformat.write(nb, str(path))


def test_timings_records_runs_changed_and_table(tmp_path):
    t = _tool("timings")
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _notebook(nbs / "00_tiny.ipynb", "import os, time\nassert os.environ['LESSONLIB_PROFILE'] == 'ci'\ntime.sleep(0.2)")
    _notebook(nbs / "01_other.ipynb", "y = 2")
    js, md, readme = tmp_path / "t.json", tmp_path / "t.md", tmp_path / "README.md"
    readme.write_text("# R\n\n<!-- timings:begin x -->\nSTALE\n<!-- timings:end -->\nafter\n")
    args = ["--profile", "ci", "--dir", str(nbs), "--json", str(js), "--md", str(md), "--readme", str(readme)]
    assert t.main(args + ["00"]) == 0  # a subset by prefix: only 00 runs (in a kernel, under the profile)
    data = json.loads(js.read_text())
    row = data["profiles"]["ci"]["00_tiny"]
    assert set(data["profiles"]["ci"]) == {"00_tiny"} and "cores" in data["machine"] and "contended" in data["note"]
    assert 0.2 <= row["max_cell_seconds"] <= row["seconds"] and row["sha"] == t.code_sha(str(nbs / "00_tiny.ipynb"))
    assert {"date", "commit"} <= set(row)
    # --changed: 00 is current and skipped, 01 has no record and runs; then editing 00's source re-runs it
    row["seconds"] = 999.0
    js.write_text(json.dumps(data))
    assert t.main(args + ["--changed", "--table"]) == 0
    data = json.loads(js.read_text())
    assert data["profiles"]["ci"]["00_tiny"]["seconds"] == 999.0 and "01_other" in data["profiles"]["ci"]
    _notebook(nbs / "00_tiny.ipynb", "x = 2")
    assert t.main(args + ["--changed"]) == 0
    assert json.loads(js.read_text())["profiles"]["ci"]["00_tiny"]["seconds"] < 999.0
    table = md.read_text()  # written from the JSON as it was then: 00 over the 2-minute ci budget, flagged
    assert "| 00_tiny | **16.6 (" in table and "⚠" in table and "| 01_other |" in table
    text = readme.read_text()  # the README's block now holds the same table, the rest is kept
    assert "STALE" not in text and "| 00_tiny | **16.6 (" in text and text.endswith("<!-- timings:end -->\nafter\n")
    with pytest.raises(ValueError, match="no notebook matches '99'"):
        t.main(args + ["99"])


def test_contended_rows_are_judged_by_cpu_time():
    """On a shared machine a one-thread run is judged by its kernel's CPU time; an idle run by its wall time."""
    t = _tool("timings")
    busy = {"seconds": 400.0, "cpu_seconds": 200.0, "max_cell_seconds": 90.0, "contended": True}
    idle = {"seconds": 400.0, "cpu_seconds": 200.0, "max_cell_seconds": 90.0}
    assert t.row_seconds(busy) == 200.0 and t.row_seconds(idle) == 400.0
    md = t.table({"machine": "m", "profiles": {"lab": {"a": busy, "b": idle}}})
    assert "| a | 3.3ᶜ (90 s) |" in md and "| b | **6.7 (90 s) ⚠** |" in md and "10.0 min in all" in md
    even = dict(busy, seconds=200.0)  # a contended row whose CPU equals its wall is still a CPU row (marked)
    assert "| c | 3.3ᶜ (90 s) |" in t.table({"machine": "m", "profiles": {"lab": {"c": even}}})
    with pytest.raises(SystemExit):
        t.main(["--profile", "lab", "--contended", "--threads", "2"])


def test_source_sha_ignores_outputs_not_sources(tmp_path):
    t = _tool("timings")
    a, b, c = tmp_path / "a.ipynb", tmp_path / "b.ipynb", tmp_path / "c.ipynb"
    _notebook(a, "x = 1")
    _notebook(b, "x = 1", outputs=True)
    _notebook(c, "x = 2")
    assert t.source_sha(str(a)) == t.source_sha(str(b)) != t.source_sha(str(c))


@pytest.mark.skipif(not (shutil.which("git") and shutil.which("make")), reason="needs git and make")
def test_make_git_filter_strips_outputs_from_what_git_stores(tmp_path):
    """Configure the filter exactly as `make install`/`make lab` do, in a throwaway repo; a notebook run with
    outputs has no diff and is staged without them (the working copy keeps its outputs); `make update`'s
    `git add -u` then leaves a clean status, so a course update pulls without a conflict."""
    repo = tmp_path / "clone"
    repo.mkdir()
    env = dict(os.environ, GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")

    def run(*cmd):
        return subprocess.run(cmd, cwd=repo, env=env, check=True, capture_output=True, text=True).stdout

    run("git", "init", "-q")
    shutil.copy(os.path.join(ROOT, ".gitattributes"), repo / ".gitattributes")
    run("make", "-f", os.path.join(ROOT, "Makefile"), "git-filter", f"BIN={os.path.dirname(sys.executable)}")
    assert "nbstripout" in run("git", "config", "filter.nbstripout.clean")
    nb = repo / "lesson.ipynb"
    _notebook(nb, "print('an output')")
    run("git", "add", ".")
    run("git", "commit", "-qm", "clean notebook")
    _notebook(nb, "print('an output')", outputs=True)  # the learner ran it
    assert "an output" in nb.read_text()
    assert run("git", "diff", "--stat").strip() == ""  # outputs are no change to git
    run("git", "add", "-u", "--", "*.ipynb")  # what `make update` does before pulling
    assert run("git", "status", "--porcelain").strip() == ""  # clean: a pull can fast-forward
    staged = nbformat.reads(run("git", "show", ":lesson.ipynb"), as_version=4)
    code = staged.cells[1]
    assert code.outputs == [] and code.execution_count is None and [c.id for c in staged.cells] == ["c00", "c01"]


def test_committed_runtime_tables_match_timings_json(tmp_path):
    """README's runtime block and reports/timings.md are what `tools/timings.py --table` writes from the committed
    reports/timings.json (a re-timed row without the tables regenerated fails here)."""
    t = _tool("timings")
    root = Path(ROOT)
    data = json.loads((root / "reports" / "timings.json").read_text())
    md = t.table(data)
    assert (root / "reports" / "timings.md").read_text() == md
    readme = tmp_path / "README.md"
    readme.write_text((root / "README.md").read_text(encoding="utf-8"), encoding="utf-8")
    assert t.embed(str(readme), md)
    assert readme.read_text(encoding="utf-8") == (root / "README.md").read_text(encoding="utf-8")
