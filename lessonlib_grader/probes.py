"""Probes the grader adds to exercises: inputs aimed at the wrong-answer classes of issue 18.

The chapter specs (``specs_NN``) say what each question must do; these probes add inputs that the holes
of a class slip through, so that a near-miss of that class loses points:

* ties where the contract fixes the tie order, in groups large enough that an unstable sort shows
  (``torch.sort`` is stable by accident on groups of up to 16 on CPU);
* values just inside and just outside a clamp floor or a tolerance boundary;
* half-precision inputs where the statement fixes the output dtype.

Each probe compares with the reference on fixed inputs (the expected values are computed by the grader
from the reference; nothing here is a literal answer) and exactness of dtype is enforced by
:func:`~lessonlib_grader.checks.assert_close`.  A probe attaches to an exercise only while the exercise
still grades the function it was written for (``function``): a rewritten spec that renames its question
simply loses the probe (``registry`` drops it), it never breaks.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from .checks import Check, CheckFailure, assert_close, call, describe, describe_call

__all__ = ["PROBES", "probe", "extra_checks"]


def probe(name: str, cases: Callable[[], list[tuple[tuple, dict]]], *, rtol: float = 1e-5, atol: float = 1e-6,
          pick: Callable[[Any], Any] | None = None) -> Check:
    """The student's output equals the reference's on each fixed case (``pick`` selects part of a result)."""

    def run(fn: Callable, ref: Callable) -> None:
        for args, kwargs in cases():
            want = ref(*args, **kwargs)
            got = call(fn, *args, _ref=ref, **kwargs)
            shown = describe_call(getattr(ref, "__name__", "function"), None, args, kwargs)
            if pick is not None:
                want, got = pick(want), pick(got) if isinstance(got, tuple) else got
            if isinstance(want, tuple):
                if not isinstance(got, tuple) or len(got) != len(want):
                    raise CheckFailure(f"{name}: {shown}\n  expected a tuple of {len(want)}, got {describe(got)}")
                for i, (g, w) in enumerate(zip(got, want)):
                    assert_close(g, w, what=f"{name}: {shown}, result [{i}]", rtol=rtol, atol=atol)
            else:
                assert_close(got, want, what=f"{name}: {shown}", rtol=rtol, atol=atol)

    return Check(f"[probe] {name}", "reference", run)


def _ties_big_groups() -> list[tuple[tuple, dict]]:
    g = torch.Generator().manual_seed(11)
    return [((torch.randint(0, 3, (4, 128), generator=g).float(), 16, 32), {}),
            ((torch.randint(0, 2, (2, 128), generator=g).float(), 32, 64), {}),
            ((torch.ones(1, 64), 48, 64), {})]


def _smooth_floor() -> list[tuple[tuple, dict]]:
    # channel 0: activation and weight maxima 1e-7 and 3e-6 (below the 1e-5 floor); channel 1 normal
    a = torch.tensor([1e-7, 3e-6, 4.0])
    w = torch.tensor([[1e-7, 2e-6, 1.0], [-5e-8, 1e-6, -2.0]])
    return [((a, w, 0.5), {}), ((a, w, 0.8), {}),
            ((torch.tensor([2.0, 0.5, 8.0], dtype=torch.float16), torch.randn(3, 3), 0.5), {})]


def _awq_floor() -> list[tuple[tuple, dict]]:
    return [((torch.tensor([0.0, 3e-9, 1e-9, 2.0]), 0.5), {}), ((torch.tensor([5e-9, 1.0, 4.0]), 1.0), {}),
            ((torch.tensor([0.5, 1.0, 4.0], dtype=torch.float16), 0.5), {})]


def _ste_tolerance() -> list[tuple[tuple, dict]]:
    s, z = torch.tensor(1.0), torch.tensor(1.0)
    x = torch.tensor([2.0005, 2.00005, -1.0005, -1.00005, 2.002, -1.002])  # u = x + 1 around 0 and 3
    return [((x, s, z, 0, 3), {})]


PROBES: dict[str, tuple[str, tuple[Check, ...]]] = {
    "q06_1": ("nm_mask", (probe("ties in groups of 32 and 64 (an unstable sort shows here)", _ties_big_groups),)),
    "q07_1": ("wanda_mask", ()),
    "q02_1": ("smooth_scales", (probe("maxima below the 1e-5 floor, and float16 statistics (float32 out)",
                                      _smooth_floor, rtol=1e-4),)),
    "q04_1": ("awq_scales", (probe("statistics below the 1e-4 floor, and float16 statistics (float32 out)",
                                   _awq_floor, rtol=1e-4),)),
    "q05_1": ("ste_forward", (probe("values 5e-4 and 5e-5 grid steps past each end (tolerance 1e-4)",
                                    _ste_tolerance),)),
}


def extra_checks(exercise_id: str, function: str) -> tuple[Check, ...]:
    """The probes for ``exercise_id`` while it still grades ``function`` (else none)."""
    fn, checks = PROBES.get(exercise_id, ("", ()))
    return checks if fn == function else ()
