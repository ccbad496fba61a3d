"""Ledger experiments of lottery tickets: C16 (winning tickets of LeNet-300-100) and C36 (rewinding).
"""
from __future__ import annotations

import torch

from . import Context, Outcome, experiment, rules
from .report_figures import line_figure


HARD_LR_FACTOR = 10.0  # C36's harder setting: Adam at 10x the LeNet learning rate of Frankle & Carbin


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
    return line_figure(ctx, name, xs, {"ticket (rewind to 0)": [100 * r.ticket for r in rows],
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
