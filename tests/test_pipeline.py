"""The compression pipeline: recipe validation, stage order, honest byte accounting, joint vs sequential."""
from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from lessonlib.evaluate import model_bytes
from lessonlib.models import decoder_blocks, get_weight, tiny_causal_lm
from lessonlib.pipeline import (STAGES, best_under_budget, compress, load_recipe, pack_quantized, quant_layer_bytes,
                                recipe_bytes_estimate, sparse_bytes, storage_report, validate_recipe)
from lessonlib.pipeline.size import FORMAT_ATTR, SPARSE_ATTR, WeightFormat
from lessonlib.pipeline.stages import block_linear_modules
from lessonlib.quant.affine import column_group_quantizer
from lessonlib.quant import QuantScheme


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (8, 64), generator=g), torch.randint(0, 256, (1024,), generator=g)


def tiny():
    return tiny_causal_lm(layers=4, hidden=64, heads=4, kv_heads=2, intermediate=128, vocab=256)


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize("stages, words", [
    ([{"stage": "squeeze"}], ["unknown stage 'squeeze'", "quantize"]),
    ([{"stage": "quantize", "method": "hqq"}], ["unknown method 'hqq'", "gptq"]),
    ([{"stage": "quantize", "method": "rtn", "bitz": 4}], ["unknown parameter", "bitz", "group_size"]),
    ([{"stage": "quantize", "method": "rtn", "bits": 9}], ["bits=9", "2..8"]),
    ([{"stage": "prune", "method": "wanda", "sparsity": 1.0}], ["sparsity=1.0", "[0.0, 1.0)"]),
    ([{"stage": "prune", "method": "magnitude", "nm": "4:2"}], ["nm='4:2'", "N:M"]),
    ([{"stage": "quantize", "method": "rtn"}, {"stage": "prune", "method": "ffn"}], ["changes the architecture",
                                                                                    "stage 1", "stage 0"]),
    ([{"stage": "quantize", "method": "rtn"}, {"stage": "quantize", "method": "gptq"}],
     ["already got a number format"]),
    ([{"stage": "prune", "method": "magnitude"}, {"stage": "entropy-code", "method": "huffman"}],
     ["needs integer codes"]),
    ([{"stage": "quantize", "method": "rtn"}, {"stage": "entropy-code", "method": "rans"},
      {"stage": "prune", "method": "magnitude"}], ["must be the last stage"]),
    ([{"stage": "distill", "every": 2, "n_blocks": 3}], ["every= or n_blocks="]),
    ([], ["non-empty list"]),
])
def test_validation_errors_name_the_value_and_what_is_allowed(stages, words):
    with pytest.raises(ValueError) as e:
        validate_recipe({"name": "bad", "stages": stages})
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_validation_fills_defaults_and_rejects_unknown_keys():
    r = validate_recipe([{"stage": "quantize", "method": "gptq", "bits": 3}])
    assert r.stages[0].params == {"bits": 3, "group_size": 64, "sym": False, "embeddings": False, "act_order": False}
    with pytest.raises(ValueError, match="scenario='desktop'"):
        validate_recipe({"stages": [{"stage": "quantize", "method": "rtn"}], "scenario": "desktop"})
    with pytest.raises(ValueError, match="unknown recipe key"):
        validate_recipe({"stages": [{"stage": "quantize", "method": "rtn"}], "steps": []})


@pytest.mark.parametrize("name", ["cloud", "edge", "realtime", "mobile"])
def test_shipped_yaml_recipes_load_and_validate(name):
    r = load_recipe(name)
    assert r.name == name and r.scenario == name and r.stages
    assert any(s.stage == "quantize" and s.params["bits"] == 4 for s in r.stages)  # INT4 in every scenario


def test_recipes_round_trip_through_as_dict():
    for name in ("cloud", "edge", "realtime", "mobile"):
        r = load_recipe(name)
        assert validate_recipe(r.as_dict()) == r
    assert all("method" not in spec and "stage" not in spec
               for methods in STAGES.values() for spec in methods.values())


def test_yaml_file_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nstages:\n  - {stage: quantize, method: rtn, bits: 1}\n")
    with pytest.raises(ValueError) as e:
        load_recipe(str(path))
    assert str(path) in str(e.value) and "bits=1" in str(e.value)
    with pytest.raises(ValueError, match="neither a file nor a shipped recipe"):
        load_recipe("no_such_recipe")


# ----------------------------------------------------------------------------- size accounting
def test_quant_layer_bytes_hand_computed():
    # (4, 128) at asym 4-bit g64, fp16 scales: codes 4 rows x 128*4/8 = 256 B; scales + zeros 2 x (4 x 2) x 2 B = 32 B
    assert quant_layer_bytes(4, 128, QuantScheme(4, 64)) == {"codes": 256, "side": 32, "total": 288}
    # symmetric, per channel, fp32, with bias: codes 3 x ceil(10*3/8)=3 x 4 = 12; scales 3 x 4 = 12; bias 3 x 4 = 12
    assert quant_layer_bytes(3, 10, QuantScheme(3, -1, True), bias=True, scale_bytes=4)["total"] == 36


