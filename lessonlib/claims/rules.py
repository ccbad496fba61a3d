"""Verdict rules: the only way a claim gets a verdict.  Each takes measured numbers, never a typed word.

The vocabulary (one meaning per word):

- ``holds`` ("holds at this scale"): the measured value, and its whole interval where one is given, lies inside
  the claim's band.
- ``fails`` ("does not hold at this scale"): the value, and its whole interval, lies outside the band.
- ``inconclusive``: the interval (bootstrap over evaluation windows, or the spread over seeds) straddles the
  band's edge: this run cannot tell.
- ``not measurable`` ("not measurable here"): the hardware, data or budget the claim needs is not available;
  the rule names what is missing.
- ``invalid`` ("invalid run"): a sanity check failed (a collapsed classifier, an untrained reference); the rule
  names the failed check, and the numbers measure nothing about the claim.
- ``pending`` / ``error``: no experiment registered / the experiment raised.

A compound claim is split into named parts (``parts``), each with its own verdict; the row's verdict combines
them (``combine``).  Old reports wrote ``fails`` and ``holds`` with the labels "does not hold at this scale" and
"holds at this scale"; those statuses keep those labels, so old reports still render (``label_of``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

HOLDS, FAILS, NOT_MEASURABLE, PENDING, ERROR = "holds", "fails", "not measurable", "pending", "error"
INCONCLUSIVE, INVALID = "inconclusive", "invalid run"
LABELS = {HOLDS: "holds at this scale", FAILS: "does not hold at this scale",
          INCONCLUSIVE: "inconclusive (the interval straddles the band's edge)",
          NOT_MEASURABLE: "not measurable here", INVALID: "invalid run (a sanity check failed)",
          PENDING: "pending (no experiment yet)", ERROR: "error (the experiment raised)"}
DECIDED = (HOLDS, FAILS)


@dataclass(frozen=True)
class Verdict:
    status: str
    rule: str
    parts: tuple = field(default=())  # ((name, Verdict), ...) for a compound claim
    interval: tuple | None = None  # (lo, hi) of the judged quantity, when it has one

    def __post_init__(self):
        if self.status not in LABELS:
            raise ValueError(f"verdict status {self.status!r} is not one of {sorted(LABELS)}")

    @property
    def label(self) -> str:
        return LABELS[self.status]

    def as_dict(self) -> dict:
        d = {"status": self.status, "rule": self.rule, "label": self.label}
        if self.interval is not None:
            d["interval"] = [float(self.interval[0]), float(self.interval[1])]
        if self.parts:
            d["parts"] = [{"name": n, **v.as_dict()} for n, v in self.parts]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Verdict":
        """The inverse of ``as_dict`` (also reads old reports, which have no parts or intervals)."""
        parts = tuple((p["name"], cls.from_dict(p)) for p in d.get("parts", ()))
        iv = d.get("interval")
        return cls(d["status"], d["rule"], parts, None if iv is None else (float(iv[0]), float(iv[1])))


def label_of(verdict: dict) -> str:
    """The label of a verdict read from any report, old or new: the current label of its status, else the
    label it was written with."""
    return LABELS.get(verdict.get("status"), verdict.get("label", str(verdict.get("status"))))


def _num(x: float, what: str) -> float:
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"{what} is not a finite number: {x}")
    return x


def _iv(interval, what: str) -> tuple[float, float] | None:
    if interval is None:
        return None
    lo, hi = (_num(interval[0], f"{what} (interval low)"), _num(interval[1], f"{what} (interval high)"))
    if lo > hi:
        raise ValueError(f"{what}: interval ({lo}, {hi}) has low > high")
    return lo, hi


def _ivtext(iv) -> str:
    return "" if iv is None else f" (95% interval [{iv[0]:.4g}, {iv[1]:.4g}])"


def _band(v: float, iv, inside) -> str:
    """holds / fails / inconclusive for a value with an optional interval and a predicate ``inside``."""
    if iv is None:
        return HOLDS if inside(v) else FAILS
    if inside(iv[0]) and inside(iv[1]):
        return HOLDS
    if not inside(iv[0]) and not inside(iv[1]) and not inside(v):
        return FAILS
    return INCONCLUSIVE


def at_most(value: float, limit: float, what: str, interval=None) -> Verdict:
    """``value <= limit``; with an ``interval`` (lo, hi) decided only when the interval is clear of the limit."""
    v, iv = _num(value, what), _iv(interval, what)
    return Verdict(_band(v, iv, lambda x: x <= limit), f"{what} = {v:.4g}{_ivtext(iv)} must be <= {limit:.4g}",
                   interval=iv)


def at_least(value: float, limit: float, what: str, interval=None) -> Verdict:
    v, iv = _num(value, what), _iv(interval, what)
    return Verdict(_band(v, iv, lambda x: x >= limit), f"{what} = {v:.4g}{_ivtext(iv)} must be >= {limit:.4g}",
                   interval=iv)


def within(value: float, lo: float, hi: float, what: str, interval=None) -> Verdict:
    """``lo <= value <= hi``.  With an interval: holds when it lies inside, fails when it lies wholly on one
    side of the band (or wholly around it), inconclusive when it crosses an edge."""
    v, iv = _num(value, what), _iv(interval, what)
    inside = lambda x: lo <= x <= hi  # noqa: E731
    status = _band(v, iv, inside)
    if status == FAILS and iv is not None and iv[0] < lo and iv[1] > hi:
        status = INCONCLUSIVE  # an interval wider than the band straddles both edges
    return Verdict(status, f"{what} = {v:.4g}{_ivtext(iv)} must lie in [{lo:.4g}, {hi:.4g}]", interval=iv)


def close_to(value: float, target: float, rel_tol: float, what: str) -> Verdict:
    v = _num(value, what)
    err = abs(v - target) / abs(target)
    return Verdict(HOLDS if err <= rel_tol else FAILS,
                   f"{what} = {v:.4g} must be within {rel_tol:.1%} of {target:.4g} (off by {err:.2%})")


# one tolerance for every byte-accounting claim (C21, C33): a quoted size or ratio is met when ours is within 10%
SIZE_TOLERANCE = 0.10


def combine_status(statuses) -> str:
    """A conjunction's status: invalid if any part's run is invalid; does not hold if any decided part fails;
    holds if every part holds; else inconclusive if any part is; else not measurable."""
    s = list(statuses)
    if not s:
        raise ValueError("combine needs at least one status")
    for st in (ERROR, INVALID, FAILS):
        if st in s:
            return st
    if all(x == HOLDS for x in s):
        return HOLDS
    if INCONCLUSIVE in s:
        return INCONCLUSIVE
    if NOT_MEASURABLE in s:
        return NOT_MEASURABLE
    return PENDING


def all_of(*verdicts: Verdict) -> Verdict:
    """Every verdict must hold (one part of a claim, several conditions): ``combine_status`` of them."""
    if not verdicts:
        raise ValueError("all_of needs at least one verdict")
    iv = verdicts[0].interval if len(verdicts) == 1 else None
    return Verdict(combine_status(v.status for v in verdicts), " AND ".join(v.rule for v in verdicts), interval=iv)


def parts(_judged: tuple | None = None, **named: Verdict) -> Verdict:
    """A compound claim split into named parts (``size=..., quality=...``), each keeping its own verdict; the
    row's status is ``combine_status`` of the parts named in ``_judged`` (default: all), and the rule lists each
    part with its label (a part left out of ``_judged`` is context, marked so)."""
    if not named:
        raise ValueError("parts needs at least one named verdict")
    for n, v in named.items():
        if not isinstance(v, Verdict):
            raise TypeError(f"part {n!r} is a {type(v).__name__}, not a Verdict")
    judged = tuple(named) if _judged is None else tuple(_judged)
    if not judged or not set(judged) <= set(named):
        raise ValueError(f"_judged={judged} must name some of the parts {list(named)}")
    rule = "; ".join(f"[{n}{'' if n in judged else ' (context, not judged)'}: {v.label}] {v.rule}"
                     for n, v in named.items())
    return Verdict(combine_status(named[n].status for n in judged), rule, tuple(named.items()))


def not_measurable(reason: str) -> Verdict:
    if not reason.strip():
        raise ValueError("not_measurable needs a reason")
    return Verdict(NOT_MEASURABLE, reason)


def invalid(check: str) -> Verdict:
    """The run failed a sanity check (named in ``check``): it measured nothing about the claim."""
    if not check.strip():
        raise ValueError("invalid needs the sanity check that failed")
    return Verdict(INVALID, check)


def inconclusive(reason: str) -> Verdict:
    if not reason.strip():
        raise ValueError("inconclusive needs a reason")
    return Verdict(INCONCLUSIVE, reason)


def pending(issue: int) -> Verdict:
    return Verdict(PENDING, f"the experiment is owned by issue {issue} and not registered yet")
