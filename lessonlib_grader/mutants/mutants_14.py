"""Wrong answers a student might hand in for notebook 14's exercise (each must score 0)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import mutant


def _uv(h_student, h_teacher, proj_weight, mask, detach=True):
    u = h_student.float() if proj_weight is None else h_student.float() @ proj_weight.float().T
    v = h_teacher.detach().float() if detach else h_teacher.float()
    if mask is not None:
        u, v = u[mask.bool()], v[mask.bool()]
    return u, v


@mutant("q14_1", "MSE as the squared distance per position (sum over the hidden axis), then the mean")
def mse_per_position(h_student, h_teacher, proj_weight=None, kind="mse", mask=None):
    u, v = _uv(h_student, h_teacher, proj_weight, mask)
    if kind == "mse":
        return ((u - v) ** 2).sum(-1).mean()
    return (1 - F.cosine_similarity(u, v, dim=-1)).mean()


@mutant("q14_1", "MSE as the mean Euclidean distance (takes the square root)")
def l2_distance(h_student, h_teacher, proj_weight=None, kind="mse", mask=None):
    u, v = _uv(h_student, h_teacher, proj_weight, mask)
    if kind == "mse":
        return (u - v).norm(dim=-1).mean()
    return (1 - F.cosine_similarity(u, v, dim=-1)).mean()


@mutant("q14_1", "returns the mean cosine similarity, forgetting the 1 - cos")
def cosine_not_loss(h_student, h_teacher, proj_weight=None, kind="mse", mask=None):
    u, v = _uv(h_student, h_teacher, proj_weight, mask)
    if kind == "mse":
        return ((u - v) ** 2).mean()
    return F.cosine_similarity(u, v, dim=-1).mean()


@mutant("q14_1", "projects with h @ W instead of h @ W.T")
def no_transpose(h_student, h_teacher, proj_weight=None, kind="mse", mask=None):
    u = h_student.float() if proj_weight is None else h_student.float() @ proj_weight.float()
    v = h_teacher.detach().float()
    if mask is not None:
        u, v = u[mask.bool()], v[mask.bool()]
    if kind == "mse":
        return ((u - v) ** 2).mean()
    return (1 - F.cosine_similarity(u, v, dim=-1)).mean()


@mutant("q14_1", "ignores the mask")
def no_mask(h_student, h_teacher, proj_weight=None, kind="mse", mask=None):
    u, v = _uv(h_student, h_teacher, proj_weight, None)
    if kind == "mse":
        return ((u - v) ** 2).mean()
    return (1 - F.cosine_similarity(u, v, dim=-1)).mean()


@mutant("q14_1", "zeroes the masked positions but still averages over all of them")
def mask_multiplied(h_student, h_teacher, proj_weight=None, kind="mse", mask=None):
    u, v = _uv(h_student, h_teacher, proj_weight, None)
    m = torch.ones(u.shape[:-1]) if mask is None else mask.float()  # (...)
    if kind == "mse":
        return (((u - v) ** 2).mean(-1) * m).mean()
    return ((1 - F.cosine_similarity(u, v, dim=-1)) * m).mean()


@mutant("q14_1", "lets the gradient flow into the teacher's hidden states (no detach)")
def teacher_not_detached(h_student, h_teacher, proj_weight=None, kind="mse", mask=None):
    u, v = _uv(h_student, h_teacher, proj_weight, mask, detach=False)
    if kind == "mse":
        return ((u - v) ** 2).mean()
    return (1 - F.cosine_similarity(u, v, dim=-1)).mean()


@mutant("q14_1", "takes the cosine over the position axis (dim=-2) instead of the hidden axis")
def cosine_wrong_axis(h_student, h_teacher, proj_weight=None, kind="mse", mask=None):
    u = h_student.float() if proj_weight is None else h_student.float() @ proj_weight.float().T
    v = h_teacher.detach().float()
    if kind == "mse":
        keep = torch.ones(u.shape[:-1], dtype=torch.bool) if mask is None else mask.bool()
        return ((u[keep] - v[keep]) ** 2).mean()
    return (1 - F.cosine_similarity(u, v, dim=-2)).mean()


@mutant('q14_2', 'answers B (project the teacher down: the loss can shrink everything)')
def concept_q14_2_0():
    return 'B'


@mutant('q14_2', 'answers C (either)')
def concept_q14_2_1():
    return 'C'


@mutant('q14_2', 'answers D (the first 192 channels)')
def concept_q14_2_2():
    return 'D'
