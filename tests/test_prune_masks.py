"""Masks, N:M patterns, registration during fine-tuning, sparsity reports (lessonlib.prune.masks)."""
import math

import pytest
import torch
from torch import nn

from lessonlib.models import get_weight, tiny_causal_lm
from lessonlib.prune.magnitude import magnitude_prune_model
from lessonlib.prune.masks import (apply_mask, check_mask, check_nm, check_sparsity, is_nm_sparse, n_to_prune,
                                   nm_mask, overall_sparsity, prune_lowest, prune_lowest_count, register_mask,
                                   remove_mask, resolve_sparsity, sparsity, sparsity_report)

T, F = True, False


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), float("inf"), "0.5", None, True])
def test_bad_sparsity_raises(bad):
    with pytest.raises(ValueError, match="sparsity"):
        check_sparsity(bad)


@pytest.mark.parametrize("n,m", [(4, 4), (5, 4), (2, 0), (-1, 4), (0, 4), (2.0, 4)])
def test_bad_nm_raises(n, m):
    with pytest.raises(ValueError):
        check_nm(n, m)


def test_nm_group_must_divide_row_and_sparsity_must_match():
    assert check_nm(0, 0) is False and check_nm(2, 4, 8) is True
    with pytest.raises(ValueError, match="does not divide"):
        check_nm(2, 4, 6)
    with pytest.raises(ValueError, match="conflicts"):
        resolve_sparsity(0.7, 2, 4)
    assert resolve_sparsity(0.5, 2, 4) == 0.5 and resolve_sparsity(0.25, 3, 4) == 0.25


def test_n_to_prune_rounds_half_up():
    assert n_to_prune(10, 0.25) == 3  # 2.5 -> 3
    assert n_to_prune(7, 0.5) == 4  # 3.5 -> 4
    assert n_to_prune(100, 0.3) == 30 and n_to_prune(8, 0.0) == 0 and n_to_prune(3, 0.1) == 0


