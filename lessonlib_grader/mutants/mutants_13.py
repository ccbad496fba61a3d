"""Wrong answers a student might hand in for notebook 13's exercise (each must score 0)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from lessonlib.distill.losses import check_temperature, flatten_logits
from . import mutant


def _rows(student_logits, teacher_logits, T, mask):
    T = check_temperature(T)
    return flatten_logits(student_logits, mask).float(), flatten_logits(teacher_logits, mask).detach().float(), T


@mutant("q13_1", "forgets the T^2 factor")
def kd_no_t2(student_logits, teacher_logits, T=1.0, mask=None):
    s, t, T = _rows(student_logits, teacher_logits, T, mask)
    log_ps, log_pt = F.log_softmax(s / T, -1), F.log_softmax(t / T, -1)
    return (log_pt.exp() * (log_pt - log_ps)).sum(-1).mean()


@mutant("q13_1", "multiplies by T instead of T^2")
def kd_times_t(student_logits, teacher_logits, T=1.0, mask=None):
    s, t, T = _rows(student_logits, teacher_logits, T, mask)
    log_ps, log_pt = F.log_softmax(s / T, -1), F.log_softmax(t / T, -1)
    return (log_pt.exp() * (log_pt - log_ps)).sum(-1).mean() * T


@mutant("q13_1", "KL direction swapped: KL(p_s || p_t)")
def kd_reverse(student_logits, teacher_logits, T=1.0, mask=None):
    s, t, T = _rows(student_logits, teacher_logits, T, mask)
    log_ps, log_pt = F.log_softmax(s / T, -1), F.log_softmax(t / T, -1)
    return (log_ps.exp() * (log_ps - log_pt)).sum(-1).mean() * T * T


@mutant("q13_1", "softmax of the unscaled teacher logits (temperature on the student only)")
def kd_teacher_unscaled(student_logits, teacher_logits, T=1.0, mask=None):
    s, t, T = _rows(student_logits, teacher_logits, T, mask)
    log_ps, log_pt = F.log_softmax(s / T, -1), F.log_softmax(t, -1)
    return (log_pt.exp() * (log_pt - log_ps)).sum(-1).mean() * T * T


@mutant("q13_1", "temperature on the teacher only (student softmax unscaled)")
def kd_student_unscaled(student_logits, teacher_logits, T=1.0, mask=None):
    s, t, T = _rows(student_logits, teacher_logits, T, mask)
    log_ps, log_pt = F.log_softmax(s, -1), F.log_softmax(t / T, -1)
    return (log_pt.exp() * (log_pt - log_ps)).sum(-1).mean() * T * T


@mutant("q13_1", "F.kl_div with reduction='mean' (divides by N * V, not N)")
def kd_kl_div_mean(student_logits, teacher_logits, T=1.0, mask=None):
    s, t, T = _rows(student_logits, teacher_logits, T, mask)
    return F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="mean") * T * T


@mutant("q13_1", "sums over rows instead of averaging")
def kd_sum_rows(student_logits, teacher_logits, T=1.0, mask=None):
    s, t, T = _rows(student_logits, teacher_logits, T, mask)
    log_ps, log_pt = F.log_softmax(s / T, -1), F.log_softmax(t / T, -1)
    return (log_pt.exp() * (log_pt - log_ps)).sum() * T * T


@mutant("q13_1", "log(softmax(x)): -inf for confident rows")
def kd_log_softmax_underflow(student_logits, teacher_logits, T=1.0, mask=None):
    s, t, T = _rows(student_logits, teacher_logits, T, mask)
    ps, pt = torch.softmax(s / T, -1), torch.softmax(t / T, -1)
    return (pt * (torch.log(pt + 1e-30) - torch.log(ps))).sum(-1).mean() * T * T


@mutant("q13_1", "cross-entropy against the soft targets (forgets the teacher's entropy term)")
def kd_soft_ce(student_logits, teacher_logits, T=1.0, mask=None):
    s, t, T = _rows(student_logits, teacher_logits, T, mask)
    return -(F.softmax(t / T, -1) * F.log_softmax(s / T, -1)).sum(-1).mean() * T * T


@mutant("q13_1", "detaches the student: the loss has no gradient")
def kd_detached(student_logits, teacher_logits, T=1.0, mask=None):
    s, t, T = _rows(student_logits, teacher_logits, T, mask)
    s = s.detach()
    log_ps, log_pt = F.log_softmax(s / T, -1), F.log_softmax(t / T, -1)
    return (log_pt.exp() * (log_pt - log_ps)).sum(-1).mean() * T * T


@mutant("q13_2", "answers A (the teacher's accuracy)")
def concept_a():
    return "A"


@mutant("q13_2", "answers B (a gradient scaled by T)")
def concept_b():
    return "B"


@mutant("q13_2", "answers D (zero KL)")
def concept_d():
    return "D"


@mutant("q13_3", "forgets the 1/2 of Pinsker: R(T) + sqrt(KL)")
def concept_q13_3_0():
    return 0.382842712474619


@mutant("q13_3", "adds the KL itself, without the square root")
def concept_q13_3_1():
    return 0.18


@mutant("q13_3", "returns only the teacher's risk")
def concept_q13_3_2():
    return 0.1


@mutant("q13_3", "returns only the distance term sqrt(KL / 2)")
def concept_q13_3_3():
    return 0.2
