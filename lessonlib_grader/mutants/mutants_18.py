"""Wrong answers a student might hand in for notebook 18's exercise (each must score 0)."""
from __future__ import annotations

import torch

from . import mutant


def _nearest(values, centroids, right=False):
    mids = (centroids[1:] + centroids[:-1]) / 2  # (k-1,)
    return torch.searchsorted(mids, values.to(centroids.dtype).contiguous(), right=right)  # (n,)


def _means(values, idx, centroids):
    k, v = centroids.numel(), values.to(centroids.dtype)
    sums = torch.zeros(k, dtype=centroids.dtype).index_add_(0, idx, v)  # (k,)
    counts = torch.bincount(idx, minlength=k).to(centroids.dtype)  # (k,)
    return sums, counts


@mutant("q18_1", "searches the centroids themselves instead of the midpoints between them")
def boundaries_at_centroids(values, centroids):
    idx = torch.searchsorted(centroids, values.to(centroids.dtype).contiguous()).clamp_max(centroids.numel() - 1)
    sums, counts = _means(values, idx, centroids)
    return torch.where(counts > 0, sums / counts.clamp_min(1), centroids), idx


@mutant("q18_1", "sends an empty cluster's centroid to 0 instead of keeping it")
def empty_to_zero(values, centroids):
    idx = _nearest(values, centroids)
    sums, counts = _means(values, idx, centroids)
    return sums / counts.clamp_min(1), idx


@mutant("q18_1", "divides by the count without guarding empty clusters (0 / 0 = NaN)")
def empty_nan(values, centroids):
    idx = _nearest(values, centroids)
    sums, counts = _means(values, idx, centroids)
    return sums / counts, idx


@mutant("q18_1", "returns the assignment to the moved centroids instead of the given ones")
def reassigns(values, centroids):
    idx = _nearest(values, centroids)
    sums, counts = _means(values, idx, centroids)
    new = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)
    return new, _nearest(values, new)


@mutant("q18_1", "moves each centroid to the median of its cluster instead of the mean")
def median(values, centroids):
    idx = _nearest(values, centroids)
    v = values.to(centroids.dtype)
    new = centroids.clone()
    for j in range(centroids.numel()):
        if (idx == j).any():
            new[j] = v[idx == j].median()
    return new, idx


@mutant("q18_1", "breaks ties towards the upper centroid (searchsorted right=True)")
def ties_right(values, centroids):
    idx = _nearest(values, centroids, right=True)
    sums, counts = _means(values, idx, centroids)
    return torch.where(counts > 0, sums / counts.clamp_min(1), centroids), idx


@mutant("q18_1", "only assigns: returns the centroids unchanged")
def no_update(values, centroids):
    return centroids.clone(), _nearest(values, centroids)


@mutant("q18_1", "returns float32 centroids whatever the input dtype")
def always_float32(values, centroids):
    idx = _nearest(values, centroids)
    sums, counts = _means(values, idx, centroids)
    return torch.where(counts > 0, sums / counts.clamp_min(1), centroids).float(), idx


@mutant('q18_2', 'forgets the codebook')
def concept_q18_2_0():
    return 442368


@mutant('q18_2', 'stores a 32-bit index per weight')
def concept_q18_2_1():
    return 3538944


@mutant('q18_2', 'counts 1 byte per centroid')
def concept_q18_2_2():
    return 442384
