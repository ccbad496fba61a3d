"""``QuantLinear``: a linear layer that really stores packed low-bit codes, and the model-level plumbing.

Weight-only quantization as deployed by GPTQ/AWQ kernels (Frantar et al. 2022, section 5 "Practical
speedups"; Lin et al. 2023, section 4): the layer holds packed integer codes plus per-group scales and
zeros as buffers and dequantizes on the fly in ``forward``; nothing dequantized is cached, so the bytes
saved are real.  ``quantize_`` follows torchao's ``quantize_(model, config, filter_fn)`` shape and swaps
linear layers in place; ``save_quantized`` / ``load_quantized`` write and read a safetensors file whose
reloaded model gives bit-identical outputs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from ..models import get_weight
from .affine import QuantScheme, dequantize, quantize
from .packing import pack_codes, packed_row_bytes, storage_bytes, unpack_codes

__all__ = ["QuantLinear", "WeightOnlyConfig", "is_linear_like", "default_filter", "replace_module", "quantize_",
           "quant_linears", "save_quantized", "load_quantized"]

_META_KEY = "lessonlib.quant"


def is_linear_like(m: nn.Module) -> bool:
    return isinstance(m, nn.Linear) or (type(m).__name__ == "Conv1D" and hasattr(m, "nf"))


class QuantLinear(nn.Module):
    """y = x W_hat^T + b with W_hat = (q - z) * s rebuilt from packed codes on every call.

    Buffers: ``qweight`` uint8 (out, ceil(in*bits/8)), ``scales`` (1|out, G), ``zeros`` (1|out, G) for
    asymmetric schemes (None for symmetric), ``g_idx`` int32 (in,) when groups are not contiguous
    (GPTQ act-order), ``bias`` (out,) or None.
    """

    def __init__(self, in_features: int, out_features: int, scheme: QuantScheme, bias: bool = True,
                 scale_dtype: torch.dtype = torch.float32, has_g_idx: bool = False,
                 device: torch.device | str | None = None):
        super().__init__()
        if in_features <= 0 or out_features <= 0:
            raise ValueError(f"in_features={in_features} and out_features={out_features} must be positive")
        if has_g_idx and scheme.group_size <= 0:
            raise ValueError(f"g_idx needs a grouped scheme, got group_size={scheme.group_size}")
        self.in_features, self.out_features, self.scheme = in_features, out_features, scheme
        G = scheme.n_groups(in_features)
        rows = 1 if scheme.group_size == 0 else out_features
        self.register_buffer("qweight", torch.zeros(out_features, packed_row_bytes(in_features, scheme.bits),
                                                    dtype=torch.uint8, device=device))
        self.register_buffer("scales", torch.ones(rows, G, dtype=scale_dtype, device=device))
        self.register_buffer("zeros", None if scheme.sym else torch.zeros(rows, G, dtype=scale_dtype,
                                                                          device=device))
        self.register_buffer("g_idx", torch.zeros(in_features, dtype=torch.int32, device=device)
                             if has_g_idx else None)
        self.register_buffer("bias", torch.zeros(out_features, dtype=scale_dtype, device=device) if bias else None)

    def codes(self) -> torch.Tensor:
        """The integer codes (out, in), unpacked."""
        return unpack_codes(self.qweight, self.scheme.bits, self.in_features, signed=self.scheme.sym)

    def dequantize_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """W_hat (out, in) in the scales' dtype (then cast to ``dtype``)."""
        return dequantize(self.codes(), self.scales, self.zeros, g_idx=self.g_idx, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.dequantize_weight(torch.float32).to(x.dtype)  # (out, in), rebuilt every call
        return F.linear(x, w, None if self.bias is None else self.bias.to(x.dtype))

    def nbytes(self) -> int:
        """Bytes held by this layer's buffers (packed codes, scales, zeros, g_idx, bias)."""
        return storage_bytes(*self.buffers())

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, scheme={self.scheme}, "
                f"bias={self.bias is not None}, act_order={self.g_idx is not None}")

    @classmethod
    def from_linear(cls, linear: nn.Module, scheme: QuantScheme, codes: torch.Tensor | None = None,
                    scales: torch.Tensor | None = None, zeros: torch.Tensor | None = None,
                    g_idx: torch.Tensor | None = None, scale_dtype: torch.dtype | None = None) -> "QuantLinear":
        """Quantize an ``nn.Linear`` (or GPT-2 ``Conv1D``): round-to-nearest, or given ``codes`` (out, in)
        with their ``scales``/``zeros`` (1|out, G) and optional ``g_idx`` (in,) from GPTQ/AWQ/OBQ."""
        if not is_linear_like(linear):
            raise TypeError(f"expected nn.Linear or Conv1D, got {type(linear).__name__}")
        w = get_weight(linear)  # (out, in)
        out_f, in_f = w.shape
        if codes is None:
            if scales is not None or zeros is not None or g_idx is not None:
                raise ValueError("scales/zeros/g_idx were given without codes")
            qw = quantize(w, scheme)
            codes, scales, zeros = qw.codes, qw.scales, qw.zeros
        elif scales is None or (zeros is None and not scheme.sym):
            raise ValueError("codes were given without scales (and zeros, for an asymmetric scheme)")
        if tuple(codes.shape) != (out_f, in_f):
            raise ValueError(f"codes of shape {tuple(codes.shape)} do not fit a ({out_f}, {in_f}) layer")
        rows, G = (1 if scheme.group_size == 0 else out_f), scheme.n_groups(in_f)
        if tuple(scales.shape) != (rows, G) or (zeros is not None and tuple(zeros.shape) != (rows, G)):
            raise ValueError(f"scales/zeros must have shape {(rows, G)} for scheme {scheme}, got "
                             f"{tuple(scales.shape)} / {None if zeros is None else tuple(zeros.shape)}")
        if scheme.sym and zeros is not None and bool((zeros != 0).any()):
            raise ValueError("a symmetric scheme has zero points 0; got non-zero zeros")
        sd = scale_dtype or (w.dtype if w.is_floating_point() else torch.float32)
        bias = getattr(linear, "bias", None)
        m = cls(in_f, out_f, scheme, bias=bias is not None, scale_dtype=sd, has_g_idx=g_idx is not None,
                device=w.device)
        m.qweight.copy_(pack_codes(codes, scheme.bits, signed=scheme.sym))
        m.scales.copy_(scales.to(sd))
        if m.zeros is not None:
            m.zeros.copy_(zeros.to(sd))
        if g_idx is not None:
            if tuple(g_idx.shape) != (in_f,) or int(g_idx.min()) < 0 or int(g_idx.max()) >= G:
                raise ValueError(f"g_idx must be ({in_f},) with entries in [0, {G})")
            m.g_idx.copy_(g_idx.to(torch.int32))
        if bias is not None:
            m.bias.copy_(bias.detach().to(sd))
        return m


