"""Wrong answers a student might hand in for notebook 24's exercise (each must score 0)."""
from __future__ import annotations

import torch

from . import mutant

_LV = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])


def _mx(w, fmt, *, scale=None, emax=None, block=32, rnd="nearest", sign=True, rows=True):
    w = w.float()
    if not rows:
        w = w.t().contiguous()
    o, i = w.shape
    b = w.reshape(o, i // block, block)
    amax = b.abs().amax(-1)
    em = emax if emax is not None else (2 if fmt == "mxfp4" else 8)
    a1 = torch.where(amax > 0, amax, torch.ones_like(amax))
    if scale == "absmax":
        s = a1 / (6.0 if fmt == "mxfp4" else 448.0)
    else:
        e = (torch.ceil(torch.log2(a1)) if scale == "ceil" else torch.floor(torch.log2(a1))) - em
        s = torch.exp2(e.clamp(-127, 127))
    x = b / s.unsqueeze(-1)
    if fmt == "mxfp4":
        mag = x.abs().clamp(max=6.0)
        if rnd == "down":
            idx = torch.bucketize(mag, _LV, right=True) - 1
        else:
            idx = torch.bucketize(mag, (_LV[1:] + _LV[:-1]) / 2)
        el = (torch.sign(x) if sign else 1.0) * _LV[idx]
    else:
        el = x.clamp(-448.0, 448.0).to(torch.float8_e4m3fn).float()
    el = el.reshape(o, i)
    return (el.t().contiguous(), s.t().contiguous()) if not rows else (el, s)


@mutant("q24_1", "scale = absmax / max element (an INT-style scale, not a power of two)")
def absmax_scale(w, fmt="mxfp4"):
    return _mx(w, fmt, scale="absmax")


@mutant("q24_1", "rounds the exponent up (ceil instead of floor): every block loses precision")
def ceil_exponent(w, fmt="mxfp4"):
    return _mx(w, fmt, scale="ceil")


@mutant("q24_1", "uses emax = 2 for MXFP8 too (the FP4 exponent)")
def fp4_emax_everywhere(w, fmt="mxfp4"):
    return _mx(w, fmt, emax=2)


@mutant("q24_1", "rounds magnitudes down to the level below instead of to the nearest")
def round_down(w, fmt="mxfp4"):
    return _mx(w, fmt, rnd="down")


@mutant("q24_1", "drops the sign of the FP4 elements")
def no_sign(w, fmt="mxfp4"):
    return _mx(w, fmt, sign=False)


@mutant("q24_1", "blocks of 16 instead of 32")
def block16(w, fmt="mxfp4"):
    el, s = _mx(w, fmt, block=16)
    return el, s[:, ::2]


@mutant("q24_2", "counts the 8-bit absmax only (forgets the fp32 constants): 4.125")
def nf4_no_second_level():
    return 4 + 8 / 64


@mutant("q24_2", "keeps 16-bit absmaxes (no double quantization): 4.25")
def nf4_single_level():
    return 4 + 16 / 64


@mutant("q24_2", "fp32 absmaxes without double quantization (QLoRA's baseline): 4.5")
def nf4_fp32_absmax():
    return 4 + 32 / 64
