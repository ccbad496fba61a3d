"""Graded exercise of notebook 13 (response distillation): the soft-target loss with its T^2 factor.

Every expected value below is computed by hand in the comment beside it; none comes from the reference.
"""
from __future__ import annotations

import math
import random

import torch

from .checks import CheckFailure, agrees_with_reference, assert_close, assert_tensor, call, literal, prop
from .registry import Exercise
from .concept import answer_function_checks, choice, number

NOTEBOOK = "13_response_distillation"
LN = math.log
_L3 = LN(3.0)
# teacher [0, ln 3] -> p_t = [1/4, 3/4]; student [0, 0] -> p_s = [1/2, 1/2]
# KL(p_t || p_s) = 1/4 ln(1/2) + 3/4 ln(3/2)
_KL_A = 0.25 * LN(0.5) + 0.75 * LN(1.5)  # 0.130812


@prop("returns a 0-dim floating-point tensor for (B, C) and (B, T, V) logits")
def _q1_scalar(fn, ref):
    for shape in ((3, 5), (2, 4, 5)):
        z = torch.zeros(shape)
        got = call(fn, z, z + 1.0, 2.0, _ref=ref)
        assert_tensor(got, what=f"kd_kl on logits of shape {shape}", shape=(), floating=True)


@prop("(B, T, V) logits give the same loss as the same rows flattened to (B*T, V)")
def _q1_flatten(fn, ref):
    gen = torch.Generator().manual_seed(5)
    s, t = torch.randn(2, 3, 6, generator=gen), torch.randn(2, 3, 6, generator=gen) * 2
    a = call(fn, s, t, 3.0, _ref=ref)
    b = call(fn, s.reshape(6, 6), t.reshape(6, 6), 3.0, _ref=ref)
    assert_close(a, b, what="kd_kl(s, t, 3) on (2, 3, 6) logits vs the same rows as (6, 6)", rtol=1e-5, atol=1e-6)


@prop("adding a constant to a row of teacher or student logits changes nothing")
def _q1_shift(fn, ref):
    gen = torch.Generator().manual_seed(6)
    s, t = torch.randn(4, 7, generator=gen), torch.randn(4, 7, generator=gen) * 3
    a = call(fn, s, t, 2.0, _ref=ref)
    b = call(fn, s + torch.arange(4.0)[:, None] * 5, t - 3.0, 2.0, _ref=ref)
    assert_close(b, a, what="kd_kl(s + c_row, t - 3, 2) vs kd_kl(s, t, 2)", rtol=1e-4, atol=1e-5)


@prop("the gradient w.r.t. the student logits is T * (p_s - p_t) / N (Hinton et al., sec. 2.1)")
def _q1_grad(fn, ref):
    # d/dz_s [T^2 KL(p_t || softmax(z_s / T))] = T^2 * (p_s - p_t) / T, averaged over N rows.
    # Rows: student [0, 0] (p_s = [1/2, 1/2]) and [2 ln 3, 0] (T = 2: p_s = [3/4, 1/4]);
    # teacher [0, 2 ln 3] in both rows (T = 2: p_t = [1/4, 3/4]).
    s = torch.tensor([[0.0, 0.0], [2 * _L3, 0.0]], requires_grad=True)
    t = torch.tensor([[0.0, 2 * _L3], [0.0, 2 * _L3]])
    try:
        out = fn(s, t, 2.0)
        out.backward()
    except NotImplementedError:
        raise
    except Exception as exc:
        raise CheckFailure(f"kd_kl(student with requires_grad=True, teacher, T=2.0) then .backward() raised "
                           f"{type(exc).__name__}: {exc}; the loss must stay differentiable in the student "
                           "logits") from None
    if s.grad is None:
        raise CheckFailure("kd_kl(...).backward() left no gradient on the student logits (was it detached?)")
    want = torch.tensor([[2 * (0.5 - 0.25) / 2, 2 * (0.5 - 0.75) / 2],  # [0.25, -0.25]
                         [2 * (0.75 - 0.25) / 2, 2 * (0.25 - 0.75) / 2]])  # [0.5, -0.5]
    assert_close(s.grad, want, what="gradient of kd_kl w.r.t. the student logits at T = 2", rtol=1e-4, atol=1e-6)


def _q1_case(gen: torch.Generator, rng: random.Random):
    v = rng.randint(2, 40)
    T = rng.choice([0.5, 1.0, 2.0, 3.0, 4.0, 8.0])
    if rng.random() < 0.5:
        shape, mask = (rng.randint(1, 6), v), None
    else:
        b, t = rng.randint(1, 3), rng.randint(1, 5)
        shape = (b, t, v)
        mask = torch.rand(b, t, generator=gen) < 0.7
        mask[0, 0] = True
    s = torch.randn(*shape, generator=gen) * rng.choice([1.0, 3.0])
    te = torch.randn(*shape, generator=gen) * rng.choice([1.0, 5.0])
    return (s, te, T, mask), {}


