"""Ledger experiments of weight sharing: C14 and C30 (ALBERT-style tying of all decoder blocks).
"""
from __future__ import annotations

from ..evaluate import perplexity
from ..models import decoder_blocks
from . import Context, Outcome, experiment, rules


# ------------------------------------------------------------------ C14, C30 (block tying)
def _tie_counts(ctx: Context) -> dict:
    from ..share.tying import count_parameters, tie_blocks

    def run():
        m, _ = ctx.model()
        before = count_parameters(m)
        tie_blocks(m, len(decoder_blocks(m)), init="mean")
        after = count_parameters(m)
        return {"depth": len(decoder_blocks(m)), "blocks_unique_before": before["blocks_unique"],
                "blocks_unique_after": after["blocks_unique"], "total_before": before["unique"],
                "total_after": after["unique"], "block_factor": before["blocks_unique"] / after["blocks_unique"],
                "total_factor": before["unique"] / after["unique"]}
    return ctx.memo("t8_tie_counts", run)


@experiment("C14")
def c14(ctx: Context) -> Outcome:
    from ..arch.recover import recovery_finetune
    from ..data import calibration_batches
    from ..share.tying import tie_blocks

    p = ctx.profile
    counts = _tie_counts(ctx)
    model, tok = ctx.model()
    tie_blocks(model, counts["depth"], init="mean")
    dense = ctx.dense_ppl()
    tied = perplexity(model, tok, profile=p).ppl
    batches = calibration_batches(tok, n=max(p.calib_samples, p.batch_size), seqlen=p.calib_seqlen, seed=1)
    rec = recovery_finetune(model, batches, profile=p)
    after = perplexity(model, tok, profile=p).ppl
    measured = {**counts, "ppl_dense": dense, "ppl_tied": tied, "ppl_after_recovery": after,
                "ppl_ratio_after_recovery": after / dense, "recovery_steps": rec.steps,
                "recovery_tokens": rec.steps * rec.batch_size * batches.shape[1]}
    verdict = rules.parts(
        size=rules.at_least(counts["block_factor"], 12, "block-parameter reduction factor (all blocks share one)"),
        quality=rules.not_measurable(
            f"needs shared blocks trained from scratch (ALBERT: 125k steps of 4096 sequences); this profile's "
            f"{rec.steps} recovery steps after tying a pretrained model cannot decide it (as run: PPL ratio "
            f"tied/dense after recovery {after / dense:.3g}, 'competitive' := within 2x)"))
    return Outcome(measured, verdict, f"All {counts['depth']} SmolLM2 blocks tied to their mean: block parameters "
                   f"/{counts['block_factor']:.0f} (whole model /{counts['total_factor']:.1f}, the tied embedding "
                   f"stays); PPL {dense:.1f} -> {tied:.0f} tied -> {after:.0f} after {rec.steps} recovery steps "
                   f"({measured['recovery_tokens']:,} tokens). The size part is decided; the quality part needs a "
                   "training budget this profile does not have (ALBERT trains its shared blocks from scratch), so "
                   "it is not measurable here.")


@experiment("C30")
def c30(ctx: Context) -> Outcome:
    from ..models import tiny_causal_lm
    from ..share.tying import count_parameters, tie_blocks

    tiny = tiny_causal_lm(layers=24, seed=0)
    before = count_parameters(tiny)["blocks_unique"]
    tie_blocks(tiny, 24)
    after = count_parameters(tiny)
    counts = _tie_counts(ctx)
    measured = {"blocks24_params_distinct": before, "blocks24_params_shared": after["blocks_unique"],
                "blocks24_factor": before / after["blocks_unique"],
                "blocks24_factor_with_repeats": after["block_sharing_factor"],
                "smollm2_depth": counts["depth"], "smollm2_block_factor": counts["block_factor"]}
    verdict = rules.all_of(
        rules.close_to(measured["blocks24_factor"], 24, 1e-9, "block-parameter factor, 24 blocks sharing one"),
        rules.close_to(counts["block_factor"], counts["depth"], 1e-9,
                       f"SmolLM2 block-parameter factor, {counts['depth']} blocks sharing one"))
    return Outcome(measured, verdict, "Counted unique parameters of a real 24-block LLaMA-style model before and "
                   "after tying every block to one, and of SmolLM2's 30 blocks tied to one.")
