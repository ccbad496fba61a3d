"""The ledger's uncertainty and sanity helpers (lessonlib.claims.stats), the published numbers beside ours
(lessonlib.claims.published) and the report's sweep figures, on literal numbers."""
from __future__ import annotations

import math

import pytest
import torch

from lessonlib.claims import published, stats
from lessonlib.claims.report_figures import FIGURES, draw_sweep_figures


def test_bootstrap_ppl_point_values_follow_the_gptq_protocol():
    a, b = torch.tensor([3.0, 3.2, 2.8, 3.1]), torch.tensor([2.9, 3.0, 2.7, 3.0])
    v, lo, hi = stats.bootstrap_ppl(a)
    assert v == pytest.approx(math.exp(3.025)) and lo <= v <= hi
    assert stats.bootstrap_ppl(a, b, "ratio")[0] == pytest.approx(math.exp(3.025 - 2.9))
    assert stats.bootstrap_ppl(a, b, "rel")[0] == pytest.approx(math.exp(3.025 - 2.9) - 1)
    assert stats.bootstrap_ppl(a, b, "diff")[0] == pytest.approx(math.exp(3.025) - math.exp(2.9))


def test_paired_bootstrap_cancels_the_shared_window_variation():
    g = torch.Generator().manual_seed(0)
    base = 3 + torch.randn(64, generator=g, dtype=torch.float64)  # windows differ a lot ...
    v, lo, hi = stats.bootstrap_ppl(base + 0.1, base, "rel")
    assert v == pytest.approx(math.exp(0.1) - 1) and hi - lo < 1e-9  # ... but the shift is the same on each
    noisy = base + 0.1 + 0.05 * torch.randn(64, generator=g, dtype=torch.float64)
    _, lo2, hi2 = stats.bootstrap_ppl(noisy, base, "rel")
    _, lo3, hi3 = stats.bootstrap_ppl(base, None, "ppl")
    assert 0 < hi2 - lo2 < 0.1 and lo2 < math.exp(0.1) - 1 < hi2
    assert (hi3 - lo3) / math.exp(3) > 0.3  # unpaired: the window-to-window spread stays in the interval


def test_bootstrap_matches_a_slow_reference_percentile():
    a = torch.tensor([2.0, 2.5, 3.0, 4.0, 3.5], dtype=torch.float64)
    _, lo, hi = stats.bootstrap_ppl(a, n_boot=4000, seed=1)
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, 5, (4000, 5), generator=g)
    ref = sorted(math.exp(float(a[row].mean())) for row in idx)
    assert lo == pytest.approx(ref[int(0.025 * 3999)], rel=0.02) and hi == pytest.approx(ref[int(0.975 * 3999)], rel=0.02)


def test_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError, match="same windows"):
        stats.bootstrap_ppl([1.0, 2.0], [1.0], "ratio")
    with pytest.raises(ValueError, match="nlls_b"):
        stats.bootstrap_ppl([1.0, 2.0], None, "diff")
    with pytest.raises(ValueError, match="stat"):
        stats.bootstrap_ppl([1.0], None, "median")
    with pytest.raises(ValueError, match="finite"):
        stats.bootstrap_ppl([1.0, float("inf")])
    with pytest.raises(ValueError, match="at least one"):
        stats.bootstrap_ppl([])


def test_seed_spread_and_binomial_interval():
    assert stats.seed_spread([1.0, 3.0, 2.0]) == (2.0, 1.0, 3.0)
    with pytest.raises(ValueError):
        stats.seed_spread([1.0])
    d, lo, hi = stats.binomial_diff_interval(0.8, 0.7, 100)
    se = math.sqrt(0.8 * 0.2 / 100 + 0.7 * 0.3 / 100)
    assert d == pytest.approx(0.1) and lo == pytest.approx(0.1 - 1.96 * se) and hi == pytest.approx(0.1 + 1.96 * se)
    with pytest.raises(ValueError):
        stats.binomial_diff_interval(1.2, 0.5, 10)


def test_collapse_check():
    assert stats.classifier_collapsed(0.548, 0.548)  # C22's laptop runs: exactly the majority share
    assert stats.classifier_collapsed(0.57, 0.548) and not stats.classifier_collapsed(0.75, 0.548)
    with pytest.raises(ValueError):
        stats.classifier_collapsed(0.5, 0.0)


def test_interpolated_crossover_is_not_snapped_to_the_grid():
    pts = [(0.5, 0.5), (0.7, 0.8), (0.9, 2.0), (0.95, 3.0)]
    c = stats.interpolated_crossover(pts)
    want = 0.7 + 0.2 * (0 - math.log(0.8)) / (math.log(2.0) - math.log(0.8))
    assert c == pytest.approx(want) and 0.7 < c < 0.9
    assert stats.interpolated_crossover([(0.5, 0.5), (0.9, 0.9)]) is None
    assert stats.interpolated_crossover([(0.5, 1.5), (0.9, 3.0)]) == 0.5
    assert stats.interpolated_crossover([(0.5, 2.0), (0.7, 0.9), (0.9, 1.5)]) > 0.7  # the last crossing counts


def test_every_ledger_row_names_its_scale_and_resolves_its_published_value():
    table = published.ledger_table()
    assert sorted(table) == [f"C{i:02d}" for i in range(1, 42)]
    for cid, row in table.items():
        b = published.beside(cid, {})
        assert b["scale"] and b["note"], cid
        if row.get("source"):
            assert b["published"] and all(v is not None for v in b["published"]), cid
    c20 = published.beside("C20", {"rel_increase_gptq": 0.085})
    assert c20["published"][0] == pytest.approx(31.12 / 27.65 - 1) and c20["ours"] == 0.085
    assert "2210.17323" in c20["source"] and "OPT-125M" in c20["scale"]
    assert "ours (this run)" in published.format_beside(c20)
    with pytest.raises(KeyError):
        published.resolve(["gptq_opt", "nope"])
    with pytest.raises(ValueError):
        published.resolve({"sum": ["a", "b"]})
    assert published.resolve("missing_key", {}) is None


def test_report_draws_a_figure_for_each_sweep_row(tmp_path):
    claims = {
        "C28": {"verdict": {"label": "holds"}, "measured": {"rel_30": 0.05, "rel_30_ci": [0.02, 0.08], "rel_50": 0.4,
                                                            "rel_50_ci": [0.3, 0.5], "rel_70": 2.0,
                                                            "rel_70_ci": [1.5, 2.5]}},
        "C35": {"verdict": {"label": "x"}, "measured": {"acc_dense": 0.95, "acc_oneshot_no_ft_70": 0.9,
                                                        "acc_oneshot_no_ft_90": 0.5, "acc_oneshot_ft_70": 0.94,
                                                        "acc_oneshot_ft_90": 0.9, "acc_gradual_70": 0.94,
                                                        "acc_gradual_90": 0.91}},
        "C20": {"verdict": {"label": "x"}, "measured": {}, "figure": None},  # nothing measured: no figure
        "C03": {"verdict": {"label": "x"}, "measured": {"ppl_dense": 1.0}, "figure": "figures/own.png"},
    }
    drawn = draw_sweep_figures(claims, str(tmp_path))
    assert drawn == ["C28", "C35"] and (tmp_path / "figures" / "c28_sweep.png").stat().st_size > 1000
    assert claims["C03"]["figure"] == "figures/own.png" and not claims["C20"].get("figure")
    assert {"C02", "C03", "C10", "C15", "C20", "C23", "C28", "C35"} <= set(FIGURES)
