"""Mixed precision: give each layer (or group of layers) its own bit width under a size budget.

Not every layer suffers equally from quantization.  HAWQ (Dong et al. 2019, "HAWQ: Hessian AWare
Quantization of Neural Networks with Mixed-Precision", section 3) ranks layers by a second-order estimate
of the loss increase; we use the layer-wise form that GPTQ minimises (Frantar et al. 2022, eq. 1): with
the quantization error dW = W_hat - W (out, in) and the layer-input Hessian H = 2/N sum x x^T (in, in),

    Omega(layer, b) = || dW X ||_F^2 / N = 1/2 tr(dW H dW^T)                          (proxy)

and, as a direct alternative, the measured mean next-token NLL increase on a few calibration windows when
only that layer group is quantized (everything else stays float).

Choosing one option (bit width) per layer so that the total bytes (codes + per-group scales/zeros, as
``quant_layer_bytes`` counts them) stay within a budget while the summed sensitivity
is least is a multiple-choice knapsack problem (Kellerer, Pferschy & Pisinger 2004, "Knapsack Problems",
ch. 11); sensitivities are assumed additive across layers, as in HAWQ-V3 (Yao et al. 2021, eq. 9), which
solves the same problem with an integer linear program.  ``allocate_bits`` solves it exactly by dynamic
programming over byte units.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import reduce
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..calib import HessianStats, run_sequential
from ..config import progress_disabled
from ..evaluate import window_nlls
from ..models import block_linears, decoder_blocks, get_weight, set_weight
from .affine import QuantScheme, fake_quant
from ..models import is_linear_like
from .qlinear import WeightOnlyConfig, quant_layer_bytes, quantize_
from ..atomic import atomic

__all__ = ["layer_bytes", "hessian_sensitivity", "Allocation", "allocate_bits", "block_layer_names",
           "layer_groups", "option_bytes", "hessian_sensitivities", "measured_sensitivities",
           "apply_mixed_precision"]


# ------------------------------------------------------------------ layer level
def layer_bytes(out_features: int, in_features: int, scheme: QuantScheme, scale_bits: int = 16) -> int:
    """Bytes of one bias-free (out, in) weight stored under ``scheme``: b-bit codes packed per row plus one
    ``scale_bits`` scale per group (and one zero point of the same width for asymmetric schemes), i.e.
    exactly ``QuantLinear.nbytes()`` (``qlinear.quant_layer_bytes``, the one packed-layer count).
    """
    if out_features <= 0 or in_features <= 0:
        raise ValueError(f"out_features={out_features} and in_features={in_features} must be positive")
    if scale_bits not in (16, 32):
        raise ValueError(f"scale_bits={scale_bits!r} must be 16 (fp16 scales) or 32 (fp32)")
    scheme.n_groups(in_features)  # raises if the group size does not divide the row
    return quant_layer_bytes(out_features, in_features, scheme, scale_bytes=scale_bits // 8)["total"]


def hessian_sensitivity(weight: torch.Tensor, hessian: torch.Tensor, scheme: QuantScheme) -> float:
    """Proxy 1/2 tr(dW H dW^T) with dW = fake_quant(W) - W: the mean squared output error per token.

    ``weight`` (out, in), ``hessian`` (in, in) = 2/N sum x x^T (``HessianStats``).
    """
    if weight.dim() != 2 or tuple(hessian.shape) != (weight.shape[1], weight.shape[1]):
        raise ValueError(f"hessian {tuple(hessian.shape)} must be (in, in) for a weight {tuple(weight.shape)}")
    w = weight.float()
    dW = fake_quant(w, scheme) - w  # (out, in)
    return 0.5 * float(((dW @ hessian.float()) * dW).sum())  # sum_r dW_r H dW_r^T = tr(dW H dW^T)


@dataclass
class Allocation:
    """The chosen option per item, the bytes and the summed sensitivity of that choice."""

    bits: dict[str, int]
    nbytes: int
    cost: float
    budget: int


def allocate_bits(sensitivity: Mapping[str, Mapping[int, float]], sizes: Mapping[str, Mapping[int, int]],
                  budget: int, unit: int | None = None, max_units: int = 2_000_000) -> Allocation:
    """Exact multiple-choice knapsack: one bit width per item, sum of bytes <= ``budget``, least summed cost.

    ``sensitivity[item][bits]`` is the cost of giving ``item`` that bit width, ``sizes[item][bits]`` its
    bytes (same keys).  The DP runs over the bytes *above* each item's smallest option, in units of
    ``unit`` bytes (default: the gcd of all those extra bytes, which makes it exact).  A coarser ``unit``
    rounds every extra size up, so the answer still meets the budget but may be suboptimal.
    Raises ``ValueError`` when even the smallest options do not fit.
    """
    if not sensitivity or set(sensitivity) != set(sizes):
        raise ValueError("sensitivity and sizes must be non-empty and name the same items")
    items = list(sensitivity)
    opts, costs, extra = [], [], []
    base = 0
    for it in items:
        ks = sorted(sensitivity[it])
        if not ks or set(ks) != set(sizes[it]):
            raise ValueError(f"item {it!r}: sensitivity options {ks} and size options {sorted(sizes[it])} differ")
        c = [float(sensitivity[it][k]) for k in ks]
        if not all(math.isfinite(x) for x in c):
            raise ValueError(f"item {it!r} has a non-finite sensitivity {c}")
        s = [int(sizes[it][k]) for k in ks]
        if min(s) < 0:
            raise ValueError(f"item {it!r} has a negative size {s}")
        base += min(s)
        opts.append(ks), costs.append(c), extra.append([x - min(s) for x in s])
    if budget < base:
        raise ValueError(f"budget={budget} bytes is infeasible: the smallest option of every item already "
                         f"needs {base} bytes")
    if unit is None:
        unit = reduce(math.gcd, (e for ex in extra for e in ex), 0) or 1
    if unit <= 0:
        raise ValueError(f"unit={unit} must be a positive number of bytes")
    cap = (budget - base) // unit
    w = [[math.ceil(e / unit) for e in ex] for ex in extra]  # extra bytes in units, rounded up
    cap = min(cap, sum(max(x) for x in w))  # more capacity than the largest choice needs is useless
    if cap + 1 > max_units:
        raise ValueError(f"the DP would need {cap + 1} states (> max_units={max_units}); pass a coarser unit")
    dp = np.full(cap + 1, np.inf)  # dp[c] = least cost of the items so far using exactly c units
    dp[0] = 0.0
    choice = np.zeros((len(items), cap + 1), dtype=np.int16)
    for i in range(len(items)):
        new = np.full(cap + 1, np.inf)
        for k, (wk, ck) in enumerate(zip(w[i], costs[i])):
            if wk > cap:
                continue
            cand = np.full(cap + 1, np.inf)
            cand[wk:] = dp[: cap + 1 - wk] + ck
            better = cand < new
            new[better], choice[i, better] = cand[better], k
        dp = new
    c = int(np.argmin(dp))  # least cost over every used capacity <= cap
    bits = {}
    for i in range(len(items) - 1, -1, -1):  # walk the choices back
        k = int(choice[i, c])
        bits[items[i]] = opts[i][k]
        c -= w[i][k]
    bits = {it: bits[it] for it in items}
    nbytes = sum(int(sizes[it][b]) for it, b in bits.items())
    cost = sum(float(sensitivity[it][b]) for it, b in bits.items())
    return Allocation(bits, nbytes, cost, int(budget))


# ------------------------------------------------------------------ model level
def block_layer_names(model: nn.Module) -> list[list[str]]:
    """Fully qualified names of every block's linear layers: ``names[i]`` for block i."""
    fqn = {id(m): n for n, m in model.named_modules()}
    return [[fqn[id(m)] for m in block_linears(b).values()] for b in decoder_blocks(model)]


