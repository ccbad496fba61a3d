"""Ledger experiment of the low-rank family: C13 (truncated SVD with per-layer ranks from each layer's
singular-value energy, ``lessonlib.lowrank.energy``), and ``smoothness``, the measure of its PPL curve.
"""
from __future__ import annotations

import math

from ..evaluate import perplexity
from ..lowrank.energy import layer_factors, truncate_by_energy
from . import Context, Outcome, experiment, rules
from .report_figures import line_figure


__all__ = ["smoothness"]


def smoothness(params: list[float], ppls: list[float], per: float = 0.05) -> dict[str, float]:
    """Sort the points by kept parameters (descending) and measure the curve: ``monotone`` (1.0 if PPL never
    drops when parameters are removed, else 0.0), ``max_step_ratio`` (largest PPL ratio between neighbours)
    and ``max_doublings_per_step`` = max over neighbours of log2(PPL_b / PPL_a) / ((P_a - P_b) / (per P_max)):
    how many times PPL doubles per ``per`` (default 5%) of the parameters removed, on the steepest stretch.

    The last one does not depend on the grid in one direction: the secant slope over an interval is a weighted
    mean of the slopes of its sub-intervals, so a finer grid can only find a steeper stretch, never a flatter
    one.  Neighbours with the same parameter count are skipped by the slope (``monotone`` still sees them).
    """
    if len(params) != len(ppls) or len(params) < 2:
        raise ValueError(f"need >= 2 points with as many params as ppls, got {len(params)} and {len(ppls)}")
    if not 0 < per <= 1:
        raise ValueError(f"per={per} is outside (0, 1]")
    pts = sorted(zip(params, ppls), key=lambda t: -t[0])
    ratios = [b[1] / a[1] for a, b in zip(pts, pts[1:])]
    unit = per * pts[0][0]  # parameters in one `per` step
    slopes = [math.log2(b[1] / a[1]) / ((a[0] - b[0]) / unit) for a, b in zip(pts, pts[1:]) if a[0] > b[0]]
    return {"monotone": float(all(r >= 1 - 1e-9 for r in ratios)), "max_step_ratio": max(ratios),
            "max_doublings_per_step": max(slopes, default=0.0)}


@experiment("C13")
def c13(ctx: Context) -> Outcome:
    p = ctx.profile
    model, tok = ctx.model()
    factors = layer_factors(model, p.block_stride)
    n = 2 * max(2, p.sweep_points) + 1  # ci: 7 points, 0.03 apart
    energies = [round(0.98 - 0.18 * i / (n - 1), 3) for i in range(n)]  # 0.98 ... 0.80
    dense = ctx.dense_ppl()
    params, ppls, rows = [], [], []
    for e in energies:
        m, _ = ctx.model()
        rep = truncate_by_energy(m, factors, e)
        ppl = perplexity(m, tok, profile=p).ppl
        params.append(rep["params_kept"])
        ppls.append(ppl)
        rows.append({"energy": e, **rep, "ppl": ppl})
        del m
    total = rows[0]["params_dense"]
    sm = smoothness([total] + params, [dense] + ppls)
    measured = {"energies": energies, "kept_fraction": [x / total for x in params], "ppl": ppls,
                "ppl_dense": dense, "factored_params": total, **sm}
    fig = line_figure(ctx, "c13_svd_ppl.png", [1.0] + measured["kept_fraction"], {"truncated SVD": [dense] + ppls},
                  "kept fraction of the factored layers' parameters", "perplexity", logy=True)
    verdict = rules.all_of(
        rules.at_least(sm["monotone"], 1.0, "PPL monotone in kept parameters (1 = yes)"),
        rules.at_most(sm["max_doublings_per_step"], 1.0, "steepest stretch of the curve, in PPL doublings per 5% "
                      "of the factored parameters removed ('smooth' := no 5% step doubles PPL; a finer grid can "
                      "only find a steeper stretch)"))
    return Outcome(measured, verdict, f"Per-layer ranks keeping {energies} of each layer's spectral energy (layers "
                   f"of every {p.block_stride}. block; a layer stays dense when its rank saves nothing): "
                   f"kept {', '.join(f'{x:.1%}' for x in measured['kept_fraction'])} of the parameters, "
                   f"PPL {dense:.1f} -> {', '.join(f'{x:.1f}' for x in ppls)}; steepest stretch "
                   f"{sm['max_doublings_per_step']:.2f} doublings per 5% removed.", figure=fig,
                   details={"rows": rows})
