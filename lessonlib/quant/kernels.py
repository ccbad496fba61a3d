"""Weight-only INT8 / INT4 linear layers on torch's own CPU low-bit matmul kernels.

``QuantLinear`` (``qlinear.py``) is the reference: it stores packed codes and rebuilds the float weight
on every call, so it is small but slow.  ``KernelLinear`` hands the codes to the kernels that PyTorch
ships for CPU and that read the low-bit weight directly (the deployment path of GPTQ, Frantar et al.
2022, arXiv:2210.17323, section 5, and of AWQ, Lin et al. 2023, arXiv:2306.00978, section 4):

* ``torch.ops.aten._weight_int8pack_mm(x, w_int8, s)``: ``y = x (w s)^T`` with int8 codes (out, in) and
  one scale per output row; ``x`` and ``s`` share one dtype (bf16 is the fast one).
* ``torch.ops.aten._weight_int4pack_mm_for_cpu(x, w_packed, g, sz)`` on weights packed by
  ``_convert_weight_to_int4pack_for_cpu(codes, 1)`` (unsigned codes 0..15, (out, in) -> uint8
  (out, in/2)); ``sz`` (in/g, out, 2) holds a scale and an additive zero per group of ``g`` in {32, 64,
  128} columns, and the weight it means is ``w = (q - 8) * s + zero`` (checked on literal layers in
  ``tests/test_quant_kernels.py``).  Needs ``out`` divisible by 16.

Mapping the course's grids onto them (exact in real arithmetic):

* INT8, per-channel (or per-tensor): symmetric codes c are the int8 weight; asymmetric codes q in 0..255
  become c = q - 128 and ``(q - z) s = c s + (128 - z) s``, so ``y = kernel(x) + sum(x) (128 - z) s``.
* INT4 (any grouping whose groups are a multiple of 32 columns): symmetric c in -8..7 is q = c + 8 with
  zero 0; asymmetric ``(q - z) s = (q - 8) s + (8 - z) s``, so zero = (8 - z) s.  A per-channel or coarser
  group is written as groups of 128/64/32 columns that repeat the same scale.

Why the results are not bit-identical to the float reference (and only for these reasons): the kernels
take bf16 activations (with fp32 activations they are several times slower than fp32 ``F.linear``, so
bf16 is the choice that makes them worth it), the scales and zeros are rounded to bf16, and the output is
returned in bf16; the products are accumulated in fp32.  Each of the three is a relative rounding of at
most 2^-9 per element.
"""
from __future__ import annotations

import torch
from torch import nn

from ..models import replace_submodule
from .qlinear import QuantLinear, quant_linears

__all__ = ["KernelLinear", "kernel_supported", "to_kernels", "INT4_KERNEL_GROUPS"]

INT4_KERNEL_GROUPS = (128, 64, 32)


def _int4_group(in_features: int, group_size: int) -> int | None:
    """The kernel group (128, 64 or 32) that tiles the scheme's groups exactly, or None."""
    g = in_features if group_size <= 0 else group_size
    return next((k for k in INT4_KERNEL_GROUPS if g % k == 0 and in_features % k == 0), None)


def kernel_supported(q: QuantLinear) -> str | None:
    """Why ``q`` cannot run on a CPU low-bit kernel (a sentence), or None when it can."""
    s = q.scheme
    if q.g_idx is not None:
        return "act-order groups (g_idx) are not contiguous"
    if s.bits == 8:
        return None if s.group_size <= 0 else f"the int8 kernel has one scale per row; got group_size={s.group_size}"
    if s.bits == 4:
        if q.out_features % 16:
            return f"the int4 kernel needs out_features divisible by 16, got {q.out_features}"
        if _int4_group(q.in_features, s.group_size) is None:
            return f"the int4 kernel needs groups that are multiples of 32 columns, got group_size={s.group_size}"
        return None
    return f"no CPU kernel for {s.bits}-bit codes (only 4 and 8)"


