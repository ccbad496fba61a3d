"""Collect every chapter notebook as a test: `pytest notebooks` runs each one top to bottom in a fresh kernel.

Each ``notebooks/*.ipynb`` (not ``_*`` scratch copies, not checkpoints) is its own collected file holding one
test, so ``pytest -n 2 --dist loadfile`` spreads the notebooks over the workers. A failing notebook reports the
failing cell's index, source and traceback. Every run writes the executed notebook (outputs, widget state,
per-cell seconds, the source sha) to ``build/executed/<stem>.ipynb`` (tools/nbexec.py), which ``make book``
renders instead of executing the chapter again. The profile is ``LESSONLIB_PROFILE`` (``ci`` when unset);
``LESSONLIB_NB_TIMEOUT`` sets the per-cell timeout in seconds (default 600: the slowest ci cell takes ~140 s; the
first attempt gets half, a retry in a fresh kernel all of it), ``LESSONLIB_EXECUTED_DIR`` where
the executed copies go (default build/executed).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import nbexec  # noqa: E402


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if (file_path.suffix == ".ipynb" and not file_path.name.startswith(("_", "."))
            and ".ipynb_checkpoints" not in file_path.parts):
        return NotebookFile.from_parent(parent, path=file_path)
    return None


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Notebooks first, slowest first (reports/timings.json, ci): with `-n 2 --dist loadfile` the longest work
    units start at once and the many short unit-test files fill in around them, so both workers end together."""
    nbs = [i for i in items if isinstance(i, NotebookItem)]
    if not nbs:
        return
    try:
        path = Path(__file__).resolve().parent.parent / "reports" / "timings.json"
        rows = json.loads(path.read_text())["profiles"]["ci"]
    except (OSError, ValueError, KeyError):
        rows = {}
    nbs.sort(key=lambda i: -float(rows.get(i.path.stem, {}).get("seconds", 60.0)))
    items[:] = nbs + [i for i in items if not isinstance(i, NotebookItem)]


class NotebookFailed(Exception):
    """A cell raised (or timed out, or the kernel died); the message carries its source and traceback."""


class NotebookFile(pytest.File):
    def collect(self):
        yield NotebookItem.from_parent(self, name="run_all_cells")


class NotebookItem(pytest.Item):
    def runtest(self) -> None:
        profile = os.environ.get("LESSONLIB_PROFILE", "ci")
        timeout = int(os.environ.get("LESSONLIB_NB_TIMEOUT", "600"))
        threads = os.environ.get("OMP_NUM_THREADS", "1")
        dest = Path(os.environ.get("LESSONLIB_EXECUTED_DIR", str(nbexec.EXECUTED)))
        result = nbexec.run(self.path, profile, threads, timeout, dest_dir=dest)
        slow = sorted(result.cell_seconds.items(), key=lambda kv: -kv[1])[:3]
        self.user_properties.append(("seconds", result.seconds))
        self.user_properties.append(("slowest_cells", slow))
        if not result.ok:
            raise NotebookFailed(f"{self.path.name} under LESSONLIB_PROFILE={profile}: {result.error}\n"
                                 f"(executed copy with every output: {dest / self.path.name})")

    def repr_failure(self, excinfo: pytest.ExceptionInfo, style=None) -> str:  # noqa: ANN001
        if isinstance(excinfo.value, NotebookFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"{self.path.name}: run all cells"
