"""Attention-head importance and physical head removal.

Importance:

* ``"gradient"``: Michel, Levy & Neubig 2019, "Are Sixteen Heads Really Better than One?", Eq. 2: put a
  mask variable ``xi_h = 1`` on each head's output (the input of the output projection, split into heads)
  and score ``I_h = sum over batches |dL/dxi_h|``; section 4.2 normalises the scores of each layer by
  their l2 norm.
* ``"entropy"``: ``-H(h)``, minus the mean entropy ``-sum_k p_qk log p_qk`` of the head's attention rows over
  calibration tokens: a diffuse (high-entropy) head counts as less important than a focused one.

Removal shrinks the projections.  LLaMA: query head ``h`` is rows ``h*d:(h+1)*d`` of ``q_proj`` and the
same columns of ``o_proj``; KV head ``g`` (rows of ``k_proj``/``v_proj``) serves the query heads
``g*r .. g*r+r-1`` with ``r = n_q / n_kv`` (``repeat_kv``).  ``prune_kv_groups`` removes whole groups (a KV
head with all its query heads); ``prune_heads`` removes query heads and, for GQA, needs the same number
removed from every group so each KV head still serves a contiguous block of ``r'`` query heads.
BERT: heads are rows of query/key/value and columns of ``attention.output.dense``.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import progress_disabled
from ..atomic import atomic
from ..layout import block_layout, require
from .ffn import _as_index, _check_batches, arch_blocks, arch_kind, lm_loss
from ..models import replace_submodule
from .structure import holder_rows, resize_linear_like, set_attention_counts

__all__ = ["head_channels", "attention_entropy", "plan_head_removal", "plan_group_removal", "head_counts",
           "head_importance", "lowest_heads", "prune_heads", "prune_kv_groups", "HEAD_METHODS"]

HEAD_METHODS = ("gradient", "entropy")


# ----------------------------------------------------------------------------- layer-level
def head_channels(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Channel indices of the given heads in a concatenated (n_heads * head_dim) projection, (len * head_dim,)."""
    heads = torch.as_tensor(heads, dtype=torch.long).flatten()
    return (heads[:, None] * head_dim + torch.arange(head_dim)[None, :]).flatten()


