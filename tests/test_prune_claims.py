"""Fast tests of the pruning ledger's helpers (lessonlib.claims.exp_prune) on tiny models and literal numbers."""
from __future__ import annotations

import pytest
import torch

from lessonlib.claims import Context, rules
from lessonlib.claims import exp_prune as ep
from lessonlib.models import get_weight, tiny_causal_lm
from lessonlib.calib import block_stats
from lessonlib.compress import prune_with
from lessonlib.prune.masks import is_nm_sparse, model_linears, n_to_prune, pattern_name
from lessonlib.prune.sparse_kernels import MatmulTiming


def _calib(n: int = 4, seqlen: int = 16) -> torch.Tensor:
    return torch.randint(0, 256, (n, seqlen), generator=torch.Generator().manual_seed(0))


def test_pattern_name():
    assert pattern_name(0.5) == "50%" and pattern_name(0.1) == "10%" and pattern_name(0.5, 2, 4) == "2:4"


@pytest.mark.parametrize("method", ep.METHODS)
@pytest.mark.parametrize("pattern", [(0.5, 0, 0), (0.7, 0, 0), (0.5, 2, 4)])
def test_prune_with_reaches_the_exact_sparsity(method, pattern):
    model = tiny_causal_lm(seed=1)
    secs = prune_with(model, method, *pattern[:1], calib=_calib(), keep_n=pattern[1], group_m=pattern[2])
    assert secs > 0
    for name, lin in model_linears(model).items():
        w = get_weight(lin)
        if pattern[1]:
            assert is_nm_sparse(w, 2, 4), name
        elif method == "magnitude":  # one comparison group per matrix
            assert int((w == 0).sum()) == n_to_prune(w.numel(), pattern[0]), name
        elif method == "wanda":  # one per row
            assert ((w == 0).sum(1) == n_to_prune(w.shape[1], pattern[0])).all(), name
        else:  # SparseGPT: per-block counts that add up to the matrix total
            assert int((w == 0).sum()) == n_to_prune(w.numel(), pattern[0]), name


def test_prune_with_methods_differ_and_calibrated_ones_use_the_data():
    ws = {}
    for method in ep.METHODS:
        model = tiny_causal_lm(seed=2)
        prune_with(model, method, 0.5, calib=_calib())
        ws[method] = get_weight(model_linears(model)["model.layers.0.mlp.down_proj"]).clone()
    assert not torch.equal(ws["magnitude"] != 0, ws["wanda"] != 0)  # activation norms change the mask
    kept = ws["magnitude"] != 0
    assert not torch.allclose(ws["sparsegpt"][kept], ws["magnitude"][kept])  # SparseGPT updates the survivors
    other = tiny_causal_lm(seed=2)
    prune_with(other, "wanda", 0.5, calib=_calib() + 1)  # different calibration tokens
    assert not torch.equal(get_weight(model_linears(other)["model.layers.0.mlp.down_proj"]) != 0, ws["wanda"] != 0)


def test_prune_with_rejects_bad_input():
    with pytest.raises(ValueError, match="method='obs'"):
        prune_with(tiny_causal_lm(), "obs", 0.5)
    with pytest.raises(ValueError, match="calibration"):
        prune_with(tiny_causal_lm(), "wanda", 0.5)


def _row(shape, s, dense_ms, csr_ms) -> MatmulTiming:
    return MatmulTiming(shape, s, 8, dense_ms, csr_ms, 1, 1, 1.0, 1.0)


def test_crossover_or_one():
    rows = [_row((4, 4), s, 1.0, c) for s, c in ((0.0, 3.0), (0.5, 1.5), (0.7, 0.9), (0.9, 0.5))]
    rows += [_row((8, 4), s, 1.0, 2.0) for s in (0.0, 0.5, 0.9)]  # CSR never wins
    rows += [_row((2, 2), s, 1.0, c) for s, c in ((0.0, 2.0), (0.5, 0.8), (0.7, 1.2), (0.9, 0.5))]  # wins, loses, wins
    assert ep.crossover_or_one(rows) == {"4x4": 0.7, "8x4": 1.0, "2x2": 0.9}


def test_cost_class_boundaries():
    assert [ep.cost_class(r) for r in (0.0, 0.0999, 0.10, 0.5, 0.999, 1.0, 7.0)] == \
        ["little", "little", "some", "some", "some", "a lot", "a lot"]


def test_verdict_c03_applies_its_three_rules():
    ok = {"magnitude_rel_10": 0.02, "magnitude_rel_30": 0.09, "magnitude_over_best_70": 3.0}
    assert ep.verdict_c03(ok).status == rules.HOLDS
    for key, bad in (("magnitude_rel_10", 0.2), ("magnitude_rel_30", 0.11), ("magnitude_over_best_70", 1.9)):
        v = ep.verdict_c03({**ok, key: bad})
        assert v.status == rules.FAILS and "70%" in v.rule


def test_verdict_c28_needs_little_some_and_a_lot():
    assert ep.verdict_c28({"rel_30": 0.05, "rel_50": 0.3, "rel_70": 1.5}).status == rules.HOLDS
    assert ep.verdict_c28({"rel_30": 0.15, "rel_50": 0.3, "rel_70": 1.5}).status == rules.FAILS
    assert ep.verdict_c28({"rel_30": 0.05, "rel_50": 0.05, "rel_70": 1.5}).status == rules.FAILS  # 50% too cheap
    assert ep.verdict_c28({"rel_30": 0.05, "rel_50": 0.3, "rel_70": 0.8}).status == rules.FAILS


