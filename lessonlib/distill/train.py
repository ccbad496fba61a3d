"""A small, resumable knowledge-distillation training loop (Hinton et al. 2015; DistilBERT, Sanh et al. 2019).

Each step: draw a batch, run the frozen teacher(s) in eval mode without gradients, run the student, and
minimise ``distillation_loss`` (alpha * task CE + (1 - alpha) * T^2 * KL) with AdamW.

- Language models: ``data`` is a LongTensor of token windows (N, T) (``lessonlib.data.calibration_batches``);
  position t predicts token t+1 for both the hard-label and the soft term.
- Encoders: ``data`` is ``(texts, labels)``; the tokenizer pads and truncates each batch; logits are (B, C).
- Ensembles (Hinton et al. sec. 1, "an ensemble of models"): several teachers are combined by averaging
  their probabilities at temperature T (``ensemble="probs"``) or their logits (``ensemble="logits"``).

Reproducible and resumable: the batch of step s is a fixed function of (seed, s) (a seeded permutation per
epoch), the dropout seed of step s is ``seed * 1_000_003 + s``, and a checkpoint stores the student, the
optimizer and the step, so an interrupted run resumed from its folder ends with the same weights as an
uninterrupted one.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import get_profile, progress_disabled
from ..training import batch_indices, check_loss  # batch_indices re-exported (it used to live here)
from .losses import check_alpha, check_temperature, distillation_loss

__all__ = ["DistillConfig", "DistillResult", "ensemble_logits", "batch_indices", "distill", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "distill_state.pt"


@dataclass
class DistillConfig:
    steps: int | None = None  # optimiser steps (default: profile.train_steps)
    batch_size: int | None = None  # sequences per step (default: profile.batch_size)
    lr: float | None = None  # AdamW learning rate (default: profile.lr)
    T: float = 2.0  # softmax temperature of the soft targets
    alpha: float = 0.5  # weight of the hard-label task term; 1 - alpha weights T^2 * KL
    ensemble: str = "probs"  # how several teachers combine: "probs" or "logits"
    weight_decay: float = 0.0
    eval_every: int = 0  # call eval_fn every this many steps (0: only at the end)
    ckpt_every: int = 0  # write a checkpoint every this many steps (0: only at the end / on stop)
    max_length: int = 128  # encoder tokenisation
    seed: int = 0
    profile: str | None = None

    def resolved(self) -> "DistillConfig":
        prof = get_profile(self.profile)
        c = DistillConfig(**asdict(self))
        c.steps = prof.train_steps if c.steps is None else c.steps
        c.batch_size = prof.batch_size if c.batch_size is None else c.batch_size
        c.lr = prof.lr if c.lr is None else c.lr
        for name in ("steps", "batch_size"):
            if getattr(c, name) < 1:
                raise ValueError(f"{name}={getattr(c, name)} must be >= 1")
        if not c.lr > 0:
            raise ValueError(f"lr={c.lr} must be > 0")
        if c.eval_every < 0 or c.ckpt_every < 0:
            raise ValueError(f"eval_every={c.eval_every} and ckpt_every={c.ckpt_every} must be >= 0")
        if c.ensemble not in ("probs", "logits"):
            raise ValueError(f"ensemble={c.ensemble!r}; choose 'probs' or 'logits'")
        check_temperature(c.T)
        check_alpha(c.alpha)
        return c


@dataclass
class DistillResult:
    losses: list[float] = field(default_factory=list)  # one per step, from step 0 (resumed runs included)
    evals: list[tuple[int, object]] = field(default_factory=list)  # (step, eval_fn's value)
    steps_done: int = 0
    resumed_from: int = 0  # the step a checkpoint was loaded at (0 = fresh start)


def ensemble_logits(logits: Sequence[torch.Tensor], T: float = 1.0, mode: str = "probs") -> torch.Tensor:
    """Combine teachers' logits (each (..., V)) into one set of logits.

    ``mode="logits"``: the mean of the logits.  ``mode="probs"``: T * log(mean_k softmax(z_k / T)), chosen so
    that softmax(result / T) is exactly the average of the teachers' temperature-T probabilities.
    """
    T = check_temperature(T)
    if not logits:
        raise ValueError("need at least one teacher's logits")
    shapes = {tuple(z.shape) for z in logits}
    if len(shapes) != 1:
        raise ValueError(f"teachers' logits have different shapes {sorted(shapes)}")
    z = torch.stack([t.float() for t in logits])  # (K, ..., V)
    if mode == "logits":
        return z.mean(0)
    if mode != "probs":
        raise ValueError(f"mode={mode!r}; choose 'probs' or 'logits'")
    logp = torch.log_softmax(z / T, dim=-1)  # (K, ..., V)
    return T * (torch.logsumexp(logp, dim=0) - math.log(len(logits)))  # log of the mean probability, times T


def _device(m: nn.Module) -> torch.device:
    return next(m.parameters()).device


def _logits_and_labels(model: nn.Module, batch, tokenizer, max_length: int):
    """Logits aligned with hard labels: LM (B, T-1, V) with next tokens, or classification (B, C) with labels."""
    dev = _device(model)
    if isinstance(batch, torch.Tensor):  # token windows (B, T)
        x = batch.to(dev)
        logits = model(input_ids=x, use_cache=False).logits  # (B, T, V)
        return logits[:, :-1], x[:, 1:]
    texts, labels = batch
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    enc = {k: v.to(dev) for k, v in enc.items()}
    return model(**enc).logits, labels.to(dev)  # (B, C), (B,)


def _take(data, idx: torch.Tensor):
    if isinstance(data, torch.Tensor):
        return data[idx]
    texts, labels = data
    return [texts[i] for i in idx.tolist()], labels[idx]


def _check_data(data, tokenizer) -> int:
    if isinstance(data, torch.Tensor):
        if data.dim() != 2 or data.dtype != torch.long or data.shape[1] < 2:
            raise ValueError(f"token windows must be a LongTensor (N, T) with T >= 2, got {data.dtype} "
                             f"{tuple(data.shape)}")
        return data.shape[0]
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise TypeError("data must be a LongTensor (N, T) of token windows or a (texts, labels) pair")
    texts, labels = data
    if len(texts) != len(labels) or not len(texts):
        raise ValueError(f"{len(texts)} texts and {len(labels)} labels: need the same, non-zero count")
    if tokenizer is None:
        raise ValueError("(texts, labels) data needs a tokenizer")
    return len(texts)


def _save(path: str, state: dict) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written checkpoint


def distill(student: nn.Module, teachers: nn.Module | Sequence[nn.Module], data, config: DistillConfig | None = None,
            tokenizer=None, eval_fn: Callable[[nn.Module, int], object] | None = None,
            ckpt_dir: str | None = None, resume: bool = True, stop_after: int | None = None) -> DistillResult:
    """Train ``student`` in place to match frozen ``teachers`` on ``data``; returns losses and evaluations.

    ``eval_fn(student, step)`` runs (student in eval mode) every ``config.eval_every`` steps and at the end.
    With ``ckpt_dir`` a checkpoint is written every ``config.ckpt_every`` steps and when the run stops; with
    ``resume=True`` an existing checkpoint there is loaded and training continues from its step.
    ``stop_after`` ends this call after that many steps in total (simulates an interruption).
    """
    cfg = (config or DistillConfig()).resolved()
    teachers = [teachers] if isinstance(teachers, nn.Module) else list(teachers)
    if not teachers:
        raise ValueError("need at least one teacher")
    n = _check_data(data, tokenizer)
    for t in teachers:
        t.eval()
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    res, start = DistillResult(), 0
    path = os.path.join(ckpt_dir, CHECKPOINT_NAME) if ckpt_dir else None
    if path and resume and os.path.exists(path):
        try:
            state = torch.load(path, map_location=_device(student), weights_only=True)
            if not isinstance(state, dict) or not {"config", "student", "optimizer", "step", "losses",
                                                   "evals"} <= set(state):
                raise ValueError("missing keys")
        except Exception as e:  # torch's own errors name neither the file nor what to do
            raise ValueError(f"{path}: not a distillation checkpoint written by this function "
                             f"({type(e).__name__}: {str(e)[:200]}); delete it or pass resume=False") from e
        for key in ("batch_size", "seed"):
            if state["config"][key] != getattr(cfg, key):
                raise ValueError(f"checkpoint in {ckpt_dir!r} was written with {key}={state['config'][key]}, "
                                 f"this run has {key}={getattr(cfg, key)}; use another folder or resume=False")
        student.load_state_dict(state["student"])
        opt.load_state_dict(state["optimizer"])
        start = res.resumed_from = int(state["step"])
        res.losses = list(state["losses"])
        res.evals = [tuple(e) for e in state["evals"]]
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)

    def checkpoint(step: int) -> None:
        if path:
            os.makedirs(ckpt_dir, exist_ok=True)
            _save(path, {"step": step, "student": student.state_dict(), "optimizer": opt.state_dict(),
                         "losses": res.losses, "evals": [list(e) for e in res.evals], "config": asdict(cfg)})

    def evaluate(step: int) -> None:
        if eval_fn is not None:
            student.eval()
            res.evals.append((step, eval_fn(student, step)))

    student.train()
    bar = tqdm(range(start, end), desc="distill", disable=progress_disabled(), initial=start, total=cfg.steps)
    for step in bar:
        batch = _take(data, batch_indices(n, cfg.batch_size, step, cfg.seed))
        with torch.no_grad():
            t_logits = [_logits_and_labels(t, batch, tokenizer, cfg.max_length)[0] for t in teachers]
        teacher = t_logits[0].float() if len(t_logits) == 1 else ensemble_logits(t_logits, cfg.T, cfg.ensemble)
        torch.manual_seed(cfg.seed * 1_000_003 + step)  # dropout of this step, independent of history
        s_logits, labels = _logits_and_labels(student, batch, tokenizer, cfg.max_length)
        loss = distillation_loss(s_logits, teacher.to(s_logits.device), labels, T=cfg.T, alpha=cfg.alpha)
        check_loss(loss, step, "distillation loss", f"lower lr={cfg.lr}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        res.losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{res.losses[-1]:.4f}")
        done = step + 1
        if cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.steps:
            evaluate(done)
            student.train()
        if cfg.ckpt_every and done % cfg.ckpt_every == 0 and done < end:
            checkpoint(done)
    res.steps_done = max(end, start)
    if res.steps_done >= cfg.steps and (not res.evals or res.evals[-1][0] != cfg.steps):
        evaluate(cfg.steps)
    checkpoint(res.steps_done)
    student.eval()
    return res
