"""AWQ: scale formula by hand, alpha = 0 is RTN, lower output error than RTN on outlier channels."""
import pytest
import torch

from lessonlib.quant.affine import QuantScheme, fake_quant
from lessonlib.quant.awq import awq_quantize, awq_scales, awq_search_clip


def outlier_inputs(n, n_in=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, n_in, generator=g)
    x[:, torch.arange(0, n_in, 23)] *= 25  # a few salient channels with large activations
    return x


def test_scales_hand_checked():
    s = awq_scales(torch.tensor([1.0, 4.0, 16.0]), 0.5)  # [1, 2, 4] / sqrt(4 * 1)
    torch.testing.assert_close(s, torch.tensor([0.5, 1.0, 2.0]))
    assert torch.equal(awq_scales(torch.tensor([3.0, 0.0]), 0.0), torch.ones(2))  # alpha 0: no scaling
    with pytest.raises(ValueError, match="alpha"):
        awq_scales(torch.ones(3), 1.5)


def test_alpha_zero_is_rtn():
    W = torch.randn(16, 128, generator=torch.Generator().manual_seed(0))
    r = awq_quantize(W, outlier_inputs(64), QuantScheme(4, 64), alpha=0.0, clip=False)
    assert torch.equal(r.weight, fake_quant(W, QuantScheme(4, 64)))
    assert torch.equal(r.scales, torch.ones(128))


@pytest.mark.parametrize("scheme", [QuantScheme(4, 64, False), QuantScheme(3, 32, True)])
def test_awq_beats_rtn_on_outlier_channels(scheme):
    W = torch.randn(64, 128, generator=torch.Generator().manual_seed(1)) * 0.05
    x_cal, x_test = outlier_inputs(512, seed=2), outlier_inputs(512, seed=3)
    r = awq_quantize(W, x_cal, scheme)
    assert r.errors["scaled"] <= r.errors["rtn"]  # alpha = 0 (RTN) is on the search grid
    assert r.errors["final"] < 0.7 * r.errors["rtn"]
    assert 0.0 < r.alpha < 1.0 and r.scales.shape == (128,) and r.clip.shape == (64, 128 // scheme.group_size)
    err = lambda w: float(((x_test @ (w - W).T) ** 2).mean())  # noqa: E731  held-out tokens
    assert err(r.weight) < 0.7 * err(fake_quant(W, scheme))
    if not scheme.sym:  # the scaled weight is on the grid: quantizing it again changes nothing
        torch.testing.assert_close(fake_quant(r.scaled_weight, scheme, clip_ratio=1.0), r.scaled_weight,
                                   atol=1e-6, rtol=0)
    torch.testing.assert_close(r.scaled_weight / r.scales, r.weight)


def test_clip_search_never_worse_per_group():
    W = torch.randn(8, 64, generator=torch.Generator().manual_seed(4))
    W[:, 5] *= 6  # a weight outlier per row makes clipping worthwhile
    x = torch.randn(256, 64, generator=torch.Generator().manual_seed(5))
    sch = QuantScheme(3, 32, False)
    ratios = awq_search_clip(W, x, sch)
    assert ((ratios > 0.5) & (ratios <= 1)).all() and (ratios < 1).any()

    def group_err(q):
        d = (q - W).reshape(8, 2, 32)
        return ((torch.einsum("ogk,ngk->ong", d, x.reshape(-1, 2, 32))) ** 2).mean(1)

    assert (group_err(fake_quant(W, sch, clip_ratio=ratios)) <= group_err(fake_quant(W, sch)) + 1e-7).all()


def test_stats_only_and_bad_inputs():
    W = torch.randn(8, 64)
    r = awq_quantize(W, act_mean_abs=torch.rand(64) + 0.1, alpha=0.5)
    assert r.clip is None and r.errors == {}
    with pytest.raises(ValueError, match="sample"):
        awq_quantize(W)
    with pytest.raises(ValueError, match="does not fit"):
        awq_quantize(W, torch.randn(10, 32))
    with pytest.raises(ValueError, match="does not divide"):
        awq_quantize(W, torch.randn(10, 64), QuantScheme(4, 48))


def test_model_driver_runs_on_tiny_llama():
    from lessonlib.models import tiny_causal_lm
    from lessonlib.quant.awq import awq_quantize_model

    model = tiny_causal_lm("llama")
    calib = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    res = awq_quantize_model(model, calib, QuantScheme(4, 32), device="cpu", max_tokens=64)
    assert len(res) == 14 and all(r.errors["final"] <= r.errors["rtn"] * 1.5 for r in res.values())
    assert torch.equal(model.model.layers[1].mlp.down_proj.weight, res["model.layers.1.mlp.down_proj"].weight)
