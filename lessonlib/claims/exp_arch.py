"""Experiments of the structured-pruning / architecture track (issue 6): C15 (ShortGPT Block Influence).

C29's quality part lives in ``lessonlib.arch.gqa.gqa_quality``; C29 itself is registered (memory part)
in ``exp_foundation``.
"""
from __future__ import annotations

import math

from ..arch.depth import block_influences, lowest_influence_blocks, remove_blocks
from ..data import calibration_batches
from ..evaluate import perplexity
from . import Context, Outcome, experiment, rules


@experiment("C15")
def c15(ctx: Context) -> Outcome:
    model, tok = ctx.model()
    p = ctx.profile
    calib = calibration_batches(tok, n=p.calib_samples, seqlen=p.calib_seqlen, seed=0)
    bi = block_influences(model, calib, device=p.device)
    n = len(bi)
    k = max(1, math.ceil(0.1 * n))  # ShortGPT removes roughly the least influential 10-25% of blocks
    low = lowest_influence_blocks(bi, k)
    dense = ctx.dense_ppl()
    pruned = perplexity(remove_blocks(model, low), tok, profile=p).ppl
    late_share = sum(i >= n // 2 for i in low) / k
    measured = {"block_influence": bi, "removed": low, "n_removed": k, "ppl_dense": dense, "ppl_pruned": pruned,
                "ppl_ratio": pruned / dense, "share_of_removed_in_second_half": late_share}
    verdict = rules.all_of(
        rules.at_least(late_share, 0.5, "share of the lowest-BI blocks that lie in the second half"),
        rules.at_most(pruned / dense, 1.5, f"PPL ratio after removing the {k} lowest-BI blocks"))
    return Outcome(measured, verdict, f"ShortGPT Block Influence on SmolLM2 over {p.calib_samples}x"
                   f"{p.calib_seqlen} calibration tokens; removing blocks {low} takes PPL {dense:.1f} -> {pruned:.1f}.")
