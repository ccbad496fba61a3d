"""OBQ: Optimal Brain Quantization, the exact (slow) reference that GPTQ approximates.

Frantar & Alistarh 2022, "Optimal Brain Compression: A Framework for Accurate Post-Training Quantization
and Pruning" (OBC), section 4 / Algorithm 1 adapted to quantization (section 5 "OBQ").  Each row of W is
an independent quadratic problem with the layer Hessian H.  Repeatedly:

1. for every not yet quantized weight p, the OBS saliency (quant(w_p) - w_p)^2 / [H^-1]_pp (eq. 7);
2. quantize the weight with the smallest saliency (``order="greedy"``) or the next one in column order
   (``order="fixed"``);
3. update the remaining weights optimally: w -= (w_p - quant(w_p)) / [H^-1]_pp * H^-1_{:, p} (eq. 3);
4. remove p from the problem: H^-1 -= H^-1_{:, p} H^-1_{p, :} / [H^-1]_pp (eq. 4, Gaussian elimination).

In fixed column order all rows share the same H^-1 sequence, and the result equals GPTQ's (GPTQ,
Frantar et al. 2022, section 4 "Step 1: Arbitrary order insight"): ``test_quant_obq`` checks this.
Greedy order alone lets OBS updates push the last weights of a row off the grid;
like the OBC reference code, such weights are quantized first (``outliers_first``).
Greedy is not always best: the saliency favours channels with small inputs, the opposite of GPTQ's
act-order, and with very uneven input scales act-order GPTQ (even plain GPTQ) can end up lower.
The greedy order keeps one (in, in) inverse per row, so memory is out * in^2: small layers only.
Computed in float64.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .affine import QuantScheme, compute_qparams, dequantize, dequantize_codes, expand_qparams, quantize_codes
from ..hessian import damped_inverse, prepare_layer

__all__ = ["OBQResult", "obq_quantize"]


@dataclass
class OBQResult:
    """``weight`` (out, in) quantized, input dtype; ``codes`` int32 (out, in); ``scales``/``zeros`` (1|out, G);
    ``order`` (out, in): the column quantized at each step of each row; ``loss`` = 1/2 tr(dW (H+lambda I) dW^T)."""

    weight: torch.Tensor
    codes: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor
    order: torch.Tensor
    loss: float


def _result(weight: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
            order: torch.Tensor, loss: torch.Tensor) -> OBQResult:
    wq = dequantize(codes, scales, zeros, dtype=weight.dtype)  # (out, in), exactly what the codes say
    return OBQResult(wq, codes, scales, zeros, order, float(loss))


def _damped_inverse(H: torch.Tensor, percdamp: float) -> torch.Tensor:
    _, damp = damped_inverse(H, percdamp, upper_cholesky=True, max_tries=6)  # same damping (and retries) as GPTQ
    H64 = H.double() + damp * torch.eye(H.shape[0], dtype=torch.float64, device=H.device)
    return torch.cholesky_inverse(torch.linalg.cholesky(H64))  # (in, in)


def obq_quantize(weight: torch.Tensor, hessian: torch.Tensor, scheme: QuantScheme = QuantScheme(4, -1),
                 order: str = "greedy", percdamp: float = 0.01, static_groups: bool = False,
                 outliers_first: bool = True) -> OBQResult:
    """Quantize ``weight`` (out, in) one weight at a time with full OBS updates, given ``hessian`` (in, in).

    Grids: per-tensor / per-channel grids and, in greedy order, every group grid are fitted up front on
    the original weight (there is no "group start" in greedy order).  In fixed order a group's grid is
    fitted on the current weights when its first column comes up, like GPTQ, unless ``static_groups``.
    ``outliers_first`` (greedy only, as in the OBC reference code): when updates have pushed a remaining
    weight so far off the grid that its rounding error exceeds half a step, it is quantized next.
    """
    if order not in ("greedy", "fixed"):
        raise ValueError(f"order={order!r}; choose 'greedy' or 'fixed'")
    W32, H, _ = prepare_layer(weight, hessian, dtype=torch.float32)  # (out, in), (in, in)
    if bool((torch.diag(H) < 0).any()):
        raise ValueError("hessian has negative diagonal entries; expected 2/N sum x x^T (positive semi-definite)")
    Hinv = _damped_inverse(H, percdamp)  # (in, in) float64
    W = W32.double()
    out_f, n_in = W.shape
    gs = scheme.group_size
    dynamic = order == "fixed" and gs > 0 and not static_groups
    scales, zeros = compute_qparams(W32, scheme)  # (rows, G) float32; overwritten group by group if dynamic
    loss = torch.zeros((), dtype=torch.float64)
    codes = torch.zeros(out_f, n_in, dtype=torch.int32, device=W.device)
    rows = torch.arange(out_f, device=W.device)

    if order == "fixed":
        per_col = QuantScheme(scheme.bits, -1, scheme.sym)
        for k in range(n_in):
            if dynamic and k % gs == 0:
                scales[:, k // gs: k // gs + 1], zeros[:, k // gs: k // gs + 1] = compute_qparams(
                    W[:, k:k + gs].float(), per_col)
            g = k // gs if gs > 0 else 0
            s, z = scales[:, g].double(), zeros[:, g].double()  # (rows,)
            c = quantize_codes(W[:, k], s, z, scheme)  # (out,)
            q = dequantize_codes(c, s, z)  # (out,)
            d = Hinv[k, k]
            err = (W[:, k] - q) / d  # (out,)
            loss += (err * (W[:, k] - q)).sum() / 2
            W -= err[:, None] * Hinv[k][None, :]  # OBS update of every remaining weight
            W[:, k] = q
            codes[:, k] = c
            Hinv = Hinv - torch.outer(Hinv[:, k], Hinv[k]) / d  # eliminate column k
        order_t = torch.arange(n_in, device=W.device).expand(out_f, n_in).clone()
        return _result(weight, codes, scales, zeros, order_t, loss)

    S = expand_qparams(scales, n_in).double().expand(out_f, n_in)  # (out, in)
    Z = expand_qparams(zeros, n_in).double().expand(out_f, n_in)
    Hr = Hinv.expand(out_f, n_in, n_in).clone()  # (out, in, in): one inverse per row
    done = torch.zeros(out_f, n_in, dtype=torch.bool, device=W.device)
    order_t = torch.zeros(out_f, n_in, dtype=torch.long, device=W.device)
    for step in range(n_in):
        C = quantize_codes(W, S, Z, scheme)  # (out, in)
        Qall = dequantize_codes(C, S, Z)  # (out, in)
        diag = Hr.diagonal(dim1=1, dim2=2)  # (out, in)
        err2 = torch.where(done, torch.zeros_like(W), (Qall - W) ** 2)  # (out, in)
        sal = torch.where(done, torch.full_like(W, float("inf")), err2 / diag.clamp_min(1e-300))
        p = sal.argmin(dim=1)  # (out,)
        if outliers_first:  # a weight pushed off the grid (error > half a step) is quantized at once
            off = (err2 > 0.25 * S ** 2).any(dim=1)  # (out,)
            p = torch.where(off, err2.argmax(dim=1), p)
        wp, qp, dp = W[rows, p], Qall[rows, p], diag[rows, p]
        err = (wp - qp) / dp  # (out,)
        loss += (err * (wp - qp)).sum() / 2
        hrow = Hr[rows, p, :]  # (out, in)
        W -= err[:, None] * hrow
        W[rows, p] = qp
        codes[rows, p] = C[rows, p]
        Hr -= hrow[:, :, None] * hrow[:, None, :] / dp[:, None, None]
        done[rows, p] = True
        order_t[:, step] = p
    return _result(weight, codes, scales, zeros, order_t, loss)
