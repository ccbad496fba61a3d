"""Knowledge-distillation losses: soft targets at a temperature, features, attention maps.

Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural Network", section 2: the student
matches the teacher's softened distribution p_T = softmax(z / T).  Because the gradient of the soft
cross-entropy scales as 1/T^2 (their section 2.1, dC/dz_i = (q_i - p_i) / T  ~  (z_i - v_i) / (N T^2)),
the soft term is multiplied by T^2 so that its weight relative to the hard term does not change with T:

    loss = alpha * CE(student, y) + (1 - alpha) * T^2 * KL( p_T(teacher) || p_T(student) )

``alpha`` weights the hard-label *task* term, ``1 - alpha`` the *distillation* term (the convention of the
course's seed 003: alpha * task + (1 - alpha) * distill).  alpha = 1 is plain fine-tuning, alpha = 0 pure KD.

Feature distillation (FitNets, Romero et al. 2015, eq. 2: a learned regressor maps the student's hidden
state to the teacher's width; TinyBERT, Jiao et al. 2020, eq. 7 uses MSE(H_S W_h, H_T)) and attention
distillation (MiniLM, Wang et al. 2020, eq. 4: KL between the teacher's and student's attention rows).
All losses accept classification logits (B, C) and language-model logits (B, T, V) with an optional mask.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from ..checks import finite

__all__ = ["check_temperature", "check_alpha", "flatten_logits", "kd_kl", "distillation_loss",
           "softened_entropy", "hidden_state_loss", "FeatureDistiller", "attention_distillation_loss"]


def check_temperature(T: float) -> float:
    if not isinstance(T, (int, float)) or not math.isfinite(T) or T <= 0:
        raise ValueError(f"temperature T={T!r} must be a finite number > 0")
    return float(T)


def check_alpha(alpha: float) -> float:
    if not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha!r} is outside [0, 1] (it weights the hard-label term)")
    return float(alpha)


def flatten_logits(logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, C) or (B, T, V) logits -> (N, V) rows, keeping only rows where ``mask`` (B,) / (B, T) is true."""
    if logits.dim() not in (2, 3):
        raise ValueError(f"logits must be (B, C) or (B, T, V), got shape {tuple(logits.shape)}")
    rows = logits.reshape(-1, logits.shape[-1])  # (N, V)
    if mask is None:
        return rows
    if tuple(mask.shape) != tuple(logits.shape[:-1]):
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not match logits {tuple(logits.shape)} "
                         f"(expected {tuple(logits.shape[:-1])})")
    keep = mask.reshape(-1).bool()
    if not bool(keep.any()):
        raise ValueError("the mask selects no position: nothing to distil")
    return rows[keep]


