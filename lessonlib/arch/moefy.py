"""MoEfication: split a trained SwiGLU MLP into experts (Zhang et al. 2022, arXiv 2110.01786).

A SwiGLU MLP computes ``y = W_down (silu(W_gate x) * (W_up x))`` (Shazeer 2020, arXiv 2002.05202), i.e.
``y = sum_u h_u(x) w_down[:, u]`` with ``h_u = silu(w_gate_u . x) (w_up_u . x)``: a sum over the I
intermediate units.  Partitioning the units into E groups therefore splits the MLP into E experts whose
outputs add up to the dense output exactly; running only k of them per token is MoEfication.

* Partition (``balanced_kmeans_units``): a few steps of spherical k-means on the units' concatenated,
  normalised gate/up weight rows, with a *balanced* assignment (every expert gets I/E units, +-1), so
  that the active parameters per token are exactly k/E of the MLP whichever experts a token picks;
  units with similar input directions tend to fire together, which is what makes a few experts enough
  (the paper's own choice is balanced k-means on the up/gate weights too).
* Routers (``MoEfiedMLP.router``):
  ``"probe"`` -- cheap and honest: each expert is scored by the sum of |silu(gate)| of ``probe`` of its
  units (those with the largest gate-weight norm), a derived router of E*probe*C weights that the token
  would run before choosing; ``"oracle"`` -- an upper bound, *not* deployable: the experts' true
  activation mass sum_u |h_u| (it needs the whole dense MLP).  Selected experts are summed with weight 1,
  as in MoEfication (no softmax mixing), so k = E is the dense MLP.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import nn

__all__ = ["check_moe_shape", "balanced_kmeans_units", "MoEfiedMLP", "moefied", "moefy_param_counts"]

ROUTERS = ("probe", "oracle")


def check_moe_shape(n_units: int, n_experts: int, k: int) -> None:
    """Raise ValueError naming the bad value unless 1 <= n_experts <= n_units and 1 <= k <= n_experts."""
    if isinstance(n_experts, bool) or not isinstance(n_experts, int) or not 1 <= n_experts <= n_units:
        raise ValueError(f"n_experts={n_experts!r}: must be an int between 1 and the {n_units} intermediate units")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n_experts:
        raise ValueError(f"k={k!r}: must be an int between 1 and n_experts={n_experts}")


def balanced_kmeans_units(w_gate: torch.Tensor, w_up: torch.Tensor, n_experts: int, steps: int = 5,
                          seed: int = 0) -> torch.Tensor:
    """Expert id (I,) of each intermediate unit: balanced spherical k-means on [w_gate_u, w_up_u] / norm.

    Each step scores units against the centroids by cosine, then fills experts greedily from the most
    confident (unit, expert) pairs with capacity ceil/floor(I/E), so group sizes differ by at most one.
    """
    n_units = w_gate.shape[0]
    check_moe_shape(n_units, n_experts, 1)
    feats = torch.cat([w_gate, w_up], dim=1).float()
    feats = feats / feats.norm(dim=1, keepdim=True).clamp_min(1e-12)
    g = torch.Generator().manual_seed(seed)
    cent = feats[torch.randperm(n_units, generator=g)[:n_experts]].clone()
    cap = torch.full((n_experts,), n_units // n_experts, dtype=torch.long)
    cap[: n_units % n_experts] += 1
    assign = torch.empty(n_units, dtype=torch.long)
    for _ in range(max(1, steps)):
        sim = feats @ cent.T                                          # (I, E) cosine
        order = sim.flatten().argsort(descending=True)
        left, done, n_done = cap.tolist(), [False] * n_units, 0
        for idx in order.tolist():
            u, e = divmod(idx, n_experts)
            if not done[u] and left[e] > 0:
                assign[u], done[u], n_done = e, True, n_done + 1
                left[e] -= 1
                if n_done == n_units:
                    break
        for e in range(n_experts):
            c = feats[assign == e].sum(0)
            cent[e] = c / c.norm().clamp_min(1e-12)
    return assign


class MoEfiedMLP(nn.Module):
    """A SwiGLU MLP (``gate_proj``, ``up_proj``, ``down_proj``, ``act_fn``) run as E experts, top-k per token.

    For measurement the dense intermediate is computed and the units of unchosen experts are zeroed: the
    output is what the sparse model would compute (its compute is the active count, not this forward's).
    ``last_experts`` holds the (tokens, k) experts chosen in the latest forward.
    """

    def __init__(self, mlp: nn.Module, assign: torch.Tensor, k: int, router: str = "probe", probe: int = 8):
        super().__init__()
        if router not in ROUTERS:
            raise ValueError(f"router={router!r}: must be one of {ROUTERS}")
        self.mlp, self.k, self.router = mlp, k, router
        self.n_experts = int(assign.max()) + 1
        check_moe_shape(assign.numel(), self.n_experts, k)
        self.register_buffer("member", nn.functional.one_hot(assign, self.n_experts).to(mlp.gate_proj.weight.dtype),
                             persistent=False)                        # (I, E)
        gnorm = mlp.gate_proj.weight.detach().norm(dim=1)
        probe_mask = torch.zeros_like(self.member)
        for e in range(self.n_experts):
            units = (assign == e).nonzero().flatten()
            top = units[gnorm[units].argsort(descending=True)[:probe]]
            probe_mask[top, e] = 1
        self.register_buffer("probe_member", probe_mask, persistent=False)
        self.probe = int(probe_mask.sum(0).max())
        self.last_experts: torch.Tensor | None = None

    def expert_scores(self, gate: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """(..., E) scores: the probe router's sum |silu(gate)| over probe units, or the oracle's sum |h|."""
        if self.router == "oracle":
            return h.abs() @ self.member
        return self.mlp.act_fn(gate).abs() @ self.probe_member

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.mlp.gate_proj(x)
        h = self.mlp.act_fn(gate) * self.mlp.up_proj(x)
        if self.k < self.n_experts:
            top = self.expert_scores(gate, h).topk(self.k, dim=-1).indices
            self.last_experts = top.reshape(-1, self.k).detach()
            chosen = torch.zeros(*top.shape[:-1], self.n_experts, dtype=h.dtype, device=h.device)
            chosen.scatter_(-1, top, 1.0)
            h = h * (chosen @ self.member.T)                          # 1 on the units of chosen experts
        else:
            self.last_experts = None
        return self.mlp.down_proj(h)


def moefy_param_counts(d_model: int, n_units: int, n_experts: int, k: int, probe: int = 0) -> dict[str, int]:
    """Parameters of one MoEfied SwiGLU MLP: ``total`` held (3 C I, plus the router's E*probe*C) and ``active``
    per token: the router plus the k largest experts' 3 C |expert| (balanced sizes, so exactly k/E up to rounding)."""
    check_moe_shape(n_units, n_experts, k)
    sizes = [n_units // n_experts + (1 if e < n_units % n_experts else 0) for e in range(n_experts)]
    router = n_experts * probe * d_model
    return {"total": 3 * d_model * n_units + router, "active": 3 * d_model * sum(sizes[:k]) + router,
            "dense": 3 * d_model * n_units, "router": router}


@contextlib.contextmanager
def moefied(blocks: Sequence[nn.Module], n_experts: int, k: int, router: str = "probe", probe: int = 8,
            partitions: dict | None = None, steps: int = 5) -> Iterator[list[MoEfiedMLP]]:
    """Swap the ``mlp`` of each block for its MoEfied form while active; restore the dense MLPs on exit.

    ``partitions`` (optional) caches the k-means assignment per (id(block), n_experts) across calls.
    """
    blocks = list(blocks)
    for b in blocks:
        check_moe_shape(b.mlp.gate_proj.weight.shape[0], n_experts, k)
    originals, swapped = [b.mlp for b in blocks], []
    try:
        for b, mlp in zip(blocks, originals):
            key = (id(b), n_experts)
            assign = partitions.get(key) if partitions is not None else None
            if assign is None:
                assign = balanced_kmeans_units(mlp.gate_proj.weight.detach().cpu(), mlp.up_proj.weight.detach().cpu(),
                                               n_experts, steps=steps)
                if partitions is not None:
                    partitions[key] = assign
            moe = MoEfiedMLP(mlp, assign.to(mlp.gate_proj.weight.device), k, router=router, probe=probe)
            b.mlp = moe
            swapped.append(moe)
        yield swapped
    finally:
        for b, mlp in zip(blocks, originals):
            b.mlp = mlp
