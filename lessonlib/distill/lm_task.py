"""The language-model distillation task: SmolLM2 teacher -> a few-block student on the speeches corpus.

Hinton et al. (2015), section 2: the student minimises ``alpha * CE + (1 - alpha) * T^2 * KL(p_T(teacher) ||
p_T(student))`` (``distillation_loss``).  The student keeps ``n_blocks`` of the teacher's blocks, evenly
spaced and always including the first and the last (DistilBERT-style initialisation, ``student_by_layers``);
its tied embedding / LM head stays frozen (the teacher's output space), the blocks and norms train.

The teacher's logits on the training windows are computed once and cached (``CachedTeacher``), so every
student run of a temperature sweep sees exactly the same soft targets at no extra teacher cost.  Sizes:
``calib_samples`` windows of ``calib_seqlen // 4`` tokens, ``train_steps`` steps of ``batch_size`` windows,
student perplexity with the profile's evaluation protocol.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from ..config import Profile, get_profile
from ..data import calibration_batches
from ..evaluate import perplexity
from ..models import decoder_blocks
from .losses import softened_entropy
from .students import student_by_layers
from .train import DistillConfig, distill

__all__ = ["CachedTeacher", "temperature_grid", "spaced_layers", "lm_student", "LMTask", "lm_task",
           "train_lm_student", "teacher_entropies", "max_entropy"]


class CachedTeacher(nn.Module):
    """A stand-in teacher that answers from precomputed logits: ``forward(input_ids)`` looks each row up.

    ``windows`` (N, T) token ids and ``logits`` (N, T, V) (stored in float16 to halve the memory).  A row
    that is not one of ``windows`` raises ValueError: the cache never guesses.
    """

    def __init__(self, windows: torch.Tensor, logits: torch.Tensor):
        super().__init__()
        if windows.dim() != 2 or logits.dim() != 3 or tuple(logits.shape[:2]) != tuple(windows.shape):
            raise ValueError(f"windows {tuple(windows.shape)} and logits {tuple(logits.shape)} must be (N, T) and "
                             "(N, T, V)")
        self.register_buffer("windows", windows.clone())
        self.register_buffer("logits", logits.to(torch.float16))
        self._device_anchor = nn.Parameter(torch.zeros(0, device=windows.device), requires_grad=False)

    @classmethod
    @torch.no_grad()
    def from_model(cls, teacher: nn.Module, windows: torch.Tensor, batch_size: int = 4) -> "CachedTeacher":
        dev = next(teacher.parameters()).device
        teacher.eval()
        outs = [teacher(input_ids=windows[i: i + batch_size].to(dev), use_cache=False).logits.to(torch.float16).cpu()
                for i in range(0, windows.shape[0], batch_size)]
        return cls(windows.cpu(), torch.cat(outs)).to(dev)

    def forward(self, input_ids: torch.Tensor, **_) -> SimpleNamespace:
        eq = (input_ids[:, None, :] == self.windows[None]).all(-1)  # (B, N)
        found = eq.any(1)
        if not bool(found.all()):
            raise ValueError(f"{int((~found).sum())} of {input_ids.shape[0]} input rows are not cached windows")
        return SimpleNamespace(logits=self.logits[eq.float().argmax(1)].float())  # (B, T, V)


def temperature_grid(profile: str | Profile | None = None) -> list[float]:
    """Temperatures 1..8, geometric, 3k + 1 points (k from ``sweep_points``): ci gives 1, 2, 4, 8."""
    k = max(1, get_profile(profile).sweep_points // 3)
    return [float(round(t, 3)) for t in np.geomspace(1.0, 8.0, 3 * k + 1)]


def spaced_layers(n_teacher: int, n_student: int) -> list[int]:
    """``n_student`` evenly spaced block indices of ``n_teacher``, including the first and the last."""
    if not 1 <= n_student <= n_teacher:
        raise ValueError(f"n_student={n_student} must be in 1..{n_teacher}")
    if n_student == 1:
        return [n_teacher - 1]
    return sorted({int(round(i * (n_teacher - 1) / (n_student - 1))) for i in range(n_student)})


def lm_student(teacher: nn.Module, n_blocks: int = 6) -> nn.Module:
    """A copy of ``teacher`` with ``n_blocks`` evenly spaced blocks; the tied embedding / LM head frozen."""
    student = student_by_layers(teacher, layers=spaced_layers(len(decoder_blocks(teacher)), n_blocks))
    for p in student.get_input_embeddings().parameters():
        p.requires_grad_(False)
    for p in student.get_output_embeddings().parameters():
        p.requires_grad_(False)
    return student


@dataclass
class LMTask:
    teacher: nn.Module  # the full model (kept for evaluation)
    tokenizer: object
    cached: CachedTeacher  # the teacher's logits on ``windows``
    windows: torch.Tensor  # (N, T) training windows from the calibration split
    profile: Profile
    n_blocks: int


def lm_task(teacher: nn.Module, tokenizer, profile: str | Profile | None = None, n_blocks: int = 6,
            seed: int = 0) -> LMTask:
    """Draw the training windows (calibration split) and cache the teacher's logits on them."""
    p = get_profile(profile)
    seqlen = max(16, p.calib_seqlen // 4)
    wins = calibration_batches(tokenizer, n=p.calib_samples, seqlen=seqlen, seed=seed)  # (N, T)
    return LMTask(teacher, tokenizer, CachedTeacher.from_model(teacher, wins), wins, p, n_blocks)


def train_lm_student(task: LMTask, T: float = 2.0, alpha: float = 0.0, lr: float | None = None,
                     steps: int | None = None, seed: int = 0) -> tuple[nn.Module, list[float], float]:
    """Distil a fresh student with temperature ``T`` and hard-label weight ``alpha``: (student, losses, ppl).

    ``alpha=1`` is the hard-target baseline (next-token cross-entropy only), ``alpha=0`` pure soft targets.
    The learning rate defaults to 10x the profile's (few steps from a broken initialisation).
    """
    p = task.profile
    student = lm_student(task.teacher, task.n_blocks)
    cfg = DistillConfig(steps=steps or p.train_steps, batch_size=p.batch_size, lr=lr or 10 * p.lr, T=T,
                        alpha=alpha, seed=seed, profile=p.name)
    res = distill(student, task.cached, task.windows, cfg)
    ppl = perplexity(student, task.tokenizer, profile=p, progress=False).ppl
    return student, res.losses, ppl


def teacher_entropies(task: LMTask, temperatures: list[float]) -> list[float]:
    """Mean entropy (nats) of the teacher's softened next-token distribution on the training windows."""
    out = []
    for T in temperatures:
        per_window = [softened_entropy(task.cached.logits[i, :-1].float(), T) for i in range(task.windows.shape[0])]
        out.append(float(np.mean(per_window)))
    return out


def max_entropy(task: LMTask) -> float:
    """log V: the entropy of the uniform distribution over the vocabulary, the limit as T grows."""
    return math.log(task.cached.logits.shape[-1])
