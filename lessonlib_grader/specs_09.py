"""Graded exercise of notebook 09 (movement pruning): the backward pass of a hard-movement layer.

The layer computes ``y = x (W * M)^T`` with ``M = Top_v(S)``; the student returns ``(mask, dL/dW, dL/dS)``.
Every expected value below is worked out by hand in the comment beside it; the last check compares with
autograd through the library's straight-through top-k (``lessonlib.prune.movement.topk_ste``).
"""
from __future__ import annotations

import random

import torch

from .checks import Check, CheckFailure, assert_close, assert_tensor, call, prop
from .concept import concept_checks
from .registry import Exercise

NOTEBOOK = "09_movement_pruning"
T = torch.tensor


def _kind(kind: str):
    """Re-label a check written with ``prop`` as a hand-computed literal or a comparison with the reference."""
    return lambda c: Check(c.name, kind, c.run)


def _run(fn, ref, w, s, x, g, sparsity, what):
    got = call(fn, w, s, x, g, sparsity, _ref=ref)
    if not isinstance(got, tuple) or len(got) != 3:
        raise CheckFailure(f"{what}\n  expected a tuple (mask, grad_weight, grad_scores), got {type(got).__name__}")
    mask, gw, gs = got
    assert_tensor(mask, what=f"{what}: mask", shape=tuple(w.shape), dtype=torch.bool)
    assert_tensor(gw, what=f"{what}: grad_weight", shape=tuple(w.shape), dtype=w.dtype)
    assert_tensor(gs, what=f"{what}: grad_scores", shape=tuple(w.shape), dtype=w.dtype)
    return mask, gw, gs


@_kind("literal")
@prop("one sample, one output: W = [1, -2, 3, 0.5], S = [0.3, -1, 2, 0], 50%")
def _one(fn, ref):
    w, s = T([[1.0, -2.0, 3.0, 0.5]]), T([[0.3, -1.0, 2.0, 0.0]])
    x, g = T([[1.0, 2.0, 0.0, -1.0]]), T([[2.0]])
    what = "movement_backward(W=[[1, -2, 3, 0.5]], S=[[0.3, -1, 2, 0]], x=[[1, 2, 0, -1]], grad_out=[[2]], 0.5)"
    mask, gw, gs = _run(fn, ref, w, s, x, g, 0.5, what)
    # top 2 of 4 scores: 2 (col 2) and 0.3 (col 0) are kept
    assert_close(mask, T([[True, False, True, False]]), what=f"{what}: mask")
    # dL/dW' = grad_out^T x = 2 * [1, 2, 0, -1] = [2, 4, 0, -2]; dL/dW = that * mask
    assert_close(gw, T([[2.0, 0.0, 0.0, 0.0]]), what=f"{what}: grad_weight")
    # dL/dS = dL/dW' * W = [2 * 1, 4 * -2, 0 * 3, -2 * 0.5] (pruned weights' scores move too)
    assert_close(gs, T([[2.0, -8.0, 0.0, -1.0]]), what=f"{what}: grad_scores")


@_kind("literal")
@prop("two samples, two outputs: the gradient sums over the batch (grad_out^T x, not x^T grad_out)")
def _batch(fn, ref):
    w, s = T([[1.0, 2.0, -1.0], [0.5, -1.0, 2.0]]), T([[3.0, 1.0, 2.0], [0.0, 5.0, 4.0]])
    x, g = T([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]]), T([[1.0, -1.0], [2.0, 1.0]])
    what = ("movement_backward(W=[[1, 2, -1], [0.5, -1, 2]], S=[[3, 1, 2], [0, 5, 4]], "
            "x=[[1, 0, 2], [0, 1, 1]], grad_out=[[1, -1], [2, 1]], sparsity=0.5)")
    mask, gw, gs = _run(fn, ref, w, s, x, g, 0.5, what)
    # 3 of 6 pruned (round(0.5 * 6) = 3): lowest scores 0, 1, 2 -> (1, 0), (0, 1), (0, 2)
    assert_close(mask, T([[True, False, False], [False, True, True]]), what=f"{what}: mask")
    # dL/dW'[0] = 1 * [1, 0, 2] + 2 * [0, 1, 1] = [1, 2, 4]; dL/dW'[1] = -1 * [1, 0, 2] + 1 * [0, 1, 1] = [-1, 1, -1]
    assert_close(gw, T([[1.0, 0.0, 0.0], [0.0, 1.0, -1.0]]), what=f"{what}: grad_weight")
    # times W: [1 * 1, 2 * 2, 4 * -1], [-1 * 0.5, 1 * -1, -1 * 2]
    assert_close(gs, T([[1.0, 4.0, -4.0], [-0.5, -1.0, -2.0]]), what=f"{what}: grad_scores")


