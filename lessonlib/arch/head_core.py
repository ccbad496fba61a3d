"""The two cores of head pruning for one layer, written out for notebook 10's exercises.

* :func:`head_saliency_from_grads`: Michel, Levy & Neubig (2019, arXiv 1905.10650), Eq. 2.  Gate head ``h``'s
  output by ``xi_h`` (``x'_c = xi_h x_c`` on the head's channels ``c``); at ``xi = 1`` the chain rule gives
  ``dL/dxi_h = sum_{b, t, c in h} x_{btc} dL/dx'_{btc}``, so one backward pass that records the input of the
  output projection and its gradient yields every head's score ``|dL/dxi_h|``.
* :func:`drop_query_heads`: physical removal.  Query head ``h`` owns rows ``h d .. (h+1) d - 1`` of ``W_Q``
  (and its bias) and the same columns of ``W_O``; deleting them leaves a smaller dense layer whose output
  equals the original with that head's output zeroed.
"""
from __future__ import annotations

import torch

__all__ = ["head_saliency_from_grads", "drop_query_heads"]


def head_saliency_from_grads(x: torch.Tensor, grad: torch.Tensor, n_heads: int) -> torch.Tensor:
    """|dL/dxi_h| for every head from the output projection's input ``x`` (..., n_heads * d) and the loss
    gradient ``grad`` with respect to it (same shape); returns (n_heads,) float32."""
    if x.shape != grad.shape:
        raise ValueError(f"x {tuple(x.shape)} and grad {tuple(grad.shape)} must have the same shape")
    if not isinstance(n_heads, int) or n_heads < 1 or x.shape[-1] % n_heads:
        raise ValueError(f"n_heads={n_heads!r} must be a positive integer dividing the last dimension {x.shape[-1]}")
    # BEGIN SOLUTION
    d = x.shape[-1] // n_heads
    prod = (x.float() * grad.float()).reshape(-1, n_heads, d)  # (N, n_heads, d): per-channel chain rule terms
    return prod.sum(dim=(0, 2)).abs()  # sum over tokens and the head's channels, then |.|
    # END SOLUTION


def drop_query_heads(w_q: torch.Tensor, b_q: torch.Tensor | None, w_o: torch.Tensor, remove: list[int],
                     head_dim: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Delete query heads ``remove`` from ``W_Q`` (n_q * d, C), its bias (n_q * d,) or None, and ``W_O``
    (C, n_q * d); returns the smaller (W_Q, b_Q, W_O) with the kept heads in their original order."""
    if w_q.dim() != 2 or w_o.dim() != 2 or w_q.shape[0] != w_o.shape[1]:
        raise ValueError(f"W_Q {tuple(w_q.shape)} must be (n_q * d, C) and W_O {tuple(w_o.shape)} (C, n_q * d)")
    if not isinstance(head_dim, int) or head_dim < 1 or w_q.shape[0] % head_dim:
        raise ValueError(f"head_dim={head_dim!r} must be a positive integer dividing {w_q.shape[0]}")
    n_q = w_q.shape[0] // head_dim
    bad = [h for h in remove if not 0 <= int(h) < n_q]
    if bad or len(set(int(h) for h in remove)) != len(list(remove)):
        raise ValueError(f"remove={list(remove)} must be distinct head indices in 0..{n_q - 1}")
    # BEGIN SOLUTION
    gone = set(int(h) for h in remove)
    keep = [h for h in range(n_q) if h not in gone]
    rows = torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim) for h in keep]) if keep \
        else torch.zeros(0, dtype=torch.long)  # (len(keep) * d,)
    new_b = None if b_q is None else b_q[rows].clone()
    return w_q[rows].clone(), new_b, w_o[:, rows].clone()
    # END SOLUTION
