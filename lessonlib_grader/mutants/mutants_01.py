"""Wrong answers a student might hand in for notebook 01's exercise (each must score 0)."""
from __future__ import annotations

import torch

from . import mutant


def _groups(w, scheme, clip_ratio):
    """The given part of the stub: (rows, G, g) groups and the clip ratio."""
    out_f, in_f = w.shape
    G = scheme.n_groups(in_f)
    wg = w.float().reshape(1, 1, -1) if scheme.group_size == 0 else w.float().reshape(out_f, G, in_f // G)
    r = clip_ratio.float().expand(wg.shape[:2]) if isinstance(clip_ratio, torch.Tensor) else float(clip_ratio)
    return wg, r


def _finish(wg, r, scheme, levels=None, sym_den=None, round_zero=False, zero_shift=0.0, use_clip=True):
    absmax = wg.abs().amax(dim=-1) * (r if use_clip else 1.0)
    if scheme.sym:
        scales = absmax / (scheme.qmax if sym_den is None else sym_den)
        scales = torch.where(scales > 0, scales, torch.ones_like(scales))
        return scales, torch.zeros_like(scales)
    wmax = torch.minimum(wg.amax(dim=-1), absmax)
    wmin = torch.maximum(wg.amin(dim=-1), -absmax)
    scales = (wmax - wmin) / (scheme.qmax if levels is None else levels)
    scales = torch.where(scales <= 0, torch.ones_like(scales), scales)
    zeros = -wmin / scales + zero_shift
    return scales, torch.round(zeros) if round_zero else zeros


# ------------------------------------------------------------------ q01_1 compute_qparams
@mutant("q01_1", "zero point off by one (z = -min / s + 1)")
def zero_off_by_one(w, scheme, clip_ratio=1.0):
    wg, r = _groups(w, scheme, clip_ratio)
    return _finish(wg, r, scheme, zero_shift=1.0)


@mutant("q01_1", "2^b levels as the number of steps: s = (max - min) / 2^b")
def two_pow_b_levels(w, scheme, clip_ratio=1.0):
    wg, r = _groups(w, scheme, clip_ratio)
    return _finish(wg, r, scheme, levels=2 ** scheme.bits)


@mutant("q01_1", "one range per row (per layer) instead of per group, repeated for every group")
def per_row_range(w, scheme, clip_ratio=1.0):
    wg, r = _groups(w, scheme, clip_ratio)
    rows, G, g = wg.shape
    whole = wg.reshape(rows, 1, G * g).expand(rows, G, G * g)  # every group sees the whole row
    return _finish(whole, r, scheme)


@mutant("q01_1", "symmetric scale divides by 2^(b-1) instead of 2^(b-1) - 1")
def sym_wrong_denominator(w, scheme, clip_ratio=1.0):
    wg, r = _groups(w, scheme, clip_ratio)
    return _finish(wg, r, scheme, sym_den=2 ** (scheme.bits - 1))


@mutant("q01_1", "rounds the zero point to an integer (GPTQ's convention, not this course's)")
def rounded_zero(w, scheme, clip_ratio=1.0):
    wg, r = _groups(w, scheme, clip_ratio)
    return _finish(wg, r, scheme, round_zero=True)


@mutant("q01_1", "ignores the clip ratio")
def ignores_clip(w, scheme, clip_ratio=1.0):
    wg, r = _groups(w, scheme, clip_ratio)
    return _finish(wg, r, scheme, use_clip=False)


@mutant("q01_1", "symmetric without guarding an all-zero group (scale 0, division by zero later)")
def zero_scale(w, scheme, clip_ratio=1.0):
    wg, r = _groups(w, scheme, clip_ratio)
    if not scheme.sym:
        return _finish(wg, r, scheme)
    scales = wg.abs().amax(dim=-1) * r / scheme.qmax
    return scales, torch.zeros_like(scales)


@mutant("q01_1", "asymmetric zero point with the wrong sign (z = min / s)")
def zero_wrong_sign(w, scheme, clip_ratio=1.0):
    wg, r = _groups(w, scheme, clip_ratio)
    s, z = _finish(wg, r, scheme)
    return s, -z


@mutant("q01_2", "concept answer: one bit's factor only")
def concept_q01_2_0():
    return 4.0


@mutant("q01_2", "concept answer: error norm halves per bit, squared forgotten")
def concept_q01_2_1():
    return 2.0


@mutant("q01_2", "concept answer: three bits' worth")
def concept_q01_2_2():
    return 64.0
