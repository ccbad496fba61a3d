"""Fast tests of the helpers of the track-8 ledger experiments (exp_lowrank, exp_share, exp_lottery, ...) (the experiments themselves run in `reproduce`)."""
import pytest
import torch

from lessonlib.claims import registry
from lessonlib.claims.exp_lowrank import smoothness
from lessonlib.config import PROFILES, get_profile
from lessonlib.lowrank.energy import layer_factors, truncate_by_energy
from lessonlib.models import block_linears, decoder_blocks, get_weight, linear_modules, set_weight, tiny_causal_lm


def test_smoothness_literal_and_order_free():
    # sorted by params: (10, 10) -> (8, 12) -> (5, 30): ratios 1.2 and 2.5
    # slopes per 5% of 10 params (= 0.5 params): log2(1.2) / 4 = 0.0658 and log2(2.5) / 6 = 0.2203
    out = smoothness([5, 10, 8], [30.0, 10.0, 12.0])
    assert out == {"monotone": 1.0, "max_step_ratio": pytest.approx(2.5),
                   "max_doublings_per_step": pytest.approx(0.22032, abs=1e-5)}
    assert smoothness([10, 8, 5], [10.0, 9.0, 30.0])["monotone"] == 0.0  # PPL dropped when params were removed
    with pytest.raises(ValueError):
        smoothness([1], [2.0])


def test_smoothness_slope_grid_refinement_only_steepens():
    # (10 -> 5 params, PPL 10 -> 40): 2 doublings over 10 steps of 0.5 params = 0.2 per step
    assert smoothness([10, 5], [10.0, 40.0])["max_doublings_per_step"] == pytest.approx(0.2)
    # a middle point that stays flat puts both doublings into the last 5 steps: 0.4 per step
    assert smoothness([10, 7.5, 5], [10.0, 10.0, 40.0])["max_doublings_per_step"] == pytest.approx(0.4)
    # equal parameter counts have no slope; per outside (0, 1] is refused
    assert smoothness([10, 10], [10.0, 10.0])["max_doublings_per_step"] == 0.0
    with pytest.raises(ValueError, match="per"):
        smoothness([10, 5], [1.0, 2.0], per=0.0)


def _tiny():
    model = tiny_causal_lm(layers=2, seed=0)
    lin = block_linears(decoder_blocks(model)[0])["mlp.up_proj"]
    out_f, in_f = get_weight(lin).shape
    u = torch.linspace(-1, 1, out_f)[:, None]
    v = torch.linspace(0.5, 2, in_f)[None, :]
    set_weight(lin, u @ v)  # exactly rank 1
    return model


UP0 = "model.layers.0.mlp.up_proj"  # the rank-1 layer of _tiny(), by full module name


def test_layer_factors_rebuild_weights_stride_and_full_names():
    model = _tiny()
    f = layer_factors(model)
    lins = linear_modules(model)
    assert list(f) == list(lins) and len(f) == 14  # every block linear, by full name, in module order
    assert UP0 in f and "model.layers.1.self_attn.q_proj" in f
    for key, (A, B) in f.items():
        w = get_weight(lins[key])
        assert A.shape == (min(w.shape), w.shape[1]) and B.shape == (w.shape[0], min(w.shape))
        torch.testing.assert_close(B @ A, w, atol=1e-5, rtol=1e-5)
    assert {k.split(".")[2] for k in layer_factors(model, block_stride=2)} == {"0"}
    picked = layer_factors(model, filter_fn=lambda m, fqn: fqn.endswith("down_proj"))
    assert list(picked) == ["model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]
    with pytest.raises(ValueError, match="block_stride"):
        layer_factors(model, 0)
    with pytest.raises(TypeError, match="filter_fn"):
        layer_factors(model, filter_fn="mlp")


def test_truncate_by_energy_rank_one_layer_and_dense_fallback():
    model = _tiny()
    before = {k: get_weight(lin).clone() for k, lin in linear_modules(model).items()}
    f = layer_factors(model)
    rep = truncate_by_energy(model, f, 0.999)
    up = model.get_submodule(UP0)
    torch.testing.assert_close(get_weight(up), before[UP0], atol=1e-5, rtol=1e-5)  # rank 1 is exact
    assert rep["layers_factorised"] >= 1
    assert rep["params_dense"] == sum(w.numel() for w in before.values())
    assert rep["params_kept"] < rep["params_dense"]
    # energy 1.0 keeps every singular value of a full-rank random layer: nothing saves parameters, nothing changes
    model2 = tiny_causal_lm(layers=2, seed=0)
    f2 = layer_factors(model2)
    rep2 = truncate_by_energy(model2, f2, 1.0)
    assert rep2 == {"params_dense": rep["params_dense"], "params_kept": rep["params_dense"], "layers_factorised": 0}
    w2 = get_weight(model2.get_submodule("model.layers.1.self_attn.q_proj"))
    assert torch.equal(w2, before["model.layers.1.self_attn.q_proj"])


def test_truncate_by_energy_counts_rank_r_params():
    model = _tiny()
    f = {UP0: layer_factors(model)[UP0]}
    rep = truncate_by_energy(model, f, 0.5)
    out_f, in_f = get_weight(model.get_submodule(UP0)).shape
    assert rep == {"params_dense": out_f * in_f, "params_kept": out_f + in_f, "layers_factorised": 1}


def test_truncate_by_energy_rejects_foreign_factors_and_block_relative_names():
    model = _tiny()
    A, B = layer_factors(model)[UP0]
    w0 = get_weight(model.get_submodule(UP0)).clone()
    with pytest.raises(ValueError, match="do not fit"):
        truncate_by_energy(model, {"model.layers.0.mlp.down_proj": (A, B)}, 0.9)
    with pytest.raises(ValueError, match="full module names"):  # the old "{block}.{name}" keys
        truncate_by_energy(model, {"0.mlp.up_proj": (A, B)}, 0.9)
    assert torch.equal(get_weight(model.get_submodule(UP0)), w0)  # refused before anything was written


def test_sizes_and_registration():
    # the sizes are profile fields now (no lookup by the profile's name); these are the values the ledger used
    sizes = ("block_stride", "lottery_rounds", "lottery_rate", "lottery_epochs", "rewind_iter")
    assert [getattr(get_profile("ci"), f) for f in sizes] == [3, 4, 0.5, 2, 20]
    assert [getattr(get_profile("laptop"), f) for f in sizes] == [1, 11, 0.2, 5, 60]
    assert [getattr(get_profile("lab"), f) for f in sizes] == [1, 11, 0.2, 5, 60]
    assert [getattr(get_profile("gpu"), f) for f in sizes] == [1, 13, 0.2, 10, 60]
    custom = PROFILES["ci"].with_(name="mine")  # a renamed profile behaves like the one it was made from
    assert [getattr(custom, f) for f in sizes] == [3, 4, 0.5, 2, 20]
    reg = registry()
    for cid in ("C13", "C14", "C16", "C18", "C30", "C36", "C37", "C40"):
        assert cid in reg
