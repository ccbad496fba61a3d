import math

import pytest
import torch
import torch.nn.functional as F

from lessonlib.distill.losses import (FeatureDistiller, attention_distillation_loss, distillation_loss, kd_kl,
                                      softened_entropy)


def test_kd_kl_hand_computed():
    # teacher p = softmax([ln 3, 0]) = [0.75, 0.25]; student q = [0.5, 0.5]; T = 1
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[math.log(3.0), 0.0]])
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert kd_kl(s, t, T=1.0).item() == pytest.approx(expected, abs=1e-6)
    # T = 2: teacher logits / 2 -> p = softmax([ln sqrt 3, 0]) = [sqrt3/(1+sqrt3), 1/(1+sqrt3)], times T^2 = 4
    r3 = math.sqrt(3)
    p = [r3 / (1 + r3), 1 / (1 + r3)]
    expected2 = 4 * sum(pi * math.log(pi / 0.5) for pi in p)
    assert kd_kl(s, t, T=2.0).item() == pytest.approx(expected2, abs=1e-6)


def test_kd_kl_zero_for_equal_logits_and_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 5, 11, generator=g)
    assert kd_kl(z, z.clone(), T=3.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_kl(z + 1.0, z, T=3.0).item() == pytest.approx(0.0, abs=1e-6)  # softmax shift invariance
    assert kd_kl(torch.randn(3, 5, 11, generator=g), z, T=3.0).item() > 1e-3


def test_t_squared_makes_gradient_scale_t_independent():
    g = torch.Generator().manual_seed(1)
    s0 = torch.randn(64, 10, generator=g)
    t0 = torch.randn(64, 10, generator=g)
    norms, raw = [], []
    for T in (4.0, 8.0, 16.0, 32.0):
        s = s0.clone().requires_grad_(True)
        kd_kl(s, t0, T=T).backward()
        norms.append(s.grad.norm().item())
        raw.append(norms[-1] / T ** 2)  # the gradient of the plain KL, without the T^2 factor
    assert max(norms) / min(norms) < 1.15  # roughly constant in T
    assert raw[0] / raw[-1] > 50  # without T^2 it falls like 1/T^2 (factor 64 from T=4 to 32)
    # the high-T limit of Hinton et al. eq. (3): grad -> (z_s - z_t - mean) / (V N)
    d = s0 - t0
    limit = (d - d.mean(-1, keepdim=True)) / (10 * 64)
    s = s0.clone().requires_grad_(True)
    kd_kl(s, t0, T=1000.0).backward()
    assert torch.allclose(s.grad, limit, atol=1e-5, rtol=1e-2)


def test_alpha_one_is_plain_cross_entropy_and_mixture():
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(6, 7, generator=g), torch.randn(6, 7, generator=g)
    y = torch.randint(0, 7, (6,), generator=g)
    ce = F.cross_entropy(s, y)
    assert distillation_loss(s, t, y, T=3.0, alpha=1.0).item() == pytest.approx(ce.item(), abs=1e-6)
    assert distillation_loss(s, t, None, T=3.0, alpha=0.0).item() == pytest.approx(kd_kl(s, t, 3.0).item(), abs=1e-6)
    mix = distillation_loss(s, t, y, T=3.0, alpha=0.3).item()
    assert mix == pytest.approx(0.3 * ce.item() + 0.7 * kd_kl(s, t, 3.0).item(), abs=1e-6)


def test_lm_logits_with_mask_and_ignore_index():
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(2, 4, 9, generator=g), torch.randn(2, 4, 9, generator=g)
    y = torch.randint(0, 9, (2, 4), generator=g)
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    got = distillation_loss(s, t, y, T=2.0, alpha=0.5, mask=mask).item()
    rows_s, rows_t, rows_y = s[mask], t[mask], y[mask]  # (3, 9)
    ref = 0.5 * F.cross_entropy(rows_s, rows_y) + 0.5 * kd_kl(rows_s, rows_t, 2.0)
    assert got == pytest.approx(ref.item(), abs=1e-6)
    y2 = y.clone()
    y2[0, 0] = -100
    ce_only = distillation_loss(s, t, y2, alpha=1.0).item()
    keep = y2 != -100
    assert ce_only == pytest.approx(F.cross_entropy(s[keep], y2[keep]).item(), abs=1e-6)


@pytest.mark.parametrize("kwargs, match", [({"T": 0.0}, "T=0"), ({"T": -1.0}, "T=-1"),
                                           ({"alpha": 1.5}, "alpha=1.5"), ({"alpha": -0.1}, "alpha=-0.1")])
def test_bad_arguments(kwargs, match):
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=match):
        distillation_loss(z, z, torch.zeros(2, dtype=torch.long), **kwargs)


