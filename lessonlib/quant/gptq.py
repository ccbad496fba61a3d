"""GPTQ: accurate post-training quantization with second-order (OBS) error compensation.

Frantar, Ashkboos, Hoefler, Alistarh 2022, "GPTQ: Accurate Post-Training Quantization for Generative
Pre-trained Transformers", Algorithm 1.  For the layer objective ||W X - W_hat X||^2 with Hessian
H = 2/N sum x x^T (in, in), columns are quantized left to right (or in act-order); after quantizing column
q to grid value Q_q, the not yet quantized columns absorb the error (OBS update, paper eq. 3):

    err = (W_q - Q_q) / [U]_qq,   W_{:, q:} -= err [U]_{q, q:}

where U is the upper Cholesky factor of (H + lambda I)^-1 (section 4 "Step 3: Cholesky reformulation").
Updates are applied lazily in blocks of ``block_size`` columns ("Step 2").  Details follow the reference
code: dead inputs (H_ii = 0) get H_ii = 1 and W_:,i = 0; damping lambda = percdamp * mean(diag H);
act-order permutes by descending diag(H); group parameters are fitted when a group starts.

One deliberate difference: when a group starts in the middle of a lazy block, the reference fits the
group on the weights *without* the in-block updates of the block's earlier columns, which makes its
result depend on ``block_size``; here the group is fitted on the exact current weights, so any
``block_size`` gives the same result as the one-column-at-a-time algorithm (the two agree whenever the
block size divides the group size, e.g. groups of 128 with blocks of 128).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..calib import HessianStats, run_sequential
from ..hessian import damped_inverse, prepare_layer
from ..models import get_weight, set_weight
from .affine import QuantScheme, compute_qparams, dequantize_codes, quantize_codes

__all__ = ["GPTQResult", "gptq_column_update", "gptq_quantize",
           "gptq_quantize_model", "hessian_error"]


@dataclass
class GPTQResult:
    """``weight`` (out, in) fake-quantized in the input dtype; ``codes`` (out, in) int32 and ``scales`` /
    ``zeros`` (1|out, G) float32 that reproduce it; ``perm`` (in,) the act-order permutation or None;
    ``g_idx`` (in,) the group of each input column when groups are not contiguous (act-order without
    static groups), else None; ``loss`` = sum of OBS errors = 1/2 tr(dW (H + lambda I) dW^T)."""

    weight: torch.Tensor
    codes: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor
    perm: torch.Tensor | None
    loss: float
    g_idx: torch.Tensor | None = None
    scheme: QuantScheme | None = None
    damp: float = 0.0


def hessian_error(weight: torch.Tensor, quantized: torch.Tensor, hessian: torch.Tensor) -> float:
    """The layer objective tr((W - Q) H (W - Q)^T) = ||W X - Q X||^2 * 2/N, in float64."""
    d = (weight.double() - quantized.double())  # (out, in)
    return float(((d @ hessian.double()) * d).sum())


def gptq_column_update(W1: torch.Tensor, U1: torch.Tensor, i: int, q: torch.Tensor) -> torch.Tensor:
    """One OBS step of GPTQ (Algorithm 1, inner loop) on a block of columns, in place.

    ``W1`` (out, B) is the block of weights, ``U1`` (B, B) the matching block of the upper Cholesky factor
    of H^-1, column ``i`` has just been quantized to ``q`` (out,).  Spread its error over columns i..B-1:
    err = (W1[:, i] - q) / U1[i, i];  W1[:, i:] -= err U1[i, i:].  Returns err (out,).
    """
    # BEGIN SOLUTION
    err = (W1[:, i] - q) / U1[i, i]  # (out,)
    W1[:, i:] -= err.unsqueeze(1) @ U1[i, i:].unsqueeze(0)  # (out, 1) @ (1, B-i)
    # END SOLUTION
    return err


def gptq_quantize(weight: torch.Tensor, hessian: torch.Tensor, bits: int = 4, group_size: int = -1,
                  sym: bool = False, act_order: bool = False, static_groups: bool = False, block_size: int = 128,
                  percdamp: float = 0.01) -> GPTQResult:
    """Quantize ``weight`` (out, in) with GPTQ given ``hessian`` (in, in) = 2/N sum x x^T.

    ``group_size``: -1 per output channel, 0 per tensor, g > 0 groups of g input columns (see ``QuantScheme``).
    """
    scheme = QuantScheme(bits, group_size, sym)
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size={block_size!r} must be a positive int")
    W, H, _ = prepare_layer(weight, hessian, dtype=torch.float32)  # (out, in), (in, in)
    if bool((torch.diag(H) < 0).any()):
        raise ValueError("hessian has negative diagonal entries; expected 2/N sum x x^T (positive semi-definite)")
    out_f, n_in = W.shape
    gs = group_size
    G = scheme.n_groups(n_in)
    rows = 1 if gs == 0 else out_f
    scales = torch.empty(rows, G, dtype=torch.float32, device=W.device)
    zeros = torch.empty_like(scales)
    per_col = QuantScheme(bits, -1, sym)  # fits one (scale, zero) per row of a slice
    if gs <= 0 or static_groups:  # one grid per row/tensor, or every group fitted up front (unpermuted)
        scales[:], zeros[:] = compute_qparams(W, scheme)

    perm = None
    if act_order:
        perm = torch.argsort(torch.diag(H), descending=True)  # (in,)
        W, H = W[:, perm], H[perm][:, perm]
    U, damp = damped_inverse(H, percdamp, upper_cholesky=True, max_tries=6)  # (in, in) upper

    Q = torch.zeros_like(W)  # (out, in)
    codes = torch.zeros(out_f, n_in, dtype=torch.int32, device=W.device)
    losses = torch.zeros_like(W)
    g_of_pos = torch.arange(n_in, device=W.device) // gs if gs > 0 else None  # group of each (permuted) position
    if gs > 0 and static_groups and perm is not None:
        g_of_pos = perm // gs  # static groups follow the original column
    for i1 in range(0, n_in, block_size):
        i2 = min(i1 + block_size, n_in)
        W1 = W[:, i1:i2].clone()  # (out, B)
        U1 = U[i1:i2, i1:i2]  # (B, B)
        Err1 = torch.zeros_like(W1)
        for i in range(i2 - i1):
            k = i1 + i  # position in (permuted) column order
            if gs > 0 and not static_groups and k % gs == 0:
                # the group's current weights: in-block part is up to date in W1, the rest still owes the
                # pending updates of this block's columns i1..k-1
                e = min(k + gs, n_in)
                cur = W1[:, i:min(i + gs, i2 - i1)]
                if e > i2:
                    rest = W[:, i2:e] - Err1[:, :i] @ U[i1:k, i2:e]
                    cur = torch.cat([cur, rest], dim=1)  # (out, gs)
                scales[:, k // gs: k // gs + 1], zeros[:, k // gs: k // gs + 1] = compute_qparams(cur, per_col)
            if gs > 0:
                s, z = scales[:, g_of_pos[k]], zeros[:, g_of_pos[k]]  # (out,)
            else:
                s, z = scales[:, 0], zeros[:, 0]  # (rows,)
            w = W1[:, i]  # (out,)
            c = quantize_codes(w, s, z, scheme)  # (out,)
            q = dequantize_codes(c, s, z)  # (out,)
            codes[:, k], Q[:, k] = c, q
            losses[:, k] = (w - q) ** 2 / U1[i, i] ** 2 / 2
            Err1[:, i] = gptq_column_update(W1, U1, i, q)
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]  # lazy batch update of all later columns

    g_idx = None
    if perm is not None:
        inv = torch.argsort(perm)
        Q, codes = Q[:, inv], codes[:, inv]
        if gs > 0 and not static_groups:
            g_idx = g_of_pos[inv].to(torch.int32)  # original column j sat at position inv[j]
    if not torch.isfinite(Q).all():
        raise RuntimeError("GPTQ produced non-finite weights; check the Hessian")  # never return NaN
    return GPTQResult(weight=Q.to(weight.dtype), codes=codes, scales=scales, zeros=zeros, perm=perm,
                      loss=float(losses.sum()), g_idx=g_idx, scheme=scheme, damp=damp)


def gptq_quantize_model(model: nn.Module, calib_batches: torch.Tensor, scheme: QuantScheme = QuantScheme(4, 64),
                        act_order: bool = False, static_groups: bool = False, block_size: int = 128,
                        percdamp: float = 0.01, device: torch.device | str = "auto",
                        layer_filter: Callable[[str], bool] | None = None,
                        groups: list[list[str]] | None = None) -> dict[str, GPTQResult]:
    """GPTQ for every linear layer in the decoder blocks, block by block on calibration tokens (N, T).

    Weights are replaced in place by their fake-quantized values (so later blocks see the quantized
    model's activations); the returned dict maps each layer's fully qualified name to its ``GPTQResult``,
    which ``quantize_(model, scheme, qparams=results)`` turns into packed ``QuantLinear`` layers.
    ``groups`` is passed to ``run_sequential`` (GPTQ's "true sequential" order).
    """
    fqn = {id(m): n for n, m in model.named_modules()}
    results: dict[str, GPTQResult] = {}

    def compress(_i: int, block: nn.Module, stats: dict[str, HessianStats]) -> None:
        for name, st in stats.items():
            lin = block.get_submodule(name)
            r = gptq_quantize(get_weight(lin), st.hessian(), scheme.bits, scheme.group_size, scheme.sym,
                              act_order=act_order, static_groups=static_groups, block_size=block_size,
                              percdamp=percdamp)
            set_weight(lin, r.weight)
            results[fqn[id(lin)]] = r

    run_sequential(model, calib_batches, compress, stats=HessianStats, device=device, layer_filter=layer_filter,
                   groups=groups)
    return results
