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
    saved = {k: cl._REGISTRY.get(k) for k in ("C40", "C41")}
    calls = []

    def c40(ctx):
        calls.append("C40")
        return Outcome({"x": 3.0}, rules.at_most(3.0, 4.0, "x"), "fake")

    def c41(ctx):
        raise RuntimeError("boom")
    cl._REGISTRY.update(C40=c40, C41=c41)
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
    assert again["C40"] == res["C40"] and fake_experiments == ["C40"]  # the second run came from the cache


def test_reproduce_reports_an_exception_and_goes_on(tmp_path, monkeypatch, fake_experiments):
    monkeypatch.setenv("LESSONLIB_CACHE", str(tmp_path / "cache"))
    res = runner.reproduce(profile="ci", only="C41,C40", out_dir=str(tmp_path))
    assert res["C41"]["verdict"]["status"] == "error" and "boom" in res["C41"]["verdict"]["rule"]
    assert res["C40"]["verdict"]["status"] == "holds"


def test_pending_claims_name_their_issue(tmp_path, monkeypatch):
    from lessonlib import claims as cl
    monkeypatch.setenv("LESSONLIB_CACHE", str(tmp_path / "cache"))
    missing = [c for c in CATALOG if c not in registry()]
    if not missing:
        pytest.skip("every claim has an experiment")
    res = runner.reproduce(profile="ci", only=missing[:1], out_dir=str(tmp_path))
    assert res[missing[0]]["verdict"]["status"] == "pending"
    assert f"issue {CATALOG[missing[0]].issue}" in res[missing[0]]["verdict"]["rule"]


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
