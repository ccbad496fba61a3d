"""Wrong answers a student might hand in for notebook 15's exercise (each must score 0)."""
from __future__ import annotations

import torch

from . import mutant


@mutant("q15_1", "takes the LAST block that passes instead of the first")
def exit_last_passing(conf, threshold):
    passes = conf >= threshold  # (L, N)
    idx = torch.arange(conf.shape[0])[:, None].expand_as(conf)
    last = torch.where(passes, idx, torch.full_like(idx, -1)).max(0).values
    return torch.where(last < 0, torch.full_like(last, conf.shape[0] - 1), last)


@mutant("q15_1", "strict > at the threshold (a confidence equal to it does not exit)")
def exit_strict(conf, threshold):
    passes = (conf > threshold).clone()
    passes[-1] = True
    return passes.int().argmax(0)


@mutant("q15_1", "forgets that the last block always exits (tokens that never pass get block 0)")
def exit_no_last(conf, threshold):
    return (conf >= threshold).int().argmax(0)


@mutant("q15_1", "returns blocks used (index + 1) instead of the block index")
def exit_blocks_used(conf, threshold):
    passes = (conf >= threshold).clone()
    passes[-1] = True
    return passes.int().argmax(0) + 1


@mutant("q15_1", "exits at the most confident block")
def exit_most_confident(conf, threshold):
    return conf.argmax(0)


@mutant("q15_1", "marks the last block as passing by writing into conf (modifies the input)")
def exit_in_place(conf, threshold):
    conf[-1] = float("inf")
    return (conf >= threshold).int().argmax(0)


@mutant("q15_1", "returns a boolean 'exits early' flag per token instead of the block")
def exit_flag(conf, threshold):
    return (conf[:-1] >= threshold).any(0).long()


@mutant('q15_2', 'answers B (wrong predictions)')
def concept_q15_2_0():
    return 'B'


@mutant('q15_2', 'answers C (the calibration metric)')
def concept_q15_2_1():
    return 'C'


@mutant('q15_2', 'answers D (the model is too small)')
def concept_q15_2_2():
    return 'D'
