"""Early-exit experiment of issue 7 (C10), apart from the distillation claims so that changes to
``lessonlib.exit`` re-measure only this claim (the ledger's cache key follows each module's imports).

Two confidences (CALM, Schuster et al. 2022, sec. 3.5) are measured on the same trained exit heads: the
softmax maximum ("maxprob", a full-vocabulary head per check) and the early-exit classifier ("classifier",
a dot product per check).  Quality budgets: relative perplexity cost (1/5/10%) and CALM's consistency
(share of greedy predictions changed).  The verdict reads the 5% perplexity budget of whichever confidence
lets easy tokens save more.
"""
from __future__ import annotations

from . import Context, Outcome, experiment, rules

COSTS = (0.01, 0.05, 0.10)  # relative perplexity costs (and shares of changed predictions) C10 reads


def _budgets(conf, nll, top1, name: str) -> tuple[dict, dict]:
    """Measured numbers at every budget for one confidence, and the points the verdict and timing need."""
    from ..exit.budget import blocks_by_difficulty, threshold_at_agreement, threshold_at_cost

    L = conf.shape[0]
    out, keep = {}, {}
    for bp in threshold_at_cost(conf, nll, list(COSTS)):
        tag = f"{name}_{round(bp.cost * 100)}pct"
        split = blocks_by_difficulty(conf, nll, bp.point.threshold)
        out.update({f"threshold_{tag}": bp.point.threshold, f"mean_blocks_{tag}": bp.point.mean_blocks,
                    f"easy_saved_{tag}": split["easy"]["saved"],
                    f"hard_blocks_share_{tag}": split["hard"]["mean_blocks"] / L})
        if abs(bp.cost - 0.05) < 1e-9:
            keep.update(split5=split, ppl5=(bp.point.threshold, bp.point.first_exit))
    for ap in threshold_at_agreement(conf, top1, list(COSTS)):
        tag = f"{name}_{round(ap.cost * 100)}pct_changed"
        split = blocks_by_difficulty(conf, nll, ap.threshold)
        out.update({f"threshold_{tag}": ap.threshold, f"mean_blocks_{tag}": ap.mean_blocks,
                    f"easy_saved_{tag}": split["easy"]["saved"],
                    f"hard_blocks_share_{tag}": split["hard"]["mean_blocks"] / L})
        if abs(ap.cost - 0.10) < 1e-9:
            keep.update(changed10=(ap.threshold, ap.first_exit), split_changed10=split)
    return out, keep


@experiment("C10")
def c10(ctx: Context) -> Outcome:
    from ..data import calibration_batches, eval_tokens, windows
    from ..evaluate import perplexity_from_window_nlls
    from ..exit.classifier import classifier_confidence, consistency_data, train_exit_classifier
    from ..exit.decide import exit_statistics
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
    feats, agree = consistency_data(model, heads, train_wins)  # labels: exit argmax == final argmax
    clf, clf_losses = train_exit_classifier(feats, agree, steps=200)
    del feats
    n_eval = max(1, p.eval_windows // 4)
    wins = windows(eval_tokens(tok), max(16, p.seqlen // 2), n_eval)  # (W, T)
    conf, nll, top1 = exit_statistics(model, heads, wins, with_top1=True)  # (L, W, T-1) each
    conf_c = classifier_confidence(model, clf, wins)  # (L, W, T-1), no head needed
    L = conf.shape[0]
    k = max(1, steps // 4)  # the heads' summed KD loss over the first and the last quarter of the steps
    loss_left = (sum(head_losses[-k:]) / k) / (sum(head_losses[:k]) / k)
    measured: dict = {"blocks": L, "tokens": int(nll[-1].numel()), "head_steps": steps,
                      "head_kd_loss_first": head_losses[0], "head_kd_loss_last": head_losses[-1],
                      "head_kd_loss_left": loss_left,
                      "last_head_ppl_vs_full": (perplexity_from_window_nlls(nll[-2].mean(1), wins.shape[1])
                                                / perplexity_from_window_nlls(nll[-1].mean(1), wins.shape[1])),
                      "classifier_bce_first_last": [clf_losses[0], clf_losses[-1]],
                      "classifier_train_agree_share": float(agree.float().mean())}
    keep = {}
    for name, c in (("maxprob", conf), ("classifier", conf_c)):
        rows, keep[name] = _budgets(c, nll, top1, name)
        measured.update(rows)
    measured.update(_wall_clock(model, tok, heads, clf, keep, p))
    best = max(keep, key=lambda n: keep[n]["split5"]["easy"]["saved"])
    split5 = keep[best]["split5"]
    verdict = rules.parts(
        easy_tokens_save=rules.within(split5["easy"]["saved"], 0.30, 0.60,
                     f"share of blocks easy tokens save at the 5% PPL cost ({best} confidence)"),
        hard_tokens_run_all=rules.at_least(split5["hard"]["mean_blocks"] / L, 0.90,
                       f"share of blocks hard tokens use at the 5% PPL cost ({best} confidence)"))
    if loss_left > 0.5:  # the heads' loss has not even halved: what they allow says little about early exit
        verdict = rules.invalid(
            f"the exit heads' KD loss is still {loss_left:.0%} of its start after {steps} steps (it must at least "
            f"halve for the heads to count as trained: sanity check failed); untrained heads give: "
            f"{verdict.label}: {verdict.rule}")
    return Outcome(measured, verdict, f"Exit heads (norm copy + adapter sharing the frozen LM head, top-64 KD, "
                   f"{steps} steps on a frozen SmolLM2) with two confidences: max-prob and CALM's early-exit "
                   f"classifier (logistic regression per block on consistency labels); thresholds picked on {n_eval} "
                   "held-out windows per PPL cost and per share of greedy predictions changed; easy/hard = lowest/"
                   "highest third of the full model's token losses. Wall clock: greedy early_exit_generate vs "
                   "generate, exit checks from the first block any held-out token exited at.",
                   details={name: {"split_5pct": keep[name]["split5"], "split_10pct_changed":
                                   keep[name]["split_changed10"]} for name in keep})


def _wall_clock(model, tok, heads, clf, keep: dict, p) -> dict:
    """Greedy generation with early exit (both confidences, 5% PPL and 10%-changed thresholds) vs generate."""
    from ..evaluate import measure_latency
    from ..exit.decide import early_exit_generate

    prompt = tok("The convention opened with", return_tensors="pt")["input_ids"]
    new = p.gen_tokens
    reps = max(1, p.bench_repeats // 3)
    full = measure_latency(lambda: model.generate(prompt, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                                                  pad_token_id=tok.pad_token_id), warmup=1, repeats=reps).median_s
    out = {"generate_s": full}
    for name, cls in (("maxprob", None), ("classifier", clf)):
        for tag in ("ppl5", "changed10"):
            thr, first = keep[name][tag]
            res = {}
            t = measure_latency(lambda: res.__setitem__("g", early_exit_generate(
                model, heads, prompt, new, thr, first_exit=first, classifier=cls)), warmup=1, repeats=reps).median_s
            key = f"{name}_{'5pct' if tag == 'ppl5' else '10pct_changed'}"
            out.update({f"early_exit_generate_s_{key}": t, f"wall_clock_speedup_{key}": full / t,
                        f"generation_mean_blocks_{key}": res["g"].mean_blocks})
    return out
