"""Sibling projections that read the same input, computed by one packed matmul (q/k/v, gate/up).

At batch 1 a decoding step calls each linear layer on one token, so every call pays a fixed cost
(Python, dispatch, the bf16 conversion of the input and of the output) besides the weight bytes it
reads.  The attention's q, k and v projections read the same normed hidden state, and so do the MLP's
gate and up projections; stacking their weights along the output dimension turns 5 calls per decoder
layer into 2, the fusion that deployed runtimes do (vLLM's ``QKVParallelLinear`` and
``MergedColumnParallelLinear``; Frantar et al. 2022, arXiv:2210.17323, section 5, run GPTQ models on such
kernels).  The stacked layer holds exactly the rows of the separate ones (codes, scales, zeros, bias), so
each output row is the same dot product: only the order of floating-point work inside the kernel may
differ.

``fuse_projections(model)`` works on ``QuantLinear`` layers (before or instead of ``to_kernels``): it
registers the stacked layer on the parent (``qkv_proj``, ``gate_up_proj``) and puts a ``FusedSlice`` where
each sibling was.  The model's own forward is untouched: the first sibling called computes the stacked
output once and the others return their slice of it, which is only reused for the very same input
tensor (same object, unchanged since), so any other call order still gives correct results.
"""
from __future__ import annotations

import torch
from torch import nn

from ..models import replace_submodule
from .qlinear import QuantLinear

__all__ = ["FusedSlice", "fuse_quant_linears", "fuse_projections", "DEFAULT_GROUPS"]

DEFAULT_GROUPS = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


def fuse_quant_linears(layers: list[QuantLinear]) -> QuantLinear:
    """One ``QuantLinear`` whose output rows are those of ``layers`` in order (same scheme, same input)."""
    if len(layers) < 2 or not all(isinstance(q, QuantLinear) for q in layers):
        raise TypeError(f"need at least two QuantLinear layers, got {[type(q).__name__ for q in layers]}")
    a = layers[0]
    for q in layers[1:]:
        same = (q.scheme == a.scheme and q.in_features == a.in_features and q.scales.dtype == a.scales.dtype
                and (q.bias is None) == (a.bias is None))
        if not same:
            raise ValueError(f"cannot stack {q.scheme} {q.out_features}x{q.in_features} onto {a.scheme} "
                             f"{a.out_features}x{a.in_features}: scheme, inputs, scale dtype and bias must agree")
    if any(q.g_idx is not None for q in layers):
        raise ValueError("act-order layers (g_idx) cannot be stacked: each has its own column order")
    if a.scheme.group_size == 0:
        raise ValueError("per-tensor layers (group_size=0) cannot be stacked: each has one scale of its own")
    n = sum(q.out_features for q in layers)
    f = QuantLinear(a.in_features, n, a.scheme, bias=a.bias is not None, scale_dtype=a.scales.dtype,
                    device=a.qweight.device)
    for name in ("qweight", "scales", "zeros", "bias"):
        if getattr(f, name) is not None:
            getattr(f, name).copy_(torch.cat([getattr(q, name) for q in layers], dim=0))  # (sum out, ...)
    return f


class FusedSlice(nn.Module):
    """Rows ``start:stop`` of the stacked layer ``owner.<fused_name>``, computed once per input tensor.

    The stacked layer is looked up by name on every call, so it can be swapped afterwards (``to_kernels``
    puts a ``KernelLinear`` in its place) and this slice follows."""

    def __init__(self, owner: nn.Module, fused_name: str, start: int, stop: int, in_features: int,
                 shared: dict):
        super().__init__()
        self._owner = (owner,)  # a tuple, so the parent is not registered as a child (no cycle in modules())
        self.fused_name, self.start, self.stop = fused_name, start, stop
        self.in_features, self.out_features = in_features, stop - start
        self._shared = shared  # one dict per stacked layer: the last input, its output, who has read it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self._shared
        if c.get("x") is not x or c["version"] != x._version or self.start in c["read"]:
            y = getattr(self._owner[0], self.fused_name)(x)  # (..., sum out)
            c.update(x=x, version=x._version, y=y, read=set())
        c["read"].add(self.start)
        y = c["y"][..., self.start:self.stop]  # (..., out) view
        if len(c["read"]) == c["n"]:  # every sibling has its slice: drop the references
            c.update(x=None, y=None, version=-1, read=set())
        return y

    def extra_repr(self) -> str:
        return f"{self.fused_name}[{self.start}:{self.stop}], in_features={self.in_features}"


def fuse_projections(model: nn.Module, groups: dict[str, tuple[str, ...]] | None = None) -> int:
    """Stack every group of sibling ``QuantLinear`` layers (default: q/k/v and gate/up) into one layer on
    their parent; returns how many groups were fused.  Parents whose siblings are missing or are not
    ``QuantLinear`` are left alone; siblings that exist but cannot be stacked raise ``ValueError`` before
    anything is changed."""
    groups = DEFAULT_GROUPS if groups is None else groups
    plan = []
    for pname, parent in model.named_modules():
        for fused_name, names in groups.items():
            kids = [getattr(parent, n, None) for n in names]
            if not all(isinstance(k, QuantLinear) for k in kids):
                continue
            if hasattr(parent, fused_name):
                raise ValueError(f"{pname!r} already has a {fused_name!r} attribute")
            try:
                plan.append((pname, parent, fused_name, names, fuse_quant_linears(kids)))
            except ValueError as e:
                raise ValueError(f"{pname!r}: {e} (the model was left unchanged)") from e
    for pname, parent, fused_name, names, fused in plan:
        parent.add_module(fused_name, fused)
        shared = {"n": len(names), "x": None, "y": None, "version": -1, "read": set()}
        start = 0
        for n in names:
            out = getattr(parent, n).out_features
            replace_submodule(model, f"{pname}.{n}" if pname else n,
                              FusedSlice(parent, fused_name, start, start + out, fused.in_features, shared))
            start += out
    return len(plan)
