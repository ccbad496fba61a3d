"""ALBERT-style cross-layer parameter sharing of decoder blocks.

Lan et al. (2020), "ALBERT", section 3.1 "Cross-layer parameter sharing": all transformer layers use one set
of parameters (the depth stays, the unique parameters shrink by the depth).  We generalise to groups of
``group_size`` consecutive blocks sharing the parameters of one block ("all-shared" is ``group_size = depth``;
Takase & Kiyono (2021) call this the "sequence" strategy).

Blocks stay separate modules (so per-layer state such as a LLaMA attention's ``layer_idx`` for the KV cache
keeps working); their ``nn.Parameter`` objects are made identical.  PyTorch then counts a shared parameter once
in ``model.parameters()``, and a gradient step on it accumulates the gradients from every layer that uses it.
"""
from __future__ import annotations

import torch
from torch import nn

from ..models import decoder_blocks
from ..atomic import atomic, protect

__all__ = ["tie_blocks", "count_parameters", "sharing_groups"]


def sharing_groups(depth: int, group_size: int) -> list[list[int]]:
    """Block indices per sharing group: ``depth=6, group_size=2 -> [[0, 1], [2, 3], [4, 5]]``."""
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size={group_size!r} must be a positive int")
    if depth % group_size:
        raise ValueError(f"group_size={group_size} does not divide the depth {depth}; "
                         f"allowed: {[g for g in range(1, depth + 1) if depth % g == 0]}")
    return [list(range(s, s + group_size)) for s in range(0, depth, group_size)]


def _params_by_owner(block: nn.Module) -> dict[str, tuple[nn.Module, str, nn.Parameter]]:
    return {f"{mn}.{pn}" if mn else pn: (mod, pn, p)
            for mn, mod in block.named_modules() for pn, p in mod.named_parameters(recurse=False)}


@torch.no_grad()
@atomic
def tie_blocks(model_or_blocks: nn.Module, group_size: int, init: str = "first") -> list[list[int]]:
    """Make each group of ``group_size`` consecutive decoder blocks share one block's parameters (in place).

    ``init="first"``: the group uses its first block's weights; ``"mean"``: the average of the group's
    weights (a gentler start when tying a pretrained model).  Accepts a causal LM or an ``nn.ModuleList`` of
    blocks.  Returns the groups.  Raises if ``group_size`` does not divide the depth or blocks differ in layout.
    """
    if init not in ("first", "mean"):
        raise ValueError(f"unknown init {init!r}; choose 'first' or 'mean'")
    blocks = model_or_blocks if isinstance(model_or_blocks, nn.ModuleList) else decoder_blocks(model_or_blocks)
    groups = sharing_groups(len(blocks), group_size)
    for group in groups:
        leader = _params_by_owner(blocks[group[0]])
        if init == "mean":
            for name, (_, _, p) in leader.items():
                stacked = torch.stack([_params_by_owner(blocks[j])[name][2].detach() for j in group])
                protect(p)  # an open lessonlib.atomic.transaction can undo this write
                p.copy_(stacked.mean(0))
        for j in group[1:]:
            follower = _params_by_owner(blocks[j])
            if set(follower) != set(leader):
                raise ValueError(f"block {j} has parameters {sorted(set(follower) ^ set(leader))[:5]} that block "
                                 f"{group[0]} lacks (or vice versa): only identical blocks can share")
            for name, (mod, pn, p) in follower.items():
                lp = leader[name][2]
                if p.shape != lp.shape:
                    raise ValueError(f"{name}: shape {tuple(p.shape)} in block {j} != {tuple(lp.shape)}")
                setattr(mod, pn, lp)  # the same nn.Parameter object
    return groups


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Unique parameters (shared tensors counted once) vs parameters with repeats (as if untied).

    ``blocks_*`` restrict both counts to the decoder blocks; ``block_sharing_factor`` = repeats / unique.
    """
    unique = sum(p.numel() for p in model.parameters())  # named_parameters de-duplicates shared tensors
    repeats = sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))
    out = {"unique": unique, "with_repeats": repeats}
    try:
        blocks = decoder_blocks(model)
    except (ValueError, AttributeError):
        return out
    b_unique = sum(p.numel() for p in blocks.parameters())
    b_rep = sum(p.numel() for _, p in blocks.named_parameters(remove_duplicate=False))
    out.update(blocks_unique=b_unique, blocks_with_repeats=b_rep)
    out["block_sharing_factor"] = b_rep / b_unique if b_unique else 0
    return out
