"""Wrong answers a student might hand in for notebook 11's exercise (each must score 0)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import mutant


@mutant("q11_1", "returns the mean cosine similarity, forgetting the 1 - ...")
def mean_cos(h_in, h_out):
    return float(F.cosine_similarity(h_in.reshape(-1, h_in.shape[-1]), h_out.reshape(-1, h_out.shape[-1]), dim=-1).mean())


@mutant("q11_1", "one cosine of the two whole flattened tensors instead of one per token")
def global_cos(h_in, h_out):
    a, b = h_in.flatten().double(), h_out.flatten().double()
    return float(1 - (a @ b) / (a.norm() * b.norm()))


@mutant("q11_1", "cosine along the token axis (dim 0) instead of the channel axis")
def token_axis(h_in, h_out):
    a, b = h_in.reshape(-1, h_in.shape[-1]), h_out.reshape(-1, h_out.shape[-1])
    return float(1 - F.cosine_similarity(a, b, dim=0).mean())


@mutant("q11_1", "divides by the norms without a guard (a zero token gives NaN)")
def no_guard(h_in, h_out):
    a, b = h_in.reshape(-1, h_in.shape[-1]).double(), h_out.reshape(-1, h_out.shape[-1]).double()
    return float(1 - ((a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))).mean())


@mutant("q11_1", "relative change ||h_out - h_in|| / ||h_in|| instead of the cosine")
def relative_change(h_in, h_out):
    a, b = h_in.reshape(-1, h_in.shape[-1]), h_out.reshape(-1, h_out.shape[-1])
    return float(((b - a).norm(dim=-1) / a.norm(dim=-1).clamp_min(1e-12)).mean())


@mutant("q11_1", "returns a 0-dim tensor instead of a Python float")
def tensor_result(h_in, h_out):
    a, b = h_in.reshape(-1, h_in.shape[-1]), h_out.reshape(-1, h_out.shape[-1])
    return 1 - F.cosine_similarity(a, b, dim=-1).mean()


@mutant("q11_1", "sums the cosines over tokens instead of averaging")
def sum_cos(h_in, h_out):
    a, b = h_in.reshape(-1, h_in.shape[-1]), h_out.reshape(-1, h_out.shape[-1])
    return float(1 - F.cosine_similarity(a, b, dim=-1).sum())


@mutant('q11_2', 'answers A (RMSNorm is scale-invariant, so always harmless)')
def concept_q11_2_0():
    return 'A'


@mutant('q11_2', 'answers C (only when c < 1)')
def concept_q11_2_1():
    return 'C'


@mutant('q11_2', 'answers D (never)')
def concept_q11_2_2():
    return 'D'
