"""Graded exercise of notebook 16 (lottery tickets): one round of iterative magnitude pruning with rewinding.

Every expected value below is computed by hand in the comment beside it; none comes from the reference.
"""
from __future__ import annotations

import random

import torch

from .checks import Check, CheckFailure, assert_close, call, prop
from .registry import Exercise


def _kind(kind: str):
    """Re-label a check written with ``prop`` as a hand-computed literal or a comparison with the reference."""
    return lambda c: Check(c.name, kind, c.run)


NOTEBOOK = "16_lottery_tickets"

T = torch.tensor
_TRAINED = {"fc1": T([[0.9, -0.1, 0.4, -0.7], [0.2, 0.8, -0.3, 0.05]]),  # (2, 4)
            "fc2": T([[0.3, -0.6, 0.1, 0.9]])}  # (1, 4), the output layer
_THETA0 = {"fc1": T([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]), "fc2": T([[-1.0, -2.0, -3.0, -4.0]])}
_ALL = {n: torch.ones_like(w, dtype=torch.bool) for n, w in _TRAINED.items()}


def _unpack(got, what: str) -> tuple[dict, dict]:
    if not isinstance(got, tuple) or len(got) != 2 or not all(isinstance(d, dict) for d in got):
        raise CheckFailure(f"{what}\n  expected a tuple (new_masks, new_weights) of two dicts, "
                           f"got {type(got).__name__}")
    return got


def _assert_round(got, masks: dict, weights: dict, what: str) -> None:
    """``got`` = (new_masks, new_weights) equals the hand-computed masks (bool) and weights."""
    new_masks, new_weights = _unpack(got, what)
    for label, d, want in (("new_masks", new_masks, masks), ("new_weights", new_weights, weights)):
        if set(d) != set(want):
            raise CheckFailure(f"{what}\n  {label} has layers {sorted(d)}, expected {sorted(want)}")
    for n, m in new_masks.items():
        if not isinstance(m, torch.Tensor) or m.dtype != torch.bool:
            raise CheckFailure(f"{what}\n  new_masks[{n!r}] must be a bool tensor (True = keep), got "
                               f"{getattr(m, 'dtype', type(m).__name__)}")
        assert_close(m.to(torch.int64), masks[n].to(torch.int64), what=f"{what}: new_masks[{n!r}] (1 = keep)")
    for n, w in new_weights.items():
        assert_close(w, weights[n], what=f"{what}: new_weights[{n!r}]")


@_kind("literal")
@prop("first round: fc1 loses 4 of 8 weights, the output layer fc2 loses 1 of 4 (half rate), survivors rewound")
def _first_round(fn, ref):
    got = call(fn, _TRAINED, _ALL, _THETA0, 0.5, "fc2", _ref=ref)
    # fc1: round(0.5 * 8) = 4 smallest |w| are 0.05, 0.1, 0.2, 0.3 -> keep 0.9, 0.4, -0.7 (row 0) and 0.8 (row 1)
    # fc2: rate 0.25, round(0.25 * 4) = 1 smallest |w| is 0.1 -> keep the others
    masks = {"fc1": T([[True, False, True, True], [False, True, False, False]]), "fc2": T([[True, True, False, True]])}
    weights = {"fc1": T([[1.0, 0.0, 3.0, 4.0], [0.0, 6.0, 0.0, 0.0]]), "fc2": T([[-1.0, -2.0, 0.0, -4.0]])}
    _assert_round(got, masks, weights, "imp_round(trained, all-True masks, theta_0, rate=0.5, output_layer='fc2')")


@_kind("literal")
@prop("without output_layer every layer is pruned at the full rate")
def _no_output_layer(fn, ref):
    got = call(fn, _TRAINED, _ALL, _THETA0, 0.5, None, _ref=ref)
    # fc2 now also loses round(0.5 * 4) = 2: |w| 0.1 and 0.3
    masks = {"fc1": T([[True, False, True, True], [False, True, False, False]]), "fc2": T([[False, True, False, True]])}
    weights = {"fc1": T([[1.0, 0.0, 3.0, 4.0], [0.0, 6.0, 0.0, 0.0]]), "fc2": T([[0.0, -2.0, 0.0, -4.0]])}
    _assert_round(got, masks, weights, "imp_round(trained, all-True masks, theta_0, rate=0.5, output_layer=None)")


@_kind("literal")
@prop("a later round prunes a fraction of the *remaining* weights and never revives a pruned one")
def _second_round(fn, ref):
    # fc1 already lost the four 0-valued positions; its 4 survivors have |w| 0.9, 0.4, 0.7, 0.8
    trained = {"fc1": T([[0.9, 0.0, 0.4, -0.7], [0.0, 0.8, 0.0, 0.0]]), "fc2": T([[0.3, -0.6, 0.0, 0.9]])}
    masks = {"fc1": trained["fc1"] != 0, "fc2": trained["fc2"] != 0}
    theta_k = {"fc1": T([[0.5, 0.5, -0.5, 0.5], [0.5, -0.5, 0.5, 0.5]]), "fc2": T([[2.0, 2.0, 2.0, 2.0]])}
    got = call(fn, trained, masks, theta_k, 0.5, "fc2", _ref=ref)
    # fc1: round(0.5 * 4) = 2 more go (0.4 and 0.7) -> keep 0.9 and 0.8; fc2: round(0.25 * 3) = 1 goes (0.3)
    want_m = {"fc1": T([[True, False, False, False], [False, True, False, False]]),
              "fc2": T([[False, True, False, True]])}
    want_w = {"fc1": T([[0.5, 0.0, 0.0, 0.0], [0.0, -0.5, 0.0, 0.0]]), "fc2": T([[0.0, 2.0, 0.0, 2.0]])}
    _assert_round(got, want_m, want_w, "imp_round(round-2 weights, round-1 masks, theta_k, rate=0.5, 'fc2')")


