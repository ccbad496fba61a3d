"""Activation sparsity of the FFN intermediate: measure it, create it (ReLU-fication), exploit it.

* Measurement: the input of the down projection is the FFN intermediate h (tokens, d_ff): for LLaMA's SwiGLU
  h = SiLU(x W_gate^T) * (x W_up^T), for a ReLU FFN (OPT's ``fc2``) h = ReLU(x W_1^T + b).  A forward pre-hook
  on the down projection records the fraction of entries with |h| <= threshold.  SiLU is almost never exactly 0,
  so a SwiGLU model is dense at threshold 0; ReLU networks are naturally sparse (Li et al. 2023, "The Lazy
  Neuron Phenomenon").
* ReLU-fication (Mirzadeh et al. 2023, "ReLU Strikes Back", stage 1): replace SiLU by ReLU in the gate of every
  LLaMA MLP; a short fine-tune then recovers the quality while the gate keeps its zeros.
* Exploitation (as in Deja Vu, Liu et al. 2023, and PowerInfer): if unit j is zero for every token of the batch,
  row j of W_down^T (d_ff, d) contributes nothing, so y = h[:, A] @ W_down^T[A] over the active set A only.
  Storing W_down^T makes each gathered unit a contiguous row.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from ..evaluate import measure_latency
from ..models import decoder_blocks
from ..atomic import atomic

__all__ = ["ffn_down_projections", "ActivationSparsityMonitor", "activation_sparsity", "relufy_llama_mlp",
           "relufied_ffn", "SparseDownProj", "sparse_down_proj", "time_sparse_down_proj"]

_DOWN_NAMES = ("mlp.down_proj", "fc2", "mlp.c_proj")  # LLaMA-style, OPT, GPT-2


def ffn_down_projections(model: nn.Module) -> dict[str, nn.Module]:
    """The down projection of each decoder block's FFN, by block index (its input is the FFN intermediate)."""
    out: dict[str, nn.Module] = {}
    for i, block in enumerate(decoder_blocks(model)):
        for name in _DOWN_NAMES:
            try:
                out[str(i)] = block.get_submodule(name)
                break
            except AttributeError:
                continue
        else:
            raise ValueError(f"block {i} has none of the FFN down projections {_DOWN_NAMES}")
    return out


class ActivationSparsityMonitor:
    """Counts near-zero entries (|h| <= threshold) of the inputs of the given modules via forward pre-hooks.

    Use as a context manager around forward passes; ``fractions()`` gives the zero fraction per module,
    ``overall()`` over all of them.  Hooks are removed on exit.
    """

    def __init__(self, modules: dict[str, nn.Module], threshold: float = 0.0):
        if threshold < 0:
            raise ValueError(f"threshold={threshold} must be >= 0")
        if not modules:
            raise ValueError("no modules to monitor")
        self.modules, self.threshold = modules, float(threshold)
        self.zeros = dict.fromkeys(modules, 0)
        self.total = dict.fromkeys(modules, 0)
        self._handles: list = []

    def _hook(self, name: str):
        def pre(_mod, args):
            h = args[0].detach()  # (..., d_ff)
            self.zeros[name] += int((h.abs() <= self.threshold).sum())
            self.total[name] += h.numel()
        return pre

    def __enter__(self) -> "ActivationSparsityMonitor":
        self._handles = [m.register_forward_pre_hook(self._hook(n)) for n, m in self.modules.items()]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def fractions(self) -> dict[str, float]:
        if any(t == 0 for t in self.total.values()):
            raise RuntimeError("no activations were recorded for some modules; run a forward pass inside the monitor")
        return {n: self.zeros[n] / self.total[n] for n in self.modules}

    def overall(self) -> float:
        self.fractions()
        return sum(self.zeros.values()) / sum(self.total.values())


@torch.no_grad()
def activation_sparsity(model: nn.Module, input_ids: torch.Tensor, threshold: float = 0.0,
                        batch_size: int = 8) -> dict[str, float]:
    """Zero fraction of the FFN intermediate of every block of a causal LM on ``input_ids`` (n, T); the key
    ``"overall"`` pools all blocks."""
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (n, T), got {tuple(input_ids.shape)}")
    dev = next(model.parameters()).device
    with ActivationSparsityMonitor(ffn_down_projections(model), threshold) as mon:
        for s in range(0, input_ids.shape[0], batch_size):
            model(input_ids[s:s + batch_size].to(dev), use_cache=False)
    return {**mon.fractions(), "overall": mon.overall()}


@atomic
def relufy_llama_mlp(model: nn.Module) -> int:
    """Replace the gate activation (SiLU) of every LLaMA-style MLP by ReLU, in place; returns how many.

    h = ReLU(x W_gate^T) * (x W_up^T) then has exact zeros wherever the gate is negative.  Sets
    ``config.hidden_act = "relu"`` so a saved model reloads the same way.  Raises if no MLP has ``act_fn``.
    """
    n = 0
    for block in decoder_blocks(model):
        mlp = getattr(block, "mlp", None)
        if mlp is None or not hasattr(mlp, "act_fn") or not hasattr(mlp, "gate_proj"):
            continue
        mlp.act_fn = nn.ReLU()
        n += 1
    if n == 0:
        raise ValueError(f"{type(model).__name__} has no gated MLP with an act_fn (LLaMA-style) to ReLU-fy")
    if getattr(model, "config", None) is not None:
        model.config.hidden_act = "relu"
    return n


