"""Experiments of the distillation track (issue 7): C06, C07, C24, C08, C38, C39 (early exit, C10: exp_exit).

Shared work goes through ``ctx.memo``: the LM temperature sweep (C06, C07, C24 read the same runs), the
review teachers and students (C08, C38, C39).  Every size comes from ``ctx.profile``.
"""
from __future__ import annotations

from . import Context, Outcome, experiment, rules
from .stats import COLLAPSE_MARGIN, classifier_collapsed, seed_spread

SEEDS = (0, 1, 2)  # the noise of a training claim: the same run with three batch orders


# ------------------------------------------------------------------ language-model distillation
def _lm_sweep(ctx: Context) -> dict:
    """Teacher entropy and student PPL at each temperature (pure soft targets) plus the hard-target run."""
    from ..distill.lm_task import lm_task, max_entropy, teacher_entropies, temperature_grid, train_lm_student

    def run():
        teacher, tok = ctx.model()
        task = lm_task(teacher, tok, ctx.profile)
        temps = temperature_grid(ctx.profile)
        ent = teacher_entropies(task, temps)
        soft = {T: train_lm_student(task, T=T, alpha=0.0)[2] for T in temps}
        hard = train_lm_student(task, T=1.0, alpha=1.0)[2]
        # the same T = temps[0] run with other batch orders: how far three seeds land apart at this budget
        reps = [soft[temps[0]]] + [train_lm_student(task, T=temps[0], alpha=0.0, seed=sd)[2] for sd in SEEDS[1:]]
        _, lo, hi = seed_spread(reps)
        noise = hi - lo
        init = _untrained_student_ppl(task)
        return {"temps": temps, "entropy": ent, "max_entropy": max_entropy(task), "soft_ppl": soft,
                "hard_ppl": hard, "seed_spread": noise, "init_ppl": init, "teacher_ppl": ctx.dense_ppl(),
                "n_blocks": task.n_blocks, "windows": list(task.windows.shape), "seed_ppls": reps}
    return ctx.memo("distill_lm_sweep", run)


def _beyond_noise(margin: float, s: dict, what: str, verdict: rules.Verdict) -> rules.Verdict:
    """``verdict`` when ``margin`` (PPL) exceeds the seed-to-seed spread of the sweep, else inconclusive."""
    if margin > s["seed_spread"]:
        return verdict
    return rules.inconclusive(f"{what}: a margin of {margin:.4g} PPL is within the {s['seed_spread']:.4g} PPL "
                              f"that {len(SEEDS)} batch orders of the same run spread over at this budget; as run: "
                              f"{verdict.rule}")


def _untrained_student_ppl(task) -> float:
    from ..distill.lm_task import lm_student
    from ..evaluate import perplexity
    return perplexity(lm_student(task.teacher, task.n_blocks), task.tokenizer, profile=task.profile,
                      progress=False).ppl


def _budget(ctx: Context) -> str:
    p = ctx.profile
    return (f"{p.train_steps} steps x {p.batch_size} windows of {max(16, p.calib_seqlen // 4)} tokens, "
            f"lr {10 * p.lr:g}")


@experiment("C06")
def c06(ctx: Context) -> Outcome:
    s = _lm_sweep(ctx)
    soft, hard = s["soft_ppl"][1.0], s["hard_ppl"]
    measured = {"student_blocks": s["n_blocks"], "teacher_ppl": s["teacher_ppl"], "untrained_student_ppl": s["init_ppl"],
                "ppl_soft_T1": soft, "ppl_hard": hard, "soft_over_hard": soft / hard,
                "seed_spread_ppl": s["seed_spread"]}
    verdict = _beyond_noise(abs(hard - soft), s, "soft vs hard targets",
                            rules.at_most(soft / hard, 1.0, "PPL ratio soft-target student / hard-target student"))
    return Outcome(measured, verdict, f"SmolLM2 (30 blocks) -> {s['n_blocks']}-block student, same budget "
                   f"({_budget(ctx)}): the teacher's full distribution (T = 1, alpha = 0) against the one-hot next "
                   f"token (alpha = 1); held-out PPL {soft:.1f} vs {hard:.1f} (teacher {s['teacher_ppl']:.1f}, "
                   f"untrained student {s['init_ppl']:.3g}: a short run, early in the student's training).")


def _sweep_table(s: dict) -> list[dict]:
    return [{"T": T, "teacher_entropy": e, "student_ppl": s["soft_ppl"][T]} for T, e in zip(s["temps"], s["entropy"])]


