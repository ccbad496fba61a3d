"""Tried bad inputs, recipes, the claims cache and the CLI (issue 23): hostile files stay harmless."""
from __future__ import annotations

import json
import os

import pytest

from bad_inputs import answers, cases, check_case
from lessonlib.claims import Outcome, registry, rules
from lessonlib.claims import runner
from lessonlib.cli import main
from lessonlib.pipeline.recipe import MAX_RECIPE_BYTES, load_recipe, parse_nm, read_yaml, validate_recipe

OK = {"stage": "prune", "method": "magnitude", "sparsity": 0.5}
BIG = "x" * 100_000


def _file(tmp_path_factory_dir: str, name: str, text: str | bytes) -> str:
    path = os.path.join(tmp_path_factory_dir, name)
    with open(path, "wb") as f:
        f.write(text if isinstance(text, bytes) else text.encode())
    return path


LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")) + "stages: *i\n"


@pytest.fixture(scope="module")
def d(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("recipes"))


RECIPES = [
    ("recipe-not-dict", lambda d: validate_recipe(42), ValueError, "int"),
    ("recipe-empty-stages", lambda d: validate_recipe({"stages": []}), ValueError, "[]"),
    ("recipe-unknown-key", lambda d: validate_recipe({"stages": [OK], "stagez": 1}), ValueError, "stagez"),
    ("recipe-scenario", lambda d: validate_recipe({"stages": [OK], "scenario": "moon"}), ValueError, "'moon'"),
    ("recipe-stage-kind", lambda d: validate_recipe([{"stage": "squash"}]), ValueError, "'squash'"),
    ("recipe-method", lambda d: validate_recipe([{"stage": "prune", "method": "random"}]), ValueError, "'random'"),
    ("recipe-param", lambda d: validate_recipe([{**OK, "sparsty": 0.5}]), ValueError, "sparsty"),
    ("recipe-sparsity-1", lambda d: validate_recipe([{**OK, "sparsity": 1.0}]), ValueError, "sparsity=1.0"),
    ("recipe-sparsity-bool", lambda d: validate_recipe([{**OK, "sparsity": True}]), ValueError, "sparsity=True"),
    ("recipe-bits-float", lambda d: validate_recipe([{"stage": "quantize", "method": "rtn", "bits": 4.0}]),
     ValueError, "bits=4.0"),
    ("recipe-bits-9", lambda d: validate_recipe([{"stage": "quantize", "method": "rtn", "bits": 9}]), ValueError,
     "bits=9"),
    ("recipe-group-float", lambda d: validate_recipe([{"stage": "quantize", "method": "rtn", "group_size": 6.5}]),
     ValueError, "group_size=6.5"),
    ("recipe-k-float", lambda d: validate_recipe([{"stage": "share", "method": "cluster", "k": 2.5}]), ValueError,
     "k=2.5"),
    ("recipe-nm", lambda d: validate_recipe([{**OK, "nm": "4:2"}]), ValueError, "'4:2'"),
    ("recipe-order", lambda d: validate_recipe([{"stage": "quantize", "method": "rtn"},
                                                {"stage": "prune", "method": "depth"}]), ValueError, "stage 1"),
    ("recipe-huge-value-truncated", lambda d: validate_recipe([{**OK, "sparsity": BIG}]), ValueError, "chars>"),
    ("recipe-huge-name", lambda d: validate_recipe({"name": BIG, "stages": [OK]}), ValueError, "chars>"),
    ("recipe-huge-stage-truncated", lambda d: validate_recipe([BIG]), ValueError, "chars>"),
    ("recipe-unknown-source", lambda d: load_recipe("no-such-recipe"), ValueError, "'no-such-recipe'"),
    ("recipe-source-type", lambda d: load_recipe(3.5), ValueError, "float"),
    ("parse-nm", lambda d: parse_nm("2-4"), ValueError, "'2-4'"),
    ("yaml-billion-laughs", lambda d: load_recipe(_file(d, "laughs.yaml", LAUGHS)), ValueError, "laughs.yaml"),
    ("yaml-too-big", lambda d: load_recipe(_file(d, "big.yaml", "#" * (MAX_RECIPE_BYTES + 1))), ValueError,
     f"{MAX_RECIPE_BYTES} bytes"),
    ("yaml-not-utf8", lambda d: load_recipe(_file(d, "bin.yaml", b"\xff\xfe\x00stages")), ValueError, "bin.yaml"),
    ("yaml-invalid", lambda d: load_recipe(_file(d, "bad.yaml", "stages: [a, {b: }")), ValueError, "bad.yaml"),
    ("yaml-python-tag", lambda d: load_recipe(_file(d, "tag.yaml", "stages: !!python/object/apply:os.system [ls]")),
     ValueError, "tag.yaml"),
    ("yaml-bad-stage-names-file", lambda d: load_recipe(_file(d, "k.yaml", "stages: [{stage: squash}]")),
     ValueError, "k.yaml"),
    ("yaml-missing-dir", lambda d: read_yaml(os.path.join(d, "nope", "r.yaml")), ValueError, "r.yaml"),
    ("only-comma", lambda d: runner._parse_only(","), ValueError, "','"),
    ("only-unknown", lambda d: runner._parse_only("C12,C99"), ValueError, "C99"),
    ("only-type", lambda d: runner._parse_only(12), TypeError, "only=12"),
    ("only-list-of-ints", lambda d: runner._parse_only([12]), TypeError, "[12]"),
]


