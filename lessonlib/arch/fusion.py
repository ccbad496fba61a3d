"""Same model, different kernels: eager attention vs fused SDPA vs ``torch.compile``.

Eager attention materialises the (T, T) score matrix and runs softmax and the two matmuls as separate
kernels; ``torch.nn.functional.scaled_dot_product_attention`` (SDPA) dispatches to fused kernels
(FlashAttention, Dao et al. 2022; memory-efficient attention) that never write the score matrix to
memory.  ``torch.compile`` traces the whole forward and fuses elementwise chains.  None of these change
the parameters, so outputs must agree up to floating-point reassociation; this module measures both the
agreement and the latency (``lessonlib.evaluate.measure_latency``) and asserts nothing about speed.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from ..evaluate import measure_latency

__all__ = ["ATTN_IMPLS", "set_attention_impl", "attention_impl", "compare_kernels"]

ATTN_IMPLS = ("eager", "sdpa")


def set_attention_impl(model: nn.Module, impl: str) -> str:
    """Switch the attention implementation of a loaded model; returns the previous one."""
    if impl not in ATTN_IMPLS:
        raise ValueError(f"attention implementation {impl!r} is not supported; allowed {ATTN_IMPLS}")
    prev = model.config._attn_implementation
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(impl)
    else:  # older transformers: every submodule reads the shared config
        model.config._attn_implementation = impl
    if model.config._attn_implementation != impl:
        raise RuntimeError(f"could not switch to {impl!r}; the model reports {model.config._attn_implementation!r}")
    return prev


@contextlib.contextmanager
def attention_impl(model: nn.Module, impl: str) -> Iterator[nn.Module]:
    """Context manager: run with ``impl`` attention, restore the previous implementation afterwards."""
    prev = set_attention_impl(model, impl)
    try:
        yield model
    finally:
        set_attention_impl(model, prev if prev in ATTN_IMPLS else "sdpa")


@torch.inference_mode()
def compare_kernels(model: nn.Module, input_ids: torch.Tensor, impls: tuple[str, ...] = ATTN_IMPLS,
                    compile_backend: str | None = None, warmup: int = 1, repeats: int | None = None) -> dict:
    """Logits agreement and forward latency of ``model(input_ids)`` under each attention implementation.

    With ``compile_backend`` (e.g. ``"inductor"``, or ``"aot_eager"`` for a quick trace without code
    generation) the last implementation is also run through ``torch.compile``.  Returns
    ``{"reference": impls[0], "max_abs_diff": {name: float}, "latency": {name: LatencyResult.as_dict()}}``;
    differences are against the first implementation's logits.
    """
    if not impls:
        raise ValueError("impls must name at least one attention implementation")
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (B, T), got shape {tuple(input_ids.shape)}")
    ids = input_ids.to(next(model.parameters()).device)
    was_training = model.training
    model.eval()
    prev = model.config._attn_implementation
    ref, diffs, lat = None, {}, {}
    try:
        runs: list[tuple[str, object]] = []
        for impl in impls:
            set_attention_impl(model, impl)
            runs.append((impl, model))
            out = model(ids, use_cache=False).logits.float()
            ref = out if ref is None else ref
            diffs[impl] = float((out - ref).abs().max())
            lat[impl] = measure_latency(lambda: model(ids, use_cache=False), warmup=warmup, repeats=repeats).as_dict()
        if compile_backend is not None:
            name = f"{impls[-1]}+compile[{compile_backend}]"
            cm = torch.compile(model, backend=compile_backend)
            out = cm(ids, use_cache=False).logits.float()  # the first call compiles
            diffs[name] = float((out - ref).abs().max())
            lat[name] = measure_latency(lambda: cm(ids, use_cache=False), warmup=warmup, repeats=repeats).as_dict()
    finally:
        set_attention_impl(model, prev if prev in ATTN_IMPLS else "sdpa")
        model.train(was_training)
    return {"reference": impls[0], "max_abs_diff": diffs, "latency": lat}