def test_sparse_bytes_picks_the_cheaper_layout():
    # (4, 128), 256 nonzeros at 4 bits: bitmask 512/8 = 64 + 128 values -> 192; CSR 256*2 + 5*4 + 128 = 660
    assert sparse_bytes(4, 128, 256, 4) == (192, "bitmask")
    # (100, 100), 10 nonzeros at fp16: bitmask 1250 + 20 = 1270; CSR 10*2 + 101*4 + 20 = 444
    assert sparse_bytes(100, 100, 10, 16) == (444, "csr")
    with pytest.raises(ValueError, match="nnz=11"):
        sparse_bytes(2, 5, 11, 4)


def test_storage_report_of_a_literal_sparse_quantized_layer():
    lin = nn.Linear(128, 4)
    with torch.no_grad():
        lin.weight.copy_(torch.arange(512.0).reshape(4, 128) % 2)  # half the entries exactly zero
    setattr(lin, FORMAT_ATTR, WeightFormat("quant", QuantScheme(4, 64)))
    assert storage_report(lin, 2).total == 288 + 4 * 2  # dense packed INT4 + fp16 bias
    setattr(lin, SPARSE_ATTR, True)
    # bitmask 64 + 256 values at 4 bits 128 + scales/zeros 32 + bias 8
    rep = storage_report(lin, 2)
    assert rep.total == 64 + 128 + 32 + 8 and rep.by_format == {"quant+bitmask": 232}


def test_storage_report_agrees_with_model_bytes_dense_and_packed(data):
    calib, toks = data
    m = tiny()
    assert storage_report(m, 4).total == model_bytes(m)  # fp32, tied embeddings counted once
    out, rep = compress(m, [{"stage": "quantize", "method": "rtn", "bits": 4, "group_size": 32}], calib=calib,
                        evaluate=False)
    predicted = storage_report(out, 4).total
    x = toks[:32].unsqueeze(0)
    before = out(x).logits
    assert pack_quantized(out, scale_dtype=torch.float32) == len(block_linear_modules(m))
    assert model_bytes(out) == predicted  # the accounting is what the packed buffers really hold
    torch.testing.assert_close(out(x).logits, before, rtol=1e-4, atol=1e-4)  # on-grid weights re-pack exactly


# ----------------------------------------------------------------------------- stages
def test_stages_run_in_order_and_do_their_job(data):
    calib, toks = data
    m = tiny()
    recipe = [{"stage": "distill", "method": "layers", "every": 2, "steps": 1},
              {"stage": "prune", "method": "ffn", "fraction": 0.2, "multiple_of": 32},
              {"stage": "prune", "method": "wanda", "sparsity": 0.5},
              {"stage": "quantize", "method": "gptq", "bits": 4, "group_size": 32},
              {"stage": "entropy-code", "method": "huffman"}]
    out, rep = compress(m, recipe, calib=calib, tokens=toks, profile="ci")
    assert [r.label for r in rep.rows] == ["dense", "distill/layers", "prune/ffn", "prune/wanda", "quantize/gptq",
                                           "entropy-code/huffman"]
    assert len(decoder_blocks(m)) == 4 and len(decoder_blocks(out)) == 2  # the input model is untouched
    assert out.model.layers[0].mlp.up_proj.out_features == 96  # 128 * 0.8 = 102.4 -> down to a multiple of 32
    sizes = [r.bytes for r in rep.rows]
    assert sizes[1] < sizes[0] and sizes[2] < sizes[1] and sizes[4] < sizes[3]
    for lin in block_linear_modules(out).values():
        w = get_weight(lin)
        assert abs(float((w == 0).float().mean()) - 0.5) < 0.02  # GPTQ did not refill the pruned weights
        for g in w.reshape(w.shape[0], -1, 32).unbind(1):  # each group: zero + at most 16 grid values per row
            assert all(row[row != 0].unique().numel() <= 16 for row in g)
    assert rep.final.info["max_rel_recode_error"] < 1e-6  # the stream decodes to the weights evaluated
    assert all(r.ppl > 1 and 0 <= r.accuracy <= 1 and r.latency_ms > 0 for r in rep.rows)


def test_prune_after_quantize_keeps_the_grid(data):
    calib, _ = data
    out, _ = compress(tiny(), [{"stage": "quantize", "method": "rtn", "bits": 2, "group_size": 32},
                               {"stage": "prune", "method": "sparsegpt", "sparsity": 0.5}], calib=calib, evaluate=False)
    for lin in block_linear_modules(out).values():
        w = get_weight(lin)
        assert float((w == 0).float().mean()) == pytest.approx(0.5, abs=0.02)
        assert all(row[row != 0].unique().numel() <= 4 for g in w.reshape(w.shape[0], -1, 32).unbind(1) for row in g)


