"""Wanda: |W| * ||X_j|| scores, per-output comparison group, model driver (lessonlib.prune.wanda)."""
import pytest
import torch

from lessonlib.models import block_linears, decoder_blocks, get_weight, tiny_causal_lm
from lessonlib.prune.magnitude import magnitude_row_mask
from lessonlib.prune.masks import apply_mask, is_nm_sparse, n_to_prune
from lessonlib.prune.wanda import wanda_mask, wanda_prune_model

T, F = True, False


def test_wanda_literal_differs_from_magnitude():
    w = torch.tensor([[1.0, -2.0, 3.0, 0.5], [2.0, 2.0, -1.0, 1.0]])
    sq = torch.tensor([16.0, 1.0, 0.25, 4.0])  # ||X_j|| = 4, 1, 0.5, 2
    # scores row 0: 4, 2, 1.5, 1 ; row 1: 8, 2, 0.5, 2 (tie 2 vs 2: lower column pruned first)
    assert wanda_mask(w, sq, 0.5).tolist() == [[T, T, F, F], [T, F, F, T]]
    assert magnitude_row_mask(w, 0.5).tolist() == [[F, T, T, F], [T, T, F, F]]
    # N:M (1 pruned of every 2): row 0 groups (4, 2), (1.5, 1); row 1 (8, 2), (0.5, 2)
    assert wanda_mask(w, sq, 0.5, 1, 2).tolist() == [[T, F, T, F], [T, F, F, T]]


def test_wanda_properties():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(9, 32, generator=g)
    sq = torch.rand(32, generator=g) * 10
    for s in (0.2, 0.5, 0.8):
        m = wanda_mask(w, sq, s)
        assert ((~m).sum(1) == n_to_prune(32, s)).all()  # exact, in every row
        assert torch.equal(wanda_mask(w, sq * 1000.0, s), m)  # sum or mean of squares: same mask
    assert torch.equal(wanda_mask(w, torch.ones(32), 0.5), magnitude_row_mask(w, 0.5))
    m24 = wanda_mask(w, sq, 0.5, 2, 4)
    assert is_nm_sparse(apply_mask(w, m24), 2, 4)
    # invariance: scale input channel j by c and W[:, j] by 1/c -> same products, same mask (powers of 2: exact)
    c = 2.0 ** torch.randint(-3, 4, (32,), generator=g).float()
    assert torch.equal(wanda_mask(w / c, sq * c ** 2, 0.5), wanda_mask(w, sq, 0.5))


def test_wanda_bad_input():
    w = torch.randn(3, 8)
    with pytest.raises(ValueError, match="shape"):
        wanda_mask(w, torch.ones(7), 0.5)
    with pytest.raises(ValueError, match=">= 0"):
        wanda_mask(w, -torch.ones(8), 0.5)
    with pytest.raises(ValueError, match="sparsity"):
        wanda_mask(w, torch.ones(8), 1.0)
    with pytest.raises(ValueError, match="conflicts"):
        wanda_mask(w, torch.ones(8), 0.3, 2, 4)


def test_wanda_prune_model_matches_layer_function_on_block0():
    model = tiny_causal_lm(seed=0)
    calib = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(0))
    # statistics of block 0's linear inputs in the dense model (block 0 sees no pruned block before it)
    sq, hooks = {}, []
    for name, lin in block_linears(decoder_blocks(model)[0]).items():
        def hook(_m, inp, _o, name=name):
            x = inp[0].reshape(-1, inp[0].shape[-1])
            sq[name] = sq.get(name, 0) + x.pow(2).sum(0)
        hooks.append(lin.register_forward_hook(hook))
    with torch.no_grad():
        for i in range(4):
            model(calib[i:i + 1])
    for h in hooks:
        h.remove()
    dense = {n: get_weight(m).clone() for n, m in block_linears(decoder_blocks(model)[0]).items()}
    masks, report = wanda_prune_model(model, calib, 0.5, device="cpu")
    assert len(masks) == 14 and len(report.block_seconds) == 2
    for name, w in dense.items():
        assert torch.equal(masks[f"model.layers.0.{name}"], wanda_mask(w, sq[name], 0.5)), name
    for i, block in enumerate(decoder_blocks(model)):
        for name, lin in block_linears(block).items():
            w = get_weight(lin)
            assert ((w == 0).sum(1) == n_to_prune(w.shape[1], 0.5)).all()
            assert torch.equal(w != 0, masks[f"model.layers.{i}.{name}"])
