"""Graded exercise of notebook 14 (feature distillation): the hidden-state loss with a learned projection.

u = h_s W^T maps the student's hidden state to the teacher's width (FitNets eq. 2); the loss is the mean
squared error over every kept element (TinyBERT eq. 7) or the mean over kept positions of 1 - cos(u, h_t)
(DistilBERT's cosine loss).  Every expected value below is computed by hand in the comment beside it.
"""
from __future__ import annotations

import random

import torch

from .checks import CheckFailure, agrees_with_reference, assert_close, assert_tensor, call, literal, prop
from .registry import Exercise

NOTEBOOK = "14_feature_distillation"

T = torch.tensor

_checks = (
    # differences (-2, 0) and (0, -1): squares 4, 0, 0, 1 over 4 elements -> 5 / 4
    literal("MSE without projection: mean of the squared differences over all elements = 1.25",
            (T([[[1.0, 2.0], [0.0, 0.0]]]), T([[[3.0, 2.0], [0.0, 1.0]]])), {"kind": "mse"}, expected=1.25),
    # W = [[1, 0, 0], [0, 0, 2]]: u = W h = [1, 2*1] = [1, 2]; teacher [1, 4] -> squares 0, 4 over 2 elements
    literal("MSE through a (2, 3) projection W: u = h W^T = [1, 2] against [1, 4] -> 2.0",
            (T([[[1.0, 5.0, 1.0]]]), T([[[1.0, 4.0]]]), T([[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]])), {"kind": "mse"},
            expected=2.0),
    # 1 - cos: orthogonal -> 1, same direction (any length) -> 0, 0 -> mean over 3 positions = 1/3
    literal("cosine loss: 1 - cos per position, averaged over positions = 1/3",
            (T([[[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]]), T([[[0.0, 1.0], [2.0, 0.0], [3.0, 0.0]]])),
            {"kind": "cosine"}, expected=1 / 3),
    # only position 0 counts: (1 - 2)^2 = 1 (all positions: (1 + 25) / 2 = 13; zeroed but not dropped: 0.5)
    literal("MSE with a mask [[1, 0]]: only the kept position counts = 1.0",
            (T([[[1.0], [5.0]]]), T([[[2.0], [0.0]]])), {"kind": "mse", "mask": T([[1, 0]])}, expected=1.0),
    # kept positions 0 and 1: 1 - cos = 0 and 1 -> 0.5 (with position 2, opposite vectors: (0 + 1 + 2) / 3 = 1)
    literal("cosine loss with a mask [[1, 1, 0]]: the mean over the two kept positions = 0.5",
            (T([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]]), T([[[1.0, 0.0], [1.0, 0.0], [-1.0, -1.0]]])),
            {"kind": "cosine", "mask": T([[1, 1, 0]])}, expected=0.5),
)


@prop("returns a scalar; gradients reach the student's state and W but never the teacher's state")
def _gradients(fn, ref):
    g = torch.Generator().manual_seed(0)
    for kind in ("mse", "cosine"):
        hs = torch.randn(2, 3, 4, generator=g).requires_grad_(True)
        ht = torch.randn(2, 3, 6, generator=g).requires_grad_(True)
        W = torch.randn(6, 4, generator=g).requires_grad_(True)
        what = f"hidden_state_loss(h_student (2, 3, 4), h_teacher (2, 3, 6), proj_weight (6, 4), kind={kind!r})"
        try:
            loss = fn(hs, ht, W, kind=kind)
        except NotImplementedError:
            raise
        except Exception as exc:
            raise CheckFailure(f"calling {what}\n  raised {type(exc).__name__}: {exc}") from None
        assert_tensor(loss, what=what, shape=(), floating=True)
        try:
            loss.backward()
        except RuntimeError as exc:
            raise CheckFailure(f"{what}\n  the loss cannot be backpropagated: {exc}") from None
        if hs.grad is None or W.grad is None or float(hs.grad.abs().sum()) == 0 or float(W.grad.abs().sum()) == 0:
            raise CheckFailure(f"{what}\n  no gradient reached h_student or proj_weight: keep them in the graph")
        if ht.grad is not None and float(ht.grad.abs().sum()) > 0:
            raise CheckFailure(f"{what}\n  a gradient reached h_teacher: the teacher is a fixed target "
                               "(use h_teacher.detach())")