@pytest.mark.parametrize("call, exc, needle", cases(RECIPES))
def test_pipeline_bad_input(d, call, exc, needle):
    check_case(lambda: call(d), exc, needle)


# ----------------------------------------------------------------------------- the claims cache
@pytest.fixture
def fake_c40(monkeypatch, tmp_path):
    from lessonlib import claims as cl
    monkeypatch.setenv("LESSONLIB_CACHE", str(tmp_path / "cache"))
    registry()
    calls = []

    def c40(ctx):
        calls.append(1)
        return Outcome({"x": 1.0}, rules.at_most(1.0, 2.0, "x"), "fake")

    monkeypatch.setitem(cl._REGISTRY, "C40", c40)
    monkeypatch.setattr(runner, "code_fingerprint", lambda fn: "fingerprint")  # these tests are about the cache
    monkeypatch.setattr(runner, "_git_commit", lambda: "test")
    return calls


def _cache_file(tmp_path) -> str:
    files = list((tmp_path / "cache" / "claims" / "ci").glob("C40-*.json"))
    assert len(files) == 1
    return str(files[0])


BAD_ENTRIES = [
    ("not-json", lambda e: "{not json", "unreadable"),
    ("a-list", lambda e: "[1, 2]", "holds a list"),
    ("missing-verdict", lambda e: json.dumps({k: v for k, v in e.items() if k != "verdict"}), "'verdict'"),
    ("measured-string", lambda e: json.dumps({**e, "measured": "3"}), "'measured'"),
    ("verdict-no-label", lambda e: json.dumps({**e, "verdict": {"status": "holds", "rule": "r"}}), "label"),
    ("seconds-string", lambda e: json.dumps({**e, "seconds": "fast"}), "seconds"),
    ("details-list", lambda e: json.dumps({**e, "details": []}), "details"),
    ("figure-absolute", lambda e: json.dumps({**e, "figure": "/tmp/evil.png"}), "figure='/tmp/evil.png'"),
    ("figure-dotdot", lambda e: json.dumps({**e, "figure": "../../evil.png"}), "figure='../../evil.png'"),
    ("figure-nested-dotdot", lambda e: json.dumps({**e, "figure": "figures/../../x.png"}), "figures/../../x.png"),
    ("figure-backslash", lambda e: json.dumps({**e, "figure": "..\\x.png"}), "x.png"),
    ("figure-drive", lambda e: json.dumps({**e, "figure": "C:/x.png"}), "C:/x.png"),
    ("figure-int", lambda e: json.dumps({**e, "figure": 5}), "figure=5"),
    ("not-utf8", lambda e: b"\xff\xfe", "unreadable"),
]


