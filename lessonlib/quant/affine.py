"""Affine (uniform) quantization grids: the building block of every quantizer in ``lessonlib.quant``.

A real weight is stored as an integer code ``q`` plus a per-group ``scale`` s and ``zero`` point z and
read back as ``w_hat = (q - z) * s`` (Jacob et al. 2018, "Quantization and Training of Neural Networks
for Efficient Integer-Arithmetic-Only Inference", eq. 1; Nagel et al. 2021, "A White Paper on Neural
Network Quantization", section 2.2).

Conventions used throughout the track (``QuantScheme``):

* ``bits`` in 2..8.
* ``group_size``: ``0`` = one (scale, zero) for the whole tensor, ``-1`` = one per output row
  ("per-channel"), ``g > 0`` = one per run of ``g`` consecutive input columns of each row
  ("per-group"; ``g`` must divide the row).  Scales and zeros therefore have shape ``(1, 1)``,
  ``(out, 1)`` or ``(out, in // g)``.
* asymmetric (``sym=False``): codes in ``[0, 2^b - 1]``; the group's minimum maps exactly to code 0
  and its maximum exactly to code ``2^b - 1``: ``s = (max - min) / (2^b - 1)`` and ``z = -min / s``.
  The zero point is kept as a float (llama.cpp ``Q4_1`` / HQQ convention: ``w_hat = q * s + min``);
  GPTQ's and AWQ's reference code round it to an integer, which moves the grid by up to s/2.  With the
  float zero, a tensor that already lies on such a grid (e.g. SmolLM2's ``Q4_1`` weights, groups of 32)
  is reproduced exactly.
* ``int_zero=True`` (asymmetric only; the compressed-tensors / llm-compressor convention, also GPTQ's and
  AWQ's reference code): the range is first widened to include 0, ``s = (max' - min') / (2^b - 1)``
  with ``min' = min(min, 0)``, ``max' = max(max, 0)``, and the zero point is the integer
  ``z = round(-min' / s)``.  0 is then exactly on the grid; the grid is coarser when a group is all of
  one sign and may move by up to s/2.
* symmetric (``sym=True``): signed codes in ``[-2^(b-1), 2^(b-1) - 1]`` and ``z = 0``.  By default all
  2^b levels are used: ``s = max|w| / ((2^b - 1) / 2)`` (``half_range`` = 7.5 at 4 bits), the convention
  of the GPTQ reference code (its ``Quantizer``: scale (2 max) / (2^b - 1), zero 2^(b-1) on unsigned
  codes) and of compressed-tensors / llm-compressor (scale max / (bit_range / 2), codes -8..7).  The
  grid spans [-8s, 7s] around the group's [-max, +max] = [-7.5s, 7.5s]: one more level than the
  restricted grid, a finer step (by 7.5/7 at 4 bits), at the price of clipping +max by half a step.
  ``restricted=True`` is the "restricted range" ``s = max|w| / (2^(b-1) - 1)`` (codes -7..7; -8 is only
  reached by clamping): +max and -max are both exact and the grid is symmetric about 0, which is what
  integer kernels that negate weights, or formats with a sign bit (llama.cpp ``Q8_0`` uses 127), need.
  Pick the full grid for accuracy (it matches the peers' layer objective), the restricted one to match
  a runtime that uses it.
* an optional ``clip_ratio`` r in (0, 1] (AWQ's clip search) clips the group's range to
  ``[-r * max|w|, r * max|w|]`` before the grid is fitted; values outside land on the end codes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..checks import all_finite

__all__ = ["PerTensor", "PerChannel", "PerGroup", "Granularity", "as_group_size", "QuantScheme", "QuantizedWeight", "compute_qparams", "quantize_codes", "dequantize_codes",
           "expand_qparams", "column_group_quantizer", "quantize", "dequantize", "fake_quant", "check_finite", "all_finite"]


@dataclass(frozen=True)
class PerTensor:
    """One (scale, zero) for the whole weight."""

    def __str__(self) -> str:
        return "tensor"


@dataclass(frozen=True)
class PerChannel:
    """One (scale, zero) per output channel (row of the (out, in) weight)."""

    def __str__(self) -> str:
        return "channel"


@dataclass(frozen=True)
class PerGroup:
    """One (scale, zero) per group of ``size`` consecutive input columns of each row."""

    size: int = 64

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise TypeError(f"PerGroup(size={self.size!r}): size must be a positive int")
        if self.size < 1:
            raise ValueError(f"PerGroup(size={self.size!r}): size must be >= 1")

    def __str__(self) -> str:
        return f"g{self.size}"


Granularity = PerTensor | PerChannel | PerGroup


def as_group_size(g: Granularity | int) -> int:
    """The internal int of a granularity: ``PerTensor()`` -> 0, ``PerChannel()`` -> -1, ``PerGroup(g)`` -> g.

    The old ints are still accepted (0 per tensor, -1 per channel, g > 0 groups); anything else raises."""
    if isinstance(g, PerTensor):
        return 0
    if isinstance(g, PerChannel):
        return -1
    if isinstance(g, PerGroup):
        return g.size
    if isinstance(g, bool) or not isinstance(g, int):
        raise TypeError(f"group_size={g!r} must be PerTensor(), PerChannel(), PerGroup(g) or an int (0 per tensor, "
                        f"-1 per output channel, g > 0 groups of g), got {type(g).__name__}")
    if g < -1:
        raise ValueError(f"group_size={g!r} is not allowed; use PerTensor() (0), PerChannel() (-1) or "
                         "PerGroup(g) (a positive group size)")
    return g


@dataclass(frozen=True)
class QuantScheme:
    """Bit width, grouping and symmetry shared by RTN, GPTQ, OBQ, AWQ, packing and ``QuantLinear``.

    ``group_size``: a typed granularity, ``PerTensor()``, ``PerChannel()`` (one grid per output row) or
    ``PerGroup(g)`` (groups of g input columns); the old ints 0 / -1 / g > 0 are accepted too.  The field is
    stored as that int (what kernels and files use); ``granularity`` gives the typed form back.
    """

    bits: int = 4
    group_size: int = 64
    sym: bool = False
    int_zero: bool = False  # asymmetric: integer zero point on a range widened to include 0
    restricted: bool = False  # symmetric: 2^b - 1 levels (s = max / (2^(b-1) - 1)) instead of all 2^b

    def __post_init__(self) -> None:
        if isinstance(self.group_size, (PerTensor, PerChannel, PerGroup)):
            object.__setattr__(self, "group_size", as_group_size(self.group_size))
        if isinstance(self.bits, bool) or not isinstance(self.bits, int):
            raise TypeError(f"bits={self.bits!r} must be an int in 2..8 (got {type(self.bits).__name__})")
        if not 2 <= self.bits <= 8:
            raise ValueError(f"bits={self.bits!r} is outside 2..8")
        if isinstance(self.group_size, bool) or not isinstance(self.group_size, int):
            raise TypeError(f"group_size={self.group_size!r} must be an int: 0 (per-tensor), -1 (per output "
                            f"channel) or a positive group size, or PerTensor() / PerChannel() / PerGroup(g) "
                            f"(got {type(self.group_size).__name__})")
        if self.group_size < -1:
            raise ValueError(f"group_size={self.group_size!r} is not allowed; use 0 (per-tensor), "
                             "-1 (per output channel) or a positive group size")
        if not isinstance(self.sym, bool):
            raise TypeError(f"sym={self.sym!r} must be a bool")
        if not isinstance(self.int_zero, bool):
            raise TypeError(f"int_zero={self.int_zero!r} must be a bool")
        if self.int_zero and self.sym:
            raise ValueError("int_zero=True is for asymmetric grids; a symmetric grid's zero point is always 0")
        if not isinstance(self.restricted, bool):
            raise ValueError(f"restricted={self.restricted!r} must be a bool")
        if self.restricted and not self.sym:
            raise ValueError("restricted=True is for symmetric grids (2^b - 1 levels around 0); "
                             "an asymmetric grid always uses all 2^b levels")

    @property
    def granularity(self) -> Granularity:
        """``PerTensor()``, ``PerChannel()`` or ``PerGroup(g)``."""
        return {0: PerTensor(), -1: PerChannel()}.get(self.group_size) or PerGroup(self.group_size)

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1)) if self.sym else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.sym else 2 ** self.bits - 1

    @property
    def half_range(self) -> float:
        """Symmetric grids: max|w| / s, the number of steps from 0 to the group's largest |w|:
        (2^b - 1) / 2 on the full grid (7.5 at 4 bits), 2^(b-1) - 1 on the restricted one (7)."""
        return float(self.qmax) if self.restricted else (2 ** self.bits - 1) / 2

    def n_groups(self, in_features: int) -> int:
        """Number of (scale, zero) columns per row for a weight with ``in_features`` columns."""
        if self.group_size <= 0:
            return 1
        if in_features % self.group_size:
            raise ValueError(f"group_size={self.group_size} does not divide the row length {in_features}; "
                             "use a divisor of it, -1 (per channel) or 0 (per tensor)")
        return in_features // self.group_size

    def __str__(self) -> str:
        g = {0: "tensor", -1: "channel"}.get(self.group_size, f"g{self.group_size}")
        return (f"{'sym' if self.sym else 'asym'}{self.bits}-{g}{'-intzero' if self.int_zero else ''}"
                f"{'-restricted' if self.restricted else ''}")


@dataclass
class QuantizedWeight:
    """Integer codes (out, in) with their scales and zeros ((1|out, G)) and, optionally, the group of each
    input column ``g_idx`` (in,) when groups are not contiguous (GPTQ with act-order)."""

    codes: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor
    scheme: QuantScheme
    g_idx: torch.Tensor | None = None

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        return dequantize(self.codes, self.scales, self.zeros, g_idx=self.g_idx, dtype=dtype)


def check_finite(t: torch.Tensor, what: str = "weight") -> None:
    if not all_finite(t):
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{what} has {bad} non-finite entries (NaN or inf); quantization needs finite values")


def _check_weight(w: torch.Tensor) -> None:
    if not isinstance(w, torch.Tensor) or w.dim() != 2:
        raise ValueError(f"expected a 2-D weight (out, in), got {getattr(w, 'shape', type(w))}")
    if not w.is_floating_point():
        raise ValueError(f"weight must be floating point, got {w.dtype}")
    check_finite(w)


def _clip_ratio(r: float | torch.Tensor, shape: tuple[int, int]) -> torch.Tensor | float:
    if isinstance(r, torch.Tensor):
        if ((r <= 0) | (r > 1)).any() or not torch.isfinite(r).all():
            raise ValueError("clip_ratio entries must lie in (0, 1]")
        return r.float().expand(shape)
    if not 0.0 < float(r) <= 1.0:
        raise ValueError(f"clip_ratio={r} is outside (0, 1]")
    return float(r)


def _int_zero_qparams(wg: torch.Tensor, r: float | torch.Tensor, qmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric grid with an integer zero point on the range widened to include 0 (compressed-tensors):
    wg (rows, G, g) -> scales, zeros (rows, G)."""
    absmax = wg.abs().amax(dim=-1) * r  # (rows, G)
    wmax = torch.minimum(wg.amax(dim=-1), absmax).clamp_min(0.0)  # max(max, 0)
    wmin = torch.maximum(wg.amin(dim=-1), -absmax).clamp_max(0.0)  # min(min, 0)
    scales = (wmax - wmin) / qmax
    scales = torch.where(scales > 0, scales, torch.ones_like(scales))  # all-zero group: z = 0 is exact
    zeros = torch.round(-wmin / scales).clamp_(0, qmax)
    return scales, zeros