def relufied_ffn(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor,
                 w_down: torch.Tensor) -> tuple[torch.Tensor, float]:
    """A LLaMA MLP after ReLU-fication (Mirzadeh et al. 2023, stage 1): ReLU in place of SiLU in the gate.

    h = ReLU(x W_gate^T) * (x W_up^T), y = h W_down^T.  x (tokens, d); w_gate, w_up (d_ff, d); w_down (d, d_ff).
    Returns ``(y, zero_fraction)``: y (tokens, d) in x's dtype and the fraction of entries of h that are exactly
    zero, as a Python float: every token whose gate pre-activation is <= 0 contributes one.
    """
    if x.dim() != 2 or w_gate.dim() != 2 or w_up.shape != w_gate.shape or w_down.dim() != 2:
        raise ValueError(f"shapes x {tuple(x.shape)}, w_gate {tuple(w_gate.shape)}, w_up {tuple(w_up.shape)}, "
                         f"w_down {tuple(w_down.shape)} are not (tokens, d), (d_ff, d), (d_ff, d), (d, d_ff)")
    if w_gate.shape[1] != x.shape[1] or w_down.shape != (x.shape[1], w_gate.shape[0]):
        raise ValueError(f"widths disagree: x {tuple(x.shape)}, w_gate {tuple(w_gate.shape)}, "
                         f"w_down {tuple(w_down.shape)} (need d = {x.shape[1]}, d_ff = {w_gate.shape[0]})")
    # BEGIN SOLUTION
    h = torch.relu(x @ w_gate.T) * (x @ w_up.T)  # (tokens, d_ff): zero wherever the gate is <= 0
    y = h @ w_down.T  # (tokens, d)
    zero_fraction = float((h == 0).float().mean())
    # END SOLUTION
    return y, zero_fraction


def sparse_down_proj(h: torch.Tensor, w_down_t: torch.Tensor, bias: torch.Tensor | None = None,
                     threshold: float = 0.0) -> torch.Tensor:
    """y = h W_down^T + b computed over the active units only.

    h (tokens, d_ff); ``w_down_t`` = W_down^T (d_ff, d), contiguous so each unit is one row.  A unit is active
    if |h| > threshold for any token; entries at or below the threshold are treated as 0 (exact at 0).
    """
    if h.dim() != 2 or w_down_t.dim() != 2 or h.shape[1] != w_down_t.shape[0]:
        raise ValueError(f"h {tuple(h.shape)} and W_down^T {tuple(w_down_t.shape)} are not (tokens, d_ff), (d_ff, d)")
    if threshold < 0:
        raise ValueError(f"threshold={threshold} must be >= 0")
    # BEGIN SOLUTION
    live = h.abs() > threshold  # (tokens, d_ff)
    active = live.any(0).nonzero().squeeze(1)  # (n_active,) units live for at least one token
    hs = (h * live)[:, active] if threshold > 0 else h[:, active]  # (tokens, n_active)
    y = hs @ w_down_t.index_select(0, active)  # (tokens, d): only the active rows are read
    if bias is not None:
        y = y + bias
    # END SOLUTION
    return y


class SparseDownProj(nn.Module):
    """Drop-in replacement for a down projection ``nn.Linear(d_ff, d)`` that skips inactive units."""

    def __init__(self, linear: nn.Linear, threshold: float = 0.0):
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"expected nn.Linear, got {type(linear).__name__}")
        self.w_t = nn.Parameter(linear.weight.detach().t().contiguous(), requires_grad=False)  # (d_ff, d)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        self.threshold = float(threshold)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        lead = h.shape[:-1]
        y = sparse_down_proj(h.reshape(-1, h.shape[-1]), self.w_t, self.bias, self.threshold)
        return y.reshape(*lead, y.shape[-1])


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@torch.no_grad()
def time_sparse_down_proj(d_model: int = 576, d_ff: int = 1536, tokens: int = 1, sparsity: float = 0.9,
                          repeats: int | None = None, seed: int = 0, threads: int | None = 1) -> dict[str, float]:
    """Median latency of the dense down projection vs the gathered sparse one at a given unit sparsity.

    ``sparsity`` is the fraction of intermediate units that are zero for all ``tokens`` (e.g. one decoding
    token).  Default sizes are SmolLM2-135M's (d=576, d_ff=1536).  Returns dense/sparse seconds and speedup.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity={sparsity} is outside [0, 1)")
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(d_ff, d_model, bias=False)
    lin.weight.copy_(torch.randn(d_model, d_ff, generator=g) / d_ff ** 0.5)
    h = torch.randn(tokens, d_ff, generator=g)
    dead = torch.randperm(d_ff, generator=g)[: round(sparsity * d_ff)]
    h[:, dead] = 0.0
    sp = SparseDownProj(lin)
    err = float((sp(h) - lin(h)).abs().max())
    with _threads(threads):
        dense = measure_latency(lambda: lin(h), repeats=repeats).median_s
        sparse = measure_latency(lambda: sp(h), repeats=repeats).median_s
    return {"dense_s": dense, "sparse_s": sparse, "speedup": dense / sparse, "max_abs_diff": err,
            "active_units": d_ff - dead.numel()}
