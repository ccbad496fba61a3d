"""Wrong answers a student might hand in for notebook 22's concept question (each must score 0)."""
from __future__ import annotations

from . import mutant


@mutant("q22_1", "answers A (two of three is enough)")
def concept_q22_1_0():
    return 'A'


@mutant("q22_1", "answers C (disagreement makes the run invalid)")
def concept_q22_1_1():
    return 'C'


@mutant("q22_1", "answers D (the source is wrong)")
def concept_q22_1_2():
    return 'D'