Q13_1 = Exercise(
    id="q13_1", points=6, notebook=NOTEBOOK, reference="lessonlib.distill.losses:kd_kl",
    statement="Return the soft-target distillation loss T^2 * KL(p_t || p_s), where p_t = softmax(t / T) is the "
              "teacher's and p_s = softmax(s / T) the student's distribution at temperature T, KL summed over "
              "the vocabulary and averaged over the N rows of the flattened (N, V) logits s and t. Return a "
              "0-dim tensor that stays differentiable in the student logits.",
    hints=("KL(p || q) = sum_v p_v (log p_v - log q_v): the teacher's distribution weights the sum.",
           "Divide both logits by T before the softmax; multiply the result by T * T so the gradient does "
           "not shrink as 1/T^2 when T grows.",
           "Use F.log_softmax for both sides: log(softmax(x)) underflows to -inf for confident rows.",
           "Average over rows (sum over the vocabulary first): not F.kl_div(..., reduction='mean'), which "
           "also divides by V."),
    checks=(
        literal("equal logits give zero", (torch.tensor([[1.0, -2.0, 0.5]]), torch.tensor([[1.0, -2.0, 0.5]]), 4.0),
                expected=torch.tensor(0.0)),
        literal("two classes at T = 1", (torch.zeros(1, 2), torch.tensor([[0.0, _L3]]), 1.0),
                expected=torch.tensor(_KL_A)),  # 0.130812, see _KL_A
        literal("the T^2 factor at T = 2", (torch.zeros(1, 2), torch.tensor([[0.0, 2 * _L3]]), 2.0),
                expected=torch.tensor(4 * _KL_A)),  # teacher / 2 = [0, ln 3]: same KL, times T^2 = 4
        literal("both sides divided by T", (torch.tensor([[2 * _L3, 0.0]]), torch.tensor([[0.0, 2 * _L3]]), 2.0),
                expected=torch.tensor(2 * _L3)),  # p_s = [3/4, 1/4], p_t = [1/4, 3/4]: KL = ln 3 / 2; x 4
        literal("averaged over rows", (torch.zeros(2, 2), torch.tensor([[0.0, _L3], [0.0, 0.0]]), 1.0),
                expected=torch.tensor(_KL_A / 2)),  # row 2 has KL 0
        literal("confident rows stay finite", (torch.tensor([[1000.0, 0.0]]), torch.tensor([[0.0, 1000.0]]), 1.0),
                expected=torch.tensor(1000.0), rtol=1e-4),  # p_t ~ [0, 1]: KL = 0 - log p_s(1) = 1000
        literal("the mask selects rows", (torch.zeros(1, 2, 2), torch.tensor([[[0.0, _L3], [5.0, 0.0]]]), 1.0,
                                          torch.tensor([[True, False]])),
                expected=torch.tensor(_KL_A)),  # only the first position counts
        _q1_scalar, _q1_flatten, _q1_shift, _q1_grad,
        agrees_with_reference("matches the reference on random logits, temperatures and masks", _q1_case,
                              n_cases=20, rtol=1e-4, atol=1e-5),
    ),
)

Q13_2 = Exercise(
    id="q13_2", points=2, notebook=NOTEBOOK, reference="lessonlib.concepts:temperature_information_choice",
    statement="Concept question (return one letter). Why does a higher distillation temperature let each training "
              "example carry more information to the student? A: it makes the teacher more accurate; B: it "
              "multiplies the student's gradient by T; C: it raises the entropy of the teacher's soft targets, so "
              "the relative probabilities of the wrong classes become visible and every example constrains more of "
              "the student's distribution (until, at very high T, the targets approach uniform and say nothing); "
              "D: it drives the KL divergence to zero, so the student cannot overfit.",
    hints=("Think of what a one-hot target tells the student, then a distribution with entropy close to log V.",),
    checks=(choice("the letter of the right explanation", "C"), *answer_function_checks("letter")),
)

Q13_3 = Exercise(
    id="q13_3", points=2, notebook=NOTEBOOK, reference="lessonlib.concepts:student_risk_bound",
    statement="Concept question (a number). A teacher's randomised 0-1 risk on the test set is 0.10, and the mean "
              "forward KL divergence KL(p_teacher || p_student) of a student on the same test inputs is 0.08 nats. "
              "Using the bound derived in section 4 (steps 1 and 2, with Pinsker's inequality), what is the largest "
              "randomised risk the student can have?",
    hints=("Step 1 bounds the student's risk by the teacher's plus the mean total variation distance.",
           "Pinsker: TV <= sqrt(KL / 2); Jensen lets you use the mean KL inside the square root."),
    checks=(number("the bound on the student's risk", 0.30), *answer_function_checks("number")),  # 0.10 + sqrt(0.04)
)

EXERCISES = [Q13_1, Q13_2, Q13_3]