def _best_T(s: dict) -> float:
    return min(s["temps"], key=lambda T: s["soft_ppl"][T])


def _best_margin(s: dict) -> float:
    """PPL gap between the best temperature and the runner-up (reported; the verdicts read ``band_verdict``)."""
    a, b = sorted(s["soft_ppl"].values())[:2]
    return b - a


def band_verdict(s: dict, lo: float, hi: float) -> rules.Verdict:
    """Is the best temperature inside [lo, hi]?  Compares the best student *inside* the band with the best
    *outside* it: holds when the inside one is better by more than the seed spread, does not hold when the
    outside one is, inconclusive in between (and not measurable when the grid has no T on one side)."""
    inside = {T: v for T, v in s["soft_ppl"].items() if lo <= T <= hi}
    outside = {T: v for T, v in s["soft_ppl"].items() if not lo <= T <= hi}
    if not inside or not outside:
        return rules.not_measurable(f"the temperature grid {s['temps']} has no point {'inside' if not inside else 'outside'}"
                                    f" [{lo:g}, {hi:g}]")
    t_in, t_out = min(inside, key=inside.get), min(outside, key=outside.get)
    gap = outside[t_out] - inside[t_in]  # > 0: the band's best is better
    spread = s["seed_spread"]
    what = (f"best student PPL outside [{lo:g}, {hi:g}] (T = {t_out:g}) minus best inside (T = {t_in:g}) = "
            f"{gap:.4g} (seed spread {spread:.4g}, interval [{gap - spread:.4g}, {gap + spread:.4g}])")
    return rules.at_least(gap, 0.0, what, (gap - spread, gap + spread))


def band_gap(s: dict, lo: float, hi: float) -> float | None:
    inside = [v for T, v in s["soft_ppl"].items() if lo <= T <= hi]
    outside = [v for T, v in s["soft_ppl"].items() if not lo <= T <= hi]
    return min(outside) - min(inside) if inside and outside else None


def _sweep_figure(ctx: Context, s: dict, name: str) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path, rel = ctx.figure_path(name)
    fig, (a, b) = plt.subplots(1, 2, figsize=(7, 2.6))
    a.plot(s["temps"], s["entropy"], "o-")
    a.axhline(s["max_entropy"], color="gray", ls=":", label="log V")
    a.set_xscale("log", base=2); a.set_xlabel("T"); a.set_ylabel("teacher entropy (nats)"); a.legend(fontsize=7)
    b.plot(s["temps"], [s["soft_ppl"][T] for T in s["temps"]], "o-", label="soft (alpha=0)")
    b.axhline(s["hard_ppl"], color="tab:red", ls="--", label="hard targets")
    b.set_xscale("log", base=2); b.set_xlabel("T"); b.set_ylabel("student PPL"); b.legend(fontsize=7)
    fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)
    return rel


def _entropy_rises(s: dict) -> rules.Verdict:
    e = s["entropy"]
    return rules.at_least(min(b - a for a, b in zip(e, e[1:])), 0.0, "smallest entropy step between adjacent T")


@experiment("C07")
def c07(ctx: Context) -> Outcome:
    s = _lm_sweep(ctx)
    best = _best_T(s)
    measured = {"temperatures": s["temps"], "teacher_entropy": s["entropy"],
                "student_ppl": [s["soft_ppl"][T] for T in s["temps"]], "best_T": best,
                "best_vs_runner_up_ppl": _best_margin(s), "best_outside_minus_best_inside_4_8": band_gap(s, 4, 8),
                "seed_spread_ppl": s["seed_spread"], "seed_ppls": s.get("seed_ppls")}
    verdict = rules.parts(softens=_entropy_rises(s), stronger_signal_at_4_8=band_verdict(s, 4, 8))
    return Outcome(measured, verdict, "One sweep shared with C24: pure-KD students at each T, same budget "
                   f"({_budget(ctx)}). Teacher entropy rises with T towards log V; the best student is at T = {best:g}.",
                   figure=_sweep_figure(ctx, s, "c07_c24_temperature.png"), details={"sweep": _sweep_table(s)})