def layer_groups(model: nn.Module, by: str = "layer") -> dict[str, list[str]]:
    """Group the block linears: ``layer`` (each alone), ``block`` (``block.3``) or ``type`` (``mlp.down_proj``
    across all blocks).  Returns group name -> fully qualified layer names."""
    if by not in ("layer", "block", "type"):
        raise ValueError(f"by={by!r} must be 'layer', 'block' or 'type'")
    out: dict[str, list[str]] = {}
    for i, (names, block) in enumerate(zip(block_layer_names(model), decoder_blocks(model))):
        for fq, local in zip(names, block_linears(block)):
            key = fq if by == "layer" else f"block.{i}" if by == "block" else local
            out.setdefault(key, []).append(fq)
    return out


def _schemes(bits_options: Sequence[int], group_size: int, sym: bool) -> dict[int, QuantScheme]:
    if not bits_options or len(set(bits_options)) != len(bits_options):
        raise ValueError(f"bits_options={list(bits_options)} must be a non-empty list of distinct bit widths")
    return {b: QuantScheme(int(b), group_size, sym) for b in bits_options}


def option_bytes(model: nn.Module, groups: Mapping[str, Sequence[str]], bits_options: Sequence[int] = (3, 4, 8),
                 group_size: int = 64, sym: bool = True, scale_bits: int = 16) -> dict[str, dict[int, int]]:
    """Bytes of each group at each bit width (``layer_bytes`` summed over the group's layers)."""
    sch = _schemes(bits_options, group_size, sym)
    out = {}
    for g, names in groups.items():
        shapes = [tuple(get_weight(model.get_submodule(n)).shape) for n in names]
        out[g] = {b: sum(layer_bytes(o, i, s, scale_bits) for o, i in shapes) for b, s in sch.items()}
    return out


