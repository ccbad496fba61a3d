"""Wrong answers a student might hand in for notebook 16's exercise (each must score 0)."""
from __future__ import annotations

import torch

from . import mutant


def _keep_top(scores: torch.Tensor, n_keep: int) -> torch.Tensor:
    keep = torch.zeros(scores.numel(), dtype=torch.bool)
    keep[torch.argsort(scores.reshape(-1), descending=True, stable=True)[:max(n_keep, 0)]] = True
    return keep.reshape(scores.shape)


def _round(trained, masks, rewind, rate, output_layer, *, scores_fn=None, count_fn=None, rewind_to_trained=False,
           half_output=True, apply_mask=True, respect_mask=True):
    new_masks, new_weights = {}, {}
    for name, w in trained.items():
        r = rate / 2 if (half_output and name == output_layer) else rate
        alive = masks[name]
        s = scores_fn(w) if scores_fn else w.abs()
        s = torch.where(alive, s, torch.full_like(s, -1e30)) if respect_mask else s
        remaining = int(alive.sum())
        n_prune = count_fn(r, remaining, w.numel()) if count_fn else round(r * remaining)
        m = _keep_top(s, remaining - n_prune)
        new_masks[name] = m
        src = trained[name] if rewind_to_trained else rewind[name]
        new_weights[name] = src * m if apply_mask else src.clone()
    return new_masks, new_weights


@mutant("q16_1", "prunes the output layer at the full rate (ignores output_layer)")
def full_rate_output(trained, masks, rewind, rate, output_layer=None):
    return _round(trained, masks, rewind, rate, output_layer, half_output=False)


@mutant("q16_1", "forgets to rewind: keeps the trained values of the survivors")
def no_rewind(trained, masks, rewind, rate, output_layer=None):
    return _round(trained, masks, rewind, rate, output_layer, rewind_to_trained=True)


@mutant("q16_1", "prunes rate of *all* weights each round instead of rate of the remaining ones")
def rate_of_all(trained, masks, rewind, rate, output_layer=None):
    return _round(trained, masks, rewind, rate, output_layer, count_fn=lambda r, rem, n: round(r * n))


@mutant("q16_1", "prunes the largest magnitudes instead of the smallest")
def prunes_largest(trained, masks, rewind, rate, output_layer=None):
    return _round(trained, masks, rewind, rate, output_layer, scores_fn=lambda w: -w.abs())


@mutant("q16_1", "ranks by signed value, not magnitude (prunes the most negative weights)")
def signed_scores(trained, masks, rewind, rate, output_layer=None):
    return _round(trained, masks, rewind, rate, output_layer, scores_fn=lambda w: w.clone())


@mutant("q16_1", "rewinds every weight, forgetting to zero the pruned ones")
def unmasked_rewind(trained, masks, rewind, rate, output_layer=None):
    return _round(trained, masks, rewind, rate, output_layer, apply_mask=False)


@mutant("q16_1", "ignores the old mask: ranks all weights, so a pruned position can come back")
def ignores_old_mask(trained, masks, rewind, rate, output_layer=None):
    return _round(trained, masks, rewind, rate, output_layer, respect_mask=False)


@mutant("q16_1", "one global magnitude threshold across all layers instead of one per layer")
def global_threshold(trained, masks, rewind, rate, output_layer=None):
    names = list(trained)
    scores = torch.cat([torch.where(masks[n], trained[n].abs(), torch.full_like(trained[n], -1e30)).reshape(-1)
                        for n in names])
    remaining = sum(int(masks[n].sum()) for n in names)
    keep = _keep_top(scores, remaining - round(rate * remaining))
    new_masks, new_weights, start = {}, {}, 0
    for n in names:
        k = trained[n].numel()
        new_masks[n] = keep[start:start + k].reshape(trained[n].shape)
        new_weights[n] = rewind[n] * new_masks[n]
        start += k
    return new_masks, new_weights


@mutant('q16_2', 'subtracts 5 x 20%: nothing left')
def concept_q16_2_0():
    return 0.0


@mutant('q16_2', 'keeps 80% once')
def concept_q16_2_1():
    return 0.8


@mutant('q16_2', 'keeps 20% in each round')
def concept_q16_2_2():
    return 0.2 ** 5
