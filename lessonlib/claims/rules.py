"""Verdict rules: the only way a claim gets a verdict.  Each takes measured numbers, never a typed word.

A ``Verdict`` is one of ``holds`` ("holds at this scale"), ``fails`` ("does not hold at this scale"),
``not measurable`` (with the reason) or ``pending`` (no experiment registered yet), plus the rule that
produced it in words, so the report shows why.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

HOLDS, FAILS, NOT_MEASURABLE, PENDING, ERROR = "holds", "fails", "not measurable", "pending", "error"
LABELS = {HOLDS: "holds at this scale", FAILS: "does not hold at this scale",
          NOT_MEASURABLE: "not measurable here", PENDING: "pending (no experiment yet)",
          ERROR: "error (the experiment raised)"}


@dataclass(frozen=True)
class Verdict:
    status: str
    rule: str

    @property
    def label(self) -> str:
        return LABELS[self.status]

    def as_dict(self) -> dict:
        return {**asdict(self), "label": self.label}


def _num(x: float, what: str) -> float:
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"{what} is not a finite number: {x}")
    return x


def at_most(value: float, limit: float, what: str) -> Verdict:
    v = _num(value, what)
    return Verdict(HOLDS if v <= limit else FAILS, f"{what} = {v:.4g} must be <= {limit:.4g}")


def at_least(value: float, limit: float, what: str) -> Verdict:
    v = _num(value, what)
    return Verdict(HOLDS if v >= limit else FAILS, f"{what} = {v:.4g} must be >= {limit:.4g}")


def within(value: float, lo: float, hi: float, what: str) -> Verdict:
    v = _num(value, what)
    return Verdict(HOLDS if lo <= v <= hi else FAILS, f"{what} = {v:.4g} must lie in [{lo:.4g}, {hi:.4g}]")


def close_to(value: float, target: float, rel_tol: float, what: str) -> Verdict:
    v = _num(value, what)
    err = abs(v - target) / abs(target)
    return Verdict(HOLDS if err <= rel_tol else FAILS,
                   f"{what} = {v:.4g} must be within {rel_tol:.1%} of {target:.4g} (off by {err:.2%})")


def all_of(*verdicts: Verdict) -> Verdict:
    """Holds only if every part holds; a not-measurable part makes the whole not measurable."""
    if not verdicts:
        raise ValueError("all_of needs at least one verdict")
    statuses = {v.status for v in verdicts}
    status = (NOT_MEASURABLE if NOT_MEASURABLE in statuses else FAILS if FAILS in statuses else HOLDS)
    return Verdict(status, " AND ".join(v.rule for v in verdicts))


def not_measurable(reason: str) -> Verdict:
    if not reason.strip():
        raise ValueError("not_measurable needs a reason")
    return Verdict(NOT_MEASURABLE, reason)


def pending(issue: int) -> Verdict:
    return Verdict(PENDING, f"the experiment is owned by issue {issue} and not registered yet")
