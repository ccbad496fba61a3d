"""MoEfication of a SwiGLU MLP (lessonlib.arch.moefy): k = E is dense, routing is top-k, counts, bad E/k."""
import pytest
import torch
from torch import nn

from lessonlib.arch.moefy import MoEfiedMLP, balanced_kmeans_units, check_moe_shape, moefied, moefy_param_counts


class SwiGLU(nn.Module):
    def __init__(self, c: int = 6, i: int = 12, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.gate_proj, self.up_proj = nn.Linear(c, i, bias=False), nn.Linear(c, i, bias=False)
        self.down_proj, self.act_fn = nn.Linear(i, c, bias=False), nn.SiLU()

    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        self.mlp = SwiGLU(seed=seed)


def test_k_equals_e_is_exactly_dense():
    mlp, x = SwiGLU(), torch.randn(5, 6)
    assign = balanced_kmeans_units(mlp.gate_proj.weight, mlp.up_proj.weight, 4)
    with torch.no_grad():
        torch.testing.assert_close(MoEfiedMLP(mlp, assign, 4)(x), mlp(x), rtol=0, atol=0)
        assert not torch.allclose(MoEfiedMLP(mlp, assign, 1)(x), mlp(x))


def test_literal_experts_sum_selected_units():
    mlp = SwiGLU(c=2, i=4)
    with torch.no_grad():
        mlp.gate_proj.weight.copy_(torch.tensor([[1., 0], [0, 1], [2, 0], [0, 0.1]]))
        mlp.up_proj.weight.fill_(1.0)
        mlp.down_proj.weight.copy_(torch.eye(2).repeat(1, 2))
        assign = torch.tensor([0, 1, 0, 1])                   # expert 0 = units 0, 2; expert 1 = units 1, 3
        moe, x = MoEfiedMLP(mlp, assign, 1, router="oracle"), torch.tensor([[1.0, 1.0]])
        h = torch.nn.functional.silu(mlp.gate_proj(x)) * mlp.up_proj(x)
        y = moe(x)
    assert moe.last_experts.tolist() == [[0]]                    # units 0 + 2 carry more mass than 1 + 3
    torch.testing.assert_close(y, torch.stack([h[0, 0] + h[0, 2], torch.tensor(0.0)]).reshape(1, 2))


@pytest.mark.parametrize("router", ["probe", "oracle"])
def test_routing_picks_top_k_of_scores(router):
    mlp, x = SwiGLU(i=16), torch.randn(7, 6)
    moe = MoEfiedMLP(mlp, balanced_kmeans_units(mlp.gate_proj.weight, mlp.up_proj.weight, 4), 2, router=router, probe=2)
    with torch.no_grad():
        moe(x)
        gate = mlp.gate_proj(x)
        scores = moe.expert_scores(gate, mlp.act_fn(gate) * mlp.up_proj(x))
    want = scores.topk(2, -1).indices.sort(-1).values
    assert torch.equal(moe.last_experts.sort(-1).values, want)


def test_partition_is_balanced_and_complete():
    mlp = SwiGLU(i=14)
    assign = balanced_kmeans_units(mlp.gate_proj.weight, mlp.up_proj.weight, 4)
    assert sorted(torch.bincount(assign, minlength=4).tolist()) == [3, 3, 4, 4]


def test_param_counts():
    c = moefy_param_counts(576, 1536, 8, 2, probe=8)
    assert c["dense"] == 3 * 576 * 1536 and c["router"] == 8 * 8 * 576
    assert c["total"] == c["dense"] + c["router"] and c["active"] == 3 * 576 * 384 + c["router"]
    assert moefy_param_counts(10, 7, 3, 1)["active"] == 3 * 10 * 3     # uneven split: the largest expert
    assert moefy_param_counts(10, 7, 3, 3)["active"] == moefy_param_counts(10, 7, 3, 3)["dense"]


@pytest.mark.parametrize("e,k,name", [(0, 1, "n_experts=0"), (13, 1, "n_experts=13"), (4, 0, "k=0"),
                                      (4, 5, "k=5"), (2.5, 1, "n_experts=2.5")])
def test_bad_e_or_k(e, k, name):
    with pytest.raises(ValueError, match=name):
        check_moe_shape(12, e, k)
    with pytest.raises(ValueError, match=name):
        with moefied([Block()], e, k):
            pass


def test_moefied_swaps_and_restores():
    blocks, x = [Block(0), Block(1)], torch.randn(3, 6)
    dense = [b.mlp for b in blocks]
    parts: dict = {}
    with torch.no_grad(), moefied(blocks, 3, 1, partitions=parts) as moes:
        assert [b.mlp for b in blocks] == moes and len(parts) == 2
        assert moes[0].mlp is dense[0]
    assert [b.mlp for b in blocks] == dense
    with pytest.raises(RuntimeError), moefied(blocks, 3, 1):
        raise RuntimeError("inside")
    assert [b.mlp for b in blocks] == dense
    with pytest.raises(ValueError, match="router='x'"):
        MoEfiedMLP(dense[0], torch.tensor([0, 1] * 6), 1, router="x")
