"""Uncertainty for the ledger: bootstrap intervals over evaluation windows and spreads over seeds.

Perplexity under the GPTQ protocol is exp(mean over windows of the window's mean NLL), so resampling the
windows with replacement (Efron's percentile bootstrap) gives an interval for a perplexity, and resampling the
*same* window indices for two models evaluated on the same windows (a paired bootstrap) gives an interval for
their ratio or difference: the window-to-window variation both models share cancels.
"""
from __future__ import annotations

import math

import torch

__all__ = ["bootstrap_ppl", "seed_spread", "binomial_diff_interval", "N_BOOT"]

N_BOOT = 2000  # resamples; the percentile interval of a smooth statistic is stable to ~1e-2 of its width


def _nlls(x, what: str) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=torch.float64).flatten()
    if t.numel() == 0:
        raise ValueError(f"{what}: needs at least one window NLL")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{what}: window NLLs must be finite")
    return t


def bootstrap_ppl(nlls_a, nlls_b=None, stat: str = "ppl", n_boot: int = N_BOOT, level: float = 0.95,
                  seed: int = 0) -> tuple[float, float, float]:
    """``(value, lo, hi)`` of a perplexity statistic and its percentile bootstrap interval over windows.

    ``stat``: "ppl" (of ``nlls_a`` alone), "ratio" (PPL_a / PPL_b), "rel" (PPL_a / PPL_b - 1) or "diff"
    (PPL_a - PPL_b, points).  The two-model statistics need ``nlls_b`` with one NLL per *same* window (paired).
    One window gives a zero-width interval (nothing to resample)."""
    if stat not in ("ppl", "ratio", "rel", "diff"):
        raise ValueError(f"stat={stat!r}; choose 'ppl', 'ratio', 'rel' or 'diff'")
    if not 0 < level < 1:
        raise ValueError(f"level={level} must lie in (0, 1)")
    if n_boot < 1:
        raise ValueError(f"n_boot={n_boot} must be >= 1")
    a = _nlls(nlls_a, "nlls_a")
    if stat == "ppl":
        b = None
    else:
        if nlls_b is None:
            raise ValueError(f"stat={stat!r} compares two models: give nlls_b (the same windows)")
        b = _nlls(nlls_b, "nlls_b")
        if b.numel() != a.numel():
            raise ValueError(f"paired bootstrap needs the same windows: {a.numel()} vs {b.numel()} NLLs")

    def f(idx: torch.Tensor | None) -> torch.Tensor:  # idx (n_boot, W) or None for the point value
        ma = a.mean() if idx is None else a[idx].mean(-1)
        if b is None:
            return ma.exp()
        mb = b.mean() if idx is None else b[idx].mean(-1)
        if stat == "diff":
            return ma.exp() - mb.exp()
        r = (ma - mb).exp()
        return r - 1 if stat == "rel" else r

    value = float(f(None))
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, a.numel(), (n_boot, a.numel()), generator=g)  # (n_boot, W)
    q = torch.quantile(f(idx), torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64))
    return value, float(min(q[0], value)), float(max(q[1], value))


def seed_spread(values) -> tuple[float, float, float]:
    """``(mean, min, max)`` of one quantity measured with several seeds; the interval a verdict reads is
    [min, max] (with 3 seeds, about the 50% coverage of a t-interval: a lenient test of noise, never tighter)."""
    v = [float(x) for x in values]
    if len(v) < 2 or not all(math.isfinite(x) for x in v):
        raise ValueError(f"need >= 2 finite values for a spread, got {v}")
    return sum(v) / len(v), min(v), max(v)


def binomial_diff_interval(p_a: float, p_b: float, n_a: int, n_b: int | None = None,
                           z: float = 1.96) -> tuple[float, float, float]:
    """``(p_a - p_b, lo, hi)``: normal-approximation interval of a difference of two accuracies measured on
    ``n_a`` and ``n_b`` independent examples (unpaired: conservative when both runs see the same examples)."""
    n_b = n_a if n_b is None else n_b
    for n in (n_a, n_b):
        if int(n) < 1:
            raise ValueError(f"example counts must be >= 1, got {n_a}, {n_b}")
    for p in (p_a, p_b):
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"accuracies must lie in [0, 1], got {p_a}, {p_b}")
    d = float(p_a) - float(p_b)
    se = math.sqrt(p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b)
    return d, d - z * se, d + z * se


COLLAPSE_MARGIN = 0.05  # a classifier within 5 points of the majority-class share has not learned the task


def classifier_collapsed(accuracy: float, majority: float, margin: float = COLLAPSE_MARGIN) -> bool:
    """The ledger's sanity check on every classifier run: True when ``accuracy`` does not beat always answering
    the majority class (share ``majority``) by ``margin``; a comparison built on such a run measures nothing."""
    if not 0.0 < float(majority) <= 1.0:
        raise ValueError(f"majority={majority} must lie in (0, 1]")
    if not 0.0 <= float(accuracy) <= 1.0:
        raise ValueError(f"accuracy={accuracy} must lie in [0, 1]")
    return float(accuracy) < float(majority) + margin


def interpolated_crossover(points) -> float | None:
    """Where a speedup curve crosses 1, interpolated linearly in log(speedup) between the two measured
    sparsities around the last crossing; ``points`` = [(sparsity, speedup), ...].  ``None`` when the speedup
    stays <= 1 at the highest sparsity; the lowest sparsity when it is > 1 everywhere."""
    pts = sorted((float(s), float(v)) for s, v in points)
    if not pts or any(v <= 0 or not math.isfinite(v) for _, v in pts):
        raise ValueError(f"points must be (sparsity, positive speedup) pairs, got {pts}")
    if pts[-1][1] <= 1.0:
        return None
    for (s0, v0), (s1, v1) in zip(reversed(pts[:-1]), reversed(pts[1:])):
        if v0 <= 1.0 < v1:
            l0, l1 = math.log(v0), math.log(v1)
            return s0 + (s1 - s0) * (0.0 - l0) / (l1 - l0)
    return pts[0][0]
