"""Graded exercise of notebook 15 (early exit): the per-token exit decision.

Every expected value below is worked out by hand in the comment beside it; none comes from the reference.
"""
from __future__ import annotations

import random

import torch

from .checks import CheckFailure, agrees_with_reference, assert_close, assert_tensor, call, literal, prop
from .registry import Exercise

NOTEBOOK = "15_early_exit"

# L = 3 exits (rows), N = 4 tokens (columns)
_CONF = torch.tensor([[0.20, 0.95, 0.50, 0.90],
                      [0.90, 0.97, 0.60, 0.30],
                      [0.10, 0.99, 0.70, 0.95]])


@prop("returns a (N,) integer tensor of block indices in 0..L-1")
def _q1_type(fn, ref):
    got = call(fn, _CONF, 0.8, _ref=ref)
    assert_tensor(got, what="exit_decision(conf (3, 4), 0.8)", shape=(4,))
    if got.dtype not in (torch.int64, torch.int32):
        raise CheckFailure(f"exit_decision(conf (3, 4), 0.8)\n  expected an integer (long) tensor of block indices, "
                           f"got dtype {got.dtype}")
    if int(got.min()) < 0 or int(got.max()) > 2:
        raise CheckFailure(f"exit_decision(conf (3, 4), 0.8) returned {got.tolist()}: indices must lie in 0..2")


@prop("raising the threshold never makes a token exit earlier")
def _q1_monotone(fn, ref):
    gen = torch.Generator().manual_seed(3)
    conf = torch.rand(6, 40, generator=gen)
    prev = None
    for thr in (0.0, 0.2, 0.4, 0.6, 0.8, 0.95, 1.5):
        got = call(fn, conf, thr, _ref=ref).long()
        if prev is not None and bool((got < prev).any()):
            i = int((got < prev).nonzero()[0])
            raise CheckFailure(f"exit_decision on random conf (6, 40): token {i} exits at block {int(prev[i])} with "
                               f"a lower threshold but at block {int(got[i])} with threshold {thr}")
        prev = got


@prop("only the confidences up to the exit matter: changing later blocks changes nothing for exited tokens")
def _q1_prefix(fn, ref):
    conf = _CONF.clone()
    a = call(fn, conf, 0.9, _ref=ref).long()  # token 0 exits at 1, token 1 at 0, token 3 at 0
    changed = conf.clone()
    changed[2] = 1.0 - changed[2]  # the last block's confidences
    changed[1, 1] = 0.0  # token 1 already exited at block 0
    b = call(fn, changed, 0.9, _ref=ref).long()
    assert_close(b[[0, 1, 3]], a[[0, 1, 3]], what="exit blocks of tokens 0, 1, 3 after changing confidences "
                 "behind their exit")


def _q1_case(gen: torch.Generator, rng: random.Random):
    L, N = rng.randint(1, 8), rng.randint(1, 30)
    conf = torch.randint(0, 11, (L, N), generator=gen).float() / 10  # ties with the threshold happen
    return (conf, rng.choice([0.0, 0.3, 0.5, 0.7, 0.9, 1.0, 1.2])), {}


Q15_1 = Exercise(
    id="q15_1", points=4, notebook=NOTEBOOK, reference="lessonlib.exit.decide:exit_decision",
    statement="conf (L, N) holds the confidence of each of the L exits for N tokens. Return, for every token, "
              "the index of the FIRST block whose confidence is at least the threshold; a token that never "
              "reaches it exits at the last block (L - 1). Return an (N,) long tensor; do not modify conf.",
    hints=("'At least' means >=: a confidence equal to the threshold exits.",
           "argmax returns the first maximal index; on a boolean (as int) tensor that is the first True.",
           "The last block always exits: make its row pass before taking the first passing index (on a copy)."),
    checks=(
        literal("hand-checked 3 exits x 4 tokens at 0.9", (_CONF, 0.9),
                expected=torch.tensor([1, 0, 2, 0])),  # 0.90 >= 0.9 at block 1; 0.95 at 0; never -> 2; 0.90 at 0
        literal("threshold 0.96", (_CONF, 0.96), expected=torch.tensor([2, 1, 2, 2])),  # only 0.97 / 0.99 pass
        literal("a threshold above 1 never exits early", (_CONF, 1.01), expected=torch.tensor([2, 2, 2, 2])),
        literal("threshold 0 exits every token after the first block", (_CONF, 0.0),
                expected=torch.tensor([0, 0, 0, 0])),
        literal("a single exit", (torch.tensor([[0.1, 0.9]]), 0.5), expected=torch.tensor([0, 0])),
        _q1_type, _q1_monotone, _q1_prefix,
        agrees_with_reference("matches the reference on random confidences with ties", _q1_case, n_cases=25),
    ),
)

from .concept import answer_function_checks, choice  # noqa: E402  (concept questions)

Q15_2 = Exercise(
    id='q15_2', points=2, notebook=NOTEBOOK, reference="lessonlib.concepts:exit_speedup_choice",
    statement="Concept question (return one letter). In this chapter tokens use far fewer blocks at a calibrated threshold, yet generation is barely faster. Why? A: every exit check is a projection onto the whole vocabulary, several times a block's multiply-adds, and skipped blocks still compute keys and values; B: the early exits predict wrong tokens; C: the threshold was calibrated on perplexity; D: the model is too small to exit early.",
    hints=('Compare the multiply-adds of one exit check with one block (the first cell).',),
    checks=(choice("the letter of the right answer", 'A'), *answer_function_checks("letter")),
)

EXERCISES = [Q15_1, Q15_2]
