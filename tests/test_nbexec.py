"""The notebook collector of `make test` (notebooks/conftest.py, tools/nbexec.py) and the executed copies it
leaves for `make book`: run in a pytest subprocess on two tiny notebooks, one that draws a figure and one whose
second code cell raises."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import nbexec  # noqa: E402

GOOD_CODE = ["import os, time\nt = time.process_time()\nwhile time.process_time() - t < 0.5:  # 0.5 s of CPU\n    pass\n"
             "print('profile', os.environ['LESSONLIB_PROFILE'])",
             "import matplotlib.pyplot as plt\nplt.plot([0, 1], [1, 0])\nplt.show()"]
BAD_CODE = ["x = 41", "def f():\n    raise ValueError('boom at ' + str(x + 1))\nf()", "print('never')"]


def _write(path: Path, codes: list[str], title: str = "# tiny") -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell(title)] + [nbformat.v4.new_code_cell(c) for c in codes]
    for i, c in enumerate(nb.cells):
        c["id"] = f"c{i:02d}"
    nbformat.write(nb, str(path))


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    """`pytest <dir>` with the project's notebook conftest on 00_good, 01_bad and a _scratch copy."""
    tmp = tmp_path_factory.mktemp("nbs")
    nbs, executed = tmp / "notebooks", tmp / "executed"
    nbs.mkdir()
    shutil.copy(ROOT / "notebooks" / "conftest.py", nbs / "conftest.py")
    _write(nbs / "00_good.ipynb", GOOD_CODE)
    _write(nbs / "01_bad.ipynb", BAD_CODE)
    _write(nbs / "_broken_00_good.ipynb", ["raise RuntimeError('scratch copies are not collected')"])
    env = dict(os.environ, LESSONLIB_PROFILE="ci", LESSONLIB_EXECUTED_DIR=str(executed), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT / "tools"), str(ROOT)]))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                           str(nbs)], cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    return nbs, executed, proc.returncode, proc.stdout + proc.stderr


def test_each_notebook_is_one_test_and_a_failure_shows_the_cell(collected):
    nbs, executed, rc, out = collected
    assert rc == 1 and "1 failed, 1 passed" in out, out[-3000:]
    assert "01_bad.ipynb under LESSONLIB_PROFILE=ci: cell 2 failed" in out       # index among all cells
    assert "raise ValueError('boom at ' + str(x + 1))" in out                    # the failing cell's source
    assert "ValueError: boom at 42" in out and "\x1b[" not in out                # its traceback, no ANSI codes
    assert "scratch copies" not in out                                           # _* copies not collected


def test_executed_copy_keeps_outputs_figure_widget_free_metadata(collected):
    nbs, executed, _, _ = collected
    good = nbformat.read(str(executed / "00_good.ipynb"), as_version=4)
    meta = good.metadata["lessonlib"]
    assert meta["ok"] is True and meta["profile"] == "ci" and meta["failed_cell"] is None
    assert meta["source_sha"] == nbexec.source_sha(nbs / "00_good.ipynb")
    assert meta["code_sha"] == nbexec.code_sha(nbs / "00_good.ipynb")
    assert set(meta["cell_seconds"]) == {"1", "2"} and meta["seconds"] >= max(meta["cell_seconds"].values())
    # the kernel's CPU time: at least the 0.5 s the first cell burns, at most what two cores give in the wall time
    assert 0.5 <= meta["cpu_seconds"] <= 2 * meta["seconds"] + 0.5, meta
    assert good.cells[1].outputs[0]["text"] == "profile ci\n"
    assert any("image/png" in o.get("data", {}) for o in good.cells[2].outputs)  # inline backend: a figure
    bad = nbformat.read(str(executed / "01_bad.ipynb"), as_version=4)
    assert bad.metadata["lessonlib"]["ok"] is False and bad.metadata["lessonlib"]["failed_cell"] == 2
    assert bad.cells[3].outputs == []                                             # never reached


