"""fuse_projections: q/k/v and gate/up stacked into one packed layer give the separate layers' outputs;
decode_breakdown's rows add up to the step and name the linear layers."""
import copy
import time

import pytest
import torch
from torch import nn

from lessonlib.decode_profile import LINEAR_CATEGORIES, amdahl_limit, decode_breakdown
from lessonlib.models import tiny_causal_lm
from lessonlib.quant.affine import QuantScheme
from lessonlib.quant.fused import FusedSlice, fuse_projections, fuse_quant_linears
from lessonlib.quant.kernels import KernelLinear, to_kernels
from lessonlib.quant.qlinear import QuantLinear, quant_linears, quantize_

BF16_ULP = 2.0 ** -8


def _tiny(scheme=QuantScheme(4, 32, True)):
    m = tiny_causal_lm("llama", hidden=64, intermediate=128)
    quantize_(m, scheme)
    quantize_(m, QuantScheme(8, -1, True), filter_fn=lambda mod, n: n == "lm_head")
    return m.eval()


@pytest.mark.parametrize("scheme", [QuantScheme(4, 32, True), QuantScheme(4, 64, False), QuantScheme(8, -1, True)])
def test_stacked_layer_holds_exactly_the_rows(scheme):
    torch.manual_seed(0)
    qs = [QuantLinear.from_linear(nn.Linear(64, n), scheme) for n in (48, 16, 16)]
    f = fuse_quant_linears(qs)
    assert (f.in_features, f.out_features) == (64, 80)
    assert torch.equal(f.dequantize_weight(), torch.cat([q.dequantize_weight() for q in qs]))
    assert torch.equal(f.bias, torch.cat([q.bias for q in qs]))
    x = torch.randn(3, 64)
    want = torch.cat([q(x) for q in qs], -1)
    torch.testing.assert_close(f(x), want, rtol=1e-6, atol=1e-6)
    k, ks = KernelLinear(f), [KernelLinear(q) for q in qs]  # the packed kernels: one call = three calls
    ref = torch.cat([kk(x) for kk in ks], -1)
    assert float((k(x) - ref).abs().max() / ref.abs().max()) < 2 * BF16_ULP


def test_fused_model_matches_separate_model_on_float_path_and_on_kernels():
    ref = _tiny()
    fused = copy.deepcopy(ref)
    assert fuse_projections(fused) == 4  # 2 blocks x (q/k/v, gate/up)
    attn = fused.model.layers[0].self_attn
    assert isinstance(attn.q_proj, FusedSlice) and attn.qkv_proj.out_features == attn.q_proj.out_features + \
        attn.k_proj.out_features + attn.v_proj.out_features
    assert len(quant_linears(fused)) == 2 * 4 + 1  # qkv, o, gate_up, down per block, and the head
    x = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = ref(x).logits, fused(x).logits
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)  # the fake-quantized model, same rows stacked
    to_kernels(ref), to_kernels(fused)
    assert isinstance(fused.model.layers[0].self_attn.qkv_proj, KernelLinear)  # the slices follow the swap
    with torch.no_grad():
        a, b = ref(x).logits, fused(x).logits
    assert float((a - b).norm() / a.norm()) < 4 * BF16_ULP
    with torch.no_grad():  # greedy decoding with the KV cache: same tokens
        ga = ref.generate(x[:1, :4], max_new_tokens=8, do_sample=False)
        gb = fused.generate(x[:1, :4], max_new_tokens=8, do_sample=False)
    assert torch.equal(ga, gb)


def test_slices_recompute_for_a_new_or_changed_input():
    m = _tiny()
    fuse_projections(m)
    attn = m.model.layers[0].self_attn
    calls = []
    attn.qkv_proj.register_forward_hook(lambda mod, i, o: calls.append(1))
    x, y = torch.randn(1, 2, 64), torch.randn(1, 2, 64)
    w = attn.qkv_proj.dequantize_weight()  # (q+k+v out, 64)
    q0 = attn.q_proj(x)
    k1 = attn.k_proj(y)  # another input: computed for y, not taken from x's output
    torch.testing.assert_close(k1, y @ w[attn.k_proj.start:attn.k_proj.stop].T, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(q0, x @ w[:attn.q_proj.stop].T, rtol=1e-5, atol=1e-5)
    assert len(calls) == 2
    q, k, v = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)  # one stacked call for the three
    assert len(calls) == 3 and q.shape[-1] + k.shape[-1] + v.shape[-1] == w.shape[0]
    x.mul_(2.0)  # changed in place: not reused
    torch.testing.assert_close(attn.q_proj(x), x @ w[:attn.q_proj.stop].T, rtol=1e-5, atol=1e-5)
    assert len(calls) == 4


def test_unstackable_siblings_raise_and_leave_the_model_unchanged():
    m = tiny_causal_lm("llama", hidden=64, intermediate=128)
    quantize_(m, QuantScheme(8, -1, True), filter_fn=lambda mod, n: n.endswith("v_proj"))
    quantize_(m, QuantScheme(4, 32, True))  # the rest (v_proj is no longer an nn.Linear)
    before = {n: type(x).__name__ for n, x in m.named_modules()}
    with pytest.raises(ValueError, match="scheme"):
        fuse_projections(m)
    assert before == {n: type(x).__name__ for n, x in m.named_modules()}
    with pytest.raises(ValueError, match="per-tensor"):
        fuse_quant_linears([QuantLinear.from_linear(nn.Linear(32, 16), QuantScheme(8, 0, True))] * 2)
    with pytest.raises(TypeError):
        fuse_quant_linears([nn.Linear(4, 4), nn.Linear(4, 4)])


@pytest.mark.parametrize("fused", [False, True])
def test_decode_breakdown_rows_add_up_to_the_step(fused):
    m = _tiny()
    if fused:
        fuse_projections(m)
    to_kernels(m)
    r = decode_breakdown(m, torch.tensor([[1, 2, 3]]), steps=3, clock=time.thread_time)
    rows = r["rows"]
    assert sum(rows.values()) == pytest.approx(r["step_s"], rel=1e-6)
    assert all(t >= 0 for c, t in rows.items() if c in LINEAR_CATEGORIES)
    want = {"linear qkv (fused)", "linear gate+up (fused)"} if fused else {"linear q", "linear gate", "linear up"}
    assert want | {"linear o", "linear down", "linear lm_head", "norms"} <= set(rows)
    assert r["step_nohook_s"] > 0
    with pytest.raises(ValueError, match="prompt"):
        decode_breakdown(m, torch.tensor([1, 2]), steps=1)


def test_amdahl_limit_literal():
    assert amdahl_limit(10.0, 6.0) == pytest.approx(2.5)
    assert amdahl_limit(10.0, 0.0) == 1.0
    with pytest.raises(ValueError, match="linear_s"):
        amdahl_limit(1.0, 1.0)
