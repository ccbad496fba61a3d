"""Ledger experiment of activation sparsity: C18 (ReLU-fication of SmolLM2's SwiGLU MLPs).
"""
from __future__ import annotations

from ..evaluate import perplexity
from . import Context, Outcome, experiment, rules


# ------------------------------------------------------------------ C18 (ReLU-fication)
@experiment("C18")
def c18(ctx: Context) -> Outcome:
    from ..arch.recover import recovery_finetune
    from ..data import calibration_batches, eval_tokens, windows
    from ..sparsity.activation import activation_sparsity, relufy_llama_mlp

    p = ctx.profile
    model, tok = ctx.model()
    probe = windows(eval_tokens(tok, "speeches", "eval"), p.seqlen, 2)  # (2, seqlen) held-out windows
    swiglu = activation_sparsity(model, probe)["overall"]
    dense = ctx.dense_ppl()
    relufy_llama_mlp(model)
    zero_before, ppl_before = activation_sparsity(model, probe)["overall"], perplexity(model, tok, profile=p).ppl
    batches = calibration_batches(tok, n=max(p.calib_samples, p.batch_size), seqlen=p.calib_seqlen, seed=2)
    rec = recovery_finetune(model, batches, profile=p, trainable="all")
    zero_after, ppl_after = activation_sparsity(model, probe)["overall"], perplexity(model, tok, profile=p).ppl
    measured = {"swiglu_zero_fraction": swiglu, "relu_zero_fraction_before_ft": zero_before,
                "relu_zero_fraction_after_ft": zero_after, "ppl_dense": dense, "ppl_relu_before_ft": ppl_before,
                "ppl_relu_after_ft": ppl_after, "ppl_ratio_after_ft": ppl_after / dense, "ft_steps": rec.steps,
                "ft_tokens": rec.steps * rec.batch_size * batches.shape[1]}
    verdict = rules.parts(
        sparsity=rules.at_least(zero_after, 0.5, "zero fraction of the FFN intermediate after ReLU-fication + "
                                "fine-tune"),
        little_cost=rules.not_measurable(
            f"needs the fine-tuning budget of Mirzadeh et al. (billions of tokens); this profile fine-tunes on "
            f"{measured['ft_tokens']:,} tokens (as run: PPL ratio after the fine-tune {ppl_after / dense:.3g}, "
            "'little cost' := at most 1.10)"))
    return Outcome(measured, verdict, f"SiLU -> ReLU in every SmolLM2 gate, {rec.steps} fine-tune steps "
                   f"({measured['ft_tokens']:,} tokens): zeros {swiglu:.1%} -> {zero_before:.1%} -> "
                   f"{zero_after:.1%}, PPL {dense:.1f} -> {ppl_before:.1f} -> {ppl_after:.1f}. The sparsity part "
                   "is decided; the 'little cost' part needs billions of fine-tuning tokens (Mirzadeh et al.), so "
                   "it is not measurable here.")
