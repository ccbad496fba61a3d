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

from ..models import get_weight, is_linear_like, replace_submodule
from .affine import QuantScheme, dequantize, expand_qparams, quantize, quantize_codes
from ..storage import packed_row_bytes, storage_bytes
from .packing import pack_codes, unpack_codes

__all__ = ["codes_on_grid", "QuantLinear", "quant_layer_bytes", "WeightOnlyConfig", "default_filter", "quantize_",
           "quant_linears", "save_quantized", "load_quantized"]

_META_KEY = "lessonlib.quant"


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
        if codes is None and scales is None:
            if zeros is not None or g_idx is not None:
                raise ValueError("zeros/g_idx were given without scales")
            qw = quantize(w, scheme)
            codes, scales, zeros = qw.codes, qw.scales, qw.zeros
        elif scales is None or (zeros is None and not scheme.sym):
            raise ValueError("codes were given without scales (and zeros, for an asymmetric scheme)")
        elif codes is None:  # a grid chosen elsewhere (GPTQ, SparseGPT): round the weight onto exactly it
            codes = codes_on_grid(w, scheme, scales, zeros, g_idx)
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


def codes_on_grid(w: torch.Tensor, scheme: QuantScheme, scales: torch.Tensor, zeros: torch.Tensor | None,
                   g_idx: torch.Tensor | None) -> torch.Tensor:
    """Codes (out, in) of ``w`` on the given grid ((1|out, G) scales/zeros, optional g_idx); raises if the
    weight is not on that grid (more than 1e-3 of a step away), since the packed layer would then differ."""
    in_f = w.shape[1]
    if scales.dim() != 2 or in_f % max(scales.shape[1], 1) and g_idx is None:
        raise ValueError(f"scales of shape {tuple(scales.shape)} do not fit {in_f} input columns")
    s = expand_qparams(scales.float(), in_f, g_idx)  # (rows, in)
    z = torch.zeros_like(s) if zeros is None else expand_qparams(zeros.float(), in_f, g_idx)
    u = w.float() / s + z  # (out, in): the code as a real number
    codes = quantize_codes(w, s, z, scheme)
    off = float((u - codes).abs().max()) if u.numel() else 0.0
    if not off <= 1e-3:
        raise ValueError(f"the weight is not on the given grid (up to {off:.3g} of a step away); pass its codes, "
                         "or no scales to round it to nearest")
    return codes


@dataclass(frozen=True)
class WeightOnlyConfig:
    """What ``quantize_`` does to each selected layer: a scheme and the dtype scales/zeros are stored in
    (None = the layer's weight dtype)."""

    scheme: QuantScheme
    scale_dtype: torch.dtype | None = None


def quant_layer_bytes(out_features: int, in_features: int, scheme: QuantScheme, bias: bool = False,
                      scale_bytes: int = 2) -> dict[str, int]:
    """Bytes of a packed ``QuantLinear`` of this shape: ``{"codes", "side", "total"}`` (side = scales, zeros,
    bias).  Built on the meta device from the real class, so it always matches what ``quantize_`` stores."""
    if scale_bytes not in (2, 4):
        raise ValueError(f"scale_bytes={scale_bytes} must be 2 (fp16) or 4 (fp32)")
    dtype = torch.float16 if scale_bytes == 2 else torch.float32
    q = QuantLinear(in_features, out_features, scheme, bias=bias, scale_dtype=dtype, device="meta")
    codes = storage_bytes(q.qweight)
    side = storage_bytes(q.scales, q.zeros, q.g_idx, q.bias)
    return {"codes": codes, "side": side, "total": codes + side}


def default_filter(module: nn.Module, fqn: str) -> bool:
    """Every linear layer except ``lm_head`` (often tied to the embeddings, and the most sensitive)."""
    return is_linear_like(module) and fqn.split(".")[-1] != "lm_head"


def _scheme_of(qparams: Mapping[str, object] | None) -> QuantScheme:
    """The one ``QuantScheme`` that every entry of ``qparams`` carries (``GPTQResult.scheme``)."""
    schemes = {getattr(p, "scheme", None) for p in (qparams or {}).values()}
    if not qparams or None in schemes or len(schemes) != 1:
        raise ValueError("quantize_ needs config=QuantScheme(...) unless qparams are given and all carry the same "
                         f"scheme (GPTQResult.scheme); found {sorted(map(str, schemes)) if qparams else 'no qparams'}")
    return schemes.pop()