def test_column_group_quantizer_literal():
    w = torch.tensor([[0.0, 1.0, 2.0, 3.0, 0.0, 0.5, 1.0, 1.5]])  # 2-bit groups of 4: scales 1.0 and 0.5, zero 0
    q = column_group_quantizer(w, QuantScheme(2, 4))
    got = [float(q(torch.tensor([v]))) for v in (1.4, 2.6, 3.9, 0.0, 0.2, 0.3, 1.6, 1.2)]
    assert got == [1.0, 3.0, 3.0, 0.0, 0.0, 0.5, 1.5, 1.0]  # col 2 clamps to the top code 3 x 1.0
    with pytest.raises(RuntimeError, match="called 9 times"):
        q(torch.tensor([0.0]))


def test_joint_and_sequential_have_the_same_budget(data):
    calib, toks = data
    q = {"bits": 4, "group_size": 32}
    joint, rj = compress(tiny(), [{"stage": "joint", "method": "sparsegpt_quant", "sparsity": 0.5, **q}],
                         calib=calib, evaluate=False)
    seq, rs = compress(tiny(), [{"stage": "prune", "method": "sparsegpt", "sparsity": 0.5},
                                {"stage": "quantize", "method": "gptq", **q}], calib=calib, evaluate=False)
    assert rj.final.bytes == rs.final.bytes and rj.final.by_format == rs.final.by_format
    for lin in block_linear_modules(joint).values():  # nonzeros on the stored joint grid, exactly half zero
        fmt = getattr(lin, FORMAT_ATTR)
        assert fmt.qparams is not None and getattr(lin, SPARSE_ATTR)
        assert float((get_weight(lin) == 0).float().mean()) == pytest.approx(0.5, abs=0.02)


def test_stage_errors_say_which_stage(data):
    calib, _ = data
    with pytest.raises(ValueError, match=r"stage 0 \(prune/depth\).*removes 0 of 4 blocks"):
        compress(tiny(), [{"stage": "prune", "method": "depth", "fraction": 0.1}], calib=calib, evaluate=False)
    with pytest.raises(ValueError, match="needs a tokenizer or a held-out tokens"):
        compress(tiny(), [{"stage": "quantize", "method": "rtn"}], calib=calib)


# ----------------------------------------------------------------------------- budgets
def test_best_under_budget_and_estimate():
    rows = [("a", 100, 20.0), ("b", 50, 25.0), ("c", 40, 25.0), ("d", 200, 10.0)]
    assert best_under_budget(rows, 100) == "a"
    assert best_under_budget(rows, 60) == "c"  # tie on PPL -> the smaller one
    with pytest.raises(ValueError, match="smallest is 'c' with 40 bytes"):
        best_under_budget(rows, 39)
    with pytest.raises(ValueError, match="ppl=0.5"):
        best_under_budget([("x", 10, 0.5)], 100)
    # 1000 weights at asym 4-bit g64 fp16: 0.5 + 2*2/64 = 0.5625 B each -> 562.5; 10 float params -> 20
    assert recipe_bytes_estimate(1000, 10, bits=4, group_size=64) == pytest.approx(582.5)
    # + 20% sparsity: 1/8 + 0.8*0.5 + 0.0625 = 0.5875 B each -> 587.5 (positions cost more than they save)
    assert recipe_bytes_estimate(1000, 0, bits=4, group_size=64, sparsity=0.2) == pytest.approx(587.5)
    assert recipe_bytes_estimate(1000, 0, sparsity=0.5) == pytest.approx(1125.0)  # fp16 bitmask: 1/8 + 0.5*2


def test_recipes_folder_is_shipped():
    from lessonlib.pipeline.recipe import recipes_dir
    assert sorted(f for f in os.listdir(recipes_dir()) if f.endswith(".yaml")) == [
        "cloud.yaml", "edge.yaml", "mobile.yaml", "realtime.yaml"]


def test_packed_pipeline_model_runs_on_the_int4_kernels(data):
    """C32's speed path: a GPTQ INT4 model packed by pack_quantized, then moved onto torch's INT4 CPU kernel,
    gives the packed model's logits up to the kernels' bf16 rounding."""
    from lessonlib.quant.kernels import KernelLinear, to_kernels

    calib, toks = data
    m = tiny()
    out, _ = compress(m, [{"stage": "quantize", "method": "gptq", "bits": 4, "group_size": 32}], calib=calib,
                      evaluate=False)
    pack_quantized(out)
    x = toks[:32].unsqueeze(0)
    ref = out(x).logits
    n = to_kernels(out, strict=False)
    assert n == len(block_linear_modules(m)) == sum(isinstance(k, KernelLinear) for k in out.modules())
    got = out(x).logits
    assert (got - ref).abs().max() < 0.05 * ref.abs().max()  # bf16 activations and scales: ~2^-8 relative per layer
