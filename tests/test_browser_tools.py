"""The browser tests' notebook logic (tools/browser_lab.py), without a browser: which chapters count as
widget chapters, and how the self-test breaks one (an exercise stub shadowing what the widget calls)."""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load():
    sys.path.insert(0, str(ROOT / "tools"))
    spec = importlib.util.spec_from_file_location("browser_lab", ROOT / "tools" / "browser_lab.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


lab = _load()


def _nb(*cells: tuple[str, str]) -> dict:
    return {"cells": [{"cell_type": t, "source": [s], "metadata": {}, "outputs": [], "execution_count": None}
                      for t, s in cells], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


WIDGET_NB = _nb(
    ("markdown", "# 01 demo"),
    ("code", "from lessonlib.quant import QuantScheme, compute_qparams\nimport ipywidgets as widgets"),
    ("code", "def show(bits=3):\n    s = QuantScheme(bits, 64, True)\n    q = compute_qparams(W, s)\n"
             "    print(len(str(q)))\n\nwidgets.interact(show, bits=widgets.IntSlider(3, 2, 8));"),
    ("code", "def compute_qparams(w, scheme):\n    raise NotImplementedError"),
)


def test_widget_chapters_are_found_by_their_code():
    found = {p.name[:2] for p in lab.widget_notebooks()}
    assert {"00", "01"} <= found                     # the size explorer and the histogram
    for p in lab.widget_notebooks():
        assert any(lab.WIDGET_RE.search(s) for s in lab.code_of(json.loads(p.read_text())))


def test_widget_regex_ignores_prose_words():
    assert lab.WIDGET_RE.search("widgets.interact(show, x=1)")
    assert lab.WIDGET_RE.search("import ipywidgets as w")
    assert not lab.WIDGET_RE.search("# the interaction between heads\nx = interactions + 1")


def test_shadow_candidate_is_an_imported_function_the_widget_calls():
    idx, name = lab.shadow_candidate(WIDGET_NB)
    assert idx == 2 and name == "compute_qparams"    # lowercase: a function, not the QuantScheme class


def test_no_candidate_without_interact():
    assert lab.shadow_candidate(_nb(("code", "from m import f\nf(1)"))) is None


def test_broken_copy_appends_the_stub_and_is_removed_by_name(tmp_path, monkeypatch):
    src = tmp_path / "01_demo.ipynb"
    src.write_text(json.dumps(WIDGET_NB))
    monkeypatch.setattr(lab, "NOTEBOOKS", tmp_path)
    out, name = lab.make_broken_copy([src])
    assert out.name == "_broken_01_demo.ipynb" and name == "compute_qparams"
    cells = json.loads(out.read_text())["cells"]
    assert len(cells) == len(WIDGET_NB["cells"]) + 1
    assert "def compute_qparams(" in "".join(cells[-1]["source"]) and "NotImplementedError" in "".join(cells[-1]["source"])
    assert json.loads(src.read_text()) == WIDGET_NB  # the chapter itself is untouched


@pytest.mark.parametrize("tb, want", [
    ("-----\nNotImplementedError        Traceback (most recent call last)\nFile x\n\nNotImplementedError: stub",
     "NotImplementedError Traceback (most recent call last) | NotImplementedError: stub"),
    ("ValueError: bits must be in [2, 8], got 1", "ValueError: bits must be in [2, 8], got 1"),
])
def test_brief_names_the_exception(tb, want):
    assert lab.brief(tb) == want


def _load_book():
    spec = importlib.util.spec_from_file_location("browser_book", ROOT / "tools" / "browser_book.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_book_link_check_finds_missing_pages_and_anchors(tmp_path):
    book = _load_book()
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "01.html").write_text('<h1 id="the-grid">x</h1>')
    page, base = tmp_path / "index.html", "http://127.0.0.1:1/"
    url = base + "index.html"
    ok = ["notebooks/01.html", "notebooks/01.html#the-grid", "https://example.org/x", "mailto:a@b", "#"]
    (tmp_path / "index.html").write_text("<p>landing</p>")
    for href in ok:
        assert book.check_link(tmp_path, page, href, base, url) is None, href
    assert "does not exist" in book.check_link(tmp_path, page, "notebooks/02.html", base, url)
    assert "no anchor #nope" in book.check_link(tmp_path, page, "notebooks/01.html#nope", base, url)


@pytest.mark.skipif(shutil.which("node") is None, reason="node checks the page scripts' syntax")
@pytest.mark.parametrize("name", ["ERRORS_JS", "BUSY_JS", "CONTROLS_JS", "SNAPSHOT_JS", "SLIDER_STATE_JS", "PRESS_RUN_JS"])
def test_page_scripts_parse(name, tmp_path):
    f = tmp_path / "s.js"
    f.write_text("new Function('return ' + " + json.dumps(getattr(lab, name)) + ");")
    subprocess.run(["node", str(f)], check=True, capture_output=True, timeout=60)


def test_sessions_match_the_exact_file_name_not_a_suffix():
    """The self-test's _broken_01_x.ipynb runs beside 01_x.ipynb: shutting one down must not stop the other."""
    fake = object.__new__(lab.Lab)
    fake.api = lambda method, path: [{"id": "a", "path": "01_x.ipynb"}, {"id": "b", "path": "_broken_01_x.ipynb"},
                                     {"id": "c", "path": "sub/01_x.ipynb"}]
    assert [s["id"] for s in fake.sessions("01_x.ipynb")] == ["a", "c"]
    assert [s["id"] for s in fake.sessions("_broken_01_x.ipynb")] == ["b"]


def test_longest_first_follows_the_recorded_ci_times():
    rows = json.loads((ROOT / "reports" / "timings.json").read_text())["profiles"]["ci"]
    nbs = lab.widget_notebooks()
    order = lab.longest_first(list(reversed(nbs)))
    secs = [float(rows.get(p.stem, {}).get("seconds", 60.0)) for p in order]
    assert sorted(order) == sorted(nbs) and secs == sorted(secs, reverse=True)


# The ipywidgets controls browser_lab.py can move (CONTROLS_JS: sliders, dropdowns, checkboxes, multi-selects)
# and containers/outputs that need no moving. A chapter using another control would only show up in the
# browser run as "no widget control rendered" (as notebook 11's SelectMultiple did before it was driven).
DRIVEN = {"IntSlider", "FloatSlider", "FloatLogSlider", "SelectionSlider", "Dropdown", "Checkbox", "SelectMultiple"}
NOT_CONTROLS = {"Layout", "Output", "HBox", "VBox", "HTML", "Label"}


def test_every_widget_control_a_chapter_uses_is_one_the_browser_test_drives():
    import re

    for p in lab.widget_notebooks():
        code = "\n".join(lab.code_of(json.loads(p.read_text())))
        used = {name for alias in re.findall(r"import ipywidgets as (\w+)", code)
                for name in re.findall(rf"\b{alias}\.([A-Z]\w*)", code)}
        assert used <= DRIVEN | NOT_CONTROLS, f"{p.name} uses {sorted(used - DRIVEN - NOT_CONTROLS)}: drive it in browser_lab"
    assert "widget-select-multiple" in lab.CONTROLS_JS and "widget-dropdown" in lab.CONTROLS_JS
