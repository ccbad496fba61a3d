"""Early-exit experiment of issue 7 (C10), apart from the distillation claims so that changes to
``lessonlib.exit`` re-measure only this claim (the ledger's cache key follows each module's imports).
"""
from __future__ import annotations

from . import Context, Outcome, experiment, rules

COSTS = (0.01, 0.05, 0.10)  # relative perplexity costs at which C10 reads the early-exit compute


@experiment("C10")
def c10(ctx: Context) -> Outcome:
    from ..data import calibration_batches, eval_tokens, windows
    from ..evaluate import measure_latency
    from ..exit.budget import blocks_by_difficulty, threshold_at_agreement, threshold_at_cost
    from ..exit.decide import early_exit_generate, exit_statistics
    from ..exit.heads import ExitHeads, train_exit_heads

    p = ctx.profile
    model, tok = ctx.model()
    for q in model.parameters():
        q.requires_grad_(False)
    heads = ExitHeads(model, adapter=True)  # norm copy + zero-initialised 576 x 576 adapter per exit
    train_wins = calibration_batches(tok, n=p.calib_samples, seqlen=max(16, p.calib_seqlen // 4), seed=0)
    steps = 10 * p.train_steps  # top-64 sampled-vocabulary KD makes a step ~10x cheaper than the full softmax
    head_losses = train_exit_heads(model, heads, train_wins, steps=steps, batch_size=2, lr=2e-3, objective="kd",
                                   seed=0, vocab_topk=64)
    n_eval = max(1, p.eval_windows // 4)
    wins = windows(eval_tokens(tok), max(16, p.seqlen // 2), n_eval)  # (W, T)
    conf, nll, top1 = exit_statistics(model, heads, wins, with_top1=True)  # (L, W, T-1) each
    L = conf.shape[0]
    k = max(1, steps // 4)  # the heads' summed KD loss over the first and the last quarter of the steps
    loss_left = (sum(head_losses[-k:]) / k) / (sum(head_losses[:k]) / k)
    measured: dict = {"blocks": L, "tokens": int(nll[-1].numel()), "head_steps": steps,
                      "head_kd_loss_first": head_losses[0], "head_kd_loss_last": head_losses[-1],
                      "head_kd_loss_left": loss_left,
                      "last_head_ppl_vs_full": float(nll[-2].mean().exp() / nll[-1].mean().exp())}
    split5, point5 = None, None
    for bp in threshold_at_cost(conf, nll, list(COSTS)):
        tag = f"{round(bp.cost * 100)}pct"
        split = blocks_by_difficulty(conf, nll, bp.point.threshold)
        measured.update({f"threshold_{tag}": bp.point.threshold, f"mean_blocks_{tag}": bp.point.mean_blocks,
                         f"easy_saved_{tag}": split["easy"]["saved"],
                         f"hard_blocks_share_{tag}": split["hard"]["mean_blocks"] / L})
        if abs(bp.cost - 0.05) < 1e-9:
            split5, point5 = split, bp.point
    agree, changed10 = {}, None
    for ap in threshold_at_agreement(conf, top1, list(COSTS)):  # CALM's budget: greedy tokens that change
        tag = f"{round(ap.cost * 100)}pct_changed"
        split = blocks_by_difficulty(conf, nll, ap.threshold)
        agree[tag] = split
        measured.update({f"threshold_{tag}": ap.threshold, f"mean_blocks_{tag}": ap.mean_blocks,
                         f"easy_saved_{tag}": split["easy"]["saved"],
                         f"hard_blocks_share_{tag}": split["hard"]["mean_blocks"] / L})
        if abs(ap.cost - 0.10) < 1e-9:
            changed10 = ap
    measured.update(_c10_wall_clock(model, tok, heads, point5, changed10, p, measure_latency, early_exit_generate))
    verdict = rules.all_of(
        rules.within(split5["easy"]["saved"], 0.30, 0.60, "share of blocks easy tokens save at the 5% PPL cost"),
        rules.at_least(split5["hard"]["mean_blocks"] / L, 0.90, "share of blocks hard tokens use at the 5% PPL cost"))
    if loss_left > 0.5:  # the heads' loss has not even halved: what they allow says little about early exit
        verdict = rules.not_measurable(
            f"the exit heads' KD loss is still {loss_left:.0%} of its start after {steps} steps (it must at least "
            f"halve for the heads to count as trained), so this run cannot tell; untrained heads give: "
            f"{verdict.label}: {verdict.rule}")
    return Outcome(measured, verdict, f"Exit heads (norm copy + adapter sharing the frozen LM head, top-64 KD, "
                   f"{steps} steps on a frozen SmolLM2); max-prob confidence; thresholds picked on {n_eval} held-out "
                   "windows per PPL cost, and per share of greedy predictions changed (CALM's consistency); easy/"
                   "hard = lowest/highest third of the full model's token losses. Wall clock: greedy "
                   "early_exit_generate vs generate, exit checks from the first block any held-out token exited at.",
                   details={"split_5pct": split5, "split_by_changed": agree})


def _c10_wall_clock(model, tok, heads, point5, changed10, p, measure_latency, early_exit_generate) -> dict:
    """Greedy generation with early exit at the 5% PPL threshold and at the 10%-changed threshold vs generate."""
    prompt = tok("The convention opened with", return_tensors="pt")["input_ids"]
    new = 8 if p.name == "ci" else 32
    reps = max(1, p.bench_repeats // 3)
    full = measure_latency(lambda: model.generate(prompt, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                                                  pad_token_id=tok.pad_token_id), warmup=1, repeats=reps).median_s
    out = {"generate_s": full}
    for tag, thr, first in (("5pct", point5.threshold, point5.first_exit),
                            ("10pct_changed", changed10.threshold, changed10.first_exit)):
        res = {}
        t = measure_latency(lambda: res.__setitem__("g", early_exit_generate(model, heads, prompt, new, thr,
                                                                              first_exit=first)),
                            warmup=1, repeats=reps).median_s
        out.update({f"early_exit_generate_s_{tag}": t, f"wall_clock_speedup_{tag}": full / t,
                    f"generation_mean_blocks_{tag}": res["g"].mean_blocks})
    return out
