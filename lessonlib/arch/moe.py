"""A small mixture-of-experts feed-forward layer: top-k routing, active vs total parameters, load balance.

Shazeer et al. 2017 ("Outrageously Large Neural Networks: The Sparsely-Gated Mixture-of-Experts Layer",
Eq. 1-3) replace one FFN by ``E`` expert FFNs and a router ``G(x) = softmax(TopK(x W_g, k))``: each token
runs through only the ``k`` experts with the largest router logits, and their outputs are mixed with
the renormalised gate weights, ``y = sum_{e in TopK} G(x)_e E_e(x)``.  Parameters grow with ``E`` while the
compute per token grows with ``k``: *total* parameters count every expert, *active* parameters only the
``k`` a token uses.

A router left alone tends to send most tokens to a few experts.  The Switch Transformer (Fedus et al.
2021, Eq. 4-6) adds the auxiliary loss ``alpha * E * sum_e f_e P_e`` with ``f_e`` the fraction of token
assignments that go to expert ``e`` and ``P_e`` the mean router probability of ``e``; it is minimal
(= alpha) under a uniform load.  Here ``f_e`` counts all ``k`` assignments of each token (divided by
``k``), the generalisation to top-k used by Mixtral-style layers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..config import progress_disabled

__all__ = ["top_k_route", "expert_load", "load_balance_loss", "load_imbalance", "MoEFFN", "moe_param_counts",
           "ToyMoEResult", "train_toy_moe"]


# ----------------------------------------------------------------------------- layer-level functions
def top_k_route(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k gating (Shazeer et al. 2017, Eq. 3-5): ``softmax`` over each token's ``k`` largest logits.

    logits: (T, E) router logits.  Returns ``(weights, experts)``, both (T, k): the gate weights (each row
    sums to 1) and the chosen expert indices, largest logit first (ties: lower index).
    """
    if logits.dim() != 2:
        raise ValueError(f"router logits must be (tokens, experts), got shape {tuple(logits.shape)}")
    E = logits.shape[1]
    if not isinstance(k, int) or not 1 <= k <= E:
        raise ValueError(f"k={k!r} experts per token must be an int in 1..{E}")
    order = torch.argsort(-logits, dim=1, stable=True)[:, :k]  # (T, k)
    top = logits.gather(1, order)  # (T, k)
    return torch.softmax(top.float(), dim=1).to(logits.dtype), order


def expert_load(experts: torch.Tensor, n_experts: int) -> torch.Tensor:
    """Fraction of token-to-expert assignments that go to each expert, (E,) summing to 1.

    experts: (T, k) chosen indices (``top_k_route``).  This is the Switch Transformer's ``f_e``.
    """
    if experts.dim() != 2 or experts.numel() == 0:
        raise ValueError(f"experts must be a non-empty (tokens, k) index tensor, got shape {tuple(experts.shape)}")
    if experts.min() < 0 or experts.max() >= n_experts:
        raise ValueError(f"expert indices must lie in 0..{n_experts - 1}, got {experts.min()}..{experts.max()}")
    counts = torch.bincount(experts.flatten(), minlength=n_experts).float()  # (E,)
    return counts / experts.numel()