@_kind("literal")
@prop("sparsity 0 keeps everything: grad_weight is the full dL/dW'")
def _dense(fn, ref):
    w, s = T([[2.0, -1.0]]), T([[-3.0, 7.0]])
    x, g = T([[1.0, 3.0]]), T([[-1.0]])
    what = "movement_backward(W=[[2, -1]], S=[[-3, 7]], x=[[1, 3]], grad_out=[[-1]], sparsity=0.0)"
    mask, gw, gs = _run(fn, ref, w, s, x, g, 0.0, what)
    assert_close(mask, T([[True, True]]), what=f"{what}: mask")
    assert_close(gw, T([[-1.0, -3.0]]), what=f"{what}: grad_weight")  # -1 * [1, 3]
    assert_close(gs, T([[-2.0, 3.0]]), what=f"{what}: grad_scores")  # [-1 * 2, -3 * -1]


@prop("exact count pruned, pruned weights get no gradient, their scores still get W * dL/dW'")
def _props(fn, ref):
    gen = torch.Generator().manual_seed(4)
    w, s = torch.randn(6, 10, generator=gen), torch.randn(6, 10, generator=gen)
    x, g = torch.randn(5, 10, generator=gen), torch.randn(5, 6, generator=gen)
    what = "movement_backward(random W (6, 10), S, x (5, 10), grad_out (5, 6), sparsity=0.7)"
    mask, gw, gs = _run(fn, ref, w, s, x, g, 0.7, what)
    if int((~mask).sum()) != 42:  # round(0.7 * 60) = 42
        raise CheckFailure(f"{what}\n  expected 42 pruned entries (round(0.7 * 60)), got {int((~mask).sum())}")
    if not (s[mask].min() >= s[~mask].max()):
        raise CheckFailure(f"{what}\n  a kept score is lower than a pruned one: keep the highest scores")
    if (gw[~mask] != 0).any():
        raise CheckFailure(f"{what}\n  pruned weights (mask False) must get exactly zero gradient")
    if (gs[~mask] == 0).all():
        raise CheckFailure(f"{what}\n  the scores of pruned weights must still move (straight-through gradient)")


@_kind("reference")
@prop("agrees with autograd through W * topk_ste(S) on random layers")
def _autograd(fn, ref):
    from lessonlib.prune.movement import topk_ste

    gen, rng = torch.Generator().manual_seed(7), random.Random(7)
    for case in range(6):
        out_f, in_f, b = rng.randint(1, 7), rng.randint(1, 9), rng.randint(1, 5)
        sp = rng.choice([0.0, 0.25, 0.5, 0.8])
        dt = torch.float64 if case % 2 else torch.float32
        w, s = torch.randn(out_f, in_f, generator=gen, dtype=dt), torch.randn(out_f, in_f, generator=gen, dtype=dt)
        x, g = torch.randn(b, in_f, generator=gen, dtype=dt), torch.randn(b, out_f, generator=gen, dtype=dt)
        what = f"random case {case + 1}: W ({out_f}, {in_f}) {dt}, batch {b}, sparsity {sp}"
        mask, gw, gs = _run(fn, ref, w, s, x, g, sp, what)
        wa, sa = w.clone().requires_grad_(True), s.clone().requires_grad_(True)
        (x @ (wa * topk_ste(sa, sp)).t()).backward(g)  # dL/dy = grad_out
        assert_close(gw, wa.grad, what=f"{what}: grad_weight vs autograd", rtol=1e-5, atol=1e-6)
        assert_close(gs, sa.grad, what=f"{what}: grad_scores vs autograd", rtol=1e-5, atol=1e-6)


Q09_1 = Exercise(
    id="q09_1", points=4, notebook=NOTEBOOK, reference="lessonlib.prune.movement:movement_backward",
    statement="A hard-movement layer computes y = x (W * M)^T with M = Top_v(S): keep the fraction 1 - sparsity "
              "of the highest scores S of the matrix (use topk_mask(scores, sparsity)). Given the input x "
              "(batch, in) and dL/dy = grad_out (batch, out), return (mask, grad_weight, grad_scores): the bool "
              "keep-mask, dL/dW = dL/dW' * M and the straight-through dL/dS = dL/dW' * W, where dL/dW' (out, in) "
              "is the gradient with respect to the effective weight W' = W * M, summed over the batch.",
    hints=("dL/dW' of a linear layer y = x W'^T is grad_out^T @ x: shape (out, in).",
           "The straight-through estimator treats dM/dS as the identity, so dL/dS = dL/dM = dL/dW' * W.",
           "Pruned weights are multiplied by 0 in the forward pass, so they get no gradient; their scores do."),
    checks=(_one, _batch, _dense, _props, _autograd),
)

EXERCISES = [Q09_1]


# ------------------------------------------------------------------ q09_2: concept question
Q09_C1 = Exercise(
    id="q09_2", points=1, notebook=NOTEBOOK, reference="lessonlib.concepts:q09_c1",
    statement="A pruned classifier's held-out accuracy equals exactly the share of the majority class. What does that tell you? A: it learnt the task with less capacity. B: it answers one class for everything; a comparison built on it measures nothing. C: the eval set is too small. D: pruning improved calibration. Return one letter.",
    hints=('What accuracy does a model get that always answers the most frequent class?',),
    checks=concept_checks("q09_2", "B"),
)
EXERCISES = [*EXERCISES, Q09_C1]