def quantize_(model: nn.Module, config: QuantScheme | WeightOnlyConfig | None = None,
              filter_fn: Callable[[nn.Module, str], bool] | None = None,
              qparams: Mapping[str, object] | None = None) -> nn.Module:
    """Replace the selected linear layers of ``model`` in place by ``QuantLinear`` (torchao's API shape).

    ``filter_fn(module, fqn)`` picks layers (default ``default_filter``: all linears but ``lm_head``).
    ``qparams`` maps a layer's fully qualified name to precomputed codes: any object with ``codes``,
    ``scales``, ``zeros`` and optionally ``g_idx`` (a ``QuantizedWeight``, a ``GPTQResult``), where
    ``codes`` may be None to round the layer's (already on-grid) weight onto exactly that grid; other
    layers are rounded to nearest.  Returns ``model``.  Raises if nothing was selected.

    All or nothing: every new layer is built before the first one is swapped in, so an error (a group
    size that does not divide one layer, a bad qparams entry) leaves the model exactly as it was.
    """
    if config is None:
        config = _scheme_of(qparams)
    cfg = config if isinstance(config, WeightOnlyConfig) else WeightOnlyConfig(config)
    if not isinstance(cfg.scheme, QuantScheme):
        raise TypeError(f"config must be a QuantScheme or WeightOnlyConfig, got {type(config).__name__}")
    from ..layout import check_no_experts
    check_no_experts(model, "quantize_")  # 3-D expert tensors cannot become QuantLinear: refuse, never skip them
    keep = filter_fn or default_filter
    targets = [(n, m) for n, m in model.named_modules() if is_linear_like(m) and keep(m, n)]
    if not targets:
        raise ValueError("quantize_ selected no linear layer; check filter_fn")
    unknown = set(qparams or {}) - {n for n, _ in targets}
    if unknown:
        raise ValueError(f"qparams given for layers that are not selected: {sorted(unknown)[:5]}")
    built = []
    for fqn, lin in targets:
        p = (qparams or {}).get(fqn)
        kw = {} if p is None else dict(codes=getattr(p, "codes", None), scales=p.scales, zeros=p.zeros,
                                       g_idx=getattr(p, "g_idx", None))
        try:
            built.append((fqn, QuantLinear.from_linear(lin, cfg.scheme, scale_dtype=cfg.scale_dtype, **kw)))
        except ValueError as e:
            raise ValueError(f"layer {fqn!r}: {e} (the model was left unchanged)") from e
    for fqn, new in built:  # nothing can fail from here on
        replace_submodule(model, fqn, new)
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
                  "restricted": m.scheme.restricted, "bias": m.bias is not None,
                  "scale_dtype": str(m.scales.dtype).removeprefix("torch."), "g_idx": m.g_idx is not None}
              for n, m in quant_linears(model).items()}
    if not layout:
        raise ValueError("model has no QuantLinear layer; run quantize_ first")
    save_model(model, path, metadata={_META_KEY: json.dumps(layout)})


_SCALE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
                 "float64": torch.float64}
_LAYOUT_KEYS = {"in": int, "out": int, "bits": int, "group_size": int, "sym": bool, "int_zero": bool,
                "restricted": bool, "bias": bool, "scale_dtype": str, "g_idx": bool}


def _layer_from_layout(path: str, fqn: str, d: object, device: torch.device) -> QuantLinear:
    """An empty ``QuantLinear`` from one metadata entry, every field type-checked."""
    if not isinstance(d, dict):
        raise ValueError(f"{path}: layout of {fqn!r} must be an object, got {type(d).__name__}")
    for k, t in _LAYOUT_KEYS.items():
        v = d.get(k, False if k in ("int_zero", "restricted") else None)
        if not isinstance(v, t) or (t is int and isinstance(v, bool)):
            raise ValueError(f"{path}: layout of {fqn!r} has {k}={v!r}; expected a {t.__name__}")
    if d["scale_dtype"] not in _SCALE_DTYPES:
        raise ValueError(f"{path}: layout of {fqn!r} has scale_dtype={d['scale_dtype']!r}; allowed: "
                         f"{sorted(_SCALE_DTYPES)}")
    try:
        sch = QuantScheme(d["bits"], d["group_size"], d["sym"], d.get("int_zero", False), d.get("restricted", False))
        return QuantLinear(d["in"], d["out"], sch, bias=d["bias"], scale_dtype=_SCALE_DTYPES[d["scale_dtype"]],
                           has_g_idx=d["g_idx"], device=device)
    except ValueError as e:
        raise ValueError(f"{path}: layout of {fqn!r}: {e}") from e


