"""Float checks that hold on every CPU (Intel, AMD, ARM; any BLAS kernel, any thread count) and still catch bugs.

Two code paths that compute the same thing in float32 (a lazy-batched kernel and a one-column reference, a
batched and an unbatched loop, packed and fake-quant weights) agree to a few ulps, except where a value sits
on a rounding boundary: there, a one-ulp difference in the value rounds to the neighbouring grid point. Such a
tie is legitimate; a wrong algorithm, in contrast, moves many values far from any tie. So:

- ``near_tie(v)``: where a pre-rounding value ``v`` (in grid steps) lies within ``ulps`` float32 ulps, relative to
  the magnitude of the terms that made it, of a boundary ``k + 1/2``;
- ``guided_round(v, hint)``: a reference rounds ``v``, but where ``v`` is near a tie it follows ``hint`` (the
  implementation's code) if that is one of the two neighbours, so one legitimate tie does not make every later
  column (which depends on it, as in GPTQ's error propagation) diverge; returns how many ties it followed;
- ``assert_codes_agree(codes, v)``: integer codes equal ``round(v)`` except at near-ties, where they differ by
  exactly one step, and such ties are rare (``max_ties``);
- ``assert_objective_close(a, b)``: a layer objective (e.g. ``||(W - Q) X||^2``) agrees to a tight relative tolerance.

Run a test file under another kernel family to see these at work, e.g. MKL's AVX2 path (what AMD gets) with
``MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2``.
"""
from __future__ import annotations

import torch

EPS32 = torch.finfo(torch.float32).eps
# float32 error of a pre-rounding value after a long float32 computation (e.g. GPTQ's error propagation over
# hundreds of columns) is a few hundred ulps of its magnitude; a wrong algorithm moves values by O(grid step).
DEFAULT_ULPS = 512


def near_tie(v: torch.Tensor, ulps: float = DEFAULT_ULPS, scale: torch.Tensor | float | None = None) -> torch.Tensor:
    """Bool mask: ``v`` (grid steps, any float dtype) within ``ulps * eps32 * max(scale, 1)`` of ``k + 1/2``.

    ``scale`` is the magnitude of the terms ``v`` was computed from (default ``|v|``), e.g. ``|w/s| + |z|``."""
    v = v.double()
    mag = v.abs() if scale is None else torch.as_tensor(scale, dtype=torch.float64).abs()
    dist = (v - torch.floor(v) - 0.5).abs()  # (any shape) distance to the nearest rounding boundary
    return dist <= ulps * EPS32 * mag.clamp_min(1.0)


def guided_round(v: torch.Tensor, hint: torch.Tensor | None, ulps: float = DEFAULT_ULPS,
                 scale: torch.Tensor | float | None = None) -> tuple[torch.Tensor, int]:
    """``round(v)``; at near-ties take ``hint`` (codes, same shape) when it is ``floor(v)`` or ``floor(v) + 1``.

    Returns the rounded tensor (dtype of ``v``) and the number of entries where following the hint changed it."""
    r = torch.round(v)
    if hint is None:
        return r, 0
    h = hint.to(v.dtype)
    lo = torch.floor(v)
    ok = near_tie(v, ulps, scale) & ((h == lo) | (h == lo + 1))
    out = torch.where(ok, h, r)
    return out, int((out != r).sum())


def assert_codes_agree(codes: torch.Tensor, v: torch.Tensor, qmin: float | None = None, qmax: float | None = None,
                       ulps: float = DEFAULT_ULPS, scale: torch.Tensor | float | None = None,
                       max_ties: float = 0.005) -> int:
    """``codes`` equal ``clamp(round(v))`` except where ``v`` is near a tie (then off by exactly one step).

    ``max_ties``: the largest allowed fraction of entries that differ (a handful per thousand at most; a wrong
    algorithm differs at a large fraction). Returns the number of differing entries."""
    ref = torch.round(v.double())
    if qmin is not None or qmax is not None:
        ref = ref.clamp(qmin, qmax)
    diff = (codes.double() - ref).abs()
    bad = diff != 0
    n = int(bad.sum())
    if n == 0:
        return 0
    tie = near_tie(v, ulps, scale)
    illegal = bad & ~(tie & (diff == 1))
    assert not illegal.any(), (f"{int(illegal.sum())} of {codes.numel()} codes differ from the reference away from "
                               f"a rounding tie, e.g. at {torch.nonzero(illegal)[:5].tolist()} "
                               f"(code {codes[illegal][:5].tolist()} vs reference value {v[illegal][:5].tolist()})")
    assert n <= max(1, max_ties * codes.numel()), f"{n} of {codes.numel()} codes sit on ties: too many to be chance"
    return n


def assert_objective_close(actual: float | torch.Tensor, expected: float | torch.Tensor, rtol: float = 1e-4) -> None:
    """A scalar objective (layer error, loss) agrees to ``rtol`` relative: survives ties, catches wrong algorithms."""
    a, e = float(actual), float(expected)
    assert abs(a - e) <= rtol * max(abs(e), 1e-30), f"objective {a!r} vs reference {e!r} (rtol {rtol})"
