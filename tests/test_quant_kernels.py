"""KernelLinear: torch's CPU int8/int4 packed kernels compute the course's dequantized weight.

The kernels take bf16 activations and bf16 scales and return bf16; the tests therefore compare with the
float reference evaluated on the same bf16-rounded inputs and allow one bf16 rounding of the output."""
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from lessonlib.models import tiny_causal_lm
from lessonlib.quant.affine import QuantScheme, dequantize
from lessonlib.quant.kernels import KernelLinear, kernel_supported, to_kernels
from lessonlib.quant.qlinear import QuantLinear, quant_linears, quantize_

BF16_ULP = 2.0 ** -8  # relative spacing of bf16 numbers


def test_int4_kernel_semantics_on_a_literal_layer():
    # 16 outputs x 32 inputs, one group; symmetric codes -8..7 with scale 0.5 (exact in bf16): w = c * 0.5
    codes = (torch.arange(16 * 32).reshape(16, 32) % 16) - 8  # (16, 32) int, every code -8..7
    lin = nn.Linear(32, 16, bias=False)
    lin.weight.data = codes.float() * 0.5
    sch = QuantScheme(4, 32, True)
    q = QuantLinear.from_linear(lin, sch, codes=codes, scales=torch.full((16, 1), 0.5))
    k = KernelLinear(q)
    assert torch.equal(k.dequantize_weight(), lin.weight.data)  # the kernel means (q - 8) s with q = c + 8
    x = torch.zeros(1, 32)
    x[0, 3] = 1.0  # picks column 3
    assert torch.equal(k(x)[0], lin.weight.data[:, 3])
    # asymmetric: (q - z) s = (q - 8) s + (8 - z) s with z = 2.5, s = 0.25: column of codes 0..15
    lin2 = nn.Linear(32, 16, bias=True)
    c2 = torch.arange(16).unsqueeze(1).expand(16, 32)
    lin2.weight.data = (c2.float() - 2.5) * 0.25
    q2 = QuantLinear.from_linear(lin2, QuantScheme(4, 32, False), codes=c2, scales=torch.full((16, 1), 0.25),
                                 zeros=torch.full((16, 1), 2.5))
    y = KernelLinear(q2)(torch.ones(1, 32))  # row sum 32 (c - 2.5) / 4 = 8 c - 20, + bias
    want = 8 * torch.arange(16.0) - 20 + lin2.bias.data.bfloat16().float()
    torch.testing.assert_close(y[0], want, atol=0.0, rtol=BF16_ULP)


@pytest.mark.parametrize("scheme", [QuantScheme(8, -1, True), QuantScheme(8, -1, False), QuantScheme(8, 0, True),
                                    QuantScheme(4, 32, True), QuantScheme(4, 64, False), QuantScheme(4, -1, False),
                                    QuantScheme(4, 128, True, restricted=True)])
def test_kernel_matches_float_reference(scheme):
    torch.manual_seed(0)
    lin = nn.Linear(256, 48)
    q = QuantLinear.from_linear(lin, scheme, scale_dtype=torch.bfloat16)  # bf16 scales: the kernel's own
    k = KernelLinear(q)
    w_ref = dequantize(q.codes(), q.scales.float(), None if q.zeros is None else q.zeros.float())  # (48, 256)
    if scheme.sym:  # zero 0, bf16 scales: the kernel's weight is the reference weight exactly
        assert torch.equal(k.dequantize_weight(), w_ref)
    else:  # the additive zero (8 - z) s or (128 - z) s is rounded to bf16 once
        zmax = 2 ** (scheme.bits - 1) * float(q.scales.float().max())  # |(8 - z) s| <= 8 s (int8: 128 s)
        torch.testing.assert_close(k.dequantize_weight(), w_ref, atol=zmax * BF16_ULP, rtol=0)
    x = torch.randn(2, 3, 256)
    xb = x.bfloat16().float()  # the activations the kernel sees
    ref = F.linear(xb, k.dequantize_weight(), lin.bias.data.bfloat16().float())
    y = k(x)
    assert y.shape == (2, 3, 48) and y.dtype == torch.float32
    # fp32 accumulation, then a bf16 output (and, asymmetric int8, a bf16 correction term): a few ulps
    scale = ref.abs().amax(-1, keepdim=True)
    assert float(((y - ref).abs() / scale).max()) < 4 * BF16_ULP


def test_unsupported_layers_are_named_and_the_model_is_left_unchanged():
    m = tiny_causal_lm("llama", hidden=64, intermediate=96)  # down_proj has 96 inputs: not a multiple of 64
    quantize_(m, QuantScheme(4, 32))
    quantize_(m, QuantScheme(3, 32), filter_fn=lambda mod, n: n == "lm_head")
    assert "3-bit" in kernel_supported(quant_linears(m)["lm_head"])
    before = {n: type(x).__name__ for n, x in m.named_modules()}
    with pytest.raises(ValueError, match="lm_head"):
        to_kernels(m)
    assert before == {n: type(x).__name__ for n, x in m.named_modules()}
    n = len(quant_linears(m))
    assert to_kernels(m, strict=False) == n - 1
    assert isinstance(m.lm_head, QuantLinear)  # kept on the float path
    with pytest.raises(ValueError, match="group"):
        KernelLinear(QuantLinear.from_linear(nn.Linear(48, 16), QuantScheme(4, 16)))


def test_packed_tiny_model_matches_fake_quant_model_up_to_bf16():
    ref = tiny_causal_lm("llama", hidden=64, intermediate=128)
    quantize_(ref, QuantScheme(4, 32, True), )
    quantize_(ref, QuantScheme(8, -1, True), filter_fn=lambda mod, n: n == "lm_head")
    import copy
    packed = copy.deepcopy(ref)
    assert to_kernels(packed) == 15  # 2 blocks x 7 linears + the LM head
    x = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = ref(x).logits, packed(x).logits
    rel = float((a - b).norm() / a.norm())
    assert 0 < rel < 2e-2  # bf16 activations at each linear input: small but not zero
    assert float((a.argmax(-1) == b.argmax(-1)).float().mean()) > 0.9