@prop("a weight that is already pruned stays pruned even if its trained value is large")
def _subset(fn, ref):
    trained = {"fc1": T([[5.0, 0.2, 0.3, 0.4]])}  # position 0 is pruned but holds a large value
    masks = {"fc1": T([[False, True, True, True]])}
    got = call(fn, trained, masks, {"fc1": T([[1.0, 1.0, 1.0, 1.0]])}, 0.34, None, _ref=ref)
    # round(0.34 * 3) = 1 of the 3 survivors goes: |w| 0.2
    _assert_round(got, {"fc1": T([[False, False, True, True]])}, {"fc1": T([[0.0, 0.0, 1.0, 1.0]])},
                  "imp_round with an already-pruned position holding 5.0, rate=0.34")


@prop("layers are pruned separately: a layer of large weights loses the same fraction as one of small weights")
def _per_layer(fn, ref):
    trained = {"big": T([[10.0, 20.0, 30.0, 40.0]]), "small": T([[0.01, 0.02, 0.03, 0.04]])}
    ones = {n: torch.ones(1, 4, dtype=torch.bool) for n in trained}
    got = call(fn, trained, ones, {n: torch.ones(1, 4) for n in trained}, 0.5, None, _ref=ref)
    # each layer loses its own two smallest: a global threshold would empty "small" instead
    m = T([[False, False, True, True]])
    _assert_round(got, {"big": m, "small": m}, {"big": m.float(), "small": m.float()},
                  "imp_round on a large-valued and a small-valued layer, rate=0.5")


def _case(seed: int):
    gen, rng = torch.Generator().manual_seed(seed), random.Random(seed)
    names = ["fc1", "fc2", "fc3"]
    shapes = [(rng.randint(3, 9), rng.randint(3, 9)) for _ in names]
    trained = {n: torch.randn(*s, generator=gen) for n, s in zip(names, shapes)}
    masks = {n: torch.rand(*s, generator=gen) > rng.choice([0.0, 0.3, 0.6]) for n, s in zip(names, shapes)}
    trained = {n: w * masks[n] for n, w in trained.items()}  # training keeps pruned weights at zero
    rewind = {n: torch.randn(*s, generator=gen) for n, s in zip(names, shapes)}
    rate = rng.choice([0.24, 0.4, 0.8])  # round(rate * n) never hits a .5 tie, nor does round(rate / 2 * n)
    return trained, masks, rewind, rate, rng.choice([None, "fc3"])


@_kind("reference")
@prop("matches the reference on random layers, masks and rates")
def _random(fn, ref):
    for seed in range(8):
        args = _case(seed)
        want = ref(*args)
        got = call(fn, *args, _ref=ref)
        _assert_round(got, want[0], want[1], f"random case {seed + 1}/8 (rate={args[3]}, output_layer={args[4]!r})")


Q16_1 = Exercise(
    id="q16_1", points=5, notebook=NOTEBOOK, reference="lessonlib.lottery.imp:imp_round",
    statement="One round of iterative magnitude pruning with rewinding (Frankle & Carbin, steps 3-4). For each "
              "layer, prune round(rate * remaining) of the weights still alive in `masks` by the magnitude of "
              "the `trained` weights (the layer named output_layer at rate / 2), then reset the survivors to "
              "their `rewind` values. Return (new_masks, new_weights): bool masks (True = keep) and "
              "new_weights = rewind * new_mask, both dicts keyed like the inputs.",
    hints=("Each layer is ranked on its own, not against the other layers.",
           "Only the weights still alive compete; layer_prune_mask(w, mask, rate) does one layer.",
           "Rewinding uses the rewind values, not the trained ones: rewind[name] * new_mask."),
    checks=(_first_round, _no_output_layer, _second_round, _subset, _per_layer, _random),
)

from .checks import literal  # noqa: E402
from .concept import answer_function_checks  # noqa: E402  (concept questions)

Q16_2 = Exercise(
    id='q16_2', points=2, notebook=NOTEBOOK, reference="lessonlib.concepts:imp_fraction_left",
    statement='Concept question (a number). Iterative magnitude pruning removes 20% of the remaining weights in each round (ignore the output layer). What fraction of the weights is left after 5 rounds?',
    hints=('Each round keeps 80% of what the previous round kept.',),
    checks=(literal("the number", (), expected=0.32768, rtol=1e-6), *answer_function_checks("number")),
)

EXERCISES = [Q16_1, Q16_2]
