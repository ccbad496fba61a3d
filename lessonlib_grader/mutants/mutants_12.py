"""Wrong answers a student might hand in for notebook 12's exercise (each must score 0)."""
from __future__ import annotations

from . import mutant


@mutant("q12_1", "pools interleaved heads (g, g + n_groups, ...) instead of consecutive ones")
def interleaved(weight, bias, n_heads, n_groups):
    d, s = weight.shape[0] // n_heads, n_heads // n_groups
    W = weight.reshape(s, n_groups, d, weight.shape[1]).mean(0)  # (n_groups, d, C)
    b = None if bias is None else bias.reshape(s, n_groups, d).mean(0).reshape(-1)
    return W.reshape(n_groups * d, weight.shape[1]), b


@mutant("q12_1", "keeps the first head of each group instead of the mean (the paper's weaker baseline)")
def first_head(weight, bias, n_heads, n_groups):
    d, s = weight.shape[0] // n_heads, n_heads // n_groups
    W = weight.reshape(n_groups, s, d, weight.shape[1])[:, 0]  # (n_groups, d, C)
    b = None if bias is None else bias.reshape(n_groups, s, d)[:, 0].reshape(-1)
    return W.reshape(n_groups * d, weight.shape[1]), b


@mutant("q12_1", "sums the heads of a group instead of averaging them")
def summed(weight, bias, n_heads, n_groups):
    d, s = weight.shape[0] // n_heads, n_heads // n_groups
    W = weight.reshape(n_groups, s, d, weight.shape[1]).sum(1)
    b = None if bias is None else bias.reshape(n_groups, s, d).sum(1).reshape(-1)
    return W.reshape(n_groups * d, weight.shape[1]), b


@mutant("q12_1", "splits the rows as (group, d, s): averages rows inside a head instead of across heads")
def wrong_split(weight, bias, n_heads, n_groups):
    d, s = weight.shape[0] // n_heads, n_heads // n_groups
    W = weight.reshape(n_groups, d, s, weight.shape[1]).mean(2)
    b = None if bias is None else bias.reshape(n_groups, d, s).mean(2).reshape(-1)
    return W.reshape(n_groups * d, weight.shape[1]), b


@mutant("q12_1", "pools the weight but returns the bias unpooled")
def bias_unpooled(weight, bias, n_heads, n_groups):
    d, s = weight.shape[0] // n_heads, n_heads // n_groups
    W = weight.reshape(n_groups, s, d, weight.shape[1]).mean(1)
    return W.reshape(n_groups * d, weight.shape[1]), bias


@mutant("q12_1", "averages in float32 and returns float32 for a float64 weight")
def float32_out(weight, bias, n_heads, n_groups):
    d, s = weight.shape[0] // n_heads, n_heads // n_groups
    W = weight.float().reshape(n_groups, s, d, weight.shape[1]).mean(1)
    b = None if bias is None else bias.float().reshape(n_groups, s, d).mean(1).reshape(-1)
    return W.reshape(n_groups * d, weight.shape[1]), b


@mutant("q12_1", "divides the group sum by n_heads instead of by the group size s")
def divides_by_all(weight, bias, n_heads, n_groups):
    d, s = weight.shape[0] // n_heads, n_heads // n_groups
    W = weight.reshape(n_groups, s, d, weight.shape[1]).sum(1) / n_heads
    b = None if bias is None else bias.reshape(n_groups, s, d).sum(1).reshape(-1) / n_heads
    return W.reshape(n_groups * d, weight.shape[1]), b


@mutant("q12_2", "forgets that both keys and values are cached")
def concept_q12_2_0():
    return 30.0


@mutant("q12_2", "keeps the original 3 KV heads (the cache before the conversion)")
def concept_q12_2_1():
    return 180.0


@mutant("q12_2", "counts one block instead of all 30")
def concept_q12_2_2():
    return 2.0


@mutant("q12_3", "answers A (compute grows with the number of experts)")
def concept_q12_3_3():
    return 'A'


@mutant("q12_3", "answers C (memory grows only with k)")
def concept_q12_3_4():
    return 'C'


@mutant("q12_3", "answers D (the experts split the dense FFN)")
def concept_q12_3_5():
    return 'D'