@dataclass(frozen=True)
class WeightOnlyConfig:
    """What ``quantize_`` does to each selected layer: a scheme and the dtype scales/zeros are stored in
    (None = the layer's weight dtype)."""

    scheme: QuantScheme
    scale_dtype: torch.dtype | None = None


def default_filter(module: nn.Module, fqn: str) -> bool:
    """Every linear layer except ``lm_head`` (often tied to the embeddings, and the most sensitive)."""
    return is_linear_like(module) and fqn.split(".")[-1] != "lm_head"


def replace_module(model: nn.Module, fqn: str, new: nn.Module) -> None:
    """Put ``new`` where the submodule named ``fqn`` is."""
    parent_name, _, child = fqn.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def quantize_(model: nn.Module, config: QuantScheme | WeightOnlyConfig,
              filter_fn: Callable[[nn.Module, str], bool] | None = None,
              qparams: Mapping[str, object] | None = None) -> nn.Module:
    """Replace the selected linear layers of ``model`` in place by ``QuantLinear`` (torchao's API shape).

    ``filter_fn(module, fqn)`` picks layers (default ``default_filter``: all linears but ``lm_head``).
    ``qparams`` maps a layer's fully qualified name to precomputed codes: any object with ``codes``,
    ``scales``, ``zeros`` and optionally ``g_idx`` (a ``QuantizedWeight``, a ``GPTQResult``); other layers
    are rounded to nearest.  Returns ``model``.  Raises if nothing was selected.
    """
    cfg = config if isinstance(config, WeightOnlyConfig) else WeightOnlyConfig(config)
    if not isinstance(cfg.scheme, QuantScheme):
        raise TypeError(f"config must be a QuantScheme or WeightOnlyConfig, got {type(config).__name__}")
    keep = filter_fn or default_filter
    targets = [(n, m) for n, m in model.named_modules() if is_linear_like(m) and keep(m, n)]
    if not targets:
        raise ValueError("quantize_ selected no linear layer; check filter_fn")
    unknown = set(qparams or {}) - {n for n, _ in targets}
    if unknown:
        raise ValueError(f"qparams given for layers that are not selected: {sorted(unknown)[:5]}")
    for fqn, lin in targets:
        p = (qparams or {}).get(fqn)
        kw = {} if p is None else dict(codes=p.codes, scales=p.scales, zeros=p.zeros,
                                       g_idx=getattr(p, "g_idx", None))
        replace_module(model, fqn, QuantLinear.from_linear(lin, cfg.scheme, scale_dtype=cfg.scale_dtype, **kw))
    return model


