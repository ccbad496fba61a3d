"""Activation sparsity: hook-based zero fraction, ReLU-fication, and the active-unit down projection."""
import pytest
import torch
from torch import nn

from lessonlib.models import decoder_blocks, tiny_causal_lm
from lessonlib.sparsity import (ActivationSparsityMonitor, SparseDownProj, activation_sparsity, ffn_down_projections,
                                relufied_ffn, relufy_llama_mlp, sparse_down_proj,
                                time_sparse_down_proj)


def _ids(seed=0):
    return torch.randint(0, 256, (3, 24), generator=torch.Generator().manual_seed(seed))


def test_monitor_literal_threshold():
    up = nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        up.weight.copy_(torch.eye(4))
    down = nn.Linear(4, 2)
    net = nn.Sequential(up, nn.ReLU(), down)
    x = torch.tensor([[1.0, -1.0, 2.0, -2.0]])  # intermediate [1, 0, 2, 0]
    with ActivationSparsityMonitor({"ffn": down}) as mon:
        net(x)
    assert mon.fractions() == {"ffn": 0.5}
    with ActivationSparsityMonitor({"ffn": down}, threshold=1.5) as mon:
        net(x)
    assert mon.overall() == 0.75
    assert not down._forward_pre_hooks  # hooks removed on exit
    with pytest.raises(RuntimeError, match="no activations"):
        ActivationSparsityMonitor({"ffn": down}).fractions()
    with pytest.raises(ValueError, match="threshold"):
        ActivationSparsityMonitor({"ffn": down}, threshold=-1)


def test_swiglu_dense_then_relufied_sparse():
    model = tiny_causal_lm(layers=2)
    x = _ids()
    before = activation_sparsity(model, x)
    assert set(before) == {"0", "1", "overall"} and before["overall"] == 0.0  # SiLU is never exactly 0
    assert activation_sparsity(model, x, threshold=10.0)["overall"] == 1.0
    assert relufy_llama_mlp(model) == 2 and model.config.hidden_act == "relu"
    after = activation_sparsity(model, x)
    assert 0.3 < after["overall"] < 0.7  # random init: the gate is negative about half the time


def test_relufied_mlp_computes_relu_gate():
    model = tiny_causal_lm(layers=1)
    relufy_llama_mlp(model)
    mlp = decoder_blocks(model)[0].mlp
    h = torch.randn(5, 64, generator=torch.Generator().manual_seed(1))
    expect = mlp.down_proj(torch.relu(mlp.gate_proj(h)) * mlp.up_proj(h))
    assert torch.allclose(mlp(h), expect, atol=1e-6)


def test_relu_network_is_sparse_and_relufy_rejects_it():
    model = tiny_causal_lm("opt")
    assert list(ffn_down_projections(model)) == ["0", "1"]
    assert activation_sparsity(model, _ids())["overall"] > 0.3
    with pytest.raises(ValueError, match="ReLU-fy"):
        relufy_llama_mlp(model)


def test_sparse_down_proj_matches_dense():
    g = torch.Generator().manual_seed(2)
    lin = nn.Linear(96, 32)
    h = torch.relu(torch.randn(4, 96, generator=g))
    h[:, torch.randperm(96, generator=g)[:80]] = 0.0  # 80 units dead for the whole batch
    y = sparse_down_proj(h, lin.weight.detach().t().contiguous(), lin.bias.detach())
    assert torch.allclose(y, lin(h), atol=1e-5)
    sp = SparseDownProj(lin)
    h3 = h.reshape(2, 2, 96)
    assert torch.allclose(sp(h3), lin(h3), atol=1e-5)
    assert torch.allclose(sp(torch.zeros(3, 96)), lin.bias.expand(3, 32))  # nothing active: only the bias


def test_sparse_down_proj_threshold_and_errors():
    lin = nn.Linear(8, 3, bias=False)
    h = torch.tensor([[0.05, 1.0, -0.02, 0.0, 2.0, 0.0, 0.0, 0.1]])
    wt = lin.weight.detach().t().contiguous()
    y = sparse_down_proj(h, wt, threshold=0.1)  # |h| <= 0.1 counts as zero
    assert torch.allclose(y, lin(h * (h.abs() > 0.1)), atol=1e-6)
    with pytest.raises(ValueError, match="not"):
        sparse_down_proj(h, wt[:5])
    with pytest.raises(ValueError, match="threshold"):
        sparse_down_proj(h, wt, threshold=-0.5)
    with pytest.raises(TypeError):
        SparseDownProj(nn.Conv1d(2, 2, 1))


def test_timing_helper():
    out = time_sparse_down_proj(d_model=64, d_ff=256, tokens=2, sparsity=0.75, repeats=3)
    assert out["dense_s"] > 0 and out["sparse_s"] > 0 and out["active_units"] == 64
    assert out["max_abs_diff"] < 1e-5
    with pytest.raises(ValueError, match="sparsity"):
        time_sparse_down_proj(sparsity=1.0)


def test_relufied_ffn_matches_a_relufied_model_and_counts_its_zeros():
    """The layer-level ReLU-fied MLP equals a ReLU-fied tiny model's MLP, and its zero fraction equals the monitor's."""
    model = tiny_causal_lm(layers=1, seed=0)
    relufy_llama_mlp(model)
    mlp = decoder_blocks(model)[0].mlp
    x = torch.randn(7, model.config.hidden_size, generator=torch.Generator().manual_seed(0))  # (tokens, d)
    with torch.no_grad():
        y, zeros = relufied_ffn(x, mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight)
        with ActivationSparsityMonitor({"0": mlp.down_proj}) as mon:
            y_ref = mlp(x)
    assert torch.allclose(y, y_ref, atol=1e-6)
    assert isinstance(zeros, float) and abs(zeros - mon.overall()) < 1e-6 and 0.2 < zeros < 0.8  # about half: symmetric gate
    # literal: gate [1, -1] -> [1, 0]; up [3, 2]; h = [3, 0]; y = [[1, 5], [2, 7]] h = [3, 6]
    y1, z1 = relufied_ffn(torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 0.0], [-1.0, 0.0]]),
                          torch.tensor([[1.0, 1.0], [0.0, 1.0]]), torch.tensor([[1.0, 5.0], [2.0, 7.0]]))
    assert y1.tolist() == [[3.0, 6.0]] and z1 == 0.5
    with pytest.raises(ValueError, match="widths disagree"):
        relufied_ffn(x, mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight.T)
