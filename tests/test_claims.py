import inspect
import json
import os

import pytest

from lessonlib.claims import CATALOG, Context, Outcome, experiment, registry, rules
from lessonlib.claims import runner


def test_catalog_has_all_41_claims_with_seeds_and_owner():
    assert sorted(CATALOG) == [f"C{i:02d}" for i in range(1, 42)]
    for c in CATALOG.values():
        assert c.statement and c.test and set(c.seeds) <= {"000", "001", "002", "003", "004"}
        assert 2 <= c.issue <= 9


def test_catalog_matches_the_shared_claims_table():
    path = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "claims.md")
    if not os.path.exists(path):
        pytest.skip("../shared/claims.md not beside this checkout")
    rows = [line.split("|") for line in open(path) if line.startswith("| C")]
    table = {r[1].strip(): tuple(s.strip() for s in r[2].split(",")) for r in rows}
    assert sorted(table) == sorted(CATALOG)
    assert all(CATALOG[c].seeds == table[c] for c in table)


def test_rules_compute_verdicts_from_numbers():
    assert rules.at_most(0.5, 1.0, "x").status == "holds"
    assert rules.at_most(1.5, 1.0, "x").status == "fails"
    assert rules.within(3.0, 1, 2, "x").status == "fails"
    assert rules.close_to(3.6, 4, 0.15, "x").status == "holds"
    assert rules.close_to(3.0, 4, 0.15, "x").status == "fails"
    both = rules.all_of(rules.at_least(2, 1, "a"), rules.not_measurable("needs a GPU"))
    assert both.status == "not measurable"
    assert rules.all_of(rules.at_least(2, 1, "a"), rules.at_least(0, 1, "b")).status == "fails"
    with pytest.raises(ValueError, match="finite"):
        rules.at_most(float("nan"), 1, "x")
    with pytest.raises(ValueError):
        rules.not_measurable(" ")


def test_experiment_registration_rejects_unknown_ids():
    with pytest.raises(ValueError, match="C99"):
        experiment("C99")


def test_foundation_claims_are_registered():
    reg = registry()
    assert {"C12", "C19", "C21", "C29", "C33", "C40"} <= set(reg)


@pytest.fixture
def fake_experiments():
    """Swap two registered experiments for cheap fakes, so these tests exercise the runner, not the science."""
    from lessonlib import claims as cl
    registry()  # import every experiment module first, so none registers over a fake later
    saved = {k: cl._REGISTRY.get(k) for k in ("C40", "C41", "C25")}
    calls = []

    def c40(ctx):
        calls.append("C40")
        return Outcome({"x": 3.0}, rules.at_most(3.0, 4.0, "x"), "fake")

    def c41(ctx):
        raise RuntimeError("boom")
    def c25(ctx):  # C25 has a real (slow) experiment since issue 9: keep this test off the models
        return Outcome({}, rules.not_measurable("fake"), "fake")
    cl._REGISTRY.update(C40=c40, C41=c41, C25=c25)
    yield calls
    for k, v in saved.items():
        if v is None:
            cl._REGISTRY.pop(k, None)
        else:
            cl._REGISTRY[k] = v


