"""Experiments of track 8 (issue 8): lottery tickets, low rank, weight sharing, entropy coding, activation sparsity.

Claims C13 (truncated SVD with per-layer ranks), C14 and C30 (ALBERT-style block tying), C16 and C36 (lottery
tickets, rewinding), C18 (ReLU-fication), C37 (entropy coding of sparse 4-bit weights).  C40 lives in
``exp_foundation`` and calls :func:`c40_real_tensor` from here.

The per-layer energy truncation C13 sweeps is ``lessonlib.lowrank.energy`` (notebook 17 uses it too); the
sizes (block stride, lottery rounds, rate, epochs, rewind iteration) are fields of the profile.
"""
from __future__ import annotations

import math

import torch

from ..evaluate import perplexity
from ..lowrank.energy import layer_factors, truncate_by_energy
from ..models import block_linears, decoder_blocks, get_weight
from . import Context, Outcome, experiment, rules

__all__ = ["smoothness", "c40_real_tensor"]

HARD_LR_FACTOR = 10.0  # C36's harder setting: Adam at 10x the LeNet learning rate of Frankle & Carbin


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


def _figure(ctx: Context, name: str, xs: list, series: dict[str, list], xlabel: str, ylabel: str,
            logy: bool = False) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path, rel = ctx.figure_path(name)
    fig, ax = plt.subplots(figsize=(5, 3))
    for label, ys in series.items():
        ax.plot(xs, ys, "o-", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return rel


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
    fig = _figure(ctx, "c13_svd_ppl.png", [1.0] + measured["kept_fraction"], {"truncated SVD": [dense] + ppls},
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


# ------------------------------------------------------------------ C16, C36 (lottery tickets)
def _lottery(ctx: Context, lr_factor: float) -> list:
    from ..lottery.imp import lottery_experiment, mnist_splits

    p = ctx.profile
    data = ctx.memo("t8_mnist", mnist_splits)

    def run():
        torch.manual_seed(0)
        return lottery_experiment(rounds=p.lottery_rounds, rate=p.lottery_rate, epochs=p.lottery_epochs,
                                  rewind_iter=p.rewind_iter, lr=1.2e-3 * lr_factor, seed=0, data=data)
    return ctx.memo(f"t8_lottery_{lr_factor}", run)


def _lottery_figure(ctx: Context, name: str, rows: list) -> str:
    xs = [100 * r.sparsity for r in rows]
    return _figure(ctx, name, xs, {"ticket (rewind to 0)": [100 * r.ticket for r in rows],
                                   "random re-init": [100 * r.reinit for r in rows],
                                   "rewind to k": [100 * r.rewind_k for r in rows]},
                   "sparsity (%)", "test accuracy (%)")


@experiment("C16")
def c16(ctx: Context) -> Outcome:
    rows = _lottery(ctx, 1.0)
    dense = rows[0].ticket
    upto = [r for r in rows[1:] if r.sparsity <= 0.95]  # "up to ~90%": every round at or below 95% sparsity
    if not upto:
        raise ValueError("the lottery schedule has no pruning round at or below 95% sparsity")
    worst_gap = min(r.ticket - dense for r in upto)
    last = upto[-1]
    measured = {"dense_acc": dense, "sparsity": [r.sparsity for r in rows], "ticket": [r.ticket for r in rows],
                "reinit": [r.reinit for r in rows], "worst_ticket_minus_dense": worst_gap,
                "sparsest_checked": last.sparsity, "ticket_minus_reinit_at_sparsest": last.ticket - last.reinit}
    verdict = rules.all_of(
        rules.at_least(worst_gap, -0.01, "ticket minus dense accuracy, worst round up to 95% sparsity"),
        rules.at_least(last.ticket - last.reinit, 0.01, f"ticket minus random re-init at {last.sparsity:.1%}"))
    return Outcome(measured, verdict, f"IMP on LeNet-300-100 / MNIST-5k ({len(rows) - 1} rounds): at "
                   f"{last.sparsity:.1%} sparsity ticket {last.ticket:.1%}, re-init {last.reinit:.1%}, dense "
                   f"{dense:.1%}.", figure=_lottery_figure(ctx, "c16_lottery.png", rows),
                   details={"rows": [r.as_dict() for r in rows]})


@experiment("C36")
def c36(ctx: Context) -> Outcome:
    easy, hard = _lottery(ctx, 1.0), _lottery(ctx, HARD_LR_FACTOR)
    d, last = hard[0].ticket, hard[-1]
    measured = {"hard_lr": 1.2e-3 * HARD_LR_FACTOR, "hard_dense_acc": d, "hard_sparsity": last.sparsity,
                "hard_ticket_rewind0": last.ticket, "hard_rewind_k": last.rewind_k,
                "hard_rewind0_minus_dense": last.ticket - d, "hard_rewindk_minus_dense": last.rewind_k - d,
                "easy_rewind0_minus_dense": easy[-1].ticket - easy[0].ticket,
                "easy_rewindk_minus_dense": easy[-1].rewind_k - easy[0].ticket,
                "rewind_iter": ctx.profile.rewind_iter}
    verdict = rules.parts(
        rewind_to_0=rules.not_measurable(
            "needs a network of the size where rewinding to 0 stops working (VGG-16, ResNet-20 and larger); "
            "LeNet-300-100, the largest this profile trains, is the network on which rewinding to 0 works "
            f"(as run at a {HARD_LR_FACTOR:.0f}x learning rate: rewind-to-0 ticket minus dense "
            f"{last.ticket - d:+.3f} at {last.sparsity:.1%}, 'stops finding' := at most -0.01)"),
        rewind_to_k=rules.at_least(last.rewind_k - d, -0.01,
                                   f"harder setting: rewind-to-k minus dense at {last.sparsity:.1%}"))
    return Outcome(measured, verdict, f"LeNet-300-100 at a {HARD_LR_FACTOR:.0f}x learning rate (our 'harder "
                   f"setting'): at {last.sparsity:.1%} rewind-to-0 {last.ticket:.1%}, rewind-to-k "
                   f"{last.rewind_k:.1%}, dense {d:.1%}. The rewind-to-k part is decided; the rewind-to-0 part is about "
                   "VGG/ResNet-scale networks, which this profile cannot train, so it is not measurable here.",
                   figure=_lottery_figure(ctx, "c36_rewind.png", hard), details={"rows": [r.as_dict() for r in hard]})


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


# ------------------------------------------------------------------ C37, C40 (entropy coding)
_CODED_LAYERS = ("self_attn.q_proj", "mlp.gate_proj", "mlp.down_proj")


@experiment("C37")
def c37(ctx: Context) -> Outcome:
    from ..coding.compare import c37_bits_per_weight

    model, _ = ctx.model()
    mid = len(decoder_blocks(model)) // 2
    lins = block_linears(decoder_blocks(model)[mid])
    res = {name: c37_bits_per_weight(get_weight(lins[name]), sparsity=0.8, bits=4) for name in _CODED_LAYERS}
    measured = {f"{n}_{k}": v for n, r in res.items() for k, v in r.items() if k != "raw_bits"}
    verdict = rules.all_of(*(rules.within(r["rans"], 1.0, 2.0, f"rANS bits per weight, block {mid} {n}")
                             for n, r in res.items()))
    return Outcome(measured, verdict, f"Block {mid}'s {', '.join(_CODED_LAYERS)}: 80% magnitude-pruned, 4-bit "
                   "symmetric per channel, all codes (zeros included) rANS-coded: "
                   + ", ".join(f"{r['rans']:.2f} bits (H {r['entropy']:.2f})" for r in res.values()) + ".")


def c40_real_tensor(ctx: Context) -> dict:
    """C40 on a real tensor: Deep Compression of a SmolLM2 down projection at 90% sparsity, 16 shared values
    (4-bit indices), rANS-coded values and relative positions; bits per nonzero from the real byte counts."""
    from ..coding.compare import deep_compress

    model, _ = ctx.model()
    mid = len(decoder_blocks(model)) // 2
    w = get_weight(block_linears(decoder_blocks(model)[mid])["mlp.down_proj"])  # (576, 1536)
    r = deep_compress(w, sparsity=0.9, k=16, coder="rans")
    per_nz = 8 * (r.value_bytes + r.position_bytes) / r.nnz
    return {"layer": f"{mid}.mlp.down_proj", "n_weights": r.n_weights, "nnz": r.nnz,
            "value_bits_per_nonzero": r.value_bits_per_nonzero,
            "position_bits_per_nonzero": r.position_bits_per_nonzero, "bits_per_nonzero_with_positions": per_nz,
            "real_ratio_vs_fp32": r.ratios()["coded"], "fillers": r.fillers}

