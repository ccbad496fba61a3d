"""Low rank: SVD split (plain, whitened, ASVD), rank selection, accounting, model driver, LoRA."""
import copy

import pytest
import torch
from torch import nn

from lessonlib.lowrank import (LoRALinear, apply_lora, asvd_split, breakeven_rank, factorize_linear,
                               lora_parameters, lowrank_model, lowrank_params, merge_all, rank_from_energy,
                               rank_from_knee, svd_split, whitened_svd_split)
from lessonlib.lowrank.svd import cholesky_damped
from lessonlib.models import tiny_causal_lm


def _g(seed):
    return torch.Generator().manual_seed(seed)


def test_svd_split_literal():
    w = torch.tensor([[3.0, 0.0], [0.0, 2.0]])
    A, B = svd_split(w, 1)
    assert A.shape == (1, 2) and B.shape == (2, 1)
    assert torch.allclose(B @ A, torch.tensor([[3.0, 0.0], [0.0, 0.0]]), atol=1e-6)
    assert torch.allclose(A.abs(), torch.tensor([[3 ** 0.5, 0.0]]), atol=1e-6)  # sqrt(S) on each side


def test_svd_split_eckart_young_and_full_rank():
    w = torch.randn(20, 12, generator=_g(0))
    s = torch.linalg.svdvals(w.double())
    for r in (1, 5, 11):
        A, B = svd_split(w, r)
        err = torch.linalg.norm((w - B @ A).double())
        assert err == pytest.approx(float(s[r:].square().sum().sqrt()), rel=1e-5)
    A, B = svd_split(w, 12)
    assert torch.allclose(B @ A, w, atol=1e-5)


@pytest.mark.parametrize("rank", [0, -1, 13, 2.0, True])
def test_svd_split_bad_rank(rank):
    with pytest.raises(ValueError, match="rank"):
        svd_split(torch.randn(20, 12), rank)


def test_factorize_linear_matches_factors_and_counts():
    lin = nn.Linear(16, 10)
    seq = factorize_linear(lin, 4)
    A, B = svd_split(lin.weight.detach(), 4)
    x = torch.randn(5, 16, generator=_g(1))
    assert torch.allclose(seq(x), x @ A.T @ B.T + lin.bias, atol=1e-5)
    assert sum(p.numel() for p in seq.parameters()) == lowrank_params(10, 16, 4, bias=True) == 4 * 26 + 10


def test_rank_from_energy_literal():
    s = torch.tensor([4.0, 3.0])  # energies 16/25 = 0.64, then 1.0
    assert rank_from_energy(s, 0.6) == 1 and rank_from_energy(s, 0.64) == 1
    assert rank_from_energy(s, 0.7) == 2 and rank_from_energy(s, 1.0) == 2
    with pytest.raises(ValueError, match="energy"):
        rank_from_energy(s, 0.0)


def test_rank_from_knee_literal_and_planted_rank():
    assert rank_from_knee(torch.tensor([10, 9, 8, 1, 0.9, 0.8, 0.7])) == 3
    assert rank_from_knee(torch.ones(5)) == 5  # flat: no knee
    g = _g(2)
    w = torch.randn(64, 5, generator=g) @ torch.randn(5, 48, generator=g) + 0.01 * torch.randn(64, 48, generator=g)
    assert rank_from_knee(torch.linalg.svdvals(w)) == 5


def test_breakeven_rank():
    assert breakeven_rank(64, 64) == 31
    assert lowrank_params(64, 64, 31) < 64 * 64 <= lowrank_params(64, 64, 32)


def test_whitened_split_beats_plain_on_the_data():
    g = _g(3)
    w = torch.randn(24, 16, generator=g)
    x = torch.randn(400, 16, generator=g) * torch.logspace(-2, 1, 16)  # anisotropic inputs (N, in)
    xtx = x.T @ x
    for r in (2, 6):
        A_p, B_p = svd_split(w, r)
        A_w, B_w = whitened_svd_split(w, xtx, r)
        err_plain = torch.linalg.norm(x @ (w - B_p @ A_p).T)
        err_white = torch.linalg.norm(x @ (w - B_w @ A_w).T)
        assert err_white < err_plain
    A_i, B_i = whitened_svd_split(w, torch.eye(16), 4)  # identity covariance = plain SVD
    A_p, B_p = svd_split(w, 4)
    assert torch.allclose(B_i @ A_i, B_p @ A_p, atol=1e-4)


def test_whitened_rejects_singular_nan_and_damps_rank_deficient():
    w = torch.randn(8, 6)
    with pytest.raises(ValueError, match="NaN"):
        whitened_svd_split(w, torch.full((6, 6), float("nan")), 2)
    x = torch.randn(3, 6, generator=_g(4))  # rank-3 X^T X: damping makes it positive definite
    A, B = whitened_svd_split(w, x.T @ x, 2)
    assert torch.isfinite(B @ A).all()


def test_asvd_uniform_scale_is_plain():
    w = torch.randn(10, 7, generator=_g(5))
    A, B = asvd_split(w, torch.ones(7), 3)
    A_p, B_p = svd_split(w, 3)
    assert torch.allclose(B @ A, B_p @ A_p, atol=1e-5)