def load_balance_loss(logits: torch.Tensor, experts: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Switch Transformer auxiliary loss (Fedus et al. 2021, Eq. 4): ``alpha * E * sum_e f_e P_e``.

    logits: (T, E) router logits (gradients flow through ``P_e``, the mean softmax probability; ``f_e``
    is a count and carries none).  Equals ``alpha`` when both the load and the probabilities are uniform.
    """
    E = logits.shape[-1]
    f = expert_load(experts, E)  # (E,)
    P = torch.softmax(logits.float(), dim=-1).mean(0)  # (E,)
    return alpha * E * (f.to(P.device) * P).sum()


def load_imbalance(load: torch.Tensor) -> float:
    """``max_e load_e / mean_e load_e``: 1.0 for a perfectly even load, ``E`` when one expert gets everything."""
    if load.dim() != 1 or load.numel() == 0 or load.sum() <= 0:
        raise ValueError(f"load must be a non-empty 1-D tensor with a positive sum, got {load}")
    return float(load.max() / load.mean())


# ----------------------------------------------------------------------------- the layer
class MoEFFN(nn.Module):
    """``E`` two-matrix GELU experts (d -> d_ff -> d) behind a linear top-k router (no bias)."""

    def __init__(self, d: int, d_ff: int, n_experts: int, k: int = 2, seed: int = 0):
        super().__init__()
        if min(d, d_ff, n_experts) < 1 or not 1 <= k <= n_experts:
            raise ValueError(f"need d, d_ff, n_experts >= 1 and 1 <= k <= n_experts; got d={d}, d_ff={d_ff}, "
                             f"n_experts={n_experts}, k={k}")
        g = torch.Generator().manual_seed(seed)
        self.k, self.n_experts = k, n_experts
        self.router = nn.Linear(d, n_experts, bias=False)
        self.w_in = nn.Parameter(torch.randn(n_experts, d_ff, d, generator=g) / math.sqrt(d))  # (E, d_ff, d)
        self.w_out = nn.Parameter(torch.randn(n_experts, d, d_ff, generator=g) / math.sqrt(d_ff))  # (E, d, d_ff)
        with torch.no_grad():
            self.router.weight.copy_(torch.randn(n_experts, d, generator=g) / math.sqrt(d))
        self.last_logits: torch.Tensor | None = None
        self.last_experts: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        h = x.reshape(-1, shape[-1])  # (T, d)
        logits = self.router(h)  # (T, E)
        w, idx = top_k_route(logits, self.k)  # (T, k), (T, k)
        self.last_logits, self.last_experts = logits, idx
        y = torch.zeros_like(h)
        for e in range(self.n_experts):  # dispatch: each expert sees only its tokens
            tok, slot = (idx == e).nonzero(as_tuple=True)
            if tok.numel() == 0:
                continue
            z = F.gelu(h[tok] @ self.w_in[e].T) @ self.w_out[e].T  # (t_e, d)
            y.index_add_(0, tok, z * w[tok, slot, None])
        return y.reshape(shape)

    def balance_loss(self, alpha: float = 1.0) -> torch.Tensor:
        """``load_balance_loss`` of the last forward pass."""
        if self.last_logits is None:
            raise ValueError("run a forward pass before asking for the balance loss")
        return load_balance_loss(self.last_logits, self.last_experts, alpha)


def moe_param_counts(layer: MoEFFN) -> dict[str, int]:
    """``total`` (router + all experts), ``active`` (router + the ``k`` experts one token uses), ``per_expert``."""
    per_expert = layer.w_in[0].numel() + layer.w_out[0].numel()
    router = layer.router.weight.numel()
    return {"total": router + layer.n_experts * per_expert, "active": router + layer.k * per_expert,
            "per_expert": per_expert, "router": router}


# ----------------------------------------------------------------------------- a toy training run
@dataclass
class ToyMoEResult:
    loss: list[float]  # task MSE per step
    load: list[float]  # final expert load on held-out tokens (fractions)
    imbalance: float  # max / mean of the final load
    balance_coef: float


def train_toy_moe(d: int = 16, d_ff: int = 32, n_experts: int = 8, k: int = 2, steps: int = 200,
                  tokens: int = 256, balance_coef: float = 0.0, input_shift: float = 2.0, lr: float = 1e-2,
                  seed: int = 0) -> ToyMoEResult:
    """Fit a ``MoEFFN`` to a fixed random two-layer teacher on Gaussian tokens with Adam.

    The tokens share a common offset of length ``input_shift`` (real hidden states are not centred
    either); that shared direction is what lets an unregularised router favour a few experts.  The loss
    is ``MSE + balance_coef * load_balance_loss``; compare ``balance_coef = 0`` with ``0.1`` to see the
    auxiliary loss even out the load.  Everything is drawn from generators seeded with ``seed``.
    """
    if steps < 1 or tokens < 1 or balance_coef < 0 or input_shift < 0 or not lr > 0:
        raise ValueError(f"need steps >= 1, tokens >= 1, balance_coef >= 0, lr > 0; got {steps}, {tokens}, "
                         f"{balance_coef}, {lr}")
    g = torch.Generator().manual_seed(seed + 1)
    teacher_in = torch.randn(4 * d, d, generator=g) / math.sqrt(d)  # (4d, d)
    teacher_out = torch.randn(d, 4 * d, generator=g) / math.sqrt(4 * d)  # (d, 4d)
    mu = torch.randn(d, generator=g)
    mu = input_shift * mu / mu.norm()  # (d,) the tokens' shared offset
    layer = MoEFFN(d, d_ff, n_experts, k, seed=seed)
    opt = torch.optim.Adam(layer.parameters(), lr=lr)
    losses = []
    for _ in tqdm(range(steps), desc="toy MoE", disable=progress_disabled(), leave=False):
        x = torch.randn(tokens, d, generator=g) + mu  # (tokens, d)
        target = F.gelu(x @ teacher_in.T) @ teacher_out.T  # (tokens, d)
        mse = F.mse_loss(layer(x), target)
        loss = mse + balance_coef * layer.balance_loss() if balance_coef else mse
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(mse.detach()))
    with torch.no_grad():
        layer(torch.randn(4 * tokens, d, generator=g) + mu)
        load = expert_load(layer.last_experts, n_experts)
    return ToyMoEResult(losses, load.tolist(), load_imbalance(load), balance_coef)
