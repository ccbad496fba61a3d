"""Choosing a recipe under a size budget (notebook 21's graded exercise) and a back-of-envelope byte estimate.

``best_under_budget`` is the last step of a compression search: every candidate recipe has been run and
measured (real bytes, perplexity); keep those that fit the budget and take the best perplexity.
``recipe_bytes_estimate`` predicts the bytes before running anything, with the same accounting rules as
``size.storage_report`` (packed codes + per-group scales/zeros, bitmask positions for sparse weights).
"""
from __future__ import annotations

import math

from ..storage import bytes_per_weight

__all__ = ["best_under_budget", "recipe_bytes_estimate"]


def best_under_budget(candidates: list[tuple[str, int, float]], budget_bytes: int) -> str:
    """The name of the candidate with the lowest perplexity among those with ``bytes <= budget_bytes``.

    ``candidates``: ``(name, bytes, ppl)`` rows of measured recipes.  Ties in perplexity go to the smaller
    model, then to the earlier row.  Raises ``ValueError`` for a non-positive budget, an empty list, a row
    with bytes <= 0 or a perplexity that is not a finite number >= 1, and when no candidate fits (the
    message names the smallest one).
    """
    if not budget_bytes > 0:
        raise ValueError(f"budget_bytes={budget_bytes} must be > 0")
    if not candidates:
        raise ValueError("candidates is empty; give (name, bytes, ppl) rows")
    for name, size, ppl in candidates:
        if not size > 0:
            raise ValueError(f"candidate {name!r} has bytes={size}; must be > 0")
        if not (math.isfinite(ppl) and ppl >= 1):
            raise ValueError(f"candidate {name!r} has ppl={ppl}; a perplexity is a finite number >= 1")
    # BEGIN SOLUTION
    fits = [(ppl, size, i, name) for i, (name, size, ppl) in enumerate(candidates) if size <= budget_bytes]
    if not fits:
        name, size, _ = min(candidates, key=lambda c: c[1])
        raise ValueError(f"no candidate fits budget_bytes={budget_bytes}; the smallest is {name!r} with {size} bytes")
    return min(fits)[3]
    # END SOLUTION


def recipe_bytes_estimate(linear_params: int, other_params: int, bits: int | None = None, group_size: int = 64,
                          sparsity: float = 0.0, float_bytes: int = 2, sym: bool = False) -> float:
    """Estimated bytes of a model with ``linear_params`` compressible weights and ``other_params`` kept in float.

    Per compressible weight: ``float_bytes`` (``bits=None``) or ``bits/8`` plus one scale (and one zero when
    asymmetric) of ``float_bytes`` per ``group_size`` weights; with ``sparsity`` s > 0 the positions cost a
    bitmask bit and only (1 - s) values are stored (a float layer keeps the dense layout when cheaper).
    """
    if linear_params < 0 or other_params < 0:
        raise ValueError(f"linear_params={linear_params} and other_params={other_params} must be >= 0")
    per = bytes_per_weight(bits, group_size, sym, float_bytes, sparsity)
    return linear_params * per + other_params * float_bytes
