"""SparseGPT (Algorithm 1) against a slow column-by-column reference, baselines, and OBS (claim C17 evidence)."""
import pytest
import torch

from lessonlib.models import block_linears, decoder_blocks, get_weight, tiny_causal_lm
from lessonlib.prune.magnitude import magnitude_mask
from lessonlib.prune.masks import apply_mask, is_nm_sparse, n_to_prune, nm_mask, prune_lowest_count
from lessonlib.prune.obs import mask_to_order, obs_prune
from lessonlib.hessian import damped_inverse
from lessonlib.prune.sparsegpt import sparsegpt_prune, sparsegpt_prune_model
from lessonlib.prune.wanda import wanda_mask


def correlated(out=12, inp=40, n=400, seed=0, dtype=torch.float64):
    """W (out, in), X (n, in) with correlated channels and a few large-scale ones, H = 2/n X^T X."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(inp, inp, generator=g) / inp ** 0.5 + torch.eye(inp)
    scale = torch.ones(inp)
    scale[torch.randperm(inp, generator=g)[:4]] = 8.0
    x = ((torch.randn(n, inp, generator=g) @ mix) * scale).to(dtype)  # (n, in)
    w = torch.randn(out, inp, generator=g).to(dtype)
    return w, x, 2.0 / n * x.t() @ x


def err(w, w2, h):
    """Layer-wise loss tr((W - W') H (W - W')^T) = 2/n ||(W - W') X^T||^2."""
    d = w - w2
    return float(torch.einsum("oi,ij,oj->", d, h, d))


def slow_sparsegpt(w, h, sparsity, keep_n=0, group_m=0, block_size=128, percdamp=0.01):
    """Column at a time, every update applied at once to all later columns; U from an explicit inverse."""
    w = w.clone()
    out, n = w.shape
    hd = h + percdamp * torch.diag(h).mean() * torch.eye(n, dtype=h.dtype)
    u = torch.linalg.cholesky(torch.linalg.inv(hd), upper=True)  # (in, in), U^T U = H^-1
    d = torch.diag(u)
    keep = torch.ones_like(w, dtype=torch.bool)
    for i in range(n):
        if not keep_n and i % block_size == 0:
            i2 = min(i + block_size, n)
            k = n_to_prune(out * i2, sparsity) - n_to_prune(out * i, sparsity)
            keep[:, i:i2] = prune_lowest_count(w[:, i:i2] ** 2 / d[i:i2] ** 2, k)
        if keep_n and i % group_m == 0:
            keep[:, i:i + group_m] = nm_mask(w[:, i:i + group_m] ** 2 / d[i:i + group_m] ** 2, keep_n, group_m)
        q = torch.where(keep[:, i], w[:, i], torch.zeros_like(w[:, i]))
        e = (w[:, i] - q) / d[i]
        w[:, i:] -= torch.outer(e, u[i, i:])
        w[:, i] = q
    return w, keep


@pytest.mark.parametrize("block_size,s,nm", [(16, 0.5, (0, 0)), (128, 0.3, (0, 0)), (7, 0.6, (0, 0)),
                                             (8, 0.5, (2, 4)), (16, 0.25, (3, 4))])
def test_blocked_matches_slow_reference(block_size, s, nm):
    w, _, h = correlated()
    fast, mf = sparsegpt_prune(w, h, s, *nm, block_size=block_size)
    slow, ms = slow_sparsegpt(w, h, s, *nm, block_size=block_size)
    assert torch.equal(mf, ms)
    torch.testing.assert_close(fast, slow, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("s", [0.1, 0.5, 0.77])
def test_exact_sparsity_and_mask_consistency(s):
    w, _, h = correlated(dtype=torch.float32)
    w2, m = sparsegpt_prune(w, h, s, block_size=16)  # 40 columns: blocks of 16, 16, 8
    assert int((w2 == 0).sum()) == n_to_prune(w.numel(), s) == int((~m).sum())
    assert w2.dtype == torch.float32 and torch.isfinite(w2).all() and torch.equal(w2 != 0, m)


def test_nm_validity_and_convention():
    w, _, h = correlated(out=6, inp=32)
    for n, m in ((2, 4), (3, 4), (1, 4), (4, 8)):
        w2, mask = sparsegpt_prune(w, h, (m - n) / m, n, m, block_size=16)
        assert is_nm_sparse(w2, n, m) and int((w2 == 0).sum()) == w.numel() * (m - n) // m
    with pytest.raises(ValueError, match="multiple of group_m"):
        sparsegpt_prune(w, h, 0.5, 2, 4, block_size=6)


def test_zero_sparsity_is_identity_and_bad_input():
    w, _, h = correlated()
    assert torch.equal(sparsegpt_prune(w, h, 0.0)[0], w)
    with pytest.raises(ValueError, match="hessian must have shape"):
        sparsegpt_prune(w, h[:-1, :-1], 0.5)
    with pytest.raises(ValueError, match="NaN"):
        sparsegpt_prune(w, h * float("nan"), 0.5)
    with pytest.raises(ValueError, match="either"):
        sparsegpt_prune(w, h, 0.5, mask=torch.ones_like(w, dtype=torch.bool))
    with pytest.raises(ValueError, match="sparsity=None"):
        sparsegpt_prune(w, h, None)
    with pytest.raises(ValueError, match="block_size"):
        sparsegpt_prune(w, h, 0.5, block_size=0)


def test_reconstruction_beats_magnitude_and_wanda():
    for seed in range(3):
        w, x, h = correlated(out=16, inp=64, n=512, seed=seed)
        for s, nm in ((0.5, (0, 0)), (0.5, (2, 4))):
            e_sgpt = err(w, sparsegpt_prune(w, h, s, *nm, block_size=32)[0], h)
            e_mag = err(w, apply_mask(w, magnitude_mask(w, s, *nm)), h)
            e_wanda = err(w, apply_mask(w, wanda_mask(w, (x ** 2).sum(0), s, *nm)), h)
            assert e_sgpt < 0.8 * e_wanda < 0.8 * e_mag, (seed, nm, e_sgpt, e_wanda, e_mag)


def test_dead_inputs_and_indefinite_hessian():
    w, _, h = correlated(out=4, inp=8)
    h[3, :] = 0.0
    h[:, 3] = 0.0
    w2, m = sparsegpt_prune(w, h, 0.5)
    assert (w2[:, 3] == 0).all() and torch.isfinite(w2).all()
    bad = torch.diag(torch.tensor([1.0, 1.0, 1.0, -0.5], dtype=torch.float64))  # mean diag 0.625
    with pytest.warns(RuntimeWarning, match="not positive definite"):
        w3, _ = sparsegpt_prune(torch.ones(2, 4, dtype=torch.float64), bad, 0.5)
    assert torch.isfinite(w3).all()
    with pytest.raises(ValueError, match="still not positive definite"):
        with pytest.warns(RuntimeWarning):
            damped_inverse(-torch.eye(3), 0.01, max_tries=2)


def test_joint_quantization():
    w, _, h = correlated(dtype=torch.float32)

    def grid(col):  # round to multiples of 0.25, and (on purpose) map 0 away from 0
        return torch.round(col / 0.25) * 0.25 + 0.01

    w2, m = sparsegpt_prune(w, h, 0.5, block_size=16, quant=grid)
    assert (w2[~m] == 0).all() and int((~m).sum()) == n_to_prune(w.numel(), 0.5)
    assert torch.allclose(w2[m] - 0.01, torch.round((w2[m] - 0.01) / 0.25) * 0.25, atol=1e-6)
    post = sparsegpt_prune(w, h, 0.5, block_size=16)[0]
    post_q = torch.where(post != 0, grid(post), post)  # quantize after pruning, no error feedback
    assert err(w, w2, h) < err(w, post_q, h)


# ----------------------------------------------------------------------------- OBS
def test_obs_literal_two_weights():
    h = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64)  # H^-1 = [[2, -1], [-1, 2]] / 3
    w = torch.tensor([[1.0, 3.0]], dtype=torch.float64)  # saliencies 1 / (2/3) = 1.5 and 9 / (2/3) = 13.5
    w2, m = obs_prune(w, h, 0.5, percdamp=0.0)
    assert m.tolist() == [[False, True]]
    torch.testing.assert_close(w2, torch.tensor([[0.0, 3.5]], dtype=torch.float64))  # delta = -1.5 H^-1[:, 0]


def test_obs_fixed_order_is_least_squares_optimum_and_order_free():
    w, _, h = correlated(out=5, inp=16)
    order = torch.stack([torch.randperm(16, generator=torch.Generator().manual_seed(r))[:7] for r in range(5)])
    w_obs, m = obs_prune(w, h, order=order)
    w_rev, _ = obs_prune(w, h, order=order.flip(1))
    torch.testing.assert_close(w_obs, w_rev, rtol=1e-9, atol=1e-9)
    hd = h + 0.01 * torch.diag(h).mean() * torch.eye(16, dtype=h.dtype)
    for r in range(5):  # closed form: w'_F = w_F + H_FF^-1 H_FS w_S, w'_S = 0
        S, Fr = ~m[r], m[r]
        best = w[r, Fr] + torch.linalg.solve(hd[Fr][:, Fr], hd[Fr][:, S] @ w[r, S])
        torch.testing.assert_close(w_obs[r, Fr], best, rtol=1e-9, atol=1e-9)
        assert (w_obs[r, S] == 0).all()
    with pytest.raises(ValueError, match="exactly one"):
        obs_prune(w, h, 0.5, order=order)
    with pytest.raises(ValueError, match="distinct"):
        obs_prune(w, h, order=torch.zeros(5, 2, dtype=torch.long))


def test_sparsegpt_equals_obs_when_pruned_columns_come_first():
    """SparseGPT freezes kept weights once passed; if all pruned ones come first, nothing differs from OBS."""
    w, _, h = correlated(out=6, inp=24)
    S = torch.randperm(24, generator=torch.Generator().manual_seed(3))[:10]  # pruned columns, same every row
    perm = torch.cat([S, torch.tensor([j for j in range(24) if j not in set(S.tolist())])])
    mask = torch.ones_like(w, dtype=torch.bool)
    mask[:, S] = False
    wp, _ = sparsegpt_prune(w[:, perm], h[perm][:, perm], None, mask=mask[:, perm], block_size=8)
    w_sgpt = torch.empty_like(w)
    w_sgpt[:, perm] = wp
    w_obs, m_obs = obs_prune(w, h, order=mask_to_order(mask))
    assert torch.equal(m_obs, mask)
    torch.testing.assert_close(w_sgpt, w_obs, rtol=1e-8, atol=1e-8)


def test_obs_error_at_most_sparsegpt():
    """Same mask: OBS is the optimum, never worse.  Own masks: greedy OBS is lower on average (C17)."""
    obs_errs, sgpt_errs = [], []
    for seed in range(4):
        w, _, h = correlated(out=8, inp=32, seed=seed)
        fixed = wanda_mask(w, torch.diag(h), 0.5)  # any mask with the same count in every row
        w_s, _ = sparsegpt_prune(w, h, None, mask=fixed)
        w_o, _ = obs_prune(w, h, order=mask_to_order(fixed))
        assert err(w, w_o, h) <= err(w, w_s, h) * (1 + 1e-9)
        obs_errs.append(err(w, obs_prune(w, h, 0.5)[0], h))
        sgpt_errs.append(err(w, sparsegpt_prune(w, h, 0.5, block_size=32)[0], h))
    assert sum(obs_errs) < sum(sgpt_errs)


def test_sparsegpt_prune_model_tiny():
    model = tiny_causal_lm(seed=0)
    calib = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(0))
    masks, _ = sparsegpt_prune_model(model, calib, 0.5, 2, 4, block_size=32, device="cpu")
    assert len(masks) == 14
    for i, block in enumerate(decoder_blocks(model)):
        for name, lin in block_linears(block).items():
            w = get_weight(lin)
            assert is_nm_sparse(w, 2, 4) and torch.equal(w != 0, masks[f"model.layers.{i}.{name}"]) and torch.isfinite(w).all()
