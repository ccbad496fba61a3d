"""Movement against magnitude pruning while fine-tuning MiniLM on the review sentences (Sanh et al. 2020).

The experiment of Sanh, Wolf & Rush 2020 ("Movement Pruning: Adaptive Sparsity by Fine-Tuning", section 5)
at our scale: start from the *pretrained* encoder with a fresh two-class head, fine-tune it on
``lessonlib.data.load_reviews`` and prune during that same fine-tune.  Every linear layer of the encoder
blocks (query, key, value, attention output, FFN in and out) computes with ``W' = W * M``:

* ``"movement"``: ``M = Top_v(S)`` per matrix, ``S`` learnt straight through (``topk_ste``) with plain SGD at
  learning rate 1 and no weight decay, so ``S_t = -sum_{t' <= t} W_t' * dL/dW'_t'`` exactly (their Eq. 3's
  gradient, ``lessonlib.prune.movement.movement_score_update``); only the ranking of S matters;
* ``"magnitude"``: ``M = Top_v(|W|)`` per matrix, recomputed from the current weights every step (their
  magnitude baseline, the same schedule);
* ``"dense"``: no mask, the reference accuracy.

The sparsity ``v`` follows the cubic schedule of Zhu & Gupta (``cubic_sparsity``), as in Sanh et al.: dense
warm-up (first 10% of the steps), cubic ramp to the target (next 60%), cool-down at the target (last 30%).
Embeddings, the pooler and the head stay dense (the paper prunes the encoder's linear layers only).

Every run starts from one dense fine-tune (``finetune_dense``: the distillation teacher's budget,
``lessonlib.distill.encoder_task.teacher_schedule``, three passes over the training sentences; movement
scores accumulate during it), which plays the role of Sanh et al.'s dense warm-up, shared instead of
repeated; each method then continues for the same ``prune_schedule`` steps, the dense reference included
(``finetune_pruned(..., start=...)``).
From the pretrained encoder alone, the ci profile's few steps leave the loss near chance (ln 2).
"""
from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass, field, replace

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ..config import Profile, get_profile, progress_disabled
from ..data import load_reviews
from ..distill.encoder_task import review_splits, teacher_schedule
from ..training import batch_indices, check_loss
from ..evaluate import classification_accuracy
from ..models import load_encoder, replace_submodule
from .magnitude import cubic_sparsity
from .masks import check_sparsity
from .movement import topk_mask, topk_ste
from ..atomic import atomic

__all__ = ["PRUNE_METHODS", "MaskedLinear", "mask_encoder_linears", "PruneSchedule", "prune_schedule",
           "finetune_dense", "finetune_pruned", "PrunedRun", "dense_is_trained", "MAX_LENGTH", "majority_share",
           "is_collapsed", "COLLAPSE_MARGIN"]

COLLAPSE_MARGIN = 0.01  # accuracy within this of the majority-class share = the classifier learnt nothing

PRUNE_METHODS = ("dense", "movement", "magnitude")
MAX_LENGTH = 64  # review sentences are short (median about 26 word pieces)


