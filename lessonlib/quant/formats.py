"""The number formats practitioners meet today: NF4, FP8 (E4M3 / E5M2), MXFP4 / MXFP8 and INT4 g64.

Every format stores a weight (out, in) as low-bit elements plus scales; ``encode`` returns both,
``decode`` rebuilds the float weight, ``bits_per_weight`` counts the element bits and the scale bits.

* NF4 (Dettmers et al. 2023, "QLoRA", arXiv:2305.14314, section 3 "4-bit NormalFloat"): 16 levels at the
  quantiles of a standard normal (8 positive, 7 negative, and an exact 0), normalised to [-1, 1]; each
  block of 64 weights is divided by its absmax and rounded to the nearest level (one 16-bit absmax per
  block here; QLoRA's double quantization brings it to 8 bits).
* FP8 (Micikevicius et al. 2022, "FP8 Formats for Deep Learning", arXiv:2209.05433): E4M3 (no infinity,
  max 448) and E5M2 (max 57344), via torch's float8 dtypes, with one float32 scale per output row that
  maps the row's absmax to the format's max.
* MX (Rouhani et al. 2023, "Microscaling Data Formats for Deep Learning", arXiv:2310.10537; OCP MX spec
  v1.0): blocks of 32 share one E8M0 scale, a pure power of two 2^(floor(log2 absmax) - emax_elem), where
  emax_elem is the exponent of the element format's largest normal (2 for FP4 E2M1, whose max is 6; 8 for
  FP8 E4M3); elements are rounded to the element format, saturating at its max.
* INT4 g64: the course's symmetric affine grid (``affine.QuantScheme(4, 64, sym=True)``), 16-bit scales.
"""
from __future__ import annotations

import torch

from .affine import QuantScheme, check_finite, dequantize, quantize

__all__ = ["FORMATS", "nf4_levels", "fp4_e2m1_levels", "mx_quantize", "encode", "decode", "fake_quant_format",
           "bits_per_weight"]

FORMATS = ("nf4", "fp8_e4m3", "fp8_e5m2", "mxfp4", "mxfp8", "int4_g64")
_FP8 = {"fp8_e4m3": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}
_BLOCK = {"nf4": 64, "mxfp4": 32, "mxfp8": 32, "int4_g64": 64}
_BITS = {"nf4": 4 + 16 / 64, "mxfp4": 4 + 8 / 32, "mxfp8": 8 + 8 / 32, "int4_g64": 4 + 16 / 64}


def nf4_levels() -> torch.Tensor:
    """The 16 NF4 levels (float32, ascending): normal quantiles with offset 0.9677 = (1/2)(1/(2*15) + 1 - 1/(2*16)),
    8 on the positive side, 7 on the negative side, sharing the exact 0, divided by the largest."""
    off = 0.9677083
    ppf = lambda p: torch.special.ndtri(p.double())  # noqa: E731  inverse normal CDF
    pos = ppf(torch.linspace(off, 0.5, 9, dtype=torch.float64)[:-1])  # 8 values > 0
    neg = -ppf(torch.linspace(off, 0.5, 8, dtype=torch.float64)[:-1])  # 7 values < 0
    v = torch.cat([neg, torch.zeros(1, dtype=torch.float64), pos]).sort().values
    return (v / v.abs().max()).float()


def fp4_e2m1_levels() -> torch.Tensor:
    """The 8 non-negative FP4 E2M1 values: 0, 0.5 (subnormal), 1, 1.5, 2, 3, 4, 6."""
    return torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])


