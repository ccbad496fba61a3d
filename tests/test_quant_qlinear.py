"""QuantLinear, quantize_, save/load and RTN at model level: exact outputs, real bytes, round trips."""
import copy
import os
import tempfile

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from lessonlib.evaluate import model_bytes
from lessonlib.models import block_linears, decoder_blocks, get_weight, tiny_causal_lm
from lessonlib.quant.affine import QuantScheme, fake_quant, quantize
from lessonlib.quant.qlinear import (QuantLinear, WeightOnlyConfig, load_quantized, quant_linears, quantize_,
                                     save_quantized)
from lessonlib.quant.rtn import rtn_quantize_model


@pytest.mark.parametrize("scheme", [QuantScheme(4, 64, False), QuantScheme(3, -1, True), QuantScheme(8, 0, False),
                                    QuantScheme(2, 32, True)])
def test_forward_equals_fake_quant_matmul(scheme):
    torch.manual_seed(0)
    lin = nn.Linear(128, 24)
    q = QuantLinear.from_linear(lin, scheme)
    x = torch.randn(3, 5, 128)
    ref = F.linear(x, fake_quant(lin.weight.data, scheme), lin.bias)
    assert torch.equal(q(x), ref)  # bit-identical: same dequantization, nothing cached
    assert torch.equal(q.codes(), quantize(lin.weight.data, scheme).codes)
    assert q.qweight.dtype == torch.uint8 and q.qweight.shape == (24, 128 * scheme.bits // 8)
    assert (q.zeros is None) == scheme.sym


def test_bytes_are_real():
    lin = nn.Linear(576, 1536, bias=False)
    q = QuantLinear.from_linear(lin, QuantScheme(4, 64, False), scale_dtype=torch.float16)
    assert q.nbytes() == 1536 * 576 // 2 + 2 * 1536 * 9 * 2  # packed nibbles + fp16 scales and zeros
    assert model_bytes(q) == q.nbytes()
    assert q.nbytes() < lin.weight.nbytes / 7  # 4.5 bits per weight vs 32
    assert not any(isinstance(t, nn.Parameter) for t in q.buffers())


def test_given_codes_and_validation():
    lin = nn.Linear(64, 8)
    sch = QuantScheme(4, 32, False)
    qw = quantize(lin.weight.data * 0.5, sch)
    q = QuantLinear.from_linear(lin, sch, codes=qw.codes, scales=qw.scales, zeros=qw.zeros)
    assert torch.equal(q.dequantize_weight(), qw.dequantize())
    with pytest.raises(ValueError, match="without scales"):
        QuantLinear.from_linear(lin, sch, codes=qw.codes)
    with pytest.raises(ValueError, match="shape"):
        QuantLinear.from_linear(lin, QuantScheme(4, 16, False), codes=qw.codes, scales=qw.scales, zeros=qw.zeros)
    with pytest.raises(TypeError):
        QuantLinear.from_linear(nn.Conv2d(1, 1, 1), sch)


def _tokens(seed=0):
    return torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_quantize_matches_fake_quant_model(family):
    sch = QuantScheme(4, 32, False)
    packed, fake = tiny_causal_lm(family), tiny_causal_lm(family)
    before = model_bytes(packed)
    quantize_(packed, sch)
    errs = rtn_quantize_model(fake, sch, pack=False)
    names = set(quant_linears(packed))
    assert names == set(errs) and "lm_head" not in names
    n_linear = sum(len(block_linears(b)) for b in decoder_blocks(fake))
    assert len(names) == n_linear  # every block linear (incl. GPT-2 Conv1D), nothing else
    assert all(0 < e < 0.2 for e in errs.values())
    x = _tokens()
    with torch.no_grad():
        torch.testing.assert_close(packed(x).logits, fake(x).logits, atol=1e-5, rtol=1e-5)
    assert model_bytes(packed) < before


def test_filter_and_errors():
    m = tiny_causal_lm("llama")
    quantize_(m, WeightOnlyConfig(QuantScheme(4, 64)), filter_fn=lambda mod, n: n.endswith("mlp.down_proj"))
    assert sorted(quant_linears(m)) == ["model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]
    with pytest.raises(ValueError, match="no linear"):
        quantize_(tiny_causal_lm("llama"), QuantScheme(4, 64), filter_fn=lambda mod, n: False)
    with pytest.raises(ValueError, match="not selected"):
        quantize_(tiny_causal_lm("llama"), QuantScheme(4, 64), qparams={"nope": None})
    with pytest.raises(ValueError, match="no QuantLinear"):
        save_quantized(tiny_causal_lm("llama"), os.path.join(tempfile.gettempdir(), "never.safetensors"))


@pytest.mark.parametrize("scale_dtype", [torch.float32, torch.float16])
def test_save_load_round_trip_bit_identical(tmp_path, scale_dtype):
    m = tiny_causal_lm("llama", seed=1)
    quantize_(m, WeightOnlyConfig(QuantScheme(3, 32, True), scale_dtype=scale_dtype))
    path = str(tmp_path / "q.safetensors")
    save_quantized(m, path)
    skeleton = tiny_causal_lm("llama", seed=7)  # different float weights: everything must come from the file
    loaded = load_quantized(path, skeleton)
    x = _tokens(1)
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, m(x).logits)
    for n, q in quant_linears(loaded).items():
        assert q.scales.dtype == scale_dtype and q.scheme == QuantScheme(3, 32, True)
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()  # tie kept
    with pytest.raises(ValueError, match="save_quantized"):
        from safetensors.torch import save_file
        save_file({"a": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
        load_quantized(str(tmp_path / "plain.safetensors"), tiny_causal_lm("llama"))


def test_rtn_model_fake_quant_weights_on_grid():
    m = tiny_causal_lm("opt")
    ref = copy.deepcopy(m)
    sch = QuantScheme(4, 64, True)
    rtn_quantize_model(m, sch)
    after, before = block_linears(decoder_blocks(m)[0]), block_linears(decoder_blocks(ref)[0])
    for n in after:
        assert torch.equal(get_weight(after[n]), fake_quant(get_weight(before[n]), sch)), n
