"""All-or-nothing model drivers (issue 23): a failure in the LAST layer leaves the model exactly as it was.

Each case runs a driver once on a copy to count the calls of its layer-level function, then runs it on the
model with that function raising on its last call, and compares state dict (values, dtypes, shapes),
module structure, parameter sharing, ``requires_grad`` and config with the original.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import lessonlib.arch.depth as depth
import lessonlib.arch.ffn as ffn
import lessonlib.arch.gqa as gqa
import lessonlib.arch.heads as heads
import lessonlib.arch.recover as recover
import lessonlib.lowrank.lora as lora
import lessonlib.lowrank.svd as svd
import lessonlib.pipeline.core as pcore
import lessonlib.prune.magnitude as magnitude
import lessonlib.prune.sparsegpt as sparsegpt
import lessonlib.prune.wanda as wanda
import lessonlib.quant.awq as awq
import lessonlib.quant.awq_fold as awq_fold
import lessonlib.quant.gptq as gptq
import lessonlib.quant.mixed as mixed
import lessonlib.training as training
import lessonlib.quant.qat as qat
import lessonlib.quant.qat_train as qat_train
import lessonlib.quant.rtn as rtn
import lessonlib.quant.w8a8 as w8a8
import lessonlib.share.clustering as clustering
import lessonlib.share.tying as tying
import lessonlib.sparsity.activation as act
from lessonlib.atomic import protect, transaction
from lessonlib.models import tiny_causal_lm
from lessonlib.quant.affine import QuantScheme


class Injected(RuntimeError):
    pass


def snapshot(model: nn.Module) -> dict:
    sd = {k: (v.detach().clone(), v.dtype, tuple(v.shape)) for k, v in model.state_dict(keep_vars=True).items()}
    params = list(model.named_parameters(remove_duplicate=False))
    first: dict[int, str] = {}
    sharing = [(n, first.setdefault(id(p), n)) for n, p in params]
    return {"sd": sd, "repr": repr(model), "sharing": sharing,
            "grad": [(n, p.requires_grad) for n, p in params],
            "types": [(n, type(m).__name__) for n, m in model.named_modules()],
            "config": model.config.to_dict() if hasattr(model, "config") else None,
            "training": model.training}


def assert_same(a: dict, b: dict) -> None:
    assert a["repr"] == b["repr"]
    assert a["types"] == b["types"]
    assert a["sharing"] == b["sharing"]
    assert a["grad"] == b["grad"]
    assert a["config"] == b["config"]
    assert a["training"] == b["training"]
    assert a["sd"].keys() == b["sd"].keys()
    for k in a["sd"]:
        (ta, da, sa), (tb, db, sb) = a["sd"][k], b["sd"][k]
        assert (da, sa) == (db, sb), k
        assert torch.equal(ta, tb), k


def calib(n: int = 2, t: int = 12) -> torch.Tensor:
    return torch.randint(0, 256, (n, t), generator=torch.Generator().manual_seed(1))


def check_atomic(monkeypatch, module, fn_name: str, run, model: nn.Module | None = None,
                 prepare=None, after: bool = False) -> None:
    """``after=True``: the last call runs and then raises (for a driver whose last step is one call)."""
    model = model if model is not None else tiny_causal_lm()
    if prepare is not None:
        prepare(model)
    orig = getattr(module, fn_name)
    calls = [0]

    def counting(*a, **k):
        calls[0] += 1
        return orig(*a, **k)

    monkeypatch.setattr(module, fn_name, counting)
    run(copy.deepcopy(model))
    n = calls[0]
    assert n >= (1 if after else 2), f"{fn_name} called {n} times: the test needs a failure after a first success"
    seen = [0]

    def failing(*a, **k):
        seen[0] += 1
        if seen[0] == n:
            if after:
                orig(*a, **k)
            raise Injected(f"injected failure in call {n} of {fn_name}")
        return orig(*a, **k)

    monkeypatch.setattr(module, fn_name, failing)
    before = snapshot(model)
    with pytest.raises(Injected):
        run(model)
    assert seen[0] == n
    assert_same(before, snapshot(model))
    monkeypatch.setattr(module, fn_name, orig)
    run(model)  # and the restored model still runs
    ids = calib(1, 8)
    assert torch.isfinite(model(ids).logits).all()


S = QuantScheme(4, 32)

CASES = {
    "wanda_prune_model": (wanda, "wanda_mask", lambda m: wanda.wanda_prune_model(m, calib(), 0.5)),
    "sparsegpt_prune_model": (sparsegpt, "sparsegpt_prune", lambda m: sparsegpt.sparsegpt_prune_model(m, calib(), 0.5)),
    "magnitude_prune_model": (magnitude, "apply_mask_", lambda m: magnitude.magnitude_prune_model(m, 0.5)),
    "gptq_quantize_model": (gptq, "gptq_quantize", lambda m: gptq.gptq_quantize_model(m, calib(), S)),
    "awq_quantize_model": (awq, "awq_quantize", lambda m: awq.awq_quantize_model(m, calib(), S, n_grid=4)),
    "awq_fold_model": (awq_fold, "quantize", lambda m: awq_fold.awq_fold_model(m, calib(), S, n_grid=4, clip=False)),
    "rtn_quantize_model": (rtn, "fake_quant", lambda m: rtn.rtn_quantize_model(m, S)),
    "w8a8_quantize_model": (w8a8, "layer_w8a8", lambda m: w8a8.w8a8_quantize_model(m, calib())),
    "apply_mixed_precision": (mixed, "fake_quant", lambda m: mixed.apply_mixed_precision(
        m, {"model.layers.0.mlp.up_proj": 4, "model.layers.1.mlp.down_proj": 8}, group_size=32)),
    "prepare_qat": (qat.QATLinear, "from_linear", lambda m: qat.prepare_qat(m, S)),
    "lowrank_model": (svd, "factorize_linear", lambda m: svd.lowrank_model(m, energy=0.5)),
    "lowrank_model_whitened": (svd, "factorize_linear", lambda m: svd.lowrank_model(m, energy=0.5, calib=calib())),
    "cluster_model": (clustering, "cluster_weight", lambda m: clustering.cluster_model(m, 4, iters=3)),
    "prune_ffn_neurons": (ffn, "resize_linear_like", lambda m: ffn.prune_ffn_neurons(m, [torch.arange(64), torch.arange(32)])),
    "prune_heads": (heads, "resize_linear_like", lambda m: heads.prune_heads(m, {0: [1], 1: [0, 2]})),
    "convert_to_gqa": (gqa, "mean_pool_heads", lambda m: gqa.convert_to_gqa(m, 2)),
    "relufy_llama_mlp": (nn.ReLU, "__init__", lambda m: act.relufy_llama_mlp(m)),
    "apply_lora": (lora.LoRALinear, "__init__", lambda m: lora.apply_lora(m)),
    "recovery_finetune": (training, "batch_indices", lambda m: recover.recovery_finetune(m, calib(), steps=2, batch_size=2,
                                                                               lr=1e-2)),
    "qat_finetune": (qat_train, "next_token_nll", lambda m: qat_train.qat_finetune(m, calib(), S, steps=2, lr=1e-2,
                                                                                  batch_size=2)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_driver_is_atomic(monkeypatch, name):
    module, fn, run = CASES[name]
    check_atomic(monkeypatch, module, fn, run)


def test_remove_blocks_is_atomic(monkeypatch):
    check_atomic(monkeypatch, depth, "_set_blocks", lambda m: depth.remove_blocks(m, [1]), after=True,
                 model=tiny_causal_lm(layers=3))


def test_tie_blocks_mean_is_atomic(monkeypatch):
    # four blocks, groups of two: the second group's leader fetch fails after the first group was tied and
    # the leader of the second was averaged in place
    check_atomic(monkeypatch, tying, "_params_by_owner", lambda m: tying.tie_blocks(m, 2, init="mean"),
                 model=tiny_causal_lm(layers=4))


def test_merge_all_is_atomic(monkeypatch):
    def prep(m):
        lora.apply_lora(m)
        for a in lora.lora_parameters(m):
            nn.init.normal_(a, std=0.1)  # B starts at zero: make the merge change the weights
    check_atomic(monkeypatch, lora.LoRALinear, "delta_weight", lambda m: lora.merge_all(m), prepare=prep)


def test_convert_qat_is_atomic(monkeypatch):
    import lessonlib.quant.qlinear as qlinear
    check_atomic(monkeypatch, qlinear.QuantLinear, "from_linear", lambda m: qat.convert_qat(m),
                 prepare=lambda m: qat.prepare_qat(m, S))


def test_compress_inplace_is_atomic(monkeypatch):
    recipe = {"name": "two", "stages": [{"stage": "prune", "method": "magnitude", "sparsity": 0.5},
                                        {"stage": "quantize", "method": "rtn", "bits": 4, "group_size": 32}]}
    check_atomic(monkeypatch, pcore, "run_stage",
                 lambda m: pcore.compress(m, recipe, evaluate=False, calib=calib(), inplace=True, profile="ci"))


def test_mask_encoder_linears_is_atomic(monkeypatch):
    import lessonlib.prune.movement_task as mt
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    bert = BertForSequenceClassification(BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2,
                                                    num_attention_heads=2, intermediate_size=32)).eval()
    before = snapshot(bert)
    n = sum(isinstance(m, nn.Linear) for m in bert.bert.encoder.modules())
    orig, seen = mt.MaskedLinear.__init__, [0]

    def failing(self, *a, **k):
        seen[0] += 1
        if seen[0] == n:
            raise Injected("last layer")
        orig(self, *a, **k)

    monkeypatch.setattr(mt.MaskedLinear, "__init__", failing)
    with pytest.raises(Injected):
        mt.mask_encoder_linears(bert, "movement")
    assert seen[0] == n
    assert_same(before, snapshot(bert))


def test_transaction_restores_in_place_writes_and_replacements():
    m = tiny_causal_lm()
    before = snapshot(m)
    with pytest.raises(Injected), transaction(m):
        lin = m.model.layers[0].mlp.up_proj
        protect(lin.weight)
        lin.weight.data.mul_(3)
        m.model.layers[1].mlp.down_proj = nn.Linear(128, 64)  # replacement
        m.model.layers[1].self_attn.q_proj.weight = m.model.layers[0].self_attn.q_proj.weight  # tying
        m.config.num_hidden_layers = 7
        m.model.layers[0].input_layernorm.weight.data = torch.zeros(64)  # re-pointed storage
        raise Injected
    assert_same(before, snapshot(m))


def test_transaction_keeps_success_and_nests():
    m = tiny_causal_lm()
    before = snapshot(m)
    with pytest.raises(Injected), transaction(m):
        with transaction(m):  # inner succeeds ...
            magnitude.magnitude_prune_model(m, 0.5)
        assert (m.model.layers[0].mlp.up_proj.weight == 0).float().mean() >= 0.5
        raise Injected  # ... the outer fails: both are undone
    assert_same(before, snapshot(m))
    with transaction(m):
        magnitude.magnitude_prune_model(m, 0.5)
    assert (m.model.layers[0].mlp.up_proj.weight == 0).float().mean() >= 0.5


def test_transaction_rejects_non_module():
    with pytest.raises(TypeError, match="nn.Module"):
        with transaction("model"):  # type: ignore[arg-type]
            pass
