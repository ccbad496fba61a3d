"""A short recovery fine-tune after structured pruning (plain next-token training, no adapters).

After heads, neurons or whole blocks are removed the remaining weights no longer fit together exactly.
LLM-Pruner (Ma et al. 2023, section 3.3 "fast recovery") and ShortGPT (Men et al. 2024, section 5) retrain
briefly on a small corpus to win back part of the loss.  This module does the simplest version: AdamW on
the causal-LM loss over calibration windows (``lessonlib.data.calibration_batches``) for the profile's
``train_steps`` steps of ``batch_size`` windows at learning rate ``lr``, updating either every weight of the
decoder blocks (``"blocks"``, the default: the large tied embedding stays frozen), everything (``"all"``) or
only the norms (``"norms"``, a cheap baseline).  The batch of step ``s`` is a fixed function of
``(seed, s)``: it is ``lessonlib.training.causal_lm_finetune``, so a run is reproducible.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..config import get_profile
from ..training import causal_lm_finetune
from .ffn import _check_batches, arch_blocks
from ..atomic import atomic, protect

__all__ = ["TRAINABLE", "trainable_names", "RecoveryResult", "recovery_finetune"]

TRAINABLE = ("blocks", "all", "norms")


def trainable_names(model: nn.Module, which: str = "blocks") -> list[str]:
    """Names of the parameters a recovery run updates: ``"blocks"`` (decoder blocks and the final norm),
    ``"all"`` (every parameter) or ``"norms"`` (only normalisation weights)."""
    if which not in TRAINABLE:
        raise ValueError(f"unknown trainable set {which!r}; allowed {TRAINABLE}")
    names = [n for n, _ in model.named_parameters()]
    if which == "all":
        return names
    if which == "norms":
        return [n for n in names if "norm" in n.rsplit(".", 2)[-2].lower()]
    block_ids = {id(p) for p in arch_blocks(model).parameters()}
    return [n for n, p in model.named_parameters()
            if id(p) in block_ids or ("norm" in n.lower() and "layers" not in n)]


@dataclass
class RecoveryResult:
    losses: list[float]  # training loss per step
    steps: int
    batch_size: int
    lr: float
    trained_params: int
    seconds: float

    def as_dict(self) -> dict:
        return asdict(self)


@atomic
def recovery_finetune(model: nn.Module, batches: torch.Tensor, steps: int | None = None,
                      batch_size: int | None = None, lr: float | None = None, trainable: str = "blocks",
                      seed: int = 0, profile=None) -> RecoveryResult:
    """Fine-tune a (pruned) causal LM in place on token windows ``batches`` (N, T) with AdamW.

    ``steps``, ``batch_size`` and ``lr`` default to the profile's ``train_steps``, ``batch_size`` and ``lr``.
    Gradients are clipped to norm 1.  The model is left in eval mode with every parameter's
    ``requires_grad`` as it was.
    """
    _check_batches(batches)
    prof = get_profile(profile)
    steps = prof.train_steps if steps is None else steps
    batch_size = min(prof.batch_size if batch_size is None else batch_size, batches.shape[0])
    lr = prof.lr if lr is None else lr
    if steps < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(f"steps={steps} and batch_size={batch_size} must be >= 1 and lr={lr} > 0")
    names = set(trainable_names(model, trainable))
    was = {n: p.requires_grad for n, p in model.named_parameters()}
    params = []
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
        if n in names:
            params.append(p)
    if not params:
        raise ValueError(f"trainable={trainable!r} selects no parameter of this model")
    for p in params:
        protect(p)  # the optimiser writes in place; an open lessonlib.atomic.transaction can undo it
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    try:  # the shared loop checks each loss before its step, so a NaN step is never applied
        losses = causal_lm_finetune(model, batches, params, steps, batch_size, lr, seed, clip=1.0,
                                    what="recovery loss")
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(was[n])
    return RecoveryResult(losses, steps, batch_size, lr, sum(p.numel() for p in params),
                          time.perf_counter() - t0)
