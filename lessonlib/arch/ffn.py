"""Structured FFN pruning: score the intermediate neurons, then physically drop rows/columns.

An FFN neuron ``i`` is row ``i`` of the input projections (LLaMA: ``gate_proj`` and ``up_proj``, (d_ff, d);
BERT: ``intermediate.dense``) together with column ``i`` of the output projection (``down_proj`` /
``output.dense``, (d, d_ff)).  Removing it removes one row of each input matrix and one column of the output
matrix, so the model becomes physically smaller (LLM-Pruner, Ma et al. 2023, section 3.1 "dependency" of
the neurons in a coupled structure).

Importance scores of a neuron with intermediate activation ``a_i`` (the input of ``down_proj``):

* ``"activation"``: mean over calibration tokens of ``|a_i|``;
* ``"weight"``: ``prod_k ||W_in_k[i, :]||_2 * ||W_out[:, i]||_2``, the size of the neuron's weight path;
* ``"taylor"``: first-order Taylor expansion of the loss when ``a_i`` is set to zero (Molchanov et al. 2017,
  "Pruning Convolutional Neural Networks for Resource Efficient Inference", Eq. 7), here averaged per token
  as ``mean_tokens |a_i * dL/da_i|``.

This module also holds the small helpers the other ``lessonlib.arch`` modules import (``shrink_linear``,
``arch_kind``, ``lm_loss``).
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import progress_disabled
from ..atomic import atomic
from ..checks import finite, short
from ..layout import block_layout, require
from ..models import LayoutError, _is_encoder, find_block_list
from ..models import replace_submodule
from .structure import holder_rows, resize_linear_like, set_config_width

__all__ = ["arch_kind", "arch_blocks", "shrink_linear", "linear_from", "lm_loss", "shrink_ffn_tensors", "weight_norm_scores",
           "ffn_modules", "ffn_neuron_scores", "keep_top_neurons", "prune_ffn_neurons", "FFN_METHODS"]

FFN_METHODS = ("activation", "weight", "taylor")


# ----------------------------------------------------------------------------- shared helpers
def arch_kind(model: nn.Module) -> str:
    """``"llama"`` for any causal decoder lessonlib finds a block layout in, ``"bert"`` for encoders."""
    try:
        _, blocks = find_block_list(model)
    except LayoutError as e:
        raise ValueError(f"unknown model layout: {e}") from None
    return "bert" if _is_encoder(model, blocks) else "llama"


def arch_blocks(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a decoder or encoder (found from the module structure)."""
    return find_block_list(model)[1]


def _as_index(idx, n: int, what: str) -> torch.Tensor:
    idx = torch.as_tensor(idx, dtype=torch.long).flatten()
    if idx.numel() and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"{what} index out of range: got {idx.tolist()}, allowed 0..{n - 1}")
    if idx.unique().numel() != idx.numel():
        raise ValueError(f"{what} indices contain duplicates: {idx.tolist()}")
    return idx.sort().values


@torch.no_grad()
def shrink_linear(linear: nn.Linear, keep: torch.Tensor, dim: int) -> nn.Linear:
    """A new ``nn.Linear`` holding only the kept output rows (``dim=0``) or input columns (``dim=1``).

    The bias follows the rows; with ``dim=1`` it is kept whole.  dtype, device and requires_grad are kept.
    """
    if dim not in (0, 1):
        raise ValueError(f"dim={dim}; allowed 0 (output rows) or 1 (input columns)")
    W = linear.weight  # (out, in)
    keep = _as_index(keep, W.shape[dim], "row" if dim == 0 else "column").to(W.device)
    if keep.numel() == 0:
        raise ValueError("shrink_linear would keep nothing: at least one row/column must stay")
    b = linear.bias
    return linear_from(W.index_select(dim, keep), None if b is None else (b.index_select(0, keep) if dim == 0 else b),
                       linear)


@torch.no_grad()
def linear_from(weight: torch.Tensor, bias: torch.Tensor | None, like: nn.Linear) -> nn.Linear:
    """A new ``nn.Linear`` with the given (out, in) weight and (out,) bias, on ``like``'s device and dtype."""
    W = like.weight
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=W.device, dtype=W.dtype)
    new.weight.copy_(weight)
    if bias is not None:
        new.bias.copy_(bias)
    new.weight.requires_grad_(W.requires_grad)
    return new


