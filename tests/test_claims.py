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
    assert rows["C40"].endswith("| holds at this scale | holds at this scale | yes | - |")
    assert rows["C25"].endswith("| not measurable here | not run | **no** | method set (not run in every profile) |")
    assert "`ci`" in text and "`laptop`" in text and "1 of 2 claims" in text
    with pytest.raises(ValueError, match="two report folders"):
        compare_reports([str(tmp_path / "a")])
    with pytest.raises(FileNotFoundError, match="claims.json"):
        compare_reports([str(tmp_path / "a"), str(tmp_path / "nope")])


def test_scales_does_not_compare_runs_of_different_commits(tmp_path):
    from lessonlib.claims.scales import compare_reports
    for name, commit in (("a", "abc1234"), ("b", "def5678")):
        (tmp_path / name).mkdir()
        meta = {"date": "d", "commit": commit, "machine": "m", "partial": False,
                "profile": {"name": name, "eval_windows": 1, "seqlen": 2, "calib_samples": 1, "calib_seqlen": 2,
                            "train_steps": 1}}
        claims = {"C40": {"statement": "s", "measured": {}, "verdict": {"status": "fails", "rule": "r",
                                                                        "label": "does not hold at this scale"}}}
        (tmp_path / name / "claims.json").write_text(json.dumps({"meta": meta, "claims": claims}))
    text = compare_reports([str(tmp_path / "a"), str(tmp_path / "b")])
    assert "comparison is not made" in text and "abc1234" in text and "| C40 |" not in text


def test_change_kind_labels_scale_noise_and_method_set():
    from lessonlib.claims.scales import change_kind
    held = {"measured": {"x": 1}, "verdict": {"status": "holds"}}
    failed = {"measured": {"x": 2}, "verdict": {"status": "fails"}}
    assert change_kind([held, failed]) == "scale"
    assert change_kind([held, {"measured": {"x": 2}, "verdict": {"status": "inconclusive"}}]) == "noise"
    assert change_kind([held, {"measured": {"x": 1, "y": 2}, "verdict": {"status": "fails"}}]) == "method set"


# ------------------------------------------------------------------ the verdict vocabulary (issue 19)
def test_interval_rules_decide_only_when_the_interval_is_clear_of_the_edge():
    assert rules.at_most(0.05, 0.10, "x", (0.02, 0.08)).status == rules.HOLDS
    assert rules.at_most(0.05, 0.10, "x", (0.02, 0.12)).status == rules.INCONCLUSIVE
    assert rules.at_most(0.15, 0.10, "x", (0.12, 0.18)).status == rules.FAILS
    assert rules.at_least(0.091, 0.10, "x", (0.05, 0.13)).status == rules.INCONCLUSIVE  # C28's 9.1% at a 10% edge
    assert rules.within(0.5, 0.1, 1.0, "x", (0.2, 0.9)).status == rules.HOLDS
    assert rules.within(0.5, 0.1, 1.0, "x", (0.05, 0.9)).status == rules.INCONCLUSIVE
    assert rules.within(2.0, 0.1, 1.0, "x", (1.5, 3.0)).status == rules.FAILS
    assert rules.within(0.5, 0.4, 0.6, "x", (0.1, 0.9)).status == rules.INCONCLUSIVE  # wider than the band
    assert "95% interval [0.02, 0.12]" in rules.at_most(0.05, 0.10, "x", (0.02, 0.12)).rule
    with pytest.raises(ValueError, match="low > high"):
        rules.at_most(0.05, 0.10, "x", (0.2, 0.1))
    with pytest.raises(ValueError, match="finite"):
        rules.at_most(0.05, 0.10, "x", (float("nan"), 0.1))