def hessian_sensitivities(model: nn.Module, calib: torch.Tensor, bits_options: Sequence[int] = (3, 4, 8),
                          group_size: int = 64, sym: bool = True, device: str = "auto",
                          groups: Mapping[str, Sequence[str]] | None = None) -> dict[str, dict[int, float]]:
    """Proxy sensitivity of every block linear (or of each group: the sum over its layers) at each bit
    width, from one sequential calibration pass over ``calib`` (N, T) tokens.  The model is not changed."""
    sch = _schemes(bits_options, group_size, sym)
    names = block_layer_names(model)
    per_layer: dict[str, dict[int, float]] = {}

    def measure(i: int, block: nn.Module, stats: dict[str, HessianStats]) -> None:
        for (local, st), fq in zip(stats.items(), names[i]):
            W = get_weight(block_linears(block)[local])  # (out, in)
            H = st.hessian()  # (in, in)
            per_layer[fq] = {b: hessian_sensitivity(W, H, s) for b, s in sch.items()}

    run_sequential(model, calib, measure, stats=HessianStats, device=device)
    if groups is None:
        return per_layer
    return {g: {b: sum(per_layer[n][b] for n in ns) for b in sch} for g, ns in groups.items()}


@torch.no_grad()
def measured_sensitivities(model: nn.Module, windows: torch.Tensor, groups: Mapping[str, Sequence[str]],
                           bits_options: Sequence[int] = (3, 4, 8), group_size: int = 64,
                           sym: bool = True) -> dict[str, dict[int, float]]:
    """Mean next-token NLL increase on ``windows`` (W, T) when only one group is fake-quantized at one bit
    width (every other layer float); the weights are restored after each measurement."""
    sch = _schemes(bits_options, group_size, sym)
    if windows.dim() != 2 or windows.shape[1] < 2:
        raise ValueError(f"windows must be (W, T) tokens with T >= 2, got {tuple(windows.shape)}")
    base = float(window_nlls(model, windows).mean())  # mean over the (W,) per-window NLLs
    out: dict[str, dict[int, float]] = {}
    for g, ns in tqdm(groups.items(), desc="sensitivity", disable=progress_disabled(), leave=False):
        mods = [model.get_submodule(n) for n in ns]
        saved = [get_weight(m).clone() for m in mods]
        out[g] = {}
        for b, s in sch.items():
            for m, w in zip(mods, saved):
                set_weight(m, fake_quant(w, s))
            out[g][b] = float(window_nlls(model, windows).mean()) - base
            for m, w in zip(mods, saved):
                set_weight(m, w)
    return out


@atomic
def apply_mixed_precision(model: nn.Module, bits: Mapping[str, int], groups: Mapping[str, Sequence[str]] | None = None,
                          group_size: int = 64, sym: bool = True, pack: bool = False,
                          scale_dtype: torch.dtype | None = None) -> dict[str, int]:
    """Quantize each layer at its allocated bit width (RTN), in place.

    ``bits`` maps a group (or, without ``groups``, a layer name) to a bit width.  ``pack=False`` writes
    fake-quantized weights back; ``pack=True`` swaps in ``QuantLinear`` layers with packed codes.
    Returns the bit width of every layer by fully qualified name.
    """
    groups = groups or {n: [n] for n in bits}
    unknown = set(bits) - set(groups)
    if unknown:
        raise ValueError(f"bits given for unknown groups {sorted(unknown)[:5]}")
    per_layer = {n: int(b) for g, b in bits.items() for n in groups[g]}
    for n in per_layer:
        if not is_linear_like(model.get_submodule(n)):
            raise ValueError(f"{n!r} is not a linear layer of the model")
    for b in sorted(set(per_layer.values())):
        s = QuantScheme(b, group_size, sym)
        names = {n for n, bb in per_layer.items() if bb == b}
        if pack:
            quantize_(model, WeightOnlyConfig(s, scale_dtype), filter_fn=lambda m, n, names=names: n in names)
        else:
            for n in names:
                m = model.get_submodule(n)
                set_weight(m, fake_quant(get_weight(m), s))
    return per_layer