def test_executed_copy_is_reused_only_for_the_same_code_profile_and_inputs(collected, tmp_path):
    nbs, executed, _, _ = collected
    src = tmp_path / "00_good.ipynb"
    _write(src, GOOD_CODE)
    inputs = json.loads((executed / "00_good.ipynb").read_text())["metadata"]["lessonlib"]["inputs_sha"]
    assert inputs == nbexec.inputs_sha()
    assert nbexec.executed_copy(src, "ci", executed, inputs=inputs) == executed / "00_good.ipynb"
    assert nbexec.executed_copy(src, "lab", executed, inputs=inputs) is None          # another profile
    assert nbexec.executed_copy(src, "ci", executed, inputs="0" * 64) is None         # library or ledger changed
    assert nbexec.executed_copy(nbs / "01_bad.ipynb", "ci", executed, inputs=inputs) is None  # failed run
    _write(src, GOOD_CODE, title="# tiny, reworded")                                  # prose edit: still reused
    assert nbexec.executed_copy(src, "ci", executed, inputs=inputs) is not None
    merged = nbexec.with_outputs(json.loads(src.read_text()), json.loads((executed / "00_good.ipynb").read_text()))
    assert "".join(merged["cells"][0]["source"]) == "# tiny, reworded"
    assert "".join(merged["cells"][1]["outputs"][0]["text"]) == "profile ci\n" and "lessonlib" in merged["metadata"]
    _write(src, [GOOD_CODE[0] + "\nx = 1", GOOD_CODE[1]])                            # code edit: executed again
    assert nbexec.executed_copy(src, "ci", executed, inputs=inputs) is None
    with pytest.raises(ValueError, match="code cells differ"):
        nbexec.with_outputs(json.loads(src.read_text()), json.loads((executed / "00_good.ipynb").read_text()))


def test_timings_can_record_what_make_test_measured(collected, tmp_path):
    import importlib.util
    spec = importlib.util.spec_from_file_location("timings", ROOT / "tools" / "timings.py")
    t = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(t)
    nbs, executed, _, _ = collected
    js = tmp_path / "t.json"
    args = ["--profile", "ci", "--from-executed", "--executed-dir", str(executed), "--dir", str(nbs),
            "--json", str(js), "--md", os.devnull, "--readme", os.devnull]
    assert t.main(args + ["00"]) == 0                       # nothing executed: read from the copy
    meta = json.loads((executed / "00_good.ipynb").read_text())["metadata"]["lessonlib"]
    row = json.loads(js.read_text())["profiles"]["ci"]["00_good"]
    assert row["seconds"] == round(meta["seconds"], 1) and row["sha"] == meta["code_sha"]
    assert row["max_cell"] in (1, 2) and row["max_cell_seconds"] == round(max(meta["cell_seconds"].values()), 1)
    assert t.main(args + ["01"]) == 1                       # a failed run is not a timing


def test_a_hang_is_run_once_more_and_a_second_hang_fails(tmp_path, monkeypatch):
    """A cell that times out (as when the executor waits for a reply the kernel never sends) gets one fresh
    kernel; the executed copy says so. A notebook that hangs every time still fails, naming the cell."""
    flag = tmp_path / "first_attempt_done"
    once = ["import os, time\n"
            f"flag = {str(flag)!r}\n"
            "if not os.path.exists(flag):\n    open(flag, 'w').close()\n    time.sleep(60)\n"
            "print('second attempt')"]
    always = ["import time\ntime.sleep(60)"]
    _write(tmp_path / "hang_once.ipynb", once)
    _write(tmp_path / "hang_always.ipynb", always)
    with pytest.warns(UserWarning, match="running it once more"):
        r = nbexec.run(tmp_path / "hang_once.ipynb", "ci", "1", timeout=3, dest_dir=tmp_path / "ex")
    assert r.ok and flag.exists()
    meta = json.loads((tmp_path / "ex" / "hang_once.ipynb").read_text())["metadata"]
    assert meta["lessonlib"]["ok"] is True and "timed out" in meta["lessonlib_retry"]["first_attempt"]
    with pytest.warns(UserWarning):
        r = nbexec.run(tmp_path / "hang_always.ipynb", "ci", "1", timeout=3, dest_dir=tmp_path / "ex")
    assert not r.ok and r.error.startswith(nbexec.HANG) and "cell 1 failed" in r.error