def test_parts_keep_their_own_verdicts_and_combine_by_one_rule():
    size, q = rules.at_least(30, 12, "factor"), rules.not_measurable("needs a from-scratch training budget")
    v = rules.parts(size=size, quality=q)
    assert v.status == rules.NOT_MEASURABLE and dict(v.parts) == {"size": size, "quality": q}
    assert "[size: holds at this scale]" in v.rule and "[quality: not measurable here]" in v.rule
    assert rules.parts(a=size, b=rules.at_most(2, 1, "y")).status == rules.FAILS  # a decided failing part
    assert rules.parts(a=size, b=rules.invalid("collapsed")).status == rules.INVALID
    assert rules.parts(a=size, b=rules.inconclusive("spread")).status == rules.INCONCLUSIVE
    ctx = rules.parts(("a",), a=size, b=rules.at_most(2, 1, "y"))  # b is context, not judged
    assert ctx.status == rules.HOLDS and "(context, not judged)" in ctx.rule
    with pytest.raises(ValueError):
        rules.parts(("c",), a=size)
    with pytest.raises(ValueError):
        rules.invalid(" ")
    with pytest.raises(ValueError, match="status"):
        rules.Verdict("maybe", "r")


def test_verdicts_round_trip_through_json_and_old_reports_still_render():
    v = rules.parts(size=rules.at_least(30, 12, "f"), quality=rules.at_most(0.05, 0.1, "q", (0.0, 0.2)))
    back = rules.Verdict.from_dict(json.loads(json.dumps(v.as_dict())))
    assert back == v and back.parts[1][1].interval == (0.0, 0.2)
    old = {"status": "fails", "rule": "r", "label": "does not hold at this scale"}  # an old report's row
    assert rules.label_of(old) == "does not hold at this scale"
    assert rules.label_of({"status": "holds", "rule": "r", "label": "holds at this scale"}) == "holds at this scale"
    assert rules.label_of({"status": "retired", "label": "something old"}) == "something old"
    assert runner._verdict_cell(v.as_dict()).startswith("inconclusive")


def test_change_reason_names_vocabulary_measurability_method_and_noise():
    old = {"measured": {"x": 1}, "verdict": {"status": "fails", "rule": "x = 1 must be <= 0.5"}}
    assert "vocabulary" in runner.change_reason(old, {"measured": {"x": 1}, "verdict": {
        "status": "inconclusive", "rule": "r"}})
    assert "measured here" in runner.change_reason(old, {"measured": {"x": 1}, "verdict": {
        "status": "not measurable", "rule": "needs a GPU"}})
    assert "method set" in runner.change_reason(old, {"measured": {"x": 1, "y": 2}, "verdict": {
        "status": "holds", "rule": "x = 0.4 must be <= 0.5"}})
    assert "noise" in runner.change_reason(old, {"measured": {"x": 0.4}, "verdict": {
        "status": "holds", "rule": "x = 1 must be <= 0.5"}})


def test_report_lists_changed_verdicts_published_numbers_and_cached_only(tmp_path, monkeypatch, fake_experiments):
    monkeypatch.setenv("LESSONLIB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "rep"
    out.mkdir()
    old = {"meta": {"commit": "old1234", "date": "then"},
           "claims": {"C40": {"measured": {"x": 3.0}, "verdict": {"status": "fails", "rule": "x = 3 must be <= 1",
                                                                  "label": "does not hold at this scale"}}}}
    (out / "claims.json").write_text(json.dumps(old))
    runner.reproduce(profile="ci", only="C40", out_dir=str(out))
    md = (out / "claims.md").read_text()
    assert "changed since the previous report (commit `old1234`" in md
    assert "- C40: does not hold at this scale -> holds at this scale" in md
    data = json.load(open(out / "claims.json"))
    assert data["claims"]["C40"]["published"]["source"].startswith("Han, Mao & Dally")
    assert data["meta"]["changes"][0]["claim"] == "C40"
    res = runner.reproduce(profile="ci", only="C40,C25", out_dir=str(tmp_path / "r2"), cached_only=True)
    assert res["C40"]["verdict"]["status"] == "holds"  # from the cache
    assert res["C25"]["verdict"]["status"] == "not run" and "no cached outcome" in res["C25"]["verdict"]["rule"]
    meta = json.load(open(tmp_path / "r2" / "claims.json"))["meta"]
    assert meta["not_measured"] == ["C25"] and meta["partial"]
    assert "stopped before 1 claims (C25)" in (tmp_path / "r2" / "claims.md").read_text()
