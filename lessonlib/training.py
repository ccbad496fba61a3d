"""The training loop every fine-tune in lessonlib shares: seeded batching, one non-finite policy, and the
two plain fine-tunes (a causal LM on token windows, a sequence classifier on labelled texts).

- ``batch_indices(n, batch_size, step, seed)``: the examples of step ``step`` are a fixed function of
  ``(seed, step)`` (consecutive slices of a seeded permutation per epoch), so a run repeats and can resume.
- ``check_loss(loss, step, what)``: the one non-finite policy.  It is called on the loss *before*
  ``backward()`` and ``opt.step()``, so a NaN/inf step is never applied: the weights stay exactly those
  after step ``step - 1`` and a ``FloatingPointError`` names the step.  Loops that are the algorithm itself
  (QAT's cosine schedule, movement pruning's scores, distillation) keep their own loop but call it.
- ``train_loop``: zero_grad, backward, optional gradient clipping, step -- after ``check_loss``.
- ``causal_lm_finetune`` (next-token cross entropy, as in LLM-Pruner's recovery, Ma et al. 2023, sec. 3.3)
  and ``classifier_finetune`` (cross entropy of a ``...ForSequenceClassification`` head, BERT's
  fine-tuning, Devlin et al. 2019, sec. 4) are ``train_loop`` with their loss and batching.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .config import progress_disabled
from .models import compute_device

__all__ = ["batch_indices", "check_loss", "train_loop", "causal_lm_finetune", "classifier_finetune"]


def batch_indices(n: int, batch_size: int, step: int, seed: int = 0) -> torch.Tensor:
    """Example indices of step ``step``: consecutive slices of a seeded permutation per epoch (no state)."""
    if n < 1 or batch_size < 1 or step < 0:
        raise ValueError(f"n={n}, batch_size={batch_size} must be >= 1 and step={step} >= 0")
    start = step * batch_size
    out = []
    while len(out) < batch_size:
        epoch, pos = divmod(start + len(out), n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch))
        out.extend(perm[pos: pos + batch_size - len(out)].tolist())
    return torch.tensor(out, dtype=torch.long)


def check_loss(loss: torch.Tensor, step: int, what: str = "loss", hint: str = "") -> float:
    """The loss as a float; ``FloatingPointError`` naming ``step`` if it is NaN or inf.  Call it before
    ``backward()``/``opt.step()`` so that a non-finite step is never applied to the weights."""
    v = float(loss.detach())
    if not math.isfinite(v):
        raise FloatingPointError(f"{what} became {v} at step {step}; that step was not applied"
                                 + (f" ({hint})" if hint else ""))
    return v


def train_loop(params: Sequence[nn.Parameter], loss_at: Callable[[int], torch.Tensor], steps: int,
               opt: torch.optim.Optimizer, clip: float | None = None, what: str = "loss", hint: str = "",
               start: int = 0) -> list[float]:
    """Run steps ``start .. steps - 1``: ``loss = loss_at(step)``, ``check_loss``, zero_grad, backward, clip
    the gradient norm to ``clip`` (if given), ``opt.step()``.  Returns the losses (floats)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r} must be an integer >= 1")
    if clip is not None and not clip > 0:
        raise ValueError(f"clip={clip} must be > 0 (or None for no clipping)")
    params = list(params)
    losses = []
    try:
        for step in tqdm(range(start, steps), desc=what, disable=progress_disabled(), leave=False):
            loss = loss_at(step)
            v = check_loss(loss, step, what, hint)  # before the step: a NaN never reaches the weights
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            losses.append(v)
    finally:
        opt.zero_grad(set_to_none=True)
    return losses


def causal_lm_finetune(model: nn.Module, batches: torch.Tensor, params: Sequence[nn.Parameter], steps: int,
                       batch_size: int, lr: float, seed: int = 0, clip: float | None = 1.0,
                       weight_decay: float = 0.0, what: str = "causal-LM fine-tune") -> list[float]:
    """AdamW on the next-token loss of ``model`` over token windows ``batches`` (N, T), updating ``params``;
    step ``s`` trains on ``batches[batch_indices(N, batch_size, s, seed)]``.  Leaves the model in eval mode."""
    if not isinstance(batches, torch.Tensor) or batches.dim() != 2 or batches.shape[0] == 0:
        raise ValueError(f"batches must be a non-empty (N, T) token tensor, got {getattr(batches, 'shape', batches)}")
    dev = compute_device(model)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)

    def loss_at(s: int) -> torch.Tensor:
        x = batches[batch_indices(batches.shape[0], batch_size, s, seed)].to(dev)  # (B, T)
        return model(x, labels=x, use_cache=False).loss

    model.train()
    try:
        return train_loop(params, loss_at, steps, opt, clip, what, f"lower lr={lr}")
    finally:
        model.eval()


def classifier_finetune(model: nn.Module, tokenizer, texts: Sequence[str], labels: torch.Tensor, steps: int,
                        batch_size: int, lr: float, seed: int = 0, max_length: int = 64,
                        weight_decay: float = 0.01, clip: float | None = None,
                        what: str = "classifier fine-tune") -> list[float]:
    """AdamW on the cross entropy of a sequence classifier (``model(**enc, labels=y).loss``) over every
    parameter; step ``s`` trains on ``texts[batch_indices(len(texts), batch_size, s, seed)]``.  Leaves the
    model in eval mode."""
    if len(texts) != len(labels) or len(texts) == 0:
        raise ValueError(f"{len(texts)} texts and {len(labels)} labels: need the same, non-zero count")
    dev = compute_device(model)
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)

    def loss_at(s: int) -> torch.Tensor:
        idx = batch_indices(len(texts), batch_size, s, seed)
        enc = tokenizer([texts[i] for i in idx.tolist()], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt").to(dev)
        return model(**enc, labels=labels[idx].to(dev)).loss

    model.train()
    try:
        return train_loop(params, loss_at, steps, opt, clip, what, f"lower lr={lr}")
    finally:
        model.eval()