def lm_loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Default loss for gradient-based scores: next-token cross entropy of a causal LM on ``batch`` (B, T)."""
    return model(batch, labels=batch, use_cache=False).loss


def _check_batches(batches: torch.Tensor) -> None:
    if not isinstance(batches, torch.Tensor) or batches.dim() != 2 or batches.shape[0] == 0:
        shape = tuple(batches.shape) if isinstance(batches, torch.Tensor) else type(batches).__name__
        raise ValueError(f"batches must be a non-empty (N, T) token tensor, got {shape}")


# ----------------------------------------------------------------------------- layer-level functions
def shrink_ffn_tensors(w_in: list[torch.Tensor], b_in: list[torch.Tensor | None], w_out: torch.Tensor,
                       keep: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor | None], torch.Tensor]:
    """Keep only the FFN neurons in ``keep`` (LLM-Pruner's coupled structure of one neuron).

    w_in: input projections, each (d_ff, d) (LLaMA: [gate, up]; BERT: [intermediate]); b_in: their biases
    (d_ff,) or None; w_out: output projection (d, d_ff); keep: sorted neuron indices (k,).
    Returns (w_in', b_in', w_out') with shapes (k, d), (k,) and (d, k).  The output bias is unaffected.
    """
    d_ff = w_out.shape[1]
    if any(w.shape[0] != d_ff for w in w_in) or len(b_in) != len(w_in):
        raise ValueError(f"input projections {[tuple(w.shape) for w in w_in]} must all have {d_ff} rows "
                         f"(= w_out's columns) and one bias entry each")
    keep = _as_index(keep, d_ff, "neuron").to(w_out.device)
    if keep.numel() == 0:
        raise ValueError("keep is empty: an FFN needs at least one neuron")
    # BEGIN SOLUTION
    new_w_in = [w[keep] for w in w_in]  # (k, d) each
    new_b_in = [None if b is None else b[keep] for b in b_in]  # (k,)
    new_w_out = w_out[:, keep]  # (d, k)
    # END SOLUTION
    return new_w_in, new_b_in, new_w_out


def weight_norm_scores(w_in: list[torch.Tensor], w_out: torch.Tensor) -> torch.Tensor:
    """Weight-only neuron importance: ``prod_k ||w_in_k[i, :]||_2 * ||w_out[:, i]||_2``, (d_ff,)."""
    s = w_out.float().norm(dim=0)  # (d_ff,)
    for w in w_in:
        if w.shape[0] != w_out.shape[1]:
            raise ValueError(f"input projection {tuple(w.shape)} does not match w_out {tuple(w_out.shape)}")
        s = s * w.float().norm(dim=1)
    return s


def keep_top_neurons(scores: torch.Tensor, keep: int | float) -> torch.Tensor:
    """Sorted indices of the ``keep`` highest scores (an int count, or a float fraction in (0, 1])."""
    if not isinstance(scores, torch.Tensor) or scores.numel() == 0:
        raise ValueError(f"scores must be a non-empty tensor, got {short(scores)}")
    finite("scores", scores, where="keep_top_neurons")
    if isinstance(keep, bool) or not isinstance(keep, (int, float)):
        raise TypeError(f"keep={short(keep)} must be an int count or a float fraction in (0, 1]")
    n = scores.numel()
    k = int(round(keep * n)) if isinstance(keep, float) else int(keep)
    if isinstance(keep, float) and not 0 < keep <= 1:
        raise ValueError(f"keep={keep} as a fraction must lie in (0, 1]")
    if not 1 <= k <= n:
        raise ValueError(f"keep={keep} gives {k} neurons; allowed 1..{n}")
    # stable ranking: ties go to the lower index
    order = torch.argsort(-scores.float(), stable=True)
    return order[:k].sort().values


# ----------------------------------------------------------------------------- model-level
def ffn_modules(block: nn.Module, kind: str | None = None, model: nn.Module | None = None
                ) -> tuple[nn.Module, list[str], str]:
    """``(block, [input projection layer names], output projection name)`` of a block's FFN (any layout).

    A fused ``gate_up`` layer is listed once.  ``kind`` is accepted for compatibility and not needed.
    """
    if model is None:
        raise ValueError("ffn_modules needs the model (its config gives the hidden width)")
    lay = block_layout(model, block)
    if lay.mlp_out is None:
        raise ValueError(f"no MLP found in {type(block).__name__}: {lay.problems or lay.experts}")
    ins = list(dict.fromkeys(p.name for p in lay.mlp_in))
    return block, ins, lay.mlp_out.name


def ffn_neuron_scores(model: nn.Module, method: str = "activation", batches: torch.Tensor | None = None,
                      loss_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Importance of every FFN neuron of every block, a list of (d_ff,) float32 tensors.

    ``method`` is one of ``FFN_METHODS`` (see the module docstring).  ``"activation"`` and ``"taylor"``
    need calibration ``batches`` (N, T); ``"taylor"`` also backpropagates ``loss_fn(model, batch)``
    (default: the causal-LM loss; encoders must pass their own).
    """
    if method not in FFN_METHODS:
        raise ValueError(f"unknown method {method!r}; allowed {FFN_METHODS}")
    require(model, "ffn")
    kind = arch_kind(model)
    blocks = arch_blocks(model)
    lays = [block_layout(model, b) for b in blocks]
    if method == "weight":
        return [weight_norm_scores([p.weight() for p in L.mlp_in], L.mlp_out.weight()) for L in lays]
    _check_batches(batches)
    if method == "taylor" and loss_fn is None:
        if kind != "llama":
            raise ValueError("method='taylor' on an encoder needs a loss_fn(model, batch) -> scalar")
        loss_fn = lm_loss
    sums = [None] * len(blocks)
    count = [0]
    handles = []

    def hook(i):
        def fn(_m, args):
            a = args[0]  # (B, T, d_ff): the intermediate activation
            if method == "activation":
                s = a.detach().abs().float().reshape(-1, a.shape[-1]).sum(0)
                sums[i] = s if sums[i] is None else sums[i] + s
            else:
                def grad_hook(g, a=a.detach()):
                    s = (a * g).abs().float().reshape(-1, a.shape[-1]).sum(0)  # (d_ff,)
                    sums[i] = s if sums[i] is None else sums[i] + s
                a.register_hook(grad_hook)
        return fn

    for i, L in enumerate(lays):
        handles.append(L.mlp_out.module.register_forward_pre_hook(hook(i)))
    was_training = model.training
    model.eval()
    try:
        for n in tqdm(range(batches.shape[0]), desc=f"ffn scores ({method})", disable=progress_disabled(),
                      leave=False):
            x = batches[n: n + 1].to(next(model.parameters()).device)
            count[0] += x.numel()
            if method == "activation":
                with torch.no_grad():
                    model(x) if kind == "bert" else model(x, use_cache=False)
            else:
                model.zero_grad(set_to_none=True)
                loss_fn(model, x).backward()
        model.zero_grad(set_to_none=True)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if any(s is None for s in sums):
        raise RuntimeError("some FFN never received activations/gradients; check batches and loss_fn")
    return [s / count[0] for s in sums]


@torch.no_grad()
@atomic
def prune_ffn_neurons(model: nn.Module, keep: dict[int, torch.Tensor] | list[torch.Tensor]) -> nn.Module:
    """Physically shrink the FFNs: block ``i`` keeps only the neurons ``keep[i]`` (in place; returns model).

    Blocks not in a ``keep`` dict are left whole.  When every block ends with the same width,
    ``config.intermediate_size`` is updated so ``save_pretrained`` / ``from_pretrained`` round-trip;
    otherwise a warning says the config cannot describe per-block widths (``lessonlib.arch.reload.load_pruned``
    reloads such a model from its saved shapes).
    """
    require(model, "ffn")
    blocks = arch_blocks(model)
    keep = dict(enumerate(keep)) if isinstance(keep, (list, tuple)) else dict(keep)
    for i in keep:
        if not isinstance(i, int) or not 0 <= i < len(blocks):
            raise ValueError(f"block index {i!r} out of range; allowed 0..{len(blocks) - 1}")
    old = block_layout(model, blocks[0]).mlp_out.weight().shape[1]
    for i, idx in keep.items():
        L = block_layout(model, blocks[i])
        d_ff = L.mlp_out.weight().shape[1]
        idx = _as_index(idx, d_ff, "neuron")
        if idx.numel() == 0:
            raise ValueError("keep is empty: an FFN needs at least one neuron")
        for name, rows in holder_rows(L.mlp_in, [idx] * len(L.mlp_in)).items():  # (k, d) rows of each input
            replace_submodule(blocks[i], name, resize_linear_like(blocks[i].get_submodule(name), rows=rows))
        replace_submodule(blocks[i], L.mlp_out.name, resize_linear_like(L.mlp_out.module, cols=idx))  # (d, k)
        for m in blocks[i].modules():  # MLP modules that keep their width as an attribute
            if getattr(m, "intermediate_size", None) == d_ff:
                m.intermediate_size = idx.numel()
    widths = {block_layout(model, b).mlp_out.weight().shape[1] for b in blocks}
    if len(widths) == 1:
        set_config_width(model.config, old, widths.pop())
    else:
        warnings.warn(f"FFN widths now differ across blocks ({sorted(widths)}): config.intermediate_size cannot "
                      "describe them, so from_pretrained will not reload this model; reload it with "
                      "lessonlib.arch.reload.load_pruned (or prune blocks uniformly)", stacklevel=2)
    return model
