"""SmoothQuant's deployable form: the fold is exact, shares one s per norm-fed group, and divides nothing at
run time (lessonlib.quant.smooth_fold)."""
from __future__ import annotations

import copy

import pytest
import torch

from lessonlib.models import block_linears, decoder_blocks, get_weight, tiny_causal_lm
from lessonlib.quant.smooth_fold import apply_w8a8_folded, fold_smoothing
from lessonlib.quant.smoothquant import W8A8Linear
from lessonlib.quant.w8a8 import apply_w8a8, calibrate_activations


def _model(kv_heads=None):
    m = tiny_causal_lm("llama", seed=0, hidden=64, layers=2, heads=4, kv_heads=kv_heads, intermediate=96)
    g = torch.Generator().manual_seed(1)
    for b in decoder_blocks(m):   # give the norms non-trivial weights and the inputs a few outlier channels
        for norm in (b.input_layernorm, b.post_attention_layernorm):
            norm.weight.data = 0.5 + torch.rand(64, generator=g)
            norm.weight.data[[3, 17]] *= 20.0
    return m


def _ids():
    return torch.randint(0, 256, (3, 24), generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("kv_heads", [None, 2])
def test_fold_is_exact_and_divides_inputs_by_s(kv_heads):
    m = _model(kv_heads)
    ids = _ids()
    ranges = calibrate_activations(m, ids)
    ref = m(ids).logits
    f = copy.deepcopy(m)
    rep = fold_smoothing(f, ranges, alpha=0.5)
    assert torch.allclose(f(ids).logits, ref, rtol=1e-4, atol=1e-4)          # the function is unchanged
    assert rep.unsmoothed == [] and len(rep.input_scale) == 14                # every linear has an exact fold
    after = calibrate_activations(f, ids)
    for name, s in rep.input_scale.items():                                   # each input really is X / s
        assert torch.allclose(after[name], ranges[name] / s, rtol=1e-3, atol=1e-5), name
        assert not torch.allclose(s, torch.ones_like(s))
    b = "model.layers.0"
    qkv = [rep.input_scale[f"{b}.self_attn.{p}_proj"] for p in "qkv"]
    assert all(torch.equal(qkv[0], x) for x in qkv[1:])                       # q/k/v share one s
    assert torch.equal(rep.input_scale[f"{b}.mlp.gate_proj"], rep.input_scale[f"{b}.mlp.up_proj"])
    if kv_heads:                                                              # o_proj: shared across a KV group
        s_o = rep.input_scale[f"{b}.self_attn.o_proj"].reshape(kv_heads, 4 // kv_heads, 16)
        assert torch.equal(s_o[:, 0], s_o[:, 1])


def test_wrong_fold_would_break_exactness():
    """The check above can fail: an o_proj scaled without the matching v_proj rows changes the output."""
    m = _model(2)
    ids = _ids()
    ref = m(ids).logits
    o = block_linears(decoder_blocks(m)[0])["self_attn.o_proj"]
    o.weight.data *= torch.linspace(0.5, 2.0, o.weight.shape[1])
    assert not torch.allclose(m(ids).logits, ref, rtol=1e-4, atol=1e-4)


def test_folded_w8a8_has_no_runtime_division_and_beats_unsmoothed():
    m = _model()
    ids = _ids()
    ranges = calibrate_activations(m, ids)
    ref = m(ids).logits
    plain, folded, textbook = copy.deepcopy(m), copy.deepcopy(m), copy.deepcopy(m)
    apply_w8a8_folded(plain, ranges, alpha=None)
    rep = apply_w8a8_folded(folded, ranges, alpha=0.5)
    apply_w8a8(textbook, ranges, alpha=0.5)
    lins = [x for x in folded.modules() if isinstance(x, W8A8Linear)]
    assert len(lins) == 14 and all(x.inv_smooth is None for x in lins)       # nothing divides X at run time
    assert all(x.inv_smooth is not None for x in textbook.modules() if isinstance(x, W8A8Linear))
    err = {k: float((mm(ids).logits - ref).detach().norm() / ref.norm()) for k, mm in
           (("plain", plain), ("folded", folded))}
    assert err["folded"] < err["plain"], err                                  # the outlier channels are tamed
    assert rep.groups and not rep.unsmoothed


def test_gpt2_has_no_exact_fold_and_stays_unsmoothed():
    m = tiny_causal_lm("gpt2", seed=0, hidden=32, layers=1, heads=2, intermediate=64)
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(0))
    ranges = calibrate_activations(m, ids)
    rep = fold_smoothing(m, ranges, alpha=0.5)
    assert rep.input_scale == {} and len(rep.unsmoothed) == len(block_linears(decoder_blocks(m)[0]))


def test_bad_alpha():
    m = _model()
    with pytest.raises(ValueError, match="alpha=1.5"):
        fold_smoothing(m, {}, alpha=1.5)