def test_reproduce_writes_report_and_caches(tmp_path, monkeypatch, fake_experiments):
    monkeypatch.setenv("LESSONLIB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "rep"
    res = runner.reproduce(profile="ci", only="C40,C25", out_dir=str(out))
    assert set(res) == {"C40", "C25"}
    assert res["C40"]["verdict"]["status"] == "holds" and res["C40"]["measured"] == {"x": 3.0}
    data = json.load(open(out / "claims.json"))
    assert data["meta"]["profile"]["name"] == "ci" and data["meta"]["partial"]
    md = (out / "claims.md").read_text()
    assert "| C40 |" in md and "holds at this scale" in md
    assert len(list((tmp_path / "cache" / "claims" / "ci").glob("C40-*.json"))) == 1
    again = runner.reproduce(profile="ci", only=["C40"], out_dir=str(out))
    assert fake_experiments == ["C40"]  # the second run came from the cache ...
    assert res["C40"]["computed"]["cached"] is False and again["C40"]["computed"]["cached"] is True
    assert {k: v for k, v in again["C40"].items() if k != "computed"} == \
        {k: v for k, v in res["C40"].items() if k != "computed"}  # ... with the same outcome
    assert again["C40"]["computed"]["date"] == res["C40"]["computed"]["date"]  # stamped when it was measured
    assert "1 of 1 rows come from that cache" in (out / "claims.md").read_text()
    assert again["C40"]["computed"]["library"] == runner.code_fingerprint(registry()["C40"])
    assert again["C40"]["computed"]["current"] is True
    assert "1 of 1 rows were measured with the code they import as it is now" in (out / "claims.md").read_text()


def test_cached_outcomes_bring_their_figure_into_a_new_report(tmp_path, monkeypatch):
    from lessonlib import claims as cl
    monkeypatch.setenv("LESSONLIB_CACHE", str(tmp_path / "cache"))
    calls = []

    def c40(ctx):
        calls.append(1)
        abs_p, rel = ctx.figure_path("c40_test.png")
        with open(abs_p, "wb") as f:
            f.write(b"png bytes")
        return Outcome({"x": 1.0}, rules.at_most(1.0, 2.0, "x"), "figure test", figure=rel)

    registry()
    monkeypatch.setitem(cl._REGISTRY, "C40", c40)
    runner.reproduce(profile="ci", only="C40", out_dir=str(tmp_path / "first"))
    res = runner.reproduce(profile="ci", only="C40", out_dir=str(tmp_path / "second"))
    assert calls == [1] and res["C40"]["figure"] == "figures/c40_test.png"
    assert (tmp_path / "second" / "figures" / "c40_test.png").read_bytes() == b"png bytes"


def test_source_closure_follows_static_imports_only(tmp_path):
    pkg = tmp_path / "lessonlib"
    (pkg / "claims").mkdir(parents=True)
    (pkg / "quant").mkdir()
    for f, text in {"__init__.py": "", "config.py": "", "unused.py": "x = 1\n",
                    "claims/__init__.py": "from ..config import P\nimport importlib\n"
                                          "importlib.import_module('lessonlib.unused')\n",
                    "claims/runner.py": "", "claims/exp_a.py": "from . import runner\nfrom ..quant import gptq\n"
                                                               "def f():\n    import lessonlib.evaluate\n",
                    "quant/__init__.py": "from .rtn import r\n", "quant/rtn.py": "import torch\n",
                    "quant/gptq.py": "", "evaluate.py": "from lessonlib.config import P\n"}.items():
        (pkg / f).write_text(text)
    got = {os.path.relpath(p, pkg) for p in runner.source_closure(str(pkg / "claims" / "exp_a.py"), root=str(pkg))}
    assert got == {"claims/exp_a.py", "claims/__init__.py", "__init__.py", "config.py", "quant/__init__.py",
                   "quant/rtn.py", "quant/gptq.py", "evaluate.py"}  # not unused.py (dynamic), not runner.py


def test_code_fingerprint_separates_tracks():
    """Editing the early-exit code must not invalidate the quantization claims, and the reverse."""
    reg = registry()
    c23 = {os.path.basename(os.path.dirname(p)) + "/" + os.path.basename(p)
           for p in runner.source_closure(inspect.getsourcefile(reg["C23"]))}
    c10 = {os.path.basename(os.path.dirname(p)) + "/" + os.path.basename(p)
           for p in runner.source_closure(inspect.getsourcefile(reg["C10"]))}
    assert "quant/gptq.py" in c23 and not any(p.startswith("exit/") for p in c23)
    assert any(p.startswith("exit/") for p in c10) and "quant/gptq.py" not in c10


def test_reproduce_reports_an_exception_and_goes_on(tmp_path, monkeypatch, fake_experiments):
    monkeypatch.setenv("LESSONLIB_CACHE", str(tmp_path / "cache"))
    res = runner.reproduce(profile="ci", only="C41,C40", out_dir=str(tmp_path))
    assert res["C41"]["verdict"]["status"] == "error" and "boom" in res["C41"]["verdict"]["rule"]
    assert res["C40"]["verdict"]["status"] == "holds"


def test_every_claim_of_the_shared_table_has_an_experiment():
    """Issue 9: the ledger is complete, C01-C41, none missing and none extra."""
    assert sorted(registry()) == sorted(CATALOG) and len(CATALOG) == 41


def test_pending_claims_name_their_issue(tmp_path, monkeypatch):
    from lessonlib import claims as cl
    monkeypatch.setenv("LESSONLIB_CACHE", str(tmp_path / "cache"))
    registry()  # import every experiment module first, then take one claim out for this test only
    monkeypatch.delitem(cl._REGISTRY, "C19")
    res = runner.reproduce(profile="ci", only="C19", out_dir=str(tmp_path))
    assert res["C19"]["verdict"]["status"] == "pending"
    assert f"issue {CATALOG['C19'].issue}" in res["C19"]["verdict"]["rule"]


def test_unknown_only_ids_are_rejected():
    with pytest.raises(ValueError, match="C77"):
        runner.reproduce(profile="ci", only="C77")


def test_figure_path_rejects_paths(tmp_path):
    ctx = Context("ci", out_dir=str(tmp_path))
    with pytest.raises(ValueError):
        ctx.figure_path("../x.png")
    abs_p, rel = ctx.figure_path("c12.png")
    assert rel == "figures/c12.png" and abs_p.startswith(str(tmp_path))


@pytest.mark.model
def test_c12_on_the_real_models(tmp_path, monkeypatch):
    o = registry()["C12"](Context("ci", out_dir=str(tmp_path)))
    assert isinstance(o, Outcome)
    assert o.measured["minilm_ffn_share_of_blocks"] == pytest.approx(2 / 3, abs=0.01)
    assert o.measured["minilm_cut_blocks_d_ff_2d"] == pytest.approx(1 / 3, abs=0.01)
    assert o.verdict.status == "holds"


def test_scales_table_puts_runs_side_by_side(tmp_path, monkeypatch, fake_experiments):
    from lessonlib.claims.scales import compare_reports
    monkeypatch.setenv("LESSONLIB_CACHE", str(tmp_path / "cache"))
    runner.reproduce(profile="ci", only="C40,C25", out_dir=str(tmp_path / "a"))
    runner.reproduce(profile="laptop", only="C40", out_dir=str(tmp_path / "b"))
    text = compare_reports([str(tmp_path / "a"), str(tmp_path / "b")], str(tmp_path / "scales.md"))
    assert (tmp_path / "scales.md").read_text() == text
    rows = {line.split(" | ")[0][2:]: line for line in text.splitlines() if line.startswith("| C")}
    assert rows["C40"].endswith("| holds at this scale | holds at this scale | yes |")
    assert rows["C25"].endswith("| not measurable here | not run | **no** |")
    assert "`ci`" in text and "`laptop`" in text and "1 of 2 claims" in text
    with pytest.raises(ValueError, match="two report folders"):
        compare_reports([str(tmp_path / "a")])
    with pytest.raises(FileNotFoundError, match="claims.json"):
        compare_reports([str(tmp_path / "a"), str(tmp_path / "nope")])
