"""Weight sharing: ALBERT-style block tying and Deep Compression k-means clustering."""
import copy

import pytest
import torch

from lessonlib.models import decoder_blocks, tiny_causal_lm
from lessonlib.share import (ClusteredWeight, centroid_gradients, cluster_model, cluster_weight, count_parameters,
                             index_bits, kmeans_1d, lloyd_step, sharing_groups, tie_blocks)


def _block_params(model):
    return sum(p.numel() for p in decoder_blocks(model)[0].parameters())


# ----------------------------------------------------------------------------- tying
def test_sharing_groups_literal_and_errors():
    assert sharing_groups(6, 2) == [[0, 1], [2, 3], [4, 5]]
    assert sharing_groups(4, 4) == [[0, 1, 2, 3]]
    with pytest.raises(ValueError, match=r"group_size=4 does not divide the depth 6; allowed: \[1, 2, 3, 6\]"):
        sharing_groups(6, 4)
    with pytest.raises(ValueError, match="positive"):
        sharing_groups(6, 0)


def test_tie_blocks_counts_unique_parameters():
    model = tiny_causal_lm(layers=4)
    before = count_parameters(model)
    per_block = _block_params(model)
    tie_blocks(model, 2)
    after = count_parameters(model)
    assert after["blocks_unique"] == 2 * per_block and after["blocks_with_repeats"] == 4 * per_block
    assert after["unique"] == before["unique"] - 2 * per_block
    assert after["block_sharing_factor"] == 2.0
    b = decoder_blocks(model)
    assert b[0].mlp.up_proj.weight is b[1].mlp.up_proj.weight
    assert b[1].mlp.up_proj.weight is not b[2].mlp.up_proj.weight
    assert b[1].self_attn.layer_idx == 1  # blocks stay distinct modules (KV cache indices intact)


def test_tie_all_layers_albert():
    model = tiny_causal_lm(layers=4)
    tie_blocks(model, 4)
    assert count_parameters(model)["block_sharing_factor"] == 4.0
    x = torch.randint(0, 256, (2, 8))
    assert model(x).logits.shape == (2, 8, 256)


def test_tied_gradient_is_sum_over_layers():
    tied = tiny_causal_lm(layers=2, seed=1)
    untied = copy.deepcopy(tied)
    tie_blocks(tied, 2)
    ub = decoder_blocks(untied)
    ub[1].load_state_dict(ub[0].state_dict())  # same weights, separate tensors
    x = torch.randint(0, 256, (2, 8), generator=torch.Generator().manual_seed(0))
    tied(x, labels=x).loss.backward()
    untied(x, labels=x).loss.backward()
    g_tied = decoder_blocks(tied)[0].mlp.down_proj.weight.grad
    g_sum = ub[0].mlp.down_proj.weight.grad + ub[1].mlp.down_proj.weight.grad
    assert torch.allclose(g_tied, g_sum, atol=1e-6)


def test_tie_mean_init():
    model = tiny_causal_lm(layers=2)
    b = decoder_blocks(model)
    expect = (b[0].mlp.up_proj.weight.detach() + b[1].mlp.up_proj.weight.detach()) / 2
    tie_blocks(model, 2, init="mean")
    assert torch.allclose(b[1].mlp.up_proj.weight, expect)
    with pytest.raises(ValueError, match="init"):
        tie_blocks(tiny_causal_lm(layers=2), 2, init="median")


# ----------------------------------------------------------------------------- clustering
def test_kmeans_literal():
    c, idx = kmeans_1d(torch.tensor([0.0, 0.1, 0.9, 1.0]), 2)
    assert torch.allclose(c, torch.tensor([0.05, 0.95])) and idx.tolist() == [0, 0, 1, 1]
    c, idx = kmeans_1d(torch.tensor([0.0, 0.0, 4.0]), 3)  # linear init 0, 2, 4: the middle cluster stays empty
    assert c.tolist() == [0.0, 2.0, 4.0] and idx.tolist() == [0, 0, 2]


def _slow_lloyd(v, c, iters):
    v, c = v.tolist(), c.tolist()
    for _ in range(iters):
        a = [min(range(len(c)), key=lambda j: (abs(x - c[j]), j)) for x in v]
        for j in range(len(c)):
            members = [x for x, aj in zip(v, a) if aj == j]
            if members:
                c[j] = sum(members) / len(members)
        c = sorted(c)
    a = [min(range(len(c)), key=lambda j: (abs(x - c[j]), j)) for x in v]
    return c, a