def _check(w: torch.Tensor, fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is unknown; choose one of {FORMATS}")
    if not isinstance(w, torch.Tensor) or w.dim() != 2 or not w.is_floating_point():
        raise ValueError(f"expected a 2-D float weight (out, in), got {getattr(w, 'shape', type(w))}")
    check_finite(w)
    if fmt in _BLOCK and w.shape[1] % _BLOCK[fmt]:
        raise ValueError(f"{fmt} uses blocks of {_BLOCK[fmt]} along the row; {w.shape[1]} is not a multiple")


def _nearest(x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Index of the nearest level (ascending ``levels``) for every entry of ``x``."""
    mid = (levels[1:] + levels[:-1]) / 2
    return torch.bucketize(x, mid)


def mx_quantize(w: torch.Tensor, fmt: str = "mxfp4") -> tuple[torch.Tensor, torch.Tensor]:
    """Microscaling (OCP MX v1.0; Rouhani et al. 2023, arXiv:2310.10537, section 3): ``w`` (out, in) in
    blocks of 32 consecutive weights of a row; each block shares the power-of-two scale
    ``2^(floor(log2 absmax) - emax)`` (E8M0, exponent clamped to -127..127; an all-zero block counts as absmax 1),
    with emax = 2 for FP4 E2M1 (largest value 6 = 1.5 * 2^2) and 8 for FP8 E4M3 (448 = 1.75 * 2^8); every
    weight divided by its scale is rounded to the nearest element value (FP4: the sign and the nearest of
    ``fp4_e2m1_levels()``, saturating at 6; FP8: torch's float8_e4m3fn cast after clamping to +-448).
    Returns (elements (out, in) float32 values of the element format, scales (out, in / 32) float32)."""
    if fmt not in ("mxfp4", "mxfp8"):
        raise ValueError(f"fmt={fmt!r} must be 'mxfp4' or 'mxfp8'")
    _check(w, fmt)
    w = w.float()
    out_f, in_f = w.shape
    # BEGIN SOLUTION
    blocks = w.reshape(out_f, in_f // 32, 32)  # (out, G, 32)
    amax = blocks.abs().amax(-1)  # (out, G)
    emax = 2 if fmt == "mxfp4" else 8  # exponent of the element format's largest normal
    e = torch.floor(torch.log2(torch.where(amax > 0, amax, torch.ones_like(amax)))) - emax
    s = torch.exp2(e.clamp(-127, 127))  # (out, G), E8M0: 2^-127 .. 2^127
    x = blocks / s.unsqueeze(-1)  # (out, G, 32)
    if fmt == "mxfp4":
        lv = fp4_e2m1_levels()
        el = torch.sign(x) * lv[_nearest(x.abs().clamp(max=6.0), lv)]
    else:
        el = x.clamp(-448.0, 448.0).to(torch.float8_e4m3fn).float()
    # END SOLUTION
    return el.reshape(out_f, in_f), s


def encode(w: torch.Tensor, fmt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``w`` (out, in) -> (elements, scales).  Elements: uint8 level indices (nf4), float8 values (fp8),
    float32 element values (mx: exactly representable in the element format), int32 codes (int4_g64);
    scales: (out, in / block) or (out, 1), float32 (MX scales are powers of two, i.e. E8M0)."""
    _check(w, fmt)
    w = w.float()
    out_f, in_f = w.shape
    if fmt in _FP8:
        dt = _FP8[fmt]
        s = w.abs().amax(1, keepdim=True) / torch.finfo(dt).max  # (out, 1)
        s = torch.where(s > 0, s, torch.ones_like(s))
        return (w / s).to(dt), s
    if fmt == "int4_g64":
        qw = quantize(w, QuantScheme(4, 64, True))
        return qw.codes, qw.scales
    b = _BLOCK[fmt]
    blocks = w.reshape(out_f, in_f // b, b)  # (out, G, b)
    amax = blocks.abs().amax(-1)  # (out, G)
    if fmt == "nf4":
        s = torch.where(amax > 0, amax, torch.ones_like(amax))
        idx = _nearest(blocks / s.unsqueeze(-1), nf4_levels())
        return idx.to(torch.uint8).reshape(out_f, in_f), s
    return mx_quantize(w, fmt)


def decode(elements: torch.Tensor, scales: torch.Tensor, fmt: str) -> torch.Tensor:
    """(elements, scales) from ``encode`` -> float32 weight (out, in)."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is unknown; choose one of {FORMATS}")
    if fmt in _FP8:
        return elements.float() * scales
    if fmt == "int4_g64":
        return dequantize(elements, scales, None)
    out_f, in_f = elements.shape
    G = scales.shape[1]
    vals = nf4_levels()[elements.long()] if fmt == "nf4" else elements.float()
    return (vals.reshape(out_f, G, in_f // G) * scales.unsqueeze(-1)).reshape(out_f, in_f)


def fake_quant_format(w: torch.Tensor, fmt: str) -> torch.Tensor:
    """``decode(*encode(w, fmt), fmt)`` in ``w``'s dtype."""
    return decode(*encode(w, fmt), fmt).to(w.dtype)


def bits_per_weight(fmt: str, in_features: int | None = None) -> float:
    """Stored bits per weight, scales included (NF4 and INT4: a 16-bit scale per 64; MX: an 8-bit E8M0
    scale per 32; FP8: a 32-bit scale per row of ``in_features``)."""
    if fmt in _FP8:
        if not isinstance(in_features, int) or in_features <= 0:
            raise ValueError(f"{fmt} has one scale per row: give in_features > 0, got {in_features!r}")
        return 8 + 32 / in_features
    if fmt not in _BITS:
        raise ValueError(f"format {fmt!r} is unknown; choose one of {FORMATS}")
    return _BITS[fmt]