def test_lowrank_model_driver():
    model = tiny_causal_lm()
    x = torch.randint(0, 256, (2, 16), generator=_g(6))
    n0 = sum(p.numel() for p in model.parameters())
    full = copy.deepcopy(model)
    rep = lowrank_model(full, energy=1.0)  # full rank never saves parameters: every layer is skipped
    assert all(v["rank"] == -1 for v in rep.values()) and len(rep) == 14
    rep = lowrank_model(model, energy=0.5)
    saved = sum(v["params_before"] - v["params_after"] for v in rep.values())
    assert saved > 0 and sum(p.numel() for p in model.parameters()) == n0 - saved
    assert model(x).logits.shape == (2, 16, 256)
    knee = lowrank_model(copy.deepcopy(full), rank_fn=lambda s: 3, calib=x)  # whitened, through calib
    assert {v["rank"] for v in knee.values()} == {3}


# ----------------------------------------------------------------------------- LoRA
def test_lora_starts_at_base_and_adds_scaled_update():
    base = nn.Linear(12, 6)
    lora = LoRALinear(base, r=4, alpha=8, seed=0)
    x = torch.randn(3, 12, generator=_g(7))
    assert torch.equal(lora(x), base(x))  # B = 0
    with torch.no_grad():
        lora.lora_B.copy_(torch.randn(6, 4, generator=_g(8)))
    expect = base(x) + 2.0 * (x @ lora.lora_A.T @ lora.lora_B.T)  # alpha / r = 2
    assert torch.allclose(lora(x), expect, atol=1e-6)


def test_lora_merge_unmerge():
    base = nn.Linear(12, 6)
    w0 = base.weight.detach().clone()
    lora = LoRALinear(base, r=2, alpha=4)
    with torch.no_grad():
        lora.lora_B.normal_()
    x = torch.randn(3, 12)
    y = lora(x)
    lora.merge()
    assert torch.allclose(lora(x), y, atol=1e-5) and not torch.allclose(base.weight, w0)
    with pytest.raises(ValueError, match="already merged"):
        lora.merge()
    lora.unmerge()
    assert torch.allclose(base.weight, w0, atol=1e-6) and torch.allclose(lora(x), y, atol=1e-5)
    with pytest.raises(ValueError, match="not merged"):
        lora.unmerge()


def test_lora_trains_only_adapters_on_frozen_quantized_base():
    from lessonlib.quant.affine import QuantScheme
    from lessonlib.quant.qlinear import QuantLinear

    q = QuantLinear.from_linear(nn.Linear(16, 8), QuantScheme(bits=4, group_size=-1, sym=True))
    lora = LoRALinear(q, r=2)
    x = torch.randn(5, 16, generator=_g(9))
    assert torch.equal(lora(x), q(x))
    lora(x).sum().backward()
    assert lora.lora_B.grad is not None and lora.lora_B.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in q.parameters())
    with pytest.raises(TypeError, match="cannot merge"):
        lora.merge()


def test_apply_lora_to_model():
    model = tiny_causal_lm()
    names = apply_lora(model, targets=("q_proj", "v_proj"), r=4)
    assert names == ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
                     "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"]
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == sum(p.numel() for p in lora_parameters(model)) == 4 * 4 * (64 + 64)
    assert merge_all(model) == 4
    with pytest.raises(ValueError, match="no module name"):
        apply_lora(model, targets=("nope",))
    with pytest.raises(ValueError, match="r="):
        LoRALinear(nn.Linear(4, 4), r=0)


def test_low_rank_whitening_uses_the_one_damped_cholesky_of_hessian():
    from lessonlib.hessian import damped_cholesky
    torch.manual_seed(0)
    X = torch.randn(3, 5, dtype=torch.float64)
    xtx = X.T @ X  # (5, 5), rank 3: singular
    with pytest.warns(RuntimeWarning, match=r"X\^T X is not positive definite with percdamp=0"):
        L = cholesky_damped(xtx, damp=0.0)  # the old copy kept lambda = 0 * 10^t and never factorised
    with pytest.warns(RuntimeWarning):
        L2, lam = damped_cholesky(xtx, 0.0, scale_floor=1e-12, what="X^T X")
    assert torch.equal(L, L2) and lam > 0
    assert torch.allclose(L @ L.T, xtx + lam * torch.eye(5, dtype=torch.float64), atol=1e-10)
    # full rank: no damping beyond percdamp * mean(diag), exactly the factor of H + lambda I
    H = xtx + torch.eye(5, dtype=torch.float64)
    L3, lam3 = damped_cholesky(H, 0.01)
    assert lam3 == pytest.approx(0.01 * float(H.diagonal().mean()))
    assert torch.allclose(L3 @ L3.T, H + lam3 * torch.eye(5, dtype=torch.float64), atol=1e-12)
    with pytest.raises(ValueError, match="still not positive definite"):
        with pytest.warns(RuntimeWarning):
            damped_cholesky(-torch.eye(3, dtype=torch.float64), 0.01, max_tries=2)
