"""Planted wrong answers of the classes issue 18 found scoring full marks, one or more per class.

* in-place changes to a non-tensor argument (a dict of masks, a list of tensors);
* tie-breaking ignored where the contract fixes the tie order;
* a sort that is stable only by accident (small groups stable, larger ones not);
* clamp floors at the wrong value / missing, and tolerance boundaries with the wrong inequality;
* the wrong dtype where the statement fixes it.

Every one must score less than full marks (``lessonlib exercises mutants``).
"""
from __future__ import annotations

import torch

from . import mutant

_TOL = 1e-4


def _imp_masks(trained, masks, rate, output_layer):
    from lessonlib.prune.masks import prune_lowest_count

    new = {}
    for name, w in trained.items():
        r = rate / 2 if name == output_layer else rate
        mask = masks[name]
        remaining = int(mask.sum())
        scores = torch.where(mask, w.detach().abs(), torch.full_like(w, -1.0))
        new[name] = prune_lowest_count(scores, mask.numel() - remaining + round(r * remaining))
    return new


# ------------------------------------------------------------------ in-place changes to containers
@mutant("q16_1", "[in-place] writes the new masks into the caller's masks dict (the rewinding run then "
                 "sees pruned masks)")
def imp_round_mutates_masks_dict(trained, masks, rewind, rate, output_layer=None):
    new = _imp_masks(trained, masks, rate, output_layer)
    masks.update(new)  # the caller's dict now holds this round's masks
    return dict(new), {k: rewind[k] * new[k] for k in new}


@mutant("q16_1", "[in-place] zeroes the pruned weights of the caller's rewind tensors inside the dict")
def imp_round_mutates_rewind(trained, masks, rewind, rate, output_layer=None):
    new = _imp_masks(trained, masks, rate, output_layer)
    for k in new:
        rewind[k].mul_(new[k])
    return new, {k: rewind[k].clone() for k in new}


@mutant("q10_1", "[in-place] shrinks the caller's list of input weights in place")
def shrink_mutates_list(w_in, b_in, w_out, keep):
    idx = torch.as_tensor(keep, dtype=torch.long)
    for i in range(len(w_in)):
        w_in[i] = w_in[i][idx]
    return [w.clone() for w in w_in], [None if b is None else b[idx] for b in b_in], w_out[:, idx]


# ------------------------------------------------------------------ ties and accidental stability
@mutant("q06_1", "[ties] sorts without stable=True: ties are broken however the sort likes")
def nm_mask_unstable(scores, keep_n, group_m):
    out, inp = scores.shape
    groups = scores.reshape(out, inp // group_m, group_m)
    lowest = torch.sort(groups, dim=-1, descending=False, stable=False).indices[..., :group_m - keep_n]
    mask = torch.ones_like(groups, dtype=torch.bool)
    mask.scatter_(-1, lowest, False)
    return mask.reshape(out, inp)


@mutant("q06_1", "[ties] prunes the rightmost of tied scores (topk of the negated scores)")
def nm_mask_ties_right(scores, keep_n, group_m):
    out, inp = scores.shape
    groups = scores.reshape(out, inp // group_m, group_m)
    rev = torch.flip(groups, dims=[-1])
    lowest = group_m - 1 - torch.argsort(rev, dim=-1, stable=True)[..., :group_m - keep_n]
    mask = torch.ones_like(groups, dtype=torch.bool)
    mask.scatter_(-1, lowest, False)
    return mask.reshape(out, inp)


# ------------------------------------------------------------------ clamp floors and tolerances
@mutant("q02_1", "[clamp] clamps the maxima at 1e-8 instead of 1e-5")
def smooth_scales_floor_1e8(act_absmax, weight, alpha=0.5):
    w_max = weight.detach().abs().float().amax(dim=0).clamp(min=1e-8)
    a_max = act_absmax.float().clamp(min=1e-8)
    return (a_max.pow(alpha) / w_max.pow(1 - alpha)).clamp(min=1e-5)


@mutant("q04_1", "[clamp] clamps at 1e-5 instead of 1e-4")
def awq_scales_floor_1e5(act_mean_abs, alpha):
    s = act_mean_abs.float().pow(alpha).clamp(min=1e-5)
    return s / (s.max() * s.min()).sqrt()


@mutant("q05_1", "[tolerance] tolerance of 1e-3 grid steps instead of 1e-4")
def ste_tol_1e3(x, scales, zeros, qmin, qmax):
    u = x / scales + zeros
    inside = (u >= qmin - 1e-3) & (u <= qmax + 1e-3)
    return (torch.round(u).clamp(qmin, qmax) - zeros) * scales, inside


@mutant("q05_1", "[tolerance] no tolerance at all: round-off just past the end loses its gradient")
def ste_no_tol(x, scales, zeros, qmin, qmax):
    u = x / scales + zeros
    inside = (u >= qmin) & (u <= qmax)
    return (torch.round(u).clamp(qmin, qmax) - zeros) * scales, inside


# ------------------------------------------------------------------ dtype
@mutant("q04_1", "[dtype] computes and returns float64 scales for float32 statistics")
def awq_scales_float64(act_mean_abs, alpha):
    s = act_mean_abs.double().pow(alpha).clamp(min=1e-4)
    return s / (s.max() * s.min()).sqrt()


@mutant("q02_1", "[dtype] returns the scales in the activation's dtype (float16 stays float16)")
def smooth_scales_input_dtype(act_absmax, weight, alpha=0.5):
    w_max = weight.detach().abs().float().amax(dim=0).clamp(min=1e-5)
    a_max = act_absmax.float().clamp(min=1e-5)
    return (a_max.pow(alpha) / w_max.pow(1 - alpha)).clamp(min=1e-5).to(act_absmax.dtype)