def test_vocab_mismatch_and_missing_labels():
    with pytest.raises(ValueError, match="vocabulary mismatch"):
        kd_kl(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="labels=None"):
        distillation_loss(torch.zeros(2, 3), torch.zeros(2, 3), None, alpha=0.5)
    with pytest.raises(ValueError, match="selects no position"):
        kd_kl(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), mask=torch.zeros(1, 2, dtype=torch.bool))


def test_softened_entropy_values_and_monotone_in_t():
    z = torch.tensor([[math.log(3.0), 0.0]])  # p = [0.75, 0.25]
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert softened_entropy(z, 1.0) == pytest.approx(h, abs=1e-6)
    zz = torch.randn(4, 50, generator=torch.Generator().manual_seed(4)) * 3
    hs = [softened_entropy(zz, T) for T in (0.5, 1, 2, 4, 100)]
    assert all(a < b for a, b in zip(hs, hs[1:]))
    assert hs[-1] == pytest.approx(math.log(50), abs=1e-3)


def test_feature_distiller_projection_and_kinds():
    h_s, h_t = torch.randn(2, 5, 8), torch.randn(2, 5, 12)
    fd = FeatureDistiller(8, 12, kind="mse")
    assert isinstance(fd.proj, torch.nn.Linear) and fd.proj.weight.shape == (12, 8)
    loss = fd(h_s, h_t)
    assert loss.item() == pytest.approx(F.mse_loss(fd.proj(h_s), h_t).item(), abs=1e-6)
    loss.backward()
    assert fd.proj.weight.grad is not None and fd.proj.weight.grad.abs().sum() > 0
    same = FeatureDistiller(12, 12, kind="cosine")
    assert same(h_t, h_t).item() == pytest.approx(0.0, abs=1e-6)
    assert same(h_t, 3 * h_t).item() == pytest.approx(0.0, abs=1e-6)  # cosine ignores scale
    assert same(h_t, -h_t).item() == pytest.approx(2.0, abs=1e-6)
    with pytest.raises(ValueError, match="kind"):
        FeatureDistiller(8, 12, kind="l1")
    with pytest.raises(ValueError, match="widths"):
        fd(h_t, h_t)


def test_hidden_state_loss_literals_mask_and_errors():
    from lessonlib.distill.losses import hidden_state_loss
    T = torch.tensor
    # W = [[1, 0, 0], [0, 0, 2]] maps [1, 5, 1] to [1, 2]; teacher [1, 4]: squares 0, 4 over 2 elements -> 2
    W = T([[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    assert hidden_state_loss(T([[[1.0, 5.0, 1.0]]]), T([[[1.0, 4.0]]]), W).item() == pytest.approx(2.0)
    # cosine: orthogonal (1), parallel (0), opposite but masked out -> mean over 2 kept positions = 0.5
    hs, ht = T([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]]), T([[[0.0, 1.0], [0.0, 3.0], [-1.0, -1.0]]])
    assert hidden_state_loss(hs, ht, kind="cosine", mask=T([[1, 1, 0]])).item() == pytest.approx(0.5)
    assert hidden_state_loss(hs, ht, kind="cosine").item() == pytest.approx(1.0)  # (1 + 0 + 2) / 3
    # agrees with FeatureDistiller, which only adds the learned projection module around it
    fd = FeatureDistiller(8, 12, kind="cosine", seed=3)
    a, b = torch.randn(2, 4, 8), torch.randn(2, 4, 12)
    m = T([[1, 1, 0, 0], [1, 0, 1, 1]])
    assert fd(a, b, m).item() == pytest.approx(hidden_state_loss(a, b, fd.proj.weight, "cosine", m).item())
    with pytest.raises(ValueError, match="proj_weight"):
        hidden_state_loss(a, b)  # widths differ and no projection
    with pytest.raises(ValueError, match="mask"):
        hidden_state_loss(b, b, mask=torch.zeros(2, 4))  # selects nothing
    with pytest.raises(ValueError, match="kind"):
        hidden_state_loss(b, b, kind="l1")


def test_attention_distillation_loss():
    # one row: teacher [1, 0] (causal row), student [0.5, 0.5] -> KL = 1 * ln(1 / 0.5) = ln 2
    pt = torch.tensor([[[[1.0, 0.0], [0.5, 0.5]]]])
    ps = torch.tensor([[[[0.5, 0.5], [0.5, 0.5]]]])
    assert attention_distillation_loss(ps, pt).item() == pytest.approx(math.log(2) / 2, abs=1e-6)
    assert attention_distillation_loss(pt, pt).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="average_heads"):
        attention_distillation_loss(torch.rand(1, 2, 3, 3), torch.rand(1, 4, 3, 3))
    a = torch.softmax(torch.randn(1, 2, 3, 3), -1)
    b = torch.softmax(torch.randn(1, 4, 3, 3), -1)
    assert attention_distillation_loss(a, b, average_heads=True).item() >= 0
