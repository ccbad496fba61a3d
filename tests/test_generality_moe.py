"""MoE experts stored as 3-D tensors are compressed, each on the tokens routed to it (issue 22, item 2)."""
from __future__ import annotations

import torch

from lessonlib.experts import expert_modules, unrolled_experts
from lessonlib.layout import untouched_share
from lessonlib.models import decoder_blocks, tiny_causal_lm
from lessonlib.quant import QuantScheme
from lessonlib.quant.rtn import rtn_quantize_model


def test_unrolled_experts_compute_the_same_and_see_only_their_routed_tokens():
    m = tiny_causal_lm("mixtral")
    moe = decoder_blocks(m)[0].mlp
    x = torch.randn(1, 12, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = moe(x)
        _logits, _scores, idx = moe.gate(x.reshape(-1, 64))  # (tokens, top_k) expert ids
    seen: dict[int, torch.Tensor] = {}
    with unrolled_experts(decoder_blocks(m)[0]) as mods:
        (experts,) = mods.values()
        lins = experts.lessonlib_experts
        hooks = [lins[2 * e].register_forward_pre_hook(lambda _m, a, e=e: seen.__setitem__(e, a[0].clone()))
                 for e in range(4)]
        with torch.no_grad():
            out = moe(x)
        for h in hooks:
            h.remove()
        assert lins[0].weight.data_ptr() == experts.gate_up_proj.data[0].data_ptr()  # a view, not a copy
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    flat = x.reshape(-1, 64)
    for e in range(4):
        routed = (idx == e).any(-1)  # (tokens,)
        if routed.any():
            torch.testing.assert_close(seen[e], flat[routed])
    assert "lessonlib_experts" not in dict(experts.named_children())  # the structure is restored
    assert set(m.state_dict()) == set(tiny_causal_lm("mixtral").state_dict())


def test_rtn_quantizes_every_expert_tensor():
    m = tiny_causal_lm("qwen2_moe")
    assert untouched_share(m) == 0.0  # the experts are reachable, none is left out
    (experts,) = expert_modules(decoder_blocks(m)[0]).values()
    before = experts.down_proj.data.clone()
    rtn_quantize_model(m, QuantScheme(4, 32))
    after = experts.down_proj.data  # (E, C, I): each expert's rows hold at most 16 levels per group of 32
    assert not torch.equal(after, before)
    groups = after.reshape(-1, 32)
    assert max(int(g.unique().numel()) for g in groups) <= 16


def test_quantize_refuses_a_model_whose_experts_it_cannot_replace():
    import pytest

    from lessonlib.models import UnsupportedError
    from lessonlib.quant import quantize_
    m = tiny_causal_lm("mixtral")
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(UnsupportedError, match="quantize_"):
        quantize_(m, QuantScheme(4, 32))
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())  # nothing quantized silently
