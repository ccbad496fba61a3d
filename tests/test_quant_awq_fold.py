"""AWQ with folded scales: folding is exact, the folded model packs into QuantLinear and round-trips."""
import pytest
import torch

from lessonlib.models import block_linears, decoder_blocks, get_weight, tiny_causal_lm
from lessonlib.quant.affine import QuantScheme
from lessonlib.quant.awq_fold import LLAMA_FOLDS, awq_fold_model, fold_scales


def _logits(m, x):
    with torch.no_grad():
        return m(x).logits


def test_fold_scales_by_hand():
    norm = torch.nn.Module()
    norm.weight = torch.nn.Parameter(torch.tensor([2.0, 3.0]))
    lin = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 1.0]]))
    fold_scales(norm, [lin], torch.tensor([2.0, 0.5]))
    assert torch.equal(norm.weight.data, torch.tensor([1.0, 6.0]))  # g / s
    assert torch.equal(lin.weight.data, torch.tensor([[2.0, 0.5]]))  # W s
    with pytest.raises(ValueError, match="positive"):
        fold_scales(norm, [lin], torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="do not fit"):
        fold_scales(norm, [lin], torch.ones(3))


def test_folding_random_scales_keeps_the_function():
    m = tiny_causal_lm("llama", seed=0)
    x = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    ref = _logits(m, x)
    g = torch.Generator().manual_seed(1)
    for block in decoder_blocks(m):
        for prev, names in LLAMA_FOLDS:
            lins = [block.get_submodule(n) for n in names]
            s = torch.rand(get_weight(lins[0]).shape[1], generator=g) * 4 + 0.25  # (C,) in [0.25, 4.25]
            fold_scales(block.get_submodule(prev), lins, s)
    torch.testing.assert_close(_logits(m, x), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kv_heads", [None, 2])
def test_awq_fold_model_packs_and_round_trips(tmp_path, kv_heads):
    from lessonlib.quant.qlinear import load_quantized, quant_linears, quantize_, save_quantized

    m = tiny_causal_lm("llama", seed=0, kv_heads=kv_heads)
    calib = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(2))
    x = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(3))
    norms0 = decoder_blocks(m)[0].input_layernorm.weight.detach().clone()
    scheme = QuantScheme(4, 32, False)
    res = awq_fold_model(m, calib, scheme, n_grid=10, device="cpu")
    blocks = decoder_blocks(m)
    assert set(res) == {f"model.layers.{i}.{n}" for i in range(len(blocks)) for n in block_linears(blocks[i])}
    assert not torch.equal(blocks[0].input_layernorm.weight, norms0)  # the scales went into the norm
    for i, b in enumerate(blocks):  # every layer holds exactly the grid values of its codes
        for n, lin in block_linears(b).items():
            assert torch.equal(res[f"model.layers.{i}.{n}"].dequantize(torch.float32), get_weight(lin))
    fake = _logits(m, x)
    quantize_(m, scheme, qparams=res)
    assert len(quant_linears(m)) == len(res)
    torch.testing.assert_close(_logits(m, x), fake, atol=1e-5, rtol=1e-5)
    path = str(tmp_path / "awq.safetensors")
    save_quantized(m, path)
    loaded = load_quantized(path, tiny_causal_lm("llama", seed=9, kv_heads=kv_heads))
    assert torch.equal(_logits(loaded, x), _logits(m, x))


def test_awq_fold_refuses_what_it_cannot_fold_exactly():
    m = tiny_causal_lm("mixtral", seed=0)  # the router reads the MLP norm's output too
    with pytest.raises(ValueError, match="awq_fold is not supported on MixtralForCausalLM"):
        awq_fold_model(m, torch.randint(0, 256, (2, 8)), QuantScheme(4, 32), device="cpu")