def compute_qparams(w: torch.Tensor, scheme: QuantScheme,
                    clip_ratio: float | torch.Tensor = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Scales and zeros of ``w`` (out, in) under ``scheme``: two float32 tensors of shape (1|out, G).

    ``clip_ratio`` is a float or a tensor broadcastable to (1|out, G) with entries in (0, 1].
    """
    _check_weight(w)
    out_f, in_f = w.shape
    G = scheme.n_groups(in_f)
    if scheme.group_size == 0:
        wg = w.float().reshape(1, 1, -1)  # (1, 1, out*in)
    else:
        wg = w.float().reshape(out_f, G, in_f // G)  # (out, G, g)
    r = _clip_ratio(clip_ratio, wg.shape[:2])
    if scheme.int_zero:
        return _int_zero_qparams(wg, r, scheme.qmax)
    # BEGIN SOLUTION
    absmax = wg.abs().amax(dim=-1) * r  # (rows, G)
    if scheme.sym:
        scales = absmax / scheme.half_range
        zeros = torch.zeros_like(scales)
        scales = torch.where(scales > 0, scales, torch.ones_like(scales))  # all-zero group: any scale is exact
    else:
        wmax = torch.minimum(wg.amax(dim=-1), absmax)  # clip the range to [-r max|w|, r max|w|]
        wmin = torch.maximum(wg.amin(dim=-1), -absmax)
        scales = (wmax - wmin) / scheme.qmax
        const = scales <= 0  # constant group: scale 1, zero -min reproduces it exactly
        scales = torch.where(const, torch.ones_like(scales), scales)
        zeros = -wmin / scales
    # END SOLUTION
    return scales, zeros


def expand_qparams(p: torch.Tensor, in_features: int, g_idx: torch.Tensor | None = None) -> torch.Tensor:
    """(1|out, G) -> (1|out, in): the parameter of each input column (contiguous groups or ``g_idx``)."""
    if g_idx is not None:
        return p[:, g_idx.long()]
    if in_features % p.shape[1]:
        raise ValueError(f"{p.shape[1]} groups do not divide {in_features} input columns")
    return p.repeat_interleave(in_features // p.shape[1], dim=1)


def quantize_codes(w: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, scheme: QuantScheme) -> torch.Tensor:
    """Round ``w`` onto the grid given by broadcastable ``scales``/``zeros``: int32 codes, clamped to the grid."""
    q = torch.round(w.float() / scales + zeros)
    return q.clamp_(scheme.qmin, scheme.qmax).to(torch.int32)


def dequantize_codes(q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    """``(q - z) * s`` with broadcasting, in the dtype of ``scales``."""
    return (q.to(scales.dtype) - zeros.to(scales.dtype)) * scales


def quantize(w: torch.Tensor, scheme: QuantScheme, clip_ratio: float | torch.Tensor = 1.0) -> QuantizedWeight:
    """Round-to-nearest quantization of a weight (out, in): codes (out, in) int32 + scales/zeros (1|out, G)."""
    scales, zeros = compute_qparams(w, scheme, clip_ratio)  # (rows, G)
    in_f = w.shape[1]
    codes = quantize_codes(w, expand_qparams(scales, in_f), expand_qparams(zeros, in_f), scheme)  # (out, in)
    return QuantizedWeight(codes, scales, zeros, scheme)


def dequantize(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None,
               g_idx: torch.Tensor | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Codes (out, in) and scales/zeros (1|out, G) back to a float weight (out, in).

    Computed in the scales' dtype, then cast to ``dtype`` (default: the scales' dtype).
    ``zeros=None`` means symmetric (z = 0).
    """
    if codes.dim() != 2 or scales.dim() != 2:
        raise ValueError(f"codes and scales must be 2-D, got {tuple(codes.shape)} and {tuple(scales.shape)}")
    in_f = codes.shape[1]
    if g_idx is None and scales.shape[1] > 0 and in_f % scales.shape[1] == 0:  # contiguous groups: broadcast
        G = scales.shape[1]
        z = torch.zeros_like(scales) if zeros is None else zeros
        w = dequantize_codes(codes.reshape(codes.shape[0], G, in_f // G), scales.unsqueeze(-1),
                             z.unsqueeze(-1)).reshape(codes.shape)  # (out, G, g) -> (out, in)
    else:
        s = expand_qparams(scales, in_f, g_idx)  # (rows, in)
        z = torch.zeros_like(s) if zeros is None else expand_qparams(zeros, in_f, g_idx)
        w = dequantize_codes(codes, s, z)  # (out, in)
    return w if dtype is None else w.to(dtype)


def fake_quant(w: torch.Tensor, scheme: QuantScheme, clip_ratio: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Quantize then dequantize (round-to-nearest): a weight of the same shape and dtype, on the grid.

    The same float operations as ``quantize(...).dequantize()``, fused on one buffer and broadcast over a
    (rows, G, g) view instead of expanded per column, so the result is bit-identical and faster."""
    scales, zeros = compute_qparams(w, scheme, clip_ratio)  # (rows, G)
    s, z = scales.unsqueeze(-1), zeros.unsqueeze(-1)  # (rows, G, 1)
    t = w.float().reshape(scales.shape[0], scales.shape[1], -1) / s  # (rows, G, g)
    t.add_(z).round_().clamp_(scheme.qmin, scheme.qmax).sub_(z).mul_(s)  # code, then (q - z) s
    return t.reshape(w.shape).to(w.dtype)


def column_group_quantizer(weight: torch.Tensor, scheme: QuantScheme) -> Callable[[torch.Tensor], torch.Tensor]:
    """A column quantizer for joint SparseGPT: the grid of each group is fitted once on ``weight`` (out, in);
    the j-th call rounds column j (SparseGPT visits columns left to right exactly once)."""
    scales, zeros = compute_qparams(weight, scheme)  # (rows, G)
    s = expand_qparams(scales, weight.shape[1])  # (rows, in)
    z = expand_qparams(zeros, weight.shape[1])
    col = [0]

    def q(w_col: torch.Tensor) -> torch.Tensor:  # (out,)
        j = col[0]
        if j >= weight.shape[1]:
            raise RuntimeError(f"column quantizer called {j + 1} times for {weight.shape[1]} columns")
        col[0] += 1
        sj, zj = s[:, j].to(w_col.device), z[:, j].to(w_col.device)
        return dequantize_codes(quantize_codes(w_col, sj, zj, scheme), sj, zj).to(w_col.dtype)
    return q