def _check_pair(student: torch.Tensor, teacher: torch.Tensor) -> None:
    if student.shape[-1] != teacher.shape[-1]:
        raise ValueError(f"vocabulary mismatch: student logits have {student.shape[-1]} classes, teacher "
                         f"{teacher.shape[-1]}; distillation needs the same output space")
    if tuple(student.shape) != tuple(teacher.shape):
        raise ValueError(f"student logits {tuple(student.shape)} and teacher logits {tuple(teacher.shape)} "
                         "must have the same shape")
    finite("student logits", student.detach())
    finite("teacher logits", teacher.detach())


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float = 1.0,
          mask: torch.Tensor | None = None) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), averaged over rows (Hinton et al. 2015, sec. 2).

    ``student_logits`` / ``teacher_logits``: (B, C) or (B, T, V); ``mask`` (B,) or (B, T) selects rows.
    The teacher side carries no gradient.  Returns a scalar; zero when the logits are equal.
    """
    T = check_temperature(T)
    _check_pair(student_logits, teacher_logits)
    s = flatten_logits(student_logits, mask).float()  # (N, V)
    t = flatten_logits(teacher_logits, mask).detach().float()  # (N, V)
    # BEGIN SOLUTION
    log_ps = F.log_softmax(s / T, dim=-1)  # (N, V) student log-probabilities at temperature T
    log_pt = F.log_softmax(t / T, dim=-1)  # (N, V) teacher log-probabilities at temperature T
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(-1)  # (N,) KL(p_t || p_s) per row
    return kl.mean() * T * T  # T^2 keeps the gradient scale independent of T
    # END SOLUTION


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      labels: torch.Tensor | None = None, T: float = 2.0, alpha: float = 0.5,
                      mask: torch.Tensor | None = None, ignore_index: int = -100) -> torch.Tensor:
    """alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(p_T(teacher) || p_T(student)).

    ``alpha`` weights the hard-label task term (alpha = 1: plain cross-entropy, alpha = 0: pure KD).
    ``labels`` (B,) or (B, T) with ``ignore_index`` for positions without a label; needed when alpha > 0.
    For language models pass logits already aligned with their targets (position t predicts token t+1).
    """
    alpha = check_alpha(alpha)
    T = check_temperature(T)
    _check_pair(student_logits, teacher_logits)
    loss = student_logits.new_zeros((), dtype=torch.float32)
    if alpha > 0:
        if labels is None:
            raise ValueError(f"alpha={alpha} > 0 weights a hard-label term, but labels=None")
        if tuple(labels.shape) != tuple(student_logits.shape[:-1]):
            raise ValueError(f"labels {tuple(labels.shape)} do not match logits {tuple(student_logits.shape)}")
        lab = labels if mask is None else torch.where(mask.bool(), labels, torch.full_like(labels, ignore_index))
        ce = F.cross_entropy(student_logits.reshape(-1, student_logits.shape[-1]).float(), lab.reshape(-1),
                             ignore_index=ignore_index)
        loss = loss + alpha * ce
    if alpha < 1:
        loss = loss + (1 - alpha) * kd_kl(student_logits, teacher_logits, T, mask)
    return loss


def softened_entropy(logits: torch.Tensor, T: float = 1.0, mask: torch.Tensor | None = None) -> float:
    """Mean entropy (nats) of softmax(logits / T) over rows: how much 'dark knowledge' the soft targets carry.

    Grows with T from the sharp distribution's entropy towards log(V) (uniform).
    """
    T = check_temperature(T)
    z = flatten_logits(logits, mask).float() / T  # (N, V)
    logp = F.log_softmax(z, dim=-1)
    return float(-(logp.exp() * logp).sum(-1).mean())


def hidden_state_loss(h_student: torch.Tensor, h_teacher: torch.Tensor, proj_weight: torch.Tensor | None = None,
                      kind: str = "mse", mask: torch.Tensor | None = None) -> torch.Tensor:
    """Hidden-state distillation loss between a student and a teacher layer (FitNets eq. 2; TinyBERT eq. 7).

    h_student (..., D_s), h_teacher (..., D_t); proj_weight (D_t, D_s), the learned regressor W that maps the
    student's width to the teacher's (None when D_s == D_t: no projection); mask (...) of 0/1 selecting the
    positions that count (e.g. non-padding tokens).  With u = h_s W^T and v = h_t at each kept position:
    ``kind="mse"`` is the mean over every kept element of (u - v)^2 (TinyBERT eq. 7), ``kind="cosine"`` the
    mean over kept positions of 1 - cos(u, v) (DistilBERT's cosine loss).  The teacher carries no gradient.
    """
    if kind not in ("mse", "cosine"):
        raise ValueError(f"kind={kind!r}; choose 'mse' or 'cosine'")
    d_s, d_t = h_student.shape[-1], h_teacher.shape[-1]
    want = (d_t, d_s)
    if (proj_weight is None and d_s != d_t) or (proj_weight is not None and tuple(proj_weight.shape) != want):
        got = None if proj_weight is None else tuple(proj_weight.shape)
        raise ValueError(f"proj_weight={got} must be {want} (teacher width, student width)"
                         f"{'' if d_s != d_t else ' or None'} for hidden widths {d_s} -> {d_t}")
    if h_student.shape[:-1] != h_teacher.shape[:-1]:
        raise ValueError(f"student {tuple(h_student.shape)} and teacher {tuple(h_teacher.shape)} hidden "
                         "states must agree on every axis but the last")
    if mask is not None and (tuple(mask.shape) != tuple(h_student.shape[:-1]) or not bool(mask.bool().any())):
        raise ValueError(f"mask of shape {tuple(mask.shape)} must match the hidden states' leading axes "
                         f"{tuple(h_student.shape[:-1])} and select at least one position")
    # BEGIN SOLUTION
    u = h_student.float() if proj_weight is None else h_student.float() @ proj_weight.float().T  # (..., D_t)
    v = h_teacher.detach().float()  # (..., D_t)
    if mask is not None:
        keep = mask.bool()  # (...)
        u, v = u[keep], v[keep]  # (N, D_t): the kept positions only
    if kind == "mse":
        return ((u - v) ** 2).mean()  # mean over every kept element
    return (1 - F.cosine_similarity(u, v, dim=-1)).mean()  # mean over kept positions
    # END SOLUTION


class FeatureDistiller(nn.Module):
    """Hidden-state distillation with a learned projection (FitNets eq. 2; TinyBERT eq. 7).

    ``loss(h_s, h_t) = MSE(h_s W^T, h_t)`` or ``mean(1 - cos(h_s W^T, h_t))``, where W is an
    ``nn.Linear(student_dim, teacher_dim, bias=False)`` when the widths differ and the identity otherwise.
    """

    def __init__(self, student_dim: int, teacher_dim: int, kind: str = "mse", seed: int = 0):
        super().__init__()
        if kind not in ("mse", "cosine"):
            raise ValueError(f"kind={kind!r}; choose 'mse' or 'cosine'")
        if student_dim <= 0 or teacher_dim <= 0:
            raise ValueError(f"widths must be positive, got student_dim={student_dim}, teacher_dim={teacher_dim}")
        self.kind, self.student_dim, self.teacher_dim = kind, student_dim, teacher_dim
        if student_dim == teacher_dim:
            self.proj: nn.Module = nn.Identity()
        else:
            g = torch.Generator().manual_seed(seed)
            self.proj = nn.Linear(student_dim, teacher_dim, bias=False)
            with torch.no_grad():
                bound = 1 / math.sqrt(student_dim)
                self.proj.weight.copy_(torch.empty(teacher_dim, student_dim).uniform_(-bound, bound, generator=g))

    def forward(self, h_student: torch.Tensor, h_teacher: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        if h_student.shape[-1] != self.student_dim or h_teacher.shape[-1] != self.teacher_dim:
            raise ValueError(f"hidden widths {h_student.shape[-1]} / {h_teacher.shape[-1]} do not match the "
                             f"distiller's student_dim={self.student_dim} / teacher_dim={self.teacher_dim}")
        W = None if isinstance(self.proj, nn.Identity) else self.proj.weight  # (teacher_dim, student_dim)
        return hidden_state_loss(h_student, h_teacher, W, self.kind, mask)


def attention_distillation_loss(att_student: torch.Tensor, att_teacher: torch.Tensor,
                                average_heads: bool = False, eps: float = 1e-12) -> torch.Tensor:
    """KL(teacher row || student row) between attention probabilities (MiniLM eq. 4), mean over rows.

    Inputs are (B, H, T, T) probabilities (rows sum to 1, e.g. ``output_attentions=True``).  With a different
    number of heads set ``average_heads=True`` to compare head-averaged maps (B, T, T).
    """
    if att_student.dim() != 4 or att_teacher.dim() != 4:
        raise ValueError(f"attention maps must be (B, H, T, T); got {tuple(att_student.shape)} and "
                         f"{tuple(att_teacher.shape)}")
    if average_heads:
        att_student, att_teacher = att_student.mean(1), att_teacher.mean(1)  # (B, T, T)
    if tuple(att_student.shape) != tuple(att_teacher.shape):
        raise ValueError(f"attention shapes differ: student {tuple(att_student.shape)}, teacher "
                         f"{tuple(att_teacher.shape)} (set average_heads=True when only H differs)")
    ps, pt = att_student.float(), att_teacher.detach().float()
    kl = torch.xlogy(pt, pt) - pt * torch.log(ps.clamp_min(eps))  # 0 * log 0 = 0 on masked positions
    return kl.sum(-1).mean()