def attention_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Mean entropy (nats) of each head's attention distributions: probs (B, H, Tq, Tk) -> (H,).

    ``0 log 0 = 0`` (masked keys have probability 0).  Averaged over batch and query positions.
    """
    if probs.dim() != 4:
        raise ValueError(f"probs must be (B, H, Tq, Tk), got shape {tuple(probs.shape)}")
    p = probs.float()
    plogp = torch.where(p > 0, p * p.clamp_min(1e-30).log(), torch.zeros_like(p))
    return -plogp.sum(-1).mean(dim=(0, 2))  # (H,)


def plan_head_removal(n_q: int, n_kv: int, remove: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Kept ``(query heads, KV heads)`` after removing query heads ``remove`` from one layer.

    MHA (``n_kv == n_q``): each query head takes its KV head with it.  GQA: the KV heads stay and every
    group of ``r = n_q / n_kv`` query heads must lose the same number, else ValueError.
    """
    rm = _as_index(remove, n_q, "query head")
    if rm.numel() >= n_q:
        raise ValueError(f"removing {rm.numel()} of {n_q} heads would leave the layer without attention; "
                         "keep at least one head (or remove the block with lessonlib.arch.depth)")
    keep_q = torch.tensor([h for h in range(n_q) if h not in set(rm.tolist())], dtype=torch.long)
    if n_kv == n_q:
        return keep_q, keep_q.clone()
    r = n_q // n_kv
    lost = torch.bincount(rm // r, minlength=n_kv)  # (n_kv,) query heads removed per group
    if (lost != lost[0]).any() or lost[0] >= r:
        raise ValueError(f"GQA layer with {n_kv} KV groups of {r} query heads: removing heads {rm.tolist()} "
                         f"takes {lost.tolist()} from the groups; every group must lose the same number (< {r}). "
                         "Use prune_kv_groups to remove whole groups")
    return keep_q, torch.arange(n_kv)


def plan_group_removal(n_q: int, n_kv: int, groups: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Kept ``(query heads, KV heads)`` after removing whole KV groups (a KV head and its query heads)."""
    g = _as_index(groups, n_kv, "KV group")
    if g.numel() >= n_kv:
        raise ValueError(f"removing {g.numel()} of {n_kv} KV groups would leave the layer without attention")
    r = n_q // n_kv
    keep_kv = torch.tensor([k for k in range(n_kv) if k not in set(g.tolist())], dtype=torch.long)
    keep_q = (keep_kv[:, None] * r + torch.arange(r)[None, :]).flatten()
    return keep_q, keep_kv


# ----------------------------------------------------------------------------- model-level helpers
def head_counts(model: nn.Module) -> list[tuple[int, int]]:
    """``(query heads, KV heads)`` of every block, read from the weight shapes (any layout)."""
    return [(L.n_heads, L.n_kv) for L in (block_layout(model, b) for b in arch_blocks(model))]


def _apply(model: nn.Module, plans: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> nn.Module:
    blocks = arch_blocks(model)
    for i, (keep_q, keep_kv) in plans.items():
        L = block_layout(model, blocks[i])
        d = L.head_dim
        cq, ckv = head_channels(keep_q, d), head_channels(keep_kv, d)
        for name, rows in holder_rows([L.q, L.k, L.v], [cq, ckv, ckv]).items():  # (heads' * d, C)
            replace_submodule(blocks[i], name, resize_linear_like(blocks[i].get_submodule(name), rows=rows))
        replace_submodule(blocks[i], L.o.name, resize_linear_like(L.o.module, cols=cq))  # (C, heads' * d)
        set_attention_counts(blocks[i].get_submodule(L.attn), len(keep_q), len(keep_kv), d)
    counts = set(head_counts(model))
    cfg = model.config
    explicit = hasattr(cfg, "head_dim") and arch_kind(model) == "llama"  # the attention reads config.head_dim
    if explicit and len(counts) == 1:
        nq, nkv = counts.pop()
        cfg.head_dim = block_layout(model, blocks[0]).head_dim  # explicit, since hidden_size / heads changes
        cfg.num_attention_heads = nq
        if hasattr(cfg, "num_key_value_heads"):
            cfg.num_key_value_heads = nkv
    elif arch_kind(model) == "llama":
        why = (f"head counts now differ across blocks ({sorted(counts)})" if len(counts) > 1 else
               f"{type(cfg).__name__} derives the head width from hidden_size / heads")
        warnings.warn(f"{why}: the config cannot describe them, so from_pretrained will not reload this model; "
                      "reload it with lessonlib.arch.reload.load_pruned (or prune every block alike)", stacklevel=3)
    return model


def _check_layers(model: nn.Module, spec: dict) -> None:
    n = len(arch_blocks(model))
    for i in spec:
        if not isinstance(i, int) or not 0 <= i < n:
            raise ValueError(f"layer index {i!r} out of range; allowed 0..{n - 1}")


@torch.no_grad()
@atomic
def prune_heads(model: nn.Module, heads: dict[int, list[int]]) -> nn.Module:
    """Remove query heads ``heads[layer]`` (current numbering) from a LLaMA-style decoder or BERT encoder.

    In place; returns the model.  See ``plan_head_removal`` for the GQA rule.  LLaMA configs get the new
    ``num_attention_heads`` / ``num_key_value_heads`` (and an explicit ``head_dim``) when all blocks agree.
    """
    require(model, "heads")
    kind = arch_kind(model)
    _check_layers(model, heads)
    counts = head_counts(model)
    plans = {i: plan_head_removal(*counts[i], list(h)) for i, h in heads.items() if len(h)}
    if kind == "bert":
        pruned = dict(getattr(model.config, "pruned_heads", {}) or {})
        for i, h in heads.items():
            pruned[i] = sorted(set(pruned.get(i, [])) | set(int(x) for x in h))  # record only (current ids)
        model.config.pruned_heads = pruned
    return _apply(model, plans)


@torch.no_grad()
@atomic
def prune_kv_groups(model: nn.Module, groups: dict[int, list[int]]) -> nn.Module:
    """Remove whole KV groups (a KV head and all the query heads it serves) from a LLaMA-style decoder."""
    require(model, "heads")
    if arch_kind(model) != "llama":
        raise ValueError("prune_kv_groups needs a decoder with KV groups (LLaMA-style, OPT, GPT-2, ...); for BERT use prune_heads")
    _check_layers(model, groups)
    counts = head_counts(model)
    return _apply(model, {i: plan_group_removal(*counts[i], list(g)) for i, g in groups.items() if len(g)})


# ----------------------------------------------------------------------------- importance
def _forward(model: nn.Module, x: torch.Tensor, kind: str, **kw):
    return model(x, **kw) if kind == "bert" else model(x, use_cache=False, **kw)


def head_importance(model: nn.Module, batches: torch.Tensor, method: str = "gradient",
                    loss_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
                    normalize: bool = True) -> list[torch.Tensor]:
    """Importance of every query head, a list over blocks of (n_q,) float32 tensors (higher = keep).

    ``"gradient"`` (Michel et al. 2019, Eq. 2): ``sum_batches |dL/dxi_h|`` with ``loss_fn(model, batch)``
    (default the causal-LM loss; encoders must pass one), l2-normalised per layer when ``normalize``.
    ``"entropy"``: minus the mean attention entropy (eager attention is used for this pass).
    """
    if method not in HEAD_METHODS:
        raise ValueError(f"unknown method {method!r}; allowed {HEAD_METHODS}")
    _check_batches(batches)
    kind = arch_kind(model)
    blocks = arch_blocks(model)
    dev = next(model.parameters()).device
    was_training = model.training
    model.eval()
    scores = [torch.zeros(n_q) for n_q, _ in head_counts(model)]
    if method == "entropy":
        from .fusion import attention_impl
        with attention_impl(model, "eager"), torch.no_grad():
            for n in tqdm(range(batches.shape[0]), desc="head entropy", disable=progress_disabled(), leave=False):
                att = _forward(model, batches[n: n + 1].to(dev), kind, output_attentions=True).attentions
                for i, p in enumerate(att):
                    scores[i] -= attention_entropy(p).cpu() / batches.shape[0]
        model.train(was_training)
        return scores
    if loss_fn is None:
        if kind != "llama":
            raise ValueError("method='gradient' on an encoder needs a loss_fn(model, batch) -> scalar")
        loss_fn = lm_loss
    masks = [torch.ones(n_q, device=dev, requires_grad=True) for n_q in (s.numel() for s in scores)]
    handles = []
    for i, b in enumerate(blocks):
        L = block_layout(model, b)
        d = L.head_dim

        def pre(_m, args, xi=masks[i], d=d):
            x = args[0]  # (B, T, n_q * d): the heads' outputs, concatenated
            return (x * xi.repeat_interleave(d).to(x.dtype),) + tuple(args[1:])
        handles.append(L.o.module.register_forward_pre_hook(pre))
    try:
        for n in tqdm(range(batches.shape[0]), desc="head saliency", disable=progress_disabled(), leave=False):
            for xi in masks:
                xi.grad = None
            loss_fn(model, batches[n: n + 1].to(dev)).backward()
            for i, xi in enumerate(masks):
                scores[i] += xi.grad.detach().abs().float().cpu()
        model.zero_grad(set_to_none=True)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if normalize:
        scores = [s / s.norm().clamp_min(1e-20) for s in scores]
    return scores


def lowest_heads(scores: list[torch.Tensor], n_remove: int, n_kv: int | None = None,
                 mode: str = "heads") -> dict[int, list[int]]:
    """The ``n_remove`` least important heads (or groups) of every layer, uniform so configs stay valid.

    ``mode="heads"``: query heads, any of them (MHA, or BERT).  ``"within_groups"``: ``n_remove`` query heads
    from *each* of the ``n_kv`` groups (GQA-consistent).  ``"groups"``: whole KV groups, a group's score
    being the sum of its query heads' scores (feed the result to ``prune_kv_groups``).
    """
    if mode not in ("heads", "within_groups", "groups"):
        raise ValueError(f"unknown mode {mode!r}; allowed 'heads', 'within_groups', 'groups'")
    if mode != "heads" and (n_kv is None or n_kv < 1):
        raise ValueError(f"mode={mode!r} needs n_kv >= 1, got {n_kv}")
    out = {}
    for i, s in enumerate(scores):
        s = s.float()
        if mode == "heads":
            units, limit = s, s.numel()
        else:
            if s.numel() % n_kv:
                raise ValueError(f"layer {i}: {s.numel()} query heads are not divisible into n_kv={n_kv} groups")
            grouped = s.view(n_kv, -1)  # (n_kv, r)
            units, limit = (grouped.sum(1), n_kv) if mode == "groups" else (grouped, grouped.shape[1])
        if not 0 <= n_remove < limit:
            raise ValueError(f"n_remove={n_remove} must lie in 0..{limit - 1} (at least one must stay)")
        if mode == "within_groups":
            r = units.shape[1]
            low = torch.argsort(units, dim=1, stable=True)[:, :n_remove]  # (n_kv, n_remove)
            picked = (low + torch.arange(n_kv)[:, None] * r).flatten()
        else:
            picked = torch.argsort(units, stable=True)[:n_remove]
        out[i] = sorted(picked.tolist())
    return out