@experiment("C24")
def c24(ctx: Context) -> Outcome:
    s = _lm_sweep(ctx)
    best = _best_T(s)
    measured = {"temperatures": s["temps"], "student_ppl": [s["soft_ppl"][T] for T in s["temps"]], "best_T": best,
                "best_vs_runner_up_ppl": _best_margin(s), "best_outside_minus_best_inside_2_4": band_gap(s, 2, 4),
                "seed_spread_ppl": s["seed_spread"], "seed_ppls": s.get("seed_ppls")}
    verdict = band_verdict(s, 2, 4)
    return Outcome(measured, verdict, f"The sweep of C07 read against the other source's 2-4: best T = {best:g} "
                   "(C07 and C24 cannot both hold unless the best T is 4).",
                   figure=_sweep_figure(ctx, s, "c07_c24_temperature.png"), details={"sweep": _sweep_table(s)})


# ------------------------------------------------------------------ encoder distillation
def _encoder_runs(ctx: Context) -> dict:
    from ..distill.encoder_task import (encoder_accuracy, encoder_schedule, encoder_student, finetune_teacher,
                                        review_splits, teacher_schedule, train_encoder)

    def run():
        p = ctx.profile
        train, test = review_splits(p)
        tsched = teacher_schedule(p)  # teachers train to three passes over the sentences; students on budget
        t0, tok = finetune_teacher(train, seed=0, profile=p, schedule=tsched)
        # the second teacher must have learned the task: a fine-tune that collapses onto the majority class
        # (it happens at this lr) is retried with the next seed; judged on training sentences, not the test set
        probe = (train[0][:256], train[1][:256])
        majority = float(max(probe[1].float().mean(), 1 - probe[1].float().mean()))
        tried = []
        for seed in (1, 2, 3):
            t1, _ = finetune_teacher(train, seed=seed, profile=p, schedule=tsched)
            tried.append((seed, encoder_accuracy(t1, tok, probe)))
            if not classifier_collapsed(tried[-1][1], majority):
                break
        acc = {"teacher_seed0": encoder_accuracy(t0, tok, test), "teacher_seed1": encoder_accuracy(t1, tok, test)}
        for key, teachers, beta in (("student_kd", [t0], 0.0), ("student_kd_feature", [t0], 1.0),
                                    ("student_kd_ensemble", [t0, t1], 0.0)):
            student, layer_map = encoder_student(t0)
            train_encoder(student, tok, train, teachers=teachers, layer_map=layer_map, feature_weight=beta,
                          seed=0, profile=p)
            acc[key] = encoder_accuracy(student, tok, test)
        for sd in SEEDS[1:]:  # the KD-only run again with other batch orders and dropout
            student, _ = encoder_student(t0)
            train_encoder(student, tok, train, teachers=[t0], layer_map=layer_map, seed=sd, profile=p)
            acc[f"student_kd_seed{sd}"] = encoder_accuracy(student, tok, test)
        sched = encoder_schedule(p)
        _, lo, hi = seed_spread([acc["student_kd"]] + [acc[f"student_kd_seed{sd}"] for sd in SEEDS[1:]])
        spread = hi - lo
        yt = test[1].float().mean()
        test_majority = float(max(yt, 1 - yt))
        return {"acc": acc, "teacher_steps": tsched.steps, "seed_spread": spread, "layer_map": layer_map,
                "second_teacher_tries": tried, "probe_majority": majority, "test_majority": test_majority,
                "train": len(train[0]), "test": len(test[0]), "steps": sched.steps, "batch": sched.batch_size,
                "lr": sched.lr, "teacher_blocks": t0.config.num_hidden_layers, "student_blocks": len(layer_map)}
    return ctx.memo("distill_encoder_runs", run)


def _enc_beyond_noise(gain: float, r: dict, what: str, verdict: rules.Verdict) -> rules.Verdict:
    """``verdict`` when the accuracy ``gain`` exceeds the seed-to-seed spread of the KD-only student, else
    inconclusive; first the sanity check: an invalid run if a classifier it compares collapsed."""
    bad = collapsed_runs(r)
    if bad:
        return rules.invalid(f"sanity check failed: {bad} collapsed onto the majority class (accuracy within "
                             f"{COLLAPSE_MARGIN:.2f} of {r['test_majority']:.3f})")
    if abs(gain) > r["seed_spread"]:
        return verdict
    return rules.inconclusive(f"{what}: an accuracy difference of {gain:+.4f} is within the {r['seed_spread']:.4f} "
                              f"that {len(SEEDS)} batch orders of the same KD-only student spread over; as run: "
                              f"{verdict.rule}")


def collapsed_runs(r: dict, keys=("teacher_seed0", "student_kd", "student_kd_feature", "student_kd_ensemble")) -> list:
    """The classifier runs (of ``keys``) whose test accuracy does not beat the majority class by the margin."""
    maj = r.get("test_majority")
    if maj is None:
        return []
    return [k for k in keys if k in r["acc"] and classifier_collapsed(r["acc"][k], maj)]