@prop("the cosine loss ignores the length of each vector: scaling the teacher by 3 changes nothing")
def _scale(fn, ref):
    g = torch.Generator().manual_seed(1)
    hs, ht, W = torch.randn(1, 5, 3, generator=g), torch.randn(1, 5, 4, generator=g), torch.randn(4, 3, generator=g)
    a = call(fn, hs, ht, W, kind="cosine", _ref=ref)
    b = call(fn, hs, 3 * ht, W, kind="cosine", _ref=ref)
    assert_close(b, a, what="cosine loss with the teacher's states scaled by 3 vs unscaled", atol=1e-5)
    want = float(ref(hs, ht, W, kind="cosine"))
    assert_close(a, want, what="cosine loss on random states (reference value)", atol=1e-5)


def _case(gen: torch.Generator, rng: random.Random) -> tuple[tuple, dict]:
    b, t, ds, dt = rng.choice([1, 2]), rng.choice([3, 5]), rng.choice([4, 6]), rng.choice([4, 8])
    hs, ht = torch.randn(b, t, ds, generator=gen), torch.randn(b, t, dt, generator=gen)
    W = None if ds == dt and rng.random() < 0.5 else torch.randn(dt, ds, generator=gen) / ds ** 0.5
    mask = (torch.rand(b, t, generator=gen) < 0.6).long()
    mask[0, 0] = 1  # at least one kept position
    return (hs, ht, W), {"kind": rng.choice(["mse", "cosine"]), "mask": mask if rng.random() < 0.7 else None}


Q14_1 = Exercise(
    id="q14_1", points=4, notebook=NOTEBOOK, reference="lessonlib.distill.losses:hidden_state_loss",
    statement="Write the hidden-state distillation loss. h_student (..., D_s) and h_teacher (..., D_t); proj_weight "
              "W of shape (D_t, D_s) maps the student to the teacher's width, u = h_student @ W.T (no projection "
              "when W is None); mask (...) of 0/1 keeps only the positions where it is 1 (None: all). "
              "kind='mse': the mean of (u - h_teacher)^2 over every kept element; kind='cosine': the mean over "
              "kept positions of 1 - cos(u, h_teacher). The teacher is a fixed target (no gradient). Return a "
              "0-dim float tensor. The input checks are already written.",
    hints=("Work in float32: h_student.float(); detach the teacher: h_teacher.detach().float().",
           "Boolean indexing u[mask.bool()] keeps the (N, D) rows of the kept positions.",
           "torch.nn.functional.cosine_similarity(u, v, dim=-1) gives one cosine per position."),
    checks=(*_checks, _gradients, _scale,
            agrees_with_reference("agrees with the reference on random shapes, masks and both kinds", _case,
                                  n_cases=8, seed=2, atol=1e-5)),
)

from .concept import answer_function_checks, choice  # noqa: E402  (concept questions)

Q14_2 = Exercise(
    id='q14_2', points=2, notebook=NOTEBOOK, reference="lessonlib.concepts:projection_direction_choice",
    statement="Concept question (return one letter). A student of width 192 learns from a teacher of width 384 with an MSE hidden-state loss. Which projection is right? A: a learned W (384 x 192) lifts the student's states to the teacher's width; B: a learned W (192 x 384) projects the teacher's states down to the student's width; C: either, they are equivalent; D: no projection, compare the student with the teacher's first 192 channels.",
    hints=("What can training do to a projection applied on the teacher's side?",),
    checks=(choice("the letter of the right answer", 'A'), *answer_function_checks("letter")),
)

EXERCISES = [Q14_1, Q14_2]
