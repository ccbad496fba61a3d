"""Magnitude pruning: per matrix, per row, global, cubic schedule, gradual loop (lessonlib.prune.magnitude)."""
import math

import pytest
import torch
from torch import nn

from lessonlib.models import get_weight, tiny_causal_lm
from lessonlib.prune.magnitude import (cubic_sparsity, global_magnitude_masks, gradual_magnitude_prune,
                                       magnitude_mask, magnitude_prune_model, magnitude_row_mask)
from lessonlib.prune.masks import apply_mask, is_nm_sparse, model_linears, n_to_prune, nm_mask, sparsity_report

T, F = True, False


def test_magnitude_mask_literal():
    w = torch.tensor([[-3.0, 1.0, 0.5], [2.0, -0.1, 4.0]])
    assert magnitude_mask(w, 0.5).tolist() == [[T, F, F], [T, F, T]]  # |0.1|, |0.5|, |1| go
    assert magnitude_row_mask(w, 0.34).tolist() == [[T, T, F], [T, F, T]]  # 1 per row (3 * 0.34 -> 1)
    assert magnitude_mask(torch.ones(2, 3), 0.5).tolist() == [[F, F, F], [T, T, T]]  # ties in row-major order


def test_magnitude_exact_counts_and_order():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(7, 13, generator=g)
    for s in (0.1, 0.33, 0.5, 0.9):
        m = magnitude_mask(w, s)
        assert int((~m).sum()) == n_to_prune(w.numel(), s)
        assert w[~m].abs().max() <= w[m].abs().min()
        r = magnitude_row_mask(w, s)
        assert ((~r).sum(1) == n_to_prune(13, s)).all()
        assert torch.equal(magnitude_mask(apply_mask(w, m), s), m)  # idempotent


def test_magnitude_nm():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(5, 12, generator=g)
    m = magnitude_mask(w, 0.5, 2, 4)
    assert torch.equal(m, nm_mask(w.abs(), 2, 4)) and is_nm_sparse(apply_mask(w, m), 2, 4)
    with pytest.raises(ValueError, match="conflicts"):
        magnitude_mask(w, 0.6, 2, 4)
    with pytest.raises(ValueError, match="does not divide"):
        magnitude_mask(w, 0.5, 4, 8)


def test_global_masks_literal_ties_and_pinned():
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    b = torch.tensor([[0.5, 10.0], [-0.1, 5.0]])
    m = global_magnitude_masks({"a": a, "b": b}, 0.5)  # 0.1, 0.5, 1, 2 go
    assert m["a"].tolist() == [[F, F], [T, T]] and m["b"].tolist() == [[F, T], [F, T]]
    ones = global_magnitude_masks({"a": torch.ones(2, 2), "b": torch.ones(2, 2)}, 0.25)
    assert ones["a"].tolist() == [[F, F], [T, T]] and ones["b"].all()  # ties: earlier matrix first
    pin = {"b": torch.tensor([[T, F], [T, T]])}  # b[0,1]=10 already pruned: it counts
    m2 = global_magnitude_masks({"a": a, "b": b}, 0.25, pinned=pin)
    assert m2["b"].tolist() == [[T, F], [F, T]] and m2["a"].all()


def test_model_scopes():
    model = tiny_causal_lm(seed=0)
    masks = magnitude_prune_model(model, 0.6, scope="global")
    w = {n: get_weight(m) for n, m in model_linears(model).items()}
    total = sum(t.numel() for t in w.values())
    pruned = sum(int((~masks[n]).sum()) for n in w)
    assert pruned == n_to_prune(total, 0.6)
    kept_min = min(float(t[masks[n]].abs().min()) for n, t in w.items())
    pruned_max = max(float(t[~masks[n]].abs().max()) for n, t in w.items() if (~masks[n]).any())
    assert pruned_max <= kept_min  # one threshold
    rep = sparsity_report(model)
    assert math.isclose(rep.overall, pruned / total) and len({round(r.sparsity, 3) for r in rep.layers}) > 1
    model2 = tiny_causal_lm(seed=0)
    magnitude_prune_model(model2, 0.5, 2, 4)
    assert all(is_nm_sparse(get_weight(m), 2, 4) for m in model_linears(model2).values())
    with pytest.raises(ValueError, match="scope"):
        magnitude_prune_model(model2, 0.5, scope="block")
    with pytest.raises(ValueError, match="N:M"):
        magnitude_prune_model(model2, 0.5, 2, 4, scope="global")


def test_cubic_schedule_hand_values():
    vals = [cubic_sparsity(k, 0.8, 0.0, 0, 4) for k in range(6)]
    assert vals[0] == 0.0 and math.isclose(vals[1], 0.8 * (1 - 0.75 ** 3))  # 0.4625
    assert math.isclose(vals[2], 0.7) and vals[4] == vals[5] == pytest.approx(0.8)
    assert all(x <= y for x, y in zip(vals, vals[1:]))
    assert cubic_sparsity(13, 0.8, 0.2, start_step=10, n_steps=3, interval=2) == pytest.approx(
        0.8 + (0.2 - 0.8) * (1 - 1 / 3) ** 3)
    assert cubic_sparsity(5, 0.8, 0.2, start_step=10) == 0.2
    with pytest.raises(ValueError, match="exceeds"):
        cubic_sparsity(1, 0.3, 0.5)
    with pytest.raises(ValueError, match="n_steps"):
        cubic_sparsity(1, 0.5, n_steps=0)


def _regression(seed=0, n=256):
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(4, 16, generator=g) * (torch.rand(4, 16, generator=g) < 0.25)  # about 75% zeros
    x = torch.randn(n, 16, generator=g)
    return x, x @ teacher.t(), g


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_gradual_pruning_with_finetune(scope):
    x, y, g = _regression()
    torch.manual_seed(0)
    lin = nn.Linear(16, 4)
    opt = torch.optim.SGD(lin.parameters(), lr=0.05, momentum=0.9)
    calls, masks_seen = [], []

    def finetune(step, s):
        calls.append(s)
        masks_seen.append(lin._lessonlib_mask.mask.clone())
        for _ in range(40):
            loss = (lin(x) - y).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            lin(x[:1])  # the pre-hook zeroes pruned weights before every forward
        assert (lin.weight[~masks_seen[-1]] == 0).all()

    final = gradual_magnitude_prune({"lin": lin}, 0.75, n_steps=4, finetune=finetune, scope=scope)["lin"]
    assert calls == pytest.approx([cubic_sparsity(k, 0.75, 0.0, 0, 4) for k in range(5)])
    assert all((b <= a).all() for a, b in zip(masks_seen, masks_seen[1:]))  # pruned weights stay pruned
    assert int((~final).sum()) == n_to_prune(64, 0.75) and (lin.weight[~final] == 0).all()
    assert not hasattr(lin, "_lessonlib_mask")
    gradual_loss = float((lin(x) - y).pow(2).mean().detach())
    torch.manual_seed(0)
    lin2 = nn.Linear(16, 4)
    with torch.no_grad():
        lin2.weight.copy_(apply_mask(lin2.weight, magnitude_mask(lin2.weight, 0.75)))
    oneshot_loss = float((lin2(x) - y).pow(2).mean().detach())
    assert gradual_loss < 0.1 * oneshot_loss


def test_gradual_rejects_bad_input():
    with pytest.raises(ValueError, match="scope"):
        gradual_magnitude_prune({"l": nn.Linear(4, 4)}, 0.5, 2, None, scope="row")
    with pytest.raises(ValueError, match="at least one"):
        gradual_magnitude_prune({}, 0.5, 2, None)