def _blobs(n: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(10, 784, generator=torch.Generator().manual_seed(99)) * 0.5
    y = torch.arange(n) % 10
    return (centers[y] + 0.3 * torch.randn(n, 784, generator=gen)).clamp(0, 1), y


def test_mlp_prune_runs_on_separable_data():
    xtr, ytr = _blobs(120, 0)
    xte, yte = _blobs(60, 1)
    r = ep.mlp_prune_runs((0.5, 0.9), dense_iters=30, ft_iters=4, n_steps=2, data=(xtr, ytr, xte, yte))
    assert r["sparsity"] == {0.5: 0.5, 0.9: 0.9}
    assert r["dense"] >= 0.9  # ten well-separated blobs
    for key in ("oneshot", "oneshot_ft", "gradual"):
        assert set(r[key]) == {0.5, 0.9} and all(0.0 <= a <= 1.0 for a in r[key].values())
    again = ep.mlp_prune_runs((0.9,), dense_iters=30, ft_iters=4, n_steps=2, data=(xtr, ytr, xte, yte))
    assert again["gradual"][0.9] == r["gradual"][0.9] and again["oneshot_ft"][0.9] == r["oneshot_ft"][0.9]


def test_ci_points_cover_every_claim():
    pts = ep._points(Context("ci"))
    names = {m: {pattern_name(*p) for p in v} for m, v in pts.items()}
    assert {"10%", "30%", "70%"} <= names["magnitude"]
    assert "50%" in names["wanda"] and "50%" in names["sparsegpt"]  # C04, C05
    assert all(any(p in names[m] for m in ("wanda", "sparsegpt")) for p in ("30%", "50%", "70%"))  # C03, C28
    full = {m: {pattern_name(*p) for p in v} for m, v in ep._points(Context("laptop")).items()}
    assert "2:4" in full["wanda"] and "2:4" in full["sparsegpt"] and "90%" in full["wanda"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU C41 measures instead")
def test_c41_is_not_measurable_on_cpu():
    o = ep.c41(Context("ci"))
    assert o.verdict.status == rules.NOT_MEASURABLE and "CUDA" in o.verdict.rule and o.measured == {"cuda": False}


def test_block_stats_match_the_sequential_engine_on_the_dense_model():
    from lessonlib.calib import HessianStats, InputNormStats, run_sequential

    model, calib = tiny_causal_lm(seed=3), _calib()
    seen = {}

    def record(i, block, stats):
        seen[i] = {n: s.hessian().clone() for n, s in stats.items()}

    run_sequential(model, calib, record, stats=HessianStats, device="cpu")  # changes nothing
    for b in (0, 1):
        got = block_stats(model, calib, b, HessianStats)
        assert set(got) == set(seen[b])
        for n, s in got.items():
            torch.testing.assert_close(s.hessian(), seen[b][n])
    norms = block_stats(model, calib, 0, InputNormStats)["mlp.down_proj"].sq_norms()
    assert norms.shape == (128,) and (norms > 0).all()
    with pytest.raises(ValueError, match="block=2"):
        block_stats(model, calib, 2)


def test_verdict_c22_needs_both_sparsities_within_two_percent():
    ok = {"movement_rel_loss_50": 0.0, "movement_rel_loss_70": 0.02}
    assert ep.verdict_c22(ok).status == rules.HOLDS
    assert ep.verdict_c22({**ok, "movement_rel_loss_50": 0.021}).status == rules.FAILS
    assert ep.verdict_c22({**ok, "movement_rel_loss_70": 0.05}).status == rules.FAILS
    assert ep.verdict_c22({**ok, "movement_rel_loss_70": -0.01}).status == rules.HOLDS  # pruned beat dense


def test_c05_times_the_pruning_step_and_reports_end_to_end_beside_it(monkeypatch):
    nll = [3.0, 3.1, 2.9, 3.05]
    runs = {"wanda": {"ppl": 20.0, "seconds": 9.0, "cpu_seconds": 2.0, "nlls": [x + 0.02 for x in nll]},
            "sparsegpt": {"ppl": 21.0, "seconds": 10.0, "cpu_seconds": 4.0, "nlls": nll}}
    metric = {"wanda": 0.1, "sparsegpt": 1.0}
    monkeypatch.setattr(ep, "_run", lambda ctx, method, *pt: runs[method])
    monkeypatch.setattr(ep, "_metric", lambda ctx: metric)
    o = ep.c05(Context("ci"))
    assert o.measured["metric_time_ratio"] == pytest.approx(10.0)  # the pruning step alone
    assert o.measured["end_to_end_time_ratio"] == pytest.approx(2.0)  # reported beside it, not judged
    parts = dict(o.verdict.parts)
    assert parts["quality"].status == rules.HOLDS  # Wanda 2% above on every window: interval [2%, 2%]
    assert parts["speed"].status == rules.HOLDS and o.verdict.status == rules.HOLDS
    metric["sparsegpt"] = 0.3
    assert dict(ep.c05(Context("ci")).verdict.parts)["speed"].status == rules.FAILS


def test_metric_seconds_on_a_tiny_model():
    model = tiny_causal_lm(layers=2, seed=0)
    t = ep.metric_seconds(model, _calib(), block=0, repeats=1)
    assert set(t) == {"wanda", "sparsegpt"} and t["wanda"] > 0 and t["sparsegpt"] > t["wanda"]