@pytest.mark.parametrize("make, needle", [pytest.param(m, n, id=i) for i, m, n in BAD_ENTRIES])
def test_bad_cache_entry_is_remeasured_with_a_warning(tmp_path, fake_c40, make, needle):
    out = tmp_path / "rep"
    runner.reproduce(profile="ci", only="C40", out_dir=str(out))
    path = _cache_file(tmp_path)
    entry = json.load(open(path))
    bad = make(entry)
    with open(path, "wb") as f:
        f.write(bad if isinstance(bad, bytes) else bad.encode())
    with pytest.warns(RuntimeWarning) as rec:
        res = runner.reproduce(profile="ci", only="C40", out_dir=str(out))
    msgs = [str(w.message) for w in rec]
    assert any(path in m and needle in m and "re-measuring C40" in m for m in msgs), msgs
    assert fake_c40 == [1, 1] and res["C40"]["computed"]["cached"] is False  # measured again, run went on
    assert not (tmp_path / "evil.png").exists() and not os.path.exists("/tmp/evil.png.h23")
    assert json.load(open(path))["verdict"]["status"] == "holds"  # the bad entry was replaced


from bad_inputs import OUTCOMES  # noqa: E402

OUTCOMES["clear error"] += len(BAD_ENTRIES)


def test_fresh_figure_outside_out_dir_is_refused(tmp_path, monkeypatch):
    from lessonlib import claims as cl
    monkeypatch.setenv("LESSONLIB_CACHE", str(tmp_path / "cache"))
    registry()
    monkeypatch.setitem(cl._REGISTRY, "C40", lambda ctx: Outcome({"x": 1.0}, rules.at_most(1.0, 2.0, "x"), "f",
                                                                figure="../escape.png"))
    res = runner.reproduce(profile="ci", only="C40", out_dir=str(tmp_path / "rep"))
    assert res["C40"]["verdict"]["status"] == "error" and "../escape.png" in res["C40"]["verdict"]["rule"]


OUTCOMES["clear error"] += 1


# ----------------------------------------------------------------------------- the CLI
CLI = [
    ("only-comma", ["--only", ","], "names no claim id"),
    ("only-spaces", ["--only", " , ,"], "names no claim id"),
    ("only-unknown", ["--only", "C12,C77"], "C77"),
    ("only-lowercase-unknown", ["--only", "c0"], "C0"),
    ("profile-unknown", ["--profile", "tiny", "--only", "C40"], "'tiny'"),
]


@pytest.mark.parametrize("args, needle", [pytest.param(a, n, id=i) for i, a, n in CLI])
def test_reproduce_refuses_bad_selection(tmp_path, capsys, monkeypatch, args, needle):
    monkeypatch.setenv("LESSONLIB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "rep"
    assert main(["reproduce", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "error" in err
    assert not out.exists()  # no report written


OUTCOMES["clear error"] += len(CLI)


def _safe_figure_accepts_plain_relative() -> None:
    assert runner._safe_figure("figures/c40.png") == "figures/c40.png"
    assert runner._safe_figure("figures//c40.png") is None


def _shipped_recipes_load() -> None:
    for name in ("cloud", "edge", "mobile", "realtime"):
        assert load_recipe(name).stages


def _empty_only_means_all() -> None:
    assert runner._parse_only("") is None and runner._parse_only(None) is None


ANSWERS = [
    ("figure-relative-ok", _safe_figure_accepts_plain_relative),
    ("shipped-recipes", _shipped_recipes_load),
    ("only-empty-means-all", _empty_only_means_all),
]


@pytest.mark.parametrize("check", answers(ANSWERS))
def test_pipeline_documented_answer(check):
    check()


def test_dependency_file_errors_name_the_path(tmp_path):
    """safetensors / JSON / torch.load failures come back as ValueError naming the file."""
    from lessonlib.arch.reload import load_pruned
    from lessonlib.claims.scales import load_report
    from lessonlib.models import tiny_causal_lm

    rep = tmp_path / "rep"
    rep.mkdir()
    (rep / "claims.json").write_text("{broken")
    with pytest.raises(ValueError, match="claims.json"):
        load_report(str(rep))
    saved = tmp_path / "m"
    tiny_causal_lm().save_pretrained(str(saved))
    st = next(saved.glob("*.safetensors"))
    st.write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match=st.name):
        load_pruned(str(saved))


OUTCOMES["clear error"] += 2
