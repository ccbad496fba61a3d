"""Multi-head to grouped-query attention by mean-pooling key and value heads.

Ainslie et al. 2023, "GQA: Training Generalized Multi-Query Transformer Models from Multi-Head
Checkpoints", section 2.1: a multi-head checkpoint is converted by *mean-pooling* the key and value
projection matrices of the heads in each group (better than keeping one head or random init), then
uptrained for a few percent of the original steps.  Here we do the conversion only and measure what the
pooling costs before any uptraining.  Query heads ``g*r .. g*r+r-1`` read KV head ``g``; pooling merges
consecutive KV heads, so the query-to-group assignment stays the one ``repeat_kv`` expects.

KV-cache bytes per token shrink by ``n_kv / n_kv'`` (``lessonlib.evaluate.kv_cache_bytes_per_token``).
"""
from __future__ import annotations

import torch
from torch import nn

from ..evaluate import kv_cache_bytes_per_token, perplexity
from ..models import decoder_blocks
from ..atomic import atomic
from ..layout import block_layout, require
from .ffn import linear_from
from ..models import replace_submodule
from .structure import set_attention_counts

__all__ = ["mean_pool_heads", "convert_to_gqa", "kv_cache_report", "gqa_quality"]


def mean_pool_heads(weight: torch.Tensor, bias: torch.Tensor | None, n_heads: int,
                    n_groups: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Average consecutive heads of a K or V projection (Ainslie et al. 2023, section 2.1).

    weight: (n_heads * d, C), head ``h`` = rows ``h*d:(h+1)*d``; bias (n_heads * d,) or None.
    Returns (n_groups * d, C) and (n_groups * d,): group ``g`` is the mean of heads ``g*s .. g*s+s-1`` with
    ``s = n_heads / n_groups``.
    """
    if n_groups < 1 or n_heads % n_groups:
        raise ValueError(f"n_groups={n_groups} must be >= 1 and divide n_heads={n_heads}")
    if weight.shape[0] % n_heads:
        raise ValueError(f"weight has {weight.shape[0]} rows, not a multiple of n_heads={n_heads}")
    # BEGIN SOLUTION
    d, s = weight.shape[0] // n_heads, n_heads // n_groups  # head width, heads per group
    W = weight.reshape(n_groups, s, d, weight.shape[1]).mean(1)  # (n_groups, d, C)
    b = None if bias is None else bias.reshape(n_groups, s, d).mean(1).reshape(-1)  # (n_groups * d,)
    return W.reshape(n_groups * d, weight.shape[1]), b
    # END SOLUTION


@torch.no_grad()
@atomic
def convert_to_gqa(model: nn.Module, num_kv_heads: int) -> nn.Module:
    """Pool every block's K and V heads down to ``num_kv_heads`` (in place; returns the model).

    Works from MHA (``num_key_value_heads == num_attention_heads``) and from GQA to fewer groups (SmolLM2:
    3 -> 1 is multi-query attention).  Updates ``num_key_value_groups`` of each attention module and
    ``config.num_key_value_heads``.
    """
    require(model, "gqa")
    cfg = model.config
    lays = [block_layout(model, b) for b in decoder_blocks(model)]
    n_q, n_kv = lays[0].n_heads, lays[0].n_kv
    if not isinstance(num_kv_heads, int) or isinstance(num_kv_heads, bool) or num_kv_heads < 1 or n_kv % num_kv_heads:
        raise ValueError(f"num_kv_heads={num_kv_heads!r} must be a positive divisor of the current "
                         f"{n_kv} KV heads")
    if any((L.n_heads, L.n_kv) != (n_q, n_kv) for L in lays):
        raise ValueError("the blocks' head counts differ (heads were pruned unevenly); "
                         "convert_to_gqa needs every block to have the same head counts")
    for block, L in zip(decoder_blocks(model), lays):
        for p in (L.k, L.v):
            lin = p.module
            W, b = mean_pool_heads(p.weight(), None if lin.bias is None else lin.bias.data, n_kv, num_kv_heads)
            replace_submodule(block, p.name, linear_from(W, b, lin))
        set_attention_counts(block.get_submodule(L.attn), n_q, num_kv_heads, L.head_dim)
    cfg.head_dim = lays[0].head_dim
    cfg.num_attention_heads, cfg.num_key_value_heads = n_q, num_kv_heads
    return model


def kv_cache_report(model: nn.Module, bytes_per_elem: float = 2) -> dict:
    """KV-cache bytes per token of a LLaMA-style model from its real K projections (fp16 by default)."""
    blocks = decoder_blocks(model)
    a = blocks[0].self_attn
    kv = {blk.self_attn.k_proj.out_features // blk.self_attn.head_dim for blk in blocks}
    if len(kv) != 1:
        raise ValueError(f"KV head counts differ across blocks: {sorted(kv)}")
    n_kv = kv.pop()
    return {"layers": len(blocks), "kv_heads": n_kv, "head_dim": a.head_dim,
            "bytes_per_token": kv_cache_bytes_per_token(len(blocks), n_kv, a.head_dim, bytes_per_elem)}


def gqa_quality(model: nn.Module, tokens: torch.Tensor, kv_heads: list[int], seqlen: int,
                max_windows: int | None = None) -> dict:
    """Perplexity and KV bytes per token before and after mean-pooling to each ``kv_heads`` value.

    ``model`` is not modified (each conversion works on a deep copy).  ``tokens`` is a 1-D held-out
    stream.  Returns ``{"original": {...}, "kv<k>": {"ppl", "bytes_per_token", "kv_reduction", ...}}``.
    """
    import copy

    kw = dict(tokens=tokens, seqlen=seqlen, max_windows=max_windows, progress=False)
    base = {**kv_cache_report(model), "ppl": perplexity(model, **kw).ppl}
    out = {"original": base}
    for k in kv_heads:
        m = convert_to_gqa(copy.deepcopy(model), k)
        rep = kv_cache_report(m)
        out[f"kv{k}"] = {**rep, "ppl": perplexity(m, **kw).ppl,
                         "kv_reduction": base["bytes_per_token"] / rep["bytes_per_token"]}
        del m
    return out
