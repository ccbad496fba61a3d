"""Depth pruning: score whole transformer blocks and delete the least useful ones.

ShortGPT (Men et al. 2024, "ShortGPT: Layers in Large Language Models are More Redundant Than You
Expect", Eq. 1) defines the Block Influence of block i from its input and output hidden states over the
calibration tokens t:

    BI_i = 1 - E_t[ <h_in_t, h_out_t> / (||h_in_t|| ||h_out_t||) ]

A block whose output points the same way as its input (BI near 0) barely changes the residual stream and
can be removed; ShortGPT deletes the blocks with the lowest BI.  The leave-one-out scan measures instead
the perplexity of the model with block i skipped, and ranks blocks by the damage (a static layer-drop
schedule in the spirit of LayerDrop, Fan et al. 2019, section 4 "pruning at inference time").
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from ..calib import capture_calibration, run_block
from ..config import progress_disabled
from ..evaluate import perplexity
from ..layout import require
from ..models import decoder_blocks
from .ffn import _as_index, _check_batches
from ..atomic import atomic
from ..checks import finite, integer

__all__ = ["block_influence", "block_influences", "lowest_influence_blocks", "remove_blocks", "without_blocks",
           "skip_one_scan", "layer_drop_schedule"]


def block_influence(h_in: torch.Tensor, h_out: torch.Tensor) -> float:
    """ShortGPT Block Influence, Eq. 1: ``1 - mean_t cos(h_in_t, h_out_t)`` over all tokens.

    h_in, h_out: (..., C) hidden states entering and leaving one block, the same shape.  Returns a float in
    [0, 2].  A token whose input or output is the zero vector counts as cos = 0.
    """
    if h_in.shape != h_out.shape or h_in.dim() < 1:
        raise ValueError(f"h_in {tuple(h_in.shape)} and h_out {tuple(h_out.shape)} must have the same (..., C) shape")
    finite("h_in", h_in, where="block_influence")
    finite("h_out", h_out, where="block_influence")
    # BEGIN SOLUTION
    a = h_in.reshape(-1, h_in.shape[-1]).double()  # (tokens, C)
    b = h_out.reshape(-1, h_out.shape[-1]).double()  # (tokens, C)
    cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-30)  # (tokens,)
    return float(1.0 - cos.mean())
    # END SOLUTION


@torch.no_grad()
def block_influences(model: nn.Module, batches: torch.Tensor, device: str | torch.device = "auto") -> list[float]:
    """Block Influence of every decoder block on calibration ``batches`` (N, T), a list of floats.

    Blocks are run one after another from block 0's captured inputs (``lessonlib.calib``), so the
    final norm never enters the comparison.
    """
    _check_batches(batches)
    hiddens, kws = capture_calibration(model, batches, device)
    dev = hiddens[0].device
    out = []
    for i, block in enumerate(tqdm(decoder_blocks(model), desc="block influence", disable=progress_disabled(),
                                   leave=False)):
        home = next(block.parameters()).device
        block.to(dev)
        nxt = run_block(block, hiddens, kws[i])
        block.to(home)
        try:
            out.append(block_influence(torch.cat(hiddens, 1), torch.cat(nxt, 1)))
        except ValueError as e:
            raise ValueError(f"block {len(out)}: {e}") from e
        hiddens = nxt
    return out


def lowest_influence_blocks(scores: list[float], n: int) -> list[int]:
    """Indices of the ``n`` lowest scores (ties: lower index first), sorted; ``0 <= n < len(scores)``."""
    integer("n", n, where="lowest_influence_blocks")
    finite("scores", [float(x) for x in scores], where="lowest_influence_blocks")
    if not 0 <= n < len(scores):
        raise ValueError(f"n={n} blocks to remove must lie in 0..{len(scores) - 1} (at least one block stays)")
    order = torch.argsort(torch.tensor(scores, dtype=torch.float64), stable=True)
    return sorted(order[:n].tolist())


def _set_blocks(model: nn.Module, blocks: list[nn.Module]) -> None:
    lst = decoder_blocks(model)
    lst._modules.clear()
    for j, b in enumerate(blocks):
        lst.append(b)
        for m in b.modules():  # every module that indexes the KV cache by layer
            if hasattr(m, "layer_idx") and isinstance(m.layer_idx, int):
                m.layer_idx = j
    cfg = model.config
    cfg.num_hidden_layers = len(blocks)


@atomic
def remove_blocks(model: nn.Module, indices: list[int]) -> nn.Module:
    """Physically delete the blocks ``indices`` (in place; returns the model).

    Renumbers every ``layer_idx`` attribute (the KV cache is indexed by it) and updates
    ``config.num_hidden_layers`` (and ``config.layer_types`` when present), so ``generate``,
    ``save_pretrained`` and ``from_pretrained`` keep working.
    """
    require(model, "depth")
    blocks = list(decoder_blocks(model))
    rm = _as_index(indices, len(blocks), "block")
    if rm.numel() >= len(blocks):
        raise ValueError(f"removing {rm.numel()} of {len(blocks)} blocks would leave no block; keep at least one")
    keep = [j for j in range(len(blocks)) if j not in set(rm.tolist())]
    lt = getattr(model.config, "layer_types", None)
    _set_blocks(model, [blocks[j] for j in keep])
    if isinstance(lt, list) and len(lt) == len(blocks):
        model.config.layer_types = [lt[j] for j in keep]
    return model


@contextlib.contextmanager
def without_blocks(model: nn.Module, indices: list[int]) -> Iterator[nn.Module]:
    """Context manager: the model with ``indices`` removed, restored exactly on exit."""
    blocks = list(decoder_blocks(model))
    idx = [getattr(getattr(b, "self_attn", b), "layer_idx", None) for b in blocks]
    n_cfg, lt = model.config.num_hidden_layers, getattr(model.config, "layer_types", None)
    remove_blocks(model, indices)
    try:
        yield model
    finally:
        _set_blocks(model, blocks)
        for b, j in zip(blocks, idx):
            for m in b.modules():
                if hasattr(m, "layer_idx") and isinstance(m.layer_idx, int) and j is not None:
                    m.layer_idx = j
        model.config.num_hidden_layers = n_cfg
        if lt is not None:
            model.config.layer_types = lt


def skip_one_scan(model: nn.Module, tokens: torch.Tensor, seqlen: int, max_windows: int | None = None) -> dict:
    """Leave-one-out sensitivity: perplexity with each block skipped, on a 1-D held-out ``tokens`` stream.

    Returns ``{"dense": ppl, "skip": [ppl without block i for each i]}`` (lessonlib.evaluate.perplexity).
    """
    if tokens.dim() != 1:
        raise ValueError(f"tokens must be a 1-D stream, got shape {tuple(tokens.shape)}")
    kw = dict(tokens=tokens, seqlen=seqlen, max_windows=max_windows, progress=False)
    dense = perplexity(model, **kw).ppl
    skip = []
    n = len(decoder_blocks(model))
    for i in tqdm(range(n), desc="skip-one scan", disable=progress_disabled(), leave=False):
        with without_blocks(model, [i]):
            skip.append(perplexity(model, **kw).ppl)
    return {"dense": dense, "skip": skip}


def layer_drop_schedule(skip_ppl: list[float], n_max: int | None = None) -> list[list[int]]:
    """A static layer-dropping schedule from a leave-one-out scan.

    Blocks are ordered by the perplexity the model has without them (lowest = least needed first; ties:
    lower index); entry ``k`` of the result is the sorted set of blocks to drop for a budget of ``k``
    dropped blocks, ``k = 0 .. n_max`` (default ``len - 1``).  Each entry contains the previous one.
    """
    n = len(skip_ppl)
    n_max = n - 1 if n_max is None else n_max
    if n == 0 or not 0 <= n_max < n:
        raise ValueError(f"n_max={n_max} must lie in 0..{n - 1} for {n} blocks (at least one block stays)")
    t = torch.tensor(skip_ppl, dtype=torch.float64)
    if not torch.isfinite(t).all():
        raise ValueError(f"skip_ppl contains non-finite values: {skip_ppl}")
    order = torch.argsort(t, stable=True).tolist()
    return [sorted(order[:k]) for k in range(n_max + 1)]
