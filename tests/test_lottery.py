"""Lottery tickets: layer-wise magnitude pruning of remaining weights, IMP round, masked training, the table."""
import pytest
import torch

from lessonlib.lottery import (LeNet300100, imp_round, layer_prune_mask, lottery_experiment, mask_sparsity,
                               mnist_splits, prunable_weights, train_masked)


def test_layer_prune_mask_literal():
    w = torch.tensor([[1.0, -5.0, 3.0, 0.5]])
    m1 = layer_prune_mask(w, torch.ones(1, 4, dtype=torch.bool), 0.5)
    assert m1.tolist() == [[False, True, True, False]]
    m2 = layer_prune_mask(w, m1, 0.5)  # half of the 2 remaining: the smaller survivor (3.0) goes
    assert m2.tolist() == [[False, True, False, False]]
    with pytest.raises(ValueError, match="rate"):
        layer_prune_mask(w, m1, 1.0)


def test_imp_round_literal_output_layer_half_rate_and_rewind():
    trained = {"a": torch.tensor([[4.0, 1.0, 3.0, 2.0]]), "out": torch.tensor([[4.0, 1.0, 3.0, 2.0]])}
    masks = {k: torch.ones(1, 4, dtype=torch.bool) for k in trained}
    rewind = {"a": torch.tensor([[10.0, 20.0, 30.0, 40.0]]), "out": torch.tensor([[-1.0, -2.0, -3.0, -4.0]])}
    m, w = imp_round(trained, masks, rewind, rate=0.5, output_layer="out")
    assert m["a"].tolist() == [[True, False, True, False]]  # 2 of 4 pruned
    assert m["out"].tolist() == [[True, False, True, True]]  # rate 0.25: 1 of 4 pruned
    assert w["a"].tolist() == [[10.0, 0.0, 30.0, 0.0]] and w["out"].tolist() == [[-1.0, 0.0, -3.0, -4.0]]
    with pytest.raises(ValueError, match="same layers"):
        imp_round(trained, {"a": masks["a"]}, rewind, 0.5)


def test_imp_masks_are_nested_and_sparsity_compounds():
    g = torch.Generator().manual_seed(0)
    w = {"l": torch.randn(50, 40, generator=g)}
    masks = {"l": torch.ones(50, 40, dtype=torch.bool)}
    for r in range(1, 5):
        new, _ = imp_round(w, masks, w, 0.2)
        assert not (new["l"] & ~masks["l"]).any()  # never revives a weight
        masks = new
        assert mask_sparsity(masks) == pytest.approx(1 - 0.8 ** r, abs=2e-3)


def test_mnist_format():
    xtr, ytr, xte, yte = mnist_splits()
    assert xtr.shape == (4000, 784) and xte.shape == (1000, 784)
    assert float(xtr.min()) == 0.0 and float(xtr.max()) == 1.0
    assert torch.bincount(ytr).tolist() == [400] * 10 and torch.bincount(yte).tolist() == [100] * 10


def test_train_masked_keeps_zeros_is_seeded_and_snapshots():
    xtr, ytr, _, _ = mnist_splits()
    x, y = xtr[:600], ytr[:600]
    m1, m2 = LeNet300100(0), LeNet300100(0)
    g = torch.Generator().manual_seed(1)
    masks = {n: torch.rand(w.shape, generator=g) > 0.5 for n, w in prunable_weights(m1).items()}
    snap = train_masked(m1, masks, x, y, iterations=20, seed=3, snapshot_at=7)
    train_masked(m2, masks, x, y, iterations=20, seed=3)
    for n, w in prunable_weights(m1).items():
        assert (w[~masks[n]] == 0).all()
        assert torch.equal(w, prunable_weights(m2)[n])  # seeded: identical runs
    m3 = LeNet300100(0)
    train_masked(m3, masks, x, y, iterations=7, seed=3)
    assert all(torch.equal(v, snap[k]) for k, v in m3.state_dict().items())  # theta_k is iteration 7's state


def test_lottery_table_small():
    xtr, ytr, xte, yte = mnist_splits()
    data = (xtr[:2400], ytr[:2400], xte[:500], yte[:500])  # 40 iterations per training run: fast on CPU
    rows = lottery_experiment(rounds=2, rate=0.5, epochs=1, rewind_iter=5, seed=0, data=data)
    assert [r.round for r in rows] == [0, 1, 2]
    assert rows[0].sparsity == 0.0 and rows[0].ticket == rows[0].reinit == rows[0].rewind_k
    assert rows[0].ticket > 0.7  # the dense LeNet really learns MNIST in 40 steps (chance is 0.1)
    # layer-wise 50% (output layer 25%): exact counts of LeNet-300-100's 266,200 weights
    expect = [1 - (0.5 * 235200 + 0.5 * 30000 + 0.75 * 1000) / 266200,
              1 - (0.25 * 235200 + 0.25 * 30000 + 0.5625 * 1000) / 266200]
    assert [r.sparsity for r in rows[1:]] == pytest.approx(expect, abs=1e-5)
    assert all(0.0 <= v <= 1.0 for r in rows for v in (r.ticket, r.reinit, r.rewind_k))
    with pytest.raises(ValueError, match="rewind_iter"):
        lottery_experiment(rounds=1, epochs=1, rewind_iter=0, data=data)