def test_prune_lowest_literal_and_ties():
    s = torch.tensor([[3.0, 1.0, 2.0], [1.0, 5.0, 0.0]])
    assert prune_lowest(s, 0.5).tolist() == [[T, F, T], [F, T, F]]  # 0, then the two 1s
    ones = torch.ones(2, 2)
    assert prune_lowest(ones, 0.5).tolist() == [[F, F], [T, T]]  # ties: row-major order
    s2 = torch.tensor([[3.0, 1.0, 2.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    assert prune_lowest(s2, 0.5, per_row=True).tolist() == [[T, F, T, F], [F, F, T, T]]
    with pytest.raises(ValueError, match="k=5"):
        prune_lowest_count(s2, 5, per_row=True)


def test_prune_lowest_exact_count_property():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(7, 13, generator=g)
    for sp in (0.1, 0.33, 0.5, 0.9):
        m = prune_lowest(s, sp)
        assert int((~m).sum()) == n_to_prune(91, sp)
        assert s[~m].max() <= s[m].min()


def test_nm_mask_literal_and_convention():
    s = torch.tensor([[0.1, 0.9, 0.5, 0.2, 1.0, 2.0, 3.0, 4.0]])
    assert nm_mask(s, 2, 4).tolist() == [[F, T, T, F, F, F, T, T]]
    assert nm_mask(s, 3, 4).tolist() == [[F, T, T, T, F, T, T, T]]  # N:M = N KEPT of every M
    assert nm_mask(s, 1, 4).tolist() == [[F, T, F, F, F, F, F, T]]  # 1:4 keeps only the largest of four
    assert nm_mask(torch.ones(1, 4), 2, 4).tolist() == [[F, F, T, T]]  # ties: leftmost pruned


def test_nm_mask_property_and_validator():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(6, 16, generator=g)
    for n, m in ((2, 4), (1, 4), (3, 4), (4, 8), (3, 8)):
        mask = nm_mask(w.abs(), n, m)
        assert is_nm_sparse(mask, n, m) and is_nm_sparse(apply_mask(w, mask), n, m)
        assert sparsity(mask) == (m - n) / m
        assert (mask.reshape(6, -1, m).sum(-1) == n).all()  # exactly n kept in every group
    assert not is_nm_sparse(w, 2, 4)  # dense
    w24 = torch.tensor([[1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 3.0, 4.0]])
    assert is_nm_sparse(w24, 2, 4) and is_nm_sparse(w24, 3, 4) and not is_nm_sparse(w24, 1, 4)
    w24[0, 1] = 5.0  # first group now has 3 nonzeros
    assert not is_nm_sparse(w24, 2, 4) and is_nm_sparse(w24, 3, 4)
    with pytest.raises(ValueError, match="does not divide"):
        is_nm_sparse(torch.ones(2, 6), 2, 4)
    with pytest.raises(ValueError):
        nm_mask(torch.ones(2, 8), 4, 4)


def test_check_mask_and_apply():
    w = torch.tensor([[1.0, -2.0], [3.0, 4.0]])
    m = torch.tensor([[T, F], [F, T]])
    assert apply_mask(w, m).tolist() == [[1.0, 0.0], [0.0, 4.0]]
    with pytest.raises(ValueError, match="dtype"):
        check_mask(m.float(), w)
    with pytest.raises(ValueError, match="shape"):
        check_mask(torch.ones(2, 3, dtype=torch.bool), w)
    with pytest.raises(TypeError):
        check_mask([[True]], w)


def test_sparsity_and_overall():
    a = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    b = torch.zeros(1, 4)
    assert sparsity(a) == 0.25 and sparsity(torch.tensor([[T, F, F, F]])) == 0.75
    assert overall_sparsity([a, b]) == 5 / 8 and overall_sparsity({"a": a, "b": b}) == 5 / 8


def _train(layer, steps=5, lr=0.1):
    opt = torch.optim.SGD(layer.parameters(), lr=lr, momentum=0.9, weight_decay=0.01)
    g = torch.Generator().manual_seed(2)
    for _ in range(steps):
        x = torch.randn(8, get_weight(layer).shape[1], generator=g)
        loss = (layer(x) - 1.0).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_register_mask_keeps_zeros_during_training_and_removes():
    torch.manual_seed(0)
    lin = nn.Linear(4, 3)
    mask = torch.tensor([[T, F, T, F], [F, F, T, T], [T, T, T, F]])
    before = lin.weight.detach().clone()
    h = register_mask(lin, mask)
    assert (lin.weight[~mask] == 0).all()
    with pytest.raises(ValueError, match="already"):
        register_mask(lin, mask)
    _train(lin)
    h.remove()
    assert (lin.weight[~mask] == 0).all()  # exactly zero after momentum + weight decay
    assert not torch.equal(lin.weight[mask], before[mask])  # the kept weights did train
    with pytest.raises(ValueError, match="no registered mask"):
        remove_mask(lin)
    _train(lin)  # hooks are gone: pruned weights may move again
    assert (lin.weight[~mask] != 0).any()


def test_register_mask_on_gpt2_conv1d_uses_out_in_layout():
    from transformers.pytorch_utils import Conv1D
    torch.manual_seed(0)
    conv = Conv1D(3, 4)  # nf=3 outputs, nx=4 inputs; weight stored (4, 3)
    mask = torch.tensor([[T, F, T, F], [F, F, T, T], [T, T, T, F]])  # (out, in)
    register_mask(conv, mask)
    conv(torch.randn(5, 4)).sum().backward()
    assert (conv.weight.grad.t()[~mask] == 0).all() and (conv.weight.grad.t()[mask] != 0).all()
    _train(conv)
    assert (get_weight(conv)[~mask] == 0).all() and remove_mask(conv) is mask
    with pytest.raises(ValueError, match="shape"):
        register_mask(conv, mask.t().contiguous())


def test_sparsity_report_on_tiny_model():
    model = tiny_causal_lm(seed=0)
    rep = sparsity_report(model)
    assert rep.overall == 0.0 and len(rep.layers) == 2 * 7
    assert rep.layers[0].name == "model.layers.0.self_attn.q_proj"
    magnitude_prune_model(model, 0.5)
    rep = sparsity_report(model)
    assert all(r.sparsity == 0.5 for r in rep.layers) and math.isclose(rep.overall, 0.5)
    assert "overall" in rep.format()


def test_prune_lowest_count_matches_a_stable_sort_with_ties():
    """The selection path (kthvalue + ties to the lowest index) equals the slow stable-argsort definition."""
    from lessonlib.prune.masks import prune_lowest_count
    g = torch.Generator().manual_seed(0)
    for trial in range(200):
        o, i = torch.randint(1, 9, (2,), generator=g).tolist()
        s = torch.randint(-2, 3, (o, i), generator=g).float() if trial % 2 else torch.randn(o, i, generator=g)
        k = int(torch.randint(0, o * i + 1, (1,), generator=g))
        ref = torch.ones(o, i, dtype=torch.bool)
        ref.view(-1)[torch.argsort(s.reshape(-1), stable=True)[:k]] = False
        assert torch.equal(prune_lowest_count(s, k), ref), (s, k)
    assert prune_lowest_count(torch.tensor([[1.0, 1.0, 1.0, 0.0]]), 2).tolist() == [[False, True, True, False]]
    assert prune_lowest_count(torch.ones(2, 2).t(), 4).sum() == 0  # non-contiguous input, everything pruned


def test_prune_lowest_count_per_row_matches_a_stable_sort_with_ties():
    """Per row, the selection path (kthvalue per row + ties to the lowest column) equals the slow definition:
    prune the first k entries of each row's stable argsort (heavy ties: integer scores; every k in 0..in)."""
    from lessonlib.prune.masks import prune_lowest_count
    g = torch.Generator().manual_seed(1)
    for trial in range(120):
        o, i = torch.randint(1, 12, (2,), generator=g).tolist()
        s = torch.randint(0, 3, (o, i), generator=g).float() if trial % 2 else torch.randn(o, i, generator=g)
        for k in range(i + 1):
            ref = torch.ones(o, i, dtype=torch.bool).scatter_(1, torch.argsort(s, dim=1, stable=True)[:, :k], False)
            assert torch.equal(prune_lowest_count(s, k, per_row=True), ref), (s, k)
    assert prune_lowest_count(torch.tensor([[2.0, 1.0, 1.0, 1.0], [0.0, 0.0, 5.0, 0.0]]), 2,
                              per_row=True).tolist() == [[True, False, False, True], [False, False, True, True]]


@pytest.mark.parametrize("family", ["llama", "gpt2"])  # nn.Linear and GPT-2's transposed Conv1D
def test_apply_mask_inplace_equals_apply_mask_and_rolls_back(family):
    """apply_mask_ zeroes exactly the masked entries of the layer's (out, in) weight, in place, and an open
    transaction restores the weight bit for bit."""
    from lessonlib.atomic import transaction
    from lessonlib.prune.masks import apply_mask_
    model = tiny_causal_lm(family)
    lin = next(m for n, m in model.named_modules() if n.endswith(("q_proj", "c_attn")))
    w0 = get_weight(lin).clone()  # (out, in)
    mask = torch.rand(w0.shape, generator=torch.Generator().manual_seed(0)) > 0.3
    ptr = lin.weight.data_ptr()
    apply_mask_(lin, mask)
    assert torch.equal(get_weight(lin), apply_mask(w0, mask)) and lin.weight.data_ptr() == ptr
    assert torch.equal(get_weight(lin) == 0, ~mask | (w0 == 0))
    lin.weight.data.copy_(w0.t() if family == "gpt2" else w0)
    with pytest.raises(RuntimeError, match="boom"), transaction(model):
        apply_mask_(lin, mask)
        raise RuntimeError("boom")
    assert torch.equal(get_weight(lin), w0)
    with pytest.raises(ValueError):
        apply_mask_(lin, mask[:, :-1])  # wrong shape: refused, nothing written
    assert torch.equal(get_weight(lin), w0)
