"""Early exit at a quality budget: the cheapest threshold within a perplexity cost, split by token difficulty.

CALM (Schuster et al. 2022, section 4) calibrates the confidence threshold so that the early-exit model
stays within a tolerance of the full model.  Here the tolerance is a relative perplexity cost c (1%, 5%,
10%): among the thresholds of a sweep (``threshold_sweep``), pick the one with the fewest mean blocks per
token whose perplexity is at most (1 + c) times the full model's.

Token difficulty is defined by the full model: a token is *easy* when its next-token loss under the last
exit lies in the lowest ``q`` quantile of all tokens, *hard* when it lies in the highest ``q`` quantile.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .decide import SweepPoint, exit_decision, threshold_sweep

__all__ = ["default_thresholds", "BudgetPoint", "threshold_at_cost", "AgreementPoint", "threshold_at_agreement",
           "difficulty_masks", "blocks_by_difficulty"]


def default_thresholds(n: int = 201) -> list[float]:
    """``n`` thresholds in [0, 1] plus 1.01 (never exit early): the sweep the budget search picks from."""
    if n < 2:
        raise ValueError(f"n={n} thresholds: need at least 2")
    return [i / (n - 1) for i in range(n)] + [1.01]


@dataclass
class BudgetPoint:
    cost: float  # allowed relative perplexity increase
    point: SweepPoint  # the cheapest sweep point within the cost


def threshold_at_cost(conf: torch.Tensor, nll: torch.Tensor, costs: list[float],
                      thresholds: list[float] | None = None) -> list[BudgetPoint]:
    """For each relative cost c, the sweep point with the fewest mean blocks and PPL <= (1 + c) * full PPL.

    ``conf`` / ``nll`` (L, W, T-1) from ``exit_statistics``.  A threshold > 1 (the full model) is always in
    the sweep, so every cost >= 0 has an answer.
    """
    if any(not c >= 0 for c in costs):
        raise ValueError(f"costs={costs} must all be >= 0 (relative perplexity increases)")
    thresholds = default_thresholds() if thresholds is None else sorted(set(thresholds) | {1.01})
    sweep = threshold_sweep(conf, nll, thresholds)
    full = sweep[-1].ppl  # threshold 1.01: every token runs every block
    out = []
    for c in costs:
        ok = [s for s in sweep if s.ppl <= (1 + c) * full]
        out.append(BudgetPoint(cost=float(c), point=min(ok, key=lambda s: (s.mean_blocks, -s.threshold))))
    return out


@dataclass
class AgreementPoint:
    cost: float  # allowed share of tokens whose greedy prediction differs from the full model's
    threshold: float
    mean_blocks: float
    changed: float  # measured share of changed predictions at this threshold
    first_exit: int  # the earliest block (0-based) any token exits after; L-1 when none exits early


def threshold_at_agreement(conf: torch.Tensor, top1: torch.Tensor, costs: list[float],
                           thresholds: list[float] | None = None) -> list[AgreementPoint]:
    """CALM's own budget (Schuster et al. 2022, sec. 3.1, token-level consistency with the full model): for
    each c, the threshold with the fewest mean blocks at which at most a share c of the tokens get a
    different greedy prediction than the last exit.  ``conf`` / ``top1`` (L, W, T-1) from ``exit_statistics``.
    """
    if any(not 0 <= c <= 1 for c in costs):
        raise ValueError(f"costs={costs} must all lie in [0, 1] (shares of changed predictions)")
    if conf.shape != top1.shape or conf.dim() != 3:
        raise ValueError(f"conf {tuple(conf.shape)} and top1 {tuple(top1.shape)} must both be (L, W, T-1)")
    thresholds = default_thresholds() if thresholds is None else sorted(set(thresholds) | {1.01})
    L = conf.shape[0]
    c2, t2 = conf.reshape(L, -1), top1.reshape(L, -1)  # (L, N)
    rows = []
    for thr in thresholds:
        idx = exit_decision(c2, float(thr))  # (N,)
        changed = float((t2.gather(0, idx[None])[0] != t2[-1]).double().mean())
        rows.append((float((idx + 1).double().mean()), -float(thr), changed, int(idx.min())))
    out = []
    for c in costs:
        mb, neg_thr, ch, first = min(r for r in rows if r[2] <= c)  # threshold 1.01 changes nothing: always there
        out.append(AgreementPoint(cost=float(c), threshold=-neg_thr, mean_blocks=mb, changed=ch, first_exit=first))
    return out


def difficulty_masks(nll_full: torch.Tensor, q: float = 1 / 3) -> tuple[torch.Tensor, torch.Tensor]:
    """``(easy, hard)`` boolean masks: loss in the lowest / highest ``q`` quantile of the full model's losses."""
    if not 0 < q <= 0.5:
        raise ValueError(f"q={q} must be in (0, 0.5]")
    flat = nll_full.reshape(-1).double()
    lo, hi = torch.quantile(flat, q), torch.quantile(flat, 1 - q)
    return nll_full <= lo, nll_full >= hi


def blocks_by_difficulty(conf: torch.Tensor, nll: torch.Tensor, threshold: float, q: float = 1 / 3) -> dict:
    """Mean blocks per token (and the share of blocks saved) for easy, hard and all tokens at ``threshold``."""
    L = conf.shape[0]
    blocks = exit_decision(conf.reshape(L, -1), float(threshold)).view(conf.shape[1:]) + 1  # (W, T-1)
    easy, hard = difficulty_masks(nll[-1], q)
    out = {}
    for name, m in (("easy", easy), ("hard", hard), ("all", torch.ones_like(easy))):
        mean = float(blocks[m].double().mean())
        out[name] = {"tokens": int(m.sum()), "mean_blocks": mean, "saved": 1 - mean / L}
    return out