def test_kmeans_matches_slow_reference():
    v = torch.randn(300, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    c, idx = kmeans_1d(v, 5, iters=50)
    c_ref, a_ref = _slow_lloyd(v, torch.linspace(float(v.min()), float(v.max()), 5, dtype=torch.float64), 50)
    assert torch.allclose(c, torch.tensor(c_ref, dtype=torch.float64), atol=1e-9)
    assert idx.tolist() == a_ref


def test_lloyd_step_literal_and_slow_reference():
    # boundaries 2.5 and 7.5: [0, 2.4 | 3 | 10]; the middle one of [1, 50, 99] below gets nothing and stays
    c, idx = lloyd_step(torch.tensor([0.0, 2.4, 3.0, 10.0]), torch.tensor([0.0, 5.0, 10.0]))
    assert torch.allclose(c, torch.tensor([1.2, 3.0, 10.0])) and idx.tolist() == [0, 0, 1, 2]
    assert idx.dtype == torch.int64
    c, idx = lloyd_step(torch.tensor([0.0, 2.0, 100.0]), torch.tensor([1.0, 50.0, 99.0], dtype=torch.float64))
    assert c.tolist() == [1.0, 50.0, 100.0] and c.dtype == torch.float64 and idx.tolist() == [0, 0, 2]
    g = torch.Generator().manual_seed(4)
    v = torch.randn(200, generator=g, dtype=torch.float64)
    c0 = torch.sort(torch.randn(6, generator=g, dtype=torch.float64))[0]
    c1, idx = lloyd_step(v, c0)
    c_ref, a_ref = _slow_lloyd(v, c0, 1)
    assert torch.allclose(c1, torch.tensor(c_ref, dtype=torch.float64), atol=1e-12)
    assert idx.tolist() == _slow_lloyd(v, c0, 0)[1]  # indices refer to the given centroids
    with pytest.raises(ValueError, match="1-D"):
        lloyd_step(v.reshape(20, 10), c0)


def test_kmeans_reduces_error_and_validates():
    v = torch.randn(2000, generator=torch.Generator().manual_seed(3))
    c0, i0 = kmeans_1d(v, 8, iters=0)
    c1, i1 = kmeans_1d(v, 8, iters=30)
    assert ((v - c1[i1]) ** 2).sum() <= ((v - c0[i0]) ** 2).sum()
    with pytest.raises(ValueError, match="init"):
        kmeans_1d(v, 4, init="kmeans++")
    with pytest.raises(ValueError, match="empty"):
        kmeans_1d(torch.zeros(0), 4)


def test_cluster_weight_keeps_zeros_and_storage():
    w = torch.randn(10, 10, generator=torch.Generator().manual_seed(4))
    w[w.abs() < 0.5] = 0.0
    cw = cluster_weight(w, 16)
    d = cw.dense()
    assert torch.equal(d == 0, w == 0) and cw.codebook[0] == 0 and d.unique().numel() <= 16
    assert index_bits(16) == 4 and index_bits(5) == 3 and index_bits(1) == 1
    assert cw.storage_bytes() == 100 * 4 // 8 + 16 * 4  # 4-bit indices + fp32 codebook
    back = ClusteredWeight.from_packed(cw.packed_indices(), cw.codebook, (10, 10), True)
    assert torch.equal(back.dense(), d)
    dense_cw = cluster_weight(w, 4, keep_zero=False)
    assert dense_cw.k == 4 and dense_cw.dense().unique().numel() <= 4


def test_centroid_gradients_literal():
    g = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    idx = torch.tensor([[0, 1], [1, 2]])
    assert centroid_gradients(g, idx, 3).tolist() == [1.0, 5.0, 4.0]


def test_cluster_model():
    model = tiny_causal_lm()
    sizes = cluster_model(model, 8, iters=5, keep_zero=False)
    assert len(sizes) == 14
    w = decoder_blocks(model)[0].mlp.up_proj.weight
    assert w.unique().numel() <= 8
    assert sizes["model.layers.0.mlp.up_proj"] == 128 * 64 * 3 // 8 + 8 * 4
