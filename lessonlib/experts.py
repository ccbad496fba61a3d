"""Mixture-of-experts blocks whose experts are 3-D parameters, seen as one linear layer per expert.

Current transformers store the experts of Mixtral, Qwen2-MoE, ... as two tensors, ``gate_up_proj``
(E, 2 I, C) and ``down_proj`` (E, C, I), and run them with ``F.linear`` on slices: no ``nn.Linear`` exists
for a compressor to find.  ``unrolled_experts(block)`` gives, while it is active, every expert two real
``nn.Linear`` layers whose weights *are* the slices (views sharing storage, so writing them writes the
3-D tensors) and replaces the experts module's forward by the same computation through those layers.
Every hook on them therefore sees exactly the tokens the router sent to that expert (each token's
hidden state, before the routing weight is applied), which is what GPTQ's Hessian, Wanda's norms and
AWQ's activation statistics need (the per-expert calibration of e.g. GPTQ for Mixtral).  On exit the
layers and the forward are removed: the model's structure and state dict are unchanged.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

__all__ = ["expert_modules", "unrolled_experts", "unrolled_model_experts"]


def expert_modules(block: nn.Module) -> dict[str, nn.Module]:
    """The experts modules of a block: those holding ``gate_up_proj`` (E, 2I, C) and ``down_proj`` (E, C, I)."""
    out = {}
    for n, m in block.named_modules():
        gu, dn = getattr(m, "gate_up_proj", None), getattr(m, "down_proj", None)
        if isinstance(gu, nn.Parameter) and isinstance(dn, nn.Parameter) and gu.dim() == 3 and dn.dim() == 3:
            out[n] = m
    return out


def _view_linear(w: torch.Tensor) -> nn.Linear:
    lin = nn.Linear(w.shape[1], w.shape[0], bias=False, device="meta")
    lin.weight = nn.Parameter(w, requires_grad=False)  # a view: in-place writes reach the 3-D tensor
    return lin


def _unrolled_forward(m: nn.Module):
    def forward(hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(hidden_states)  # (tokens, C)
        E = m.gate_up_proj.shape[0]
        for e in range(E):
            tok, pos = torch.where(top_k_index == e)  # (n_e,) each: the tokens routed to expert e
            if tok.numel() == 0:
                continue
            gate, up = m.lessonlib_experts[2 * e](hidden_states[tok]).chunk(2, dim=-1)  # (n_e, I) each
            y = m.lessonlib_experts[2 * e + 1](m.act_fn(gate) * up)  # (n_e, C)
            out.index_add_(0, tok, (y * top_k_weights[tok, pos, None]).to(out.dtype))
        return out
    return forward


@contextlib.contextmanager
def unrolled_experts(block: nn.Module) -> Iterator[dict[str, nn.Module]]:
    """While active, each experts module of ``block`` holds ``lessonlib_experts``: a ModuleList of
    [gate_up_0, down_0, gate_up_1, down_1, ...] ``nn.Linear`` views, and runs through them."""
    mods = expert_modules(block)
    try:
        for m in mods.values():
            lins = []
            for e in range(m.gate_up_proj.shape[0]):
                lins += [_view_linear(m.gate_up_proj.data[e]), _view_linear(m.down_proj.data[e])]
            m.lessonlib_experts = nn.ModuleList(lins)
            m.forward = _unrolled_forward(m)
        yield mods
    finally:
        for m in mods.values():
            if "forward" in m.__dict__:
                del m.forward
            if "lessonlib_experts" in m._modules:
                del m._modules["lessonlib_experts"]


@contextlib.contextmanager
def unrolled_model_experts(model: nn.Module) -> Iterator[None]:
    """``unrolled_experts`` for every block of ``model`` at once (weight-only compressors: RTN, magnitude)."""
    from .models import LayoutError, find_block_list

    try:
        blocks = list(find_block_list(model)[1])
    except LayoutError:
        blocks = []
    with contextlib.ExitStack() as stack:
        for b in blocks:
            stack.enter_context(unrolled_experts(b))
        yield
