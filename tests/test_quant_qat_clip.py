"""QAT's clipping range: refitted grids never clip, a fixed MSE-best range does (issue 16, notebook 05)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from lessonlib.quant import QuantScheme
from lessonlib.quant.affine import fake_quant
from lessonlib.quant.qat import QATLinear, convert_qat, mse_clip_ratios, prepare_qat
from lessonlib.quant.qat_train import freeze_qat


def _layer(seed=0):
    torch.manual_seed(seed)
    lin = nn.Linear(64, 8, bias=True)
    with torch.no_grad():
        lin.weight.data = torch.randn(8, 64) * 0.1
        lin.weight.data[:, 5] = 1.5           # an outlier column: the MSE-best range clips it
    return nn.Sequential(lin)


def _grad_zero_fraction(model):
    x = torch.randn(16, 64, generator=torch.Generator().manual_seed(1))
    model(x).pow(2).sum().backward()
    q = model[0]
    return float((q.weight.grad == 0).float().mean()), q


def test_refit_never_clips_and_mse_does():
    sch = QuantScheme(3, 32, True)
    # a refitted restricted grid (2^b - 1 levels, +-max on the grid) always covers the weight: no clipping; the
    # full grid (all 2^b levels) clips only each group's positive maximum, by half a step
    refit = prepare_qat(_layer(), QuantScheme(3, 32, True, restricted=True), filter_fn=lambda m, n: True)
    frac_refit, _ = _grad_zero_fraction(refit)
    assert frac_refit == 0.0
    full = prepare_qat(_layer(), sch, filter_fn=lambda m, n: True)
    frac_full, _ = _grad_zero_fraction(full)
    assert 0 < frac_full < 0.1  # a few: the positive maxima (and ties with them)
    fixed = prepare_qat(_layer(), sch, filter_fn=lambda m, n: True, clip="mse")
    frac_fixed, q = _grad_zero_fraction(fixed)
    r = mse_clip_ratios(q.weight, sch)
    assert (r < 1).any() and frac_fixed > 0               # the clipped branch fires
    clipped = (q.weight.grad == 0)
    u = q.weight.detach() / q.fixed_scales.repeat_interleave(32, dim=1)   # (8, 64): position on the integer grid
    assert torch.equal(clipped, (u < sch.qmin - 1e-3) | (u > sch.qmax + 1e-3))  # zero grad exactly off the grid
    assert clipped[:, 5].any() and clipped.float().mean() < 0.1


def test_mse_clip_ratio_beats_no_clipping():
    w = _layer()[0].weight.detach()
    sch = QuantScheme(3, 32, True)
    r = mse_clip_ratios(w, sch)
    assert r.shape == (8, 2)
    err_r = (fake_quant(w, sch, r) - w).pow(2).sum()
    err_1 = (fake_quant(w, sch, 1.0) - w).pow(2).sum()
    assert err_r < err_1


def test_convert_keeps_the_fixed_grid():
    sch = QuantScheme(4, 32, False)
    m = prepare_qat(_layer(), sch, filter_fn=lambda m, n: True, clip="mse")
    with torch.no_grad():
        m[0].weight.add_(0.05 * torch.randn(8, 64))      # "training" moved the weights after the range froze
    x = torch.randn(4, 64)
    y_train = m(x).detach()
    convert_qat(m)
    assert torch.allclose(m(x), y_train, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("clip", ["refit", "mse"])
def test_freeze_keeps_the_grid_the_forward_used(clip):
    # freeze_qat must keep Q(W) on the layer's own grid: the fixed range of clip="mse", not one refitted to W
    sch = QuantScheme(3, 32, False)
    m = prepare_qat(_layer(), sch, filter_fn=lambda m, n: True, clip=clip)
    with torch.no_grad():
        m[0].weight.add_(0.05 * torch.randn(8, 64, generator=torch.Generator().manual_seed(2)))
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y_train = m(x)
        refitted = fake_quant(m[0].weight, sch)
    freeze_qat(m)
    assert type(m[0]) is nn.Linear
    with torch.no_grad():
        assert torch.allclose(m(x), y_train, rtol=1e-5, atol=1e-6)
        assert (clip == "refit") == torch.equal(m[0].weight, refitted)   # a fixed range differs from a refit


def test_bad_clip_mode():
    with pytest.raises(ValueError, match="clip='pact'"):
        prepare_qat(_layer(), QuantScheme(4, 32, True), filter_fn=lambda m, n: True, clip="pact")


@pytest.mark.parametrize("scheme", [QuantScheme(3, 32), QuantScheme(4, 32, True), QuantScheme(4, -1), QuantScheme(4, 0)])
def test_mse_clip_ratios_is_the_per_group_argmin_of_a_slow_search(scheme):
    """Every group's ratio has the smallest round-to-nearest error of CLIP_GRID (ties: the larger ratio), the
    error computed the slow way (fake_quant of the whole weight at that ratio, summed per group)."""
    from lessonlib.quant.qat import CLIP_GRID
    w = torch.distributions.StudentT(2.0).sample((6, 64))  # heavy tails: clipping pays in some groups, not others
    r = mse_clip_ratios(w, scheme)
    rows, G = (1 if scheme.group_size == 0 else 6), scheme.n_groups(64)
    assert r.shape == (rows, G)
    errs = torch.stack([(fake_quant(w, scheme, c) - w).double().pow(2).reshape(rows, G, -1).sum(-1)
                        for c in CLIP_GRID])  # (len(grid), rows, G), in the grid's order (1.0 first)
    best = errs.min(dim=0).values
    for i in range(rows):
        for g in range(G):
            ok = [c for c, e in zip(CLIP_GRID, errs[:, i, g]) if e <= best[i, g] * (1 + 1e-5) + 1e-12]
            assert any(torch.isclose(r[i, g], torch.tensor(c)) for c in ok)  # the argmin, up to float32 round-off between near-equal errors
    assert (r < 1).any() and (r == 1).any() or rows * G == 1