class KernelLinear(nn.Module):
    """y = x W_hat^T + b computed by torch's packed INT8 or INT4 CPU kernel (weights never dequantized).

    Built from a ``QuantLinear`` (``from_quant_linear``); ``dequantize_weight`` gives back the weight the
    kernel means, in float32, for checks.
    """

    def __init__(self, q: QuantLinear, act_dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        why = kernel_supported(q)
        if why is not None:
            raise ValueError(f"cannot run {q.scheme} ({q.out_features}x{q.in_features}) on a CPU kernel: {why}")
        if act_dtype not in (torch.bfloat16, torch.float32, torch.float16):
            raise ValueError(f"act_dtype={act_dtype} must be bfloat16, float16 or float32")
        self.in_features, self.out_features, self.scheme, self.act_dtype = (q.in_features, q.out_features,
                                                                             q.scheme, act_dtype)
        s = q.scheme
        codes = q.codes()  # (out, in) int32, signed for symmetric schemes
        K, N = q.in_features, q.out_features
        scales = q.scales.float().expand(N, -1)  # (out, G)
        zeros = None if q.zeros is None else q.zeros.float().expand(N, -1)
        self.register_buffer("bias", None if q.bias is None else q.bias.detach().to(act_dtype))
        if s.bits == 8:
            self.kind = "int8"
            c = codes if s.sym else codes - 128
            self.register_buffer("weight", c.to(torch.int8))  # (out, in)
            self.register_buffer("scales", scales[:, 0].to(act_dtype))  # (out,)
            shift = None if s.sym else ((128 - zeros[:, 0]) * scales[:, 0]).to(act_dtype)  # (out,)
            self.register_buffer("shift", shift)
            self.group = K
        else:
            self.kind = "int4"
            g = _int4_group(K, s.group_size)
            q4 = codes + 8 if s.sym else codes  # unsigned 0..15
            self.register_buffer("weight", torch.ops.aten._convert_weight_to_int4pack_for_cpu(
                q4.to(torch.int32).contiguous(), 1))  # (out, in/2) uint8, the kernel's layout
            per = K // scales.shape[1] // g  # kernel groups per scheme group
            sc = scales.repeat_interleave(per, dim=1)  # (out, K/g)
            zp = torch.zeros_like(sc) if zeros is None else ((8 - zeros) * scales).repeat_interleave(per, dim=1)
            self.register_buffer("scales", torch.stack([sc.t(), zp.t()], dim=-1).to(act_dtype).contiguous())
            self.register_buffer("shift", None)
            self.group = g

    @classmethod
    def from_quant_linear(cls, q: QuantLinear, act_dtype: torch.dtype = torch.bfloat16) -> "KernelLinear":
        return cls(q, act_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        a = x.reshape(-1, self.in_features).to(self.act_dtype)  # (T, in)
        if self.kind == "int8":
            y = torch.ops.aten._weight_int8pack_mm(a, self.weight, self.scales)  # (T, out)
            if self.shift is not None:
                y = y + a.float().sum(-1, keepdim=True).to(y.dtype) * self.shift
        else:
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(a, self.weight, self.group, self.scales)  # (T, out)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features).to(x.dtype)

    def dequantize_weight(self) -> torch.Tensor:
        """The float32 weight (out, in) the kernel computes with (bf16-rounded scales included)."""
        eye = torch.eye(self.in_features, dtype=self.act_dtype)  # (in, in): one unit input per column
        if self.kind == "int8":
            w = self.weight.float() * self.scales.float()[:, None]
            return w if self.shift is None else w + self.shift.float()[:, None]
        sc, zp = self.scales[..., 0].float().t(), self.scales[..., 1].float().t()  # (out, K/g)
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(eye, self.weight, self.group, self.scales)  # (in, out)
        q = torch.round((y.float().t() - zp.repeat_interleave(self.group, 1)) /
                        sc.repeat_interleave(self.group, 1)) + 8  # (out, in), the codes back
        return (q - 8) * sc.repeat_interleave(self.group, 1) + zp.repeat_interleave(self.group, 1)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.buffers())

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, kind={self.kind}, "
                f"scheme={self.scheme}, act_dtype={self.act_dtype}, bias={self.bias is not None}")


def to_kernels(model: nn.Module, act_dtype: torch.dtype = torch.bfloat16, strict: bool = True) -> int:
    """Swap every ``QuantLinear`` of ``model`` for a ``KernelLinear`` (in place); returns how many.

    All layers are converted first and swapped only when every one succeeded, so a failure leaves the
    model unchanged.  ``strict=False`` keeps layers without a kernel as ``QuantLinear`` instead of raising.
    """
    layers = quant_linears(model)
    if not layers:
        raise ValueError("model has no QuantLinear layer; run quantize_ first")
    new = {}
    for n, q in layers.items():
        why = kernel_supported(q)
        if why is not None:
            if strict:
                raise ValueError(f"layer {n!r} ({q.scheme}): {why}; pass strict=False to keep it as QuantLinear")
            continue
        new[n] = KernelLinear(q, act_dtype)
    for n, k in new.items():
        replace_submodule(model, n, k)
    return len(new)