def _enc_budget(r: dict) -> str:
    return (f"{r['train']} training / {r['test']} test sentences, teachers {r['teacher_steps']} steps, students "
            f"{r['steps']} steps x {r['batch']}, "
            f"lr {r['lr']:g}, T = 2, alpha = 0.5")


@experiment("C08")
def c08(ctx: Context) -> Outcome:
    r = _encoder_runs(ctx)
    a = r["acc"]
    gain = a["student_kd_feature"] - a["student_kd"]
    measured = {"teacher_acc": a["teacher_seed0"], "student_kd_acc": a["student_kd"],
                "student_kd_feature_acc": a["student_kd_feature"], "gain": gain,
                "student_kd_seed1_acc": a["student_kd_seed1"], "seed_spread": r["seed_spread"]}
    verdict = _enc_beyond_noise(gain, r, "with vs without the feature loss", rules.at_least(
        gain, 1 / r["test"], "accuracy gain of adding the hidden-state loss (one test sentence = 1 / n_test: "
        "strictly better)"))
    return Outcome(measured, verdict, f"MiniLM ({r['teacher_blocks']} blocks) fine-tuned on reviews -> "
                   f"{r['student_blocks']}-block student (blocks {r['layer_map']}), {_enc_budget(r)}; with vs "
                   "without a cosine hidden-state loss on each kept block.")


@experiment("C38")
def c38(ctx: Context) -> Outcome:
    r = _encoder_runs(ctx)
    a = r["acc"]
    rel = a["student_kd_feature"] / a["teacher_seed0"]
    half = r["seed_spread"] / a["teacher_seed0"]  # the KD students' seed spread, as a share of the teacher
    measured = {"teacher_acc": a["teacher_seed0"], "student_acc": a["student_kd_feature"], "relative": rel,
                "relative_ci": [rel - half, rel + half], "seed_spread": r["seed_spread"],
                "teacher_blocks": r["teacher_blocks"], "student_blocks": r["student_blocks"]}
    bad = collapsed_runs(r, ("teacher_seed0", "student_kd_feature"))
    verdict = (rules.invalid(f"sanity check failed: {bad} collapsed onto the majority class") if bad else
               rules.at_least(rel, 0.97, f"student accuracy / teacher accuracy (+/- the students' {len(SEEDS)}-seed "
                              "spread)", (rel - half, rel + half)))
    return Outcome(measured, verdict, f"DistilBERT recipe at our scale: every other block (those of "
                   f"{r['layer_map']}), KD + hidden-state loss, {_enc_budget(r)}.")


@experiment("C39")
def c39(ctx: Context) -> Outcome:
    r = _encoder_runs(ctx)
    a = r["acc"]
    gain = a["student_kd_ensemble"] - a["student_kd"]
    measured = {"teacher_seed0_acc": a["teacher_seed0"], "teacher_seed1_acc": a["teacher_seed1"],
                "student_single_acc": a["student_kd"], "student_ensemble_acc": a["student_kd_ensemble"], "gain": gain,
                "student_single_seed1_acc": a["student_kd_seed1"], "seed_spread": r["seed_spread"]}
    seed1, probe_acc = r["second_teacher_tries"][-1]
    measured.update(second_teacher_seed=seed1, second_teacher_probe_acc=probe_acc,
                    second_teacher_seeds_tried=len(r["second_teacher_tries"]), probe_majority=r["probe_majority"])
    verdict = _enc_beyond_noise(gain, r, "ensemble vs single teacher", rules.at_least(
        gain, 1 / r["test"], "accuracy gain of the ensemble-taught student over the single-teacher one (one test "
        "sentence = 1 / n_test: strictly better)"))
    if classifier_collapsed(probe_acc, r["probe_majority"]):
        verdict = rules.invalid(
            f"no second teacher learned the task in {len(r['second_teacher_tries'])} seeds (the last one's training-"
            f"probe accuracy {probe_acc:.3f} vs majority class {r['probe_majority']:.3f}): an ensemble with a collapsed "
            f"teacher says nothing about ensembles (sanity check failed); as run: {verdict.label}: {verdict.rule}")
    return Outcome(measured, verdict, f"Two MiniLM teachers fine-tuned with seeds 0 and {seed1} (a second teacher "
                   "that collapses onto the majority class is retried with the next seed); the student learns from "
                   "teacher 0 alone or from the average of both teachers' temperature-T probabilities, "
                   f"{_enc_budget(r)}.")