def _check_quant_tensors(path: str, fqn: str, q: QuantLinear, f) -> None:
    """The file's tensors of layer ``fqn`` against what its layout claims: dtypes, shapes, finite and
    positive scales, zero points and g_idx in range, no stray bits after the last code of a row."""
    sch = q.scheme
    for name, want in q.named_buffers():
        key = f"{fqn}.{name}"
        if key not in f.keys():
            raise ValueError(f"{path}: tensor {key!r} is missing")
        sl = f.get_slice(key)
        shape, dtype = tuple(sl.get_shape()), sl.get_dtype()
        want_dtype = {torch.uint8: "U8", torch.int32: "I32", torch.float32: "F32", torch.float16: "F16",
                      torch.bfloat16: "BF16", torch.float64: "F64"}[want.dtype]
        if shape != tuple(want.shape) or dtype != want_dtype:
            raise ValueError(f"{path}: tensor {key!r} is {dtype} {shape}; the layout ({sch}, "
                             f"{q.out_features}x{q.in_features}) needs {want_dtype} {tuple(want.shape)}")
        t = f.get_tensor(key)
        if name in ("scales", "zeros", "bias") and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{path}: tensor {key!r} has non-finite entries (NaN or inf)")
        if name == "scales" and not bool((t > 0).all()):
            raise ValueError(f"{path}: tensor {key!r} has scales <= 0")
        if name == "zeros" and sch.int_zero and not bool(((t == t.round()) & (t >= 0) & (t <= sch.qmax)).all()):
            raise ValueError(f"{path}: tensor {key!r}: integer zero points must lie in 0..{sch.qmax}")
        if name == "g_idx" and t.numel() and (int(t.min()) < 0 or int(t.max()) >= q.scales.shape[1]):
            raise ValueError(f"{path}: tensor {key!r} has group indices outside 0..{q.scales.shape[1] - 1}")
        pad = t.shape[1] * 8 - q.in_features * sch.bits if name == "qweight" else 0
        if pad and bool((t[:, -1] >> (8 - pad)).any()):
            raise ValueError(f"{path}: tensor {key!r} has bits set after the last code of a row (codes out "
                             f"of range for {q.in_features} {sch.bits}-bit codes)")


def load_quantized(path: str, model_skeleton: nn.Module) -> nn.Module:
    """Load a file written by ``save_quantized`` into a model of the same architecture (float weights of
    any value), replacing its linear layers by ``QuantLinear`` first.  Returns the skeleton, in place.

    The file is checked against what it claims before anything changes (metadata types, allowed scale
    dtypes, every tensor's dtype and shape, finite positive scales, zero points and g_idx in range, no
    stray bits after a row's last code); any mismatch raises ``ValueError`` naming the path and leaves
    the skeleton exactly as it was."""
    from safetensors import safe_open
    from safetensors.torch import load_model

    try:
        f_ctx = safe_open(path, framework="pt")
    except Exception as e:  # safetensors raises its own error types
        raise ValueError(f"{path}: not a readable safetensors file ({e})") from e
    with f_ctx as f:
        meta = f.metadata() or {}
        if _META_KEY not in meta:
            raise ValueError(f"{path} was not written by save_quantized (no {_META_KEY!r} metadata)")
        try:
            layout = json.loads(meta[_META_KEY])
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: {_META_KEY!r} metadata is not valid JSON ({e})") from e
        if not isinstance(layout, dict) or not layout:
            raise ValueError(f"{path}: {_META_KEY!r} metadata must be a non-empty object of layer layouts")
        new: dict[str, QuantLinear] = {}
        for fqn, d in layout.items():
            try:
                old = model_skeleton.get_submodule(fqn)
            except AttributeError as e:
                raise ValueError(f"{path}: the skeleton has no layer {fqn!r}; is it the same architecture?") from e
            w = get_weight(old) if is_linear_like(old) else None
            q = _layer_from_layout(path, fqn, d, w.device if w is not None else torch.device("cpu"))
            if w is None or tuple(w.shape) != (q.out_features, q.in_features):
                raise ValueError(f"{path}: layer {fqn!r} in the skeleton does not match the saved "
                                 f"({q.out_features}, {q.in_features})")
            _check_quant_tensors(path, fqn, q, f)
            new[fqn] = q
        quant_keys = {f"{n}.{b}" for n, q in new.items() for b, _ in q.named_buffers()}
        skel = {k: v for k, v in model_skeleton.state_dict().items()
                if not any(k.startswith(n + ".") for n in new)}
        for key in f.keys():
            if key in quant_keys:
                continue
            if key not in skel:
                raise ValueError(f"{path}: tensor {key!r} has no place in the skeleton")
            shape = tuple(f.get_slice(key).get_shape())
            if shape != tuple(skel[key].shape):
                raise ValueError(f"{path}: tensor {key!r} has shape {shape}, the skeleton needs "
                                 f"{tuple(skel[key].shape)}")
    old_mods = {n: model_skeleton.get_submodule(n) for n in new}
    for fqn, q in new.items():
        replace_submodule(model_skeleton, fqn, q)
    try:
        load_model(model_skeleton, path, strict=True)
    except Exception as e:
        for fqn, m in old_mods.items():  # put the float layers back: the skeleton is as it was
            replace_submodule(model_skeleton, fqn, m)
        raise ValueError(f"{path}: could not be loaded into the skeleton ({e})") from e
    return model_skeleton