class MaskedLinear(nn.Module):
    """An ``nn.Linear`` computing ``x (W * M)^T + b``; ``M`` by movement scores or by magnitude, at ``sparsity``."""

    def __init__(self, linear: nn.Linear, method: str):
        super().__init__()
        if method not in ("movement", "magnitude"):
            raise ValueError(f"method={method!r}; choose 'movement' or 'magnitude'")
        self.linear, self.method, self.sparsity = linear, method, 0.0
        self.scores = nn.Parameter(torch.zeros_like(linear.weight)) if method == "movement" else None  # (out, in)

    def mask(self) -> torch.Tensor:
        """The current bool keep-mask (out, in)."""
        crit = self.scores if self.method == "movement" else self.linear.weight.abs()
        return topk_mask(crit.detach(), self.sparsity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.linear.weight  # (out, in)
        if self.method == "movement":
            w = w * topk_ste(self.scores, self.sparsity)  # straight-through: dL/dS = dL/dW' * W
        elif self.sparsity > 0:
            w = w * self.mask()  # a constant mask: pruned weights get no gradient
        return F.linear(x, w, self.linear.bias)


@atomic
def mask_encoder_linears(model: nn.Module, method: str) -> dict[str, MaskedLinear]:
    """Replace every ``nn.Linear`` inside the encoder blocks of a BERT-style classifier by a ``MaskedLinear``
    (in place); returns name -> wrapper.  Embeddings, pooler and head are left alone."""
    encoder = getattr(getattr(model, "base_model", model), "encoder", None)
    if encoder is None:
        raise ValueError(f"{type(model).__name__} has no .encoder (expected a BERT-style model)")
    names = [n for n, m in encoder.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError("the encoder has no nn.Linear layers to prune")
    out = {}
    for name in names:
        wrapped = MaskedLinear(encoder.get_submodule(name), method)
        replace_submodule(encoder, name, wrapped)
        out[name] = wrapped
    return out


@dataclass(frozen=True)
class PruneSchedule:
    steps: int  # optimiser steps of every run (dense, movement, magnitude alike)
    batch_size: int
    lr: float  # AdamW learning rate of the weights
    warmup: int  # dense steps before pruning starts
    ramp: int  # steps of the cubic ramp to the target sparsity

    def sparsity_at(self, step: int, target: float) -> float:
        """Cubic schedule (Zhu & Gupta Eq. 1): 0 until ``warmup``, ``target`` from ``warmup + ramp`` on."""
        return cubic_sparsity(step, target, 0.0, self.warmup, self.ramp)


def prune_schedule(profile: str | Profile | None = None, steps: int | None = None) -> PruneSchedule:
    """Sizes of the pruning phase from the profile: ``8/3 * train_steps`` steps (32 under ci) of
    ``4 * batch_size`` sentences, at most 8 passes over ``encoder_train``; learning rate ``3 * lr`` (the
    encoder fine-tune's); 10% warm-up (scores accumulate, nothing pruned), 60% ramp, 30% cool-down.
    ``steps`` overrides the step count (>= 10)."""
    p = get_profile(profile)
    batch = 4 * p.batch_size
    if steps is None:
        n = p.encoder_train or len(load_reviews("train")[0])
        steps = max(10, min(8 * p.train_steps // 3, -(-8 * n // batch)))
    elif isinstance(steps, bool) or not isinstance(steps, int) or steps < 10:
        raise ValueError(f"steps={steps!r} must be an int >= 10 (warm-up, ramp and cool-down need room)")
    warmup = steps // 10
    return PruneSchedule(steps=steps, batch_size=batch, lr=3 * p.lr, warmup=warmup, ramp=max(1, 6 * steps // 10))


@dataclass
class PrunedRun:
    method: str
    target: float  # asked sparsity of the encoder linears
    accuracy: float  # on the held-out reviews
    sparsity: float  # reached sparsity over all masked encoder linears
    losses: list[float]
    seconds: float  # wall time of the fine-tune
    kept: torch.Tensor | None = None  # magnitudes |W| of the kept weights of one matrix (for plots)
    model: nn.Module | None = field(default=None, repr=False)  # the fine-tuned (pruned) classifier
    tokenizer: object = field(default=None, repr=False)
    majority: float = float("nan")  # the majority-class share of the eval labels
    collapsed: bool = False  # accuracy at the majority share (``is_collapsed``): one class for everything


def majority_share(labels: torch.Tensor) -> float:
    """The share of the most frequent class among ``labels`` (int class ids): the accuracy of a classifier
    that answers that class for everything."""
    labels = torch.as_tensor(labels)
    if labels.numel() == 0:
        raise ValueError("labels is empty")
    return float(torch.bincount(labels.long().flatten()).max()) / labels.numel()


def is_collapsed(accuracy: float, majority: float, margin: float = COLLAPSE_MARGIN) -> bool:
    """True when ``accuracy`` is no better than answering the majority class (within ``margin``): the model
    has collapsed to one class, and a comparison built on it measures nothing."""
    if not 0.0 < majority <= 1.0:
        raise ValueError(f"majority={majority} must lie in (0, 1]")
    return accuracy <= majority + margin


def finetune_dense(profile: str | Profile | None = None, seed: int = 0, data=None,
                   encoder: str = "minilm-l6") -> PrunedRun:
    """The shared starting point: ``encoder`` + a fresh seeded head fine-tuned densely with the encoder
    task's teacher budget (``teacher_schedule``: three passes over the training sentences, AdamW) and the
    same loop as ``finetune_pruned``.  Movement scores accumulate all along at sparsity 0 (Sanh et al. start
    S at the start of fine-tuning), so a movement run that continues from here ranks by the whole fine-tune's
    movement.  ``data`` as in ``finetune_pruned``.  Pass the result as ``start=`` to ``finetune_pruned``."""
    p = get_profile(profile)
    t = teacher_schedule(p)
    sched = PruneSchedule(steps=t.steps, batch_size=t.batch_size, lr=t.lr, warmup=t.steps, ramp=1)  # never prunes
    run = finetune_pruned("movement", 0.0, p, seed, sched, data, encoder)
    return replace(run, method="dense", kept=None)


def _continue_as(model: nn.Module, method: str) -> dict[str, MaskedLinear]:
    """Turn the ``MaskedLinear`` wrappers of a ``finetune_dense`` model into ``method``'s (in place): unwrapped
    for ``"dense"``, scores dropped for ``"magnitude"``, kept (with their accumulated scores) for ``"movement"``."""
    encoder = getattr(model, "base_model", model).encoder
    wrapped = {n: m for n, m in encoder.named_modules() if isinstance(m, MaskedLinear)}
    if not wrapped:
        return mask_encoder_linears(model, method) if method != "dense" else {}
    for name, m in wrapped.items():
        if method == "dense":
            replace_submodule(encoder, name, m.linear)
        elif method == "magnitude":
            m.method, m.scores = "magnitude", None
    return {} if method == "dense" else wrapped


def dense_is_trained(run: PrunedRun, majority: float, margin: float = 0.10, tail: int = 10) -> tuple[bool, str]:
    """Is ``run`` a usable dense reference?  Its accuracy must beat the majority-class rate ``majority`` of
    the eval sentences by ``margin``, and the mean of its last ``tail`` training losses must lie clearly below
    chance (``0.75 * ln 2``; ln 2 is the loss of a two-class model that has learnt nothing).  Returns
    ``(ok, reason)``."""
    if not 0.0 < majority < 1.0:
        raise ValueError(f"majority={majority} must lie in (0, 1)")
    if not run.losses:
        raise ValueError("the run has no training losses")
    last = sum(run.losses[-tail:]) / len(run.losses[-tail:])
    chance = math.log(2)
    ok = run.accuracy >= majority + margin and last < 0.75 * chance
    return ok, (f"dense accuracy {run.accuracy:.3f} (needs >= majority {majority:.3f} + {margin:.2f}), mean of "
                f"the last {tail} training losses {last:.3f} (needs < 0.75 * ln 2 = {0.75 * chance:.3f})")


def finetune_pruned(method: str, target: float, profile: str | Profile | None = None, seed: int = 0,
                    schedule: PruneSchedule | None = None, data=None, encoder: str = "minilm-l6",
                    probe: str = "layer.0.intermediate.dense", start: PrunedRun | None = None) -> PrunedRun:
    """Fine-tune ``encoder`` + a fresh seeded head on the reviews while pruning with ``method``
    (``PRUNE_METHODS``) to ``target`` sparsity; returns the held-out accuracy and what was reached.

    ``start`` (a ``finetune_dense`` result) continues from a copy of that fine-tuned model instead of the
    pretrained encoder (its model is left untouched).  ``data = ((train_texts, train_labels), (eval_texts,
    eval_labels))`` overrides the profile's review subsets.  The weights of the final mask are zeroed
    before the accuracy is measured.  ``probe`` names the matrix whose kept magnitudes are returned in ``kept``.
    """
    if method not in PRUNE_METHODS:
        raise ValueError(f"method={method!r}; choose one of {PRUNE_METHODS}")
    target = check_sparsity(target)
    if method == "dense" and target != 0.0:
        raise ValueError(f"method='dense' prunes nothing; target={target} must be 0")
    if start is not None and (start.model is None or start.tokenizer is None):
        raise ValueError("start has no model / tokenizer (pass a finetune_dense result)")
    p = get_profile(profile)
    sched = schedule or prune_schedule(p)
    (texts, labels), (ev_texts, ev_labels) = data if data is not None else review_splits(p, seed)
    if start is None:
        torch.manual_seed(seed)  # the classification head's initialisation
        model, tok = load_encoder(encoder, task="classification", num_labels=2, device=p.device)
        offset = 0
    else:
        model, tok, offset = copy.deepcopy(start.model), start.tokenizer, len(start.losses)
    dev = next(model.parameters()).device
    if start is not None:
        masked = _continue_as(model, method)
    else:
        masked = mask_encoder_linears(model, method) if method != "dense" else {}
    scores = [m.scores for m in masked.values() if m.scores is not None]
    weights = [q for n, q in model.named_parameters() if not n.endswith(".scores")]
    opt = torch.optim.AdamW(weights, lr=sched.lr, weight_decay=0.01)
    s_opt = torch.optim.SGD(scores, lr=1.0) if scores else None  # S <- S - W * dL/dW' (plain accumulation)
    losses, t0 = [], time.perf_counter()
    model.train()
    for step in tqdm(range(sched.steps), desc=f"{method} {target:.0%}", disable=progress_disabled(), leave=False):
        s_t = sched.sparsity_at(step, target) if method != "dense" else 0.0
        for m in masked.values():
            m.sparsity = s_t
        idx = batch_indices(len(texts), sched.batch_size, offset + step, seed)  # the batches after start's
        enc = tok([texts[i] for i in idx.tolist()], padding=True, truncation=True, max_length=MAX_LENGTH,
                  return_tensors="pt").to(dev)
        torch.manual_seed(seed * 1_000_003 + offset + step)  # this step's dropout
        loss = F.cross_entropy(model(**enc).logits.float(), labels[idx].to(dev))
        check_loss(loss, step, f"{method} pruning loss", f"lower lr={sched.lr}")
        opt.zero_grad(set_to_none=True)
        if s_opt:
            s_opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if s_opt:
            s_opt.step()
        losses.append(float(loss.detach()))
    seconds = time.perf_counter() - t0
    model.eval()
    zeros = total = 0
    kept = None
    with torch.no_grad():
        for name, m in masked.items():
            m.sparsity = target
            keep = m.mask()
            m.linear.weight.mul_(keep)  # pruned weights are exactly zero from here on
            zeros, total = zeros + int((~keep).sum()), total + keep.numel()
            if name == probe:
                kept = m.linear.weight[keep].abs().clone()
    acc = classification_accuracy(model, tok, ev_texts, ev_labels, max_length=MAX_LENGTH)
    majority = majority_share(ev_labels)
    collapsed = is_collapsed(acc, majority)
    if collapsed:
        warnings.warn(f"{method} at {target:.0%}: accuracy {acc:.3f} is the majority-class share {majority:.3f} "
                      f"(+/- {COLLAPSE_MARGIN}): the classifier collapsed to one class", RuntimeWarning, stacklevel=2)
    return PrunedRun(method, target, acc, zeros / total if total else 0.0, losses, seconds, kept, model, tok,
                     majority, collapsed)