def quant_linears(model: nn.Module) -> dict[str, QuantLinear]:
    """Every ``QuantLinear`` in ``model`` by fully qualified name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, QuantLinear)}


def save_quantized(model: nn.Module, path: str) -> None:
    """Write the whole state dict (packed buffers included) to a safetensors file, with the layout of every
    ``QuantLinear`` in the metadata so that ``load_quantized`` can rebuild it.  Tied weights are stored once."""
    from safetensors.torch import save_model

    layout = {n: {"in": m.in_features, "out": m.out_features, "bits": m.scheme.bits,
                  "group_size": m.scheme.group_size, "sym": m.scheme.sym, "int_zero": m.scheme.int_zero,
                  "bias": m.bias is not None,
                  "scale_dtype": str(m.scales.dtype).removeprefix("torch."), "g_idx": m.g_idx is not None}
              for n, m in quant_linears(model).items()}
    if not layout:
        raise ValueError("model has no QuantLinear layer; run quantize_ first")
    save_model(model, path, metadata={_META_KEY: json.dumps(layout)})


def load_quantized(path: str, model_skeleton: nn.Module) -> nn.Module:
    """Load a file written by ``save_quantized`` into a model of the same architecture (float weights of
    any value), replacing its linear layers by ``QuantLinear`` first.  Returns the skeleton, in place."""
    from safetensors import safe_open
    from safetensors.torch import load_model

    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
    if _META_KEY not in meta:
        raise ValueError(f"{path} was not written by save_quantized (no {_META_KEY!r} metadata)")
    for fqn, d in json.loads(meta[_META_KEY]).items():
        try:
            old = model_skeleton.get_submodule(fqn)
        except AttributeError as e:
            raise ValueError(f"the skeleton has no layer {fqn!r}; is it the same architecture?") from e
        w = get_weight(old) if is_linear_like(old) else None
        if w is None or tuple(w.shape) != (d["out"], d["in"]):
            raise ValueError(f"layer {fqn!r} in the skeleton does not match the saved ({d['out']}, {d['in']})")
        q = QuantLinear(d["in"], d["out"], QuantScheme(d["bits"], d["group_size"], d["sym"], d.get("int_zero", False)), bias=d["bias"],
                        scale_dtype=getattr(torch, d["scale_dtype"]), has_g_idx=d["g_idx"], device=w.device)
        replace_module(model_skeleton, fqn, q)
    load_model(model_skeleton, path, strict=True)
    return model_skeleton
