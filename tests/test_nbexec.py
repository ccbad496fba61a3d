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


class _MissedWakeup:
    """A kernel channel whose reply is ready from t = ``ready_at`` but whose poll only sees it when a wait ends
    (the missed wake-up of pyzmq's asyncio poll): each get_msg(timeout) advances the fake clock by the whole
    timeout, then returns the reply if it is ready by then, else raises queue.Empty."""

    def __init__(self, ready_at: float | None):
        self.now, self.ready_at, self.waits = 0.0, ready_at, []

    def clock(self) -> float:
        return self.now

    async def get_msg(self, timeout=None):  # noqa: ANN001
        import queue
        assert timeout is not None, "the wrapper must never wait without a bound"
        self.waits.append(timeout)
        self.now += timeout
        if self.ready_at is not None and self.now >= self.ready_at:
            return {"msg": "reply"}
        raise queue.Empty


def test_sliced_polls_bound_the_cost_of_a_missed_wakeup():
    import asyncio
    import queue
    ch = _MissedWakeup(ready_at=0.3)
    get = nbexec.sliced_get_msg(ch.get_msg, slice_s=1.0, clock=ch.clock)
    assert asyncio.run(get(timeout=600)) == {"msg": "reply"}
    assert ch.waits == [1.0] and ch.now == 1.0        # found after one slice, not after the 600 s timeout
    raw = _MissedWakeup(ready_at=0.3)                  # unwrapped: the whole timeout is spent, then it succeeds
    assert asyncio.run(raw.get_msg(timeout=600)) == {"msg": "reply"} and raw.now == 600
    ch = _MissedWakeup(ready_at=None)                  # nothing ever comes: Empty exactly at the deadline
    get = nbexec.sliced_get_msg(ch.get_msg, slice_s=1.0, clock=ch.clock)
    with pytest.raises(queue.Empty):
        asyncio.run(get(timeout=2.5))
    assert ch.waits == [1.0, 1.0, 0.5] and ch.now == 2.5
    ch = _MissedWakeup(ready_at=7.2)                   # timeout=None (the iopub poll): waits in slices forever
    get = nbexec.sliced_get_msg(ch.get_msg, slice_s=1.0, clock=ch.clock)
    assert asyncio.run(get()) == {"msg": "reply"} and ch.waits == [1.0] * 8
    with pytest.raises(ValueError, match="slice_s=0"):
        nbexec.sliced_get_msg(ch.get_msg, slice_s=0)


def test_the_executor_slices_the_kernel_channels(tmp_path):
    """The wrapper is installed on the live client's shell and iopub channels (and a notebook still runs)."""
    nb_path = tmp_path / "t.ipynb"
    _write(nb_path, ["x = 6 * 7", "print(x)"])
    seen = []
    orig = nbexec.sliced_get_msg

    def spy(get_msg, *a, **k):  # noqa: ANN001, ANN202
        seen.append(getattr(get_msg, "__self__", None))
        return orig(get_msg, *a, **k)

    nbexec.sliced_get_msg = spy
    try:
        r = nbexec.execute(nb_path, nbexec.kernel_env("ci"), timeout=120)
    finally:
        nbexec.sliced_get_msg = orig
    assert r.ok, r.error
    assert len(seen) == 2 and seen[0] is not seen[1], seen          # shell and iopub, each wrapped once
    assert all("Channel" in type(ch).__name__ for ch in seen), seen
    assert "42" in "".join(o.get("text", "") for o in r.nb.cells[2].outputs)
