"""Wrong answers a student might hand in for notebook 23's exercise (each must score 0)."""
from __future__ import annotations

from . import mutant


def _parts(tokens, out_features, in_features, bytes_per_weight, peak_gflops, bandwidth_gbs, bytes_per_act=4.0):
    flops = 2.0 * tokens * out_features * in_features
    moved = out_features * in_features * bytes_per_weight + tokens * (in_features + out_features) * bytes_per_act
    return flops / (peak_gflops * 1e9), moved / (bandwidth_gbs * 1e9)


@mutant("q23_1", "adds the compute and memory times (no overlap)")
def summed(*a, **k):
    c, m = _parts(*a, **k)
    return c + m


@mutant("q23_1", "takes the faster of the two times")
def smaller(*a, **k):
    return min(_parts(*a, **k))


@mutant("q23_1", "counts only the weight bytes (forgets the activations)")
def no_activations(tokens, out_features, in_features, bytes_per_weight, peak_gflops, bandwidth_gbs,
                   bytes_per_act=4.0):
    c, _ = _parts(tokens, out_features, in_features, bytes_per_weight, peak_gflops, bandwidth_gbs, bytes_per_act)
    return max(c, out_features * in_features * bytes_per_weight / (bandwidth_gbs * 1e9))


@mutant("q23_1", "counts one FLOP per multiply-add instead of two")
def one_flop(tokens, out_features, in_features, bytes_per_weight, peak_gflops, bandwidth_gbs, bytes_per_act=4.0):
    c, m = _parts(tokens, out_features, in_features, bytes_per_weight, peak_gflops, bandwidth_gbs, bytes_per_act)
    return max(c / 2, m)


@mutant("q23_1", "reads GB/s as 2^30 bytes per second")
def gib(tokens, out_features, in_features, bytes_per_weight, peak_gflops, bandwidth_gbs, bytes_per_act=4.0):
    c, m = _parts(tokens, out_features, in_features, bytes_per_weight, peak_gflops, bandwidth_gbs, bytes_per_act)
    return max(c, m * 1e9 / 2 ** 30)


@mutant("q23_1", "reads the weights once per token")
def weights_per_token(tokens, out_features, in_features, bytes_per_weight, peak_gflops, bandwidth_gbs,
                      bytes_per_act=4.0):
    c, _ = _parts(tokens, out_features, in_features, bytes_per_weight, peak_gflops, bandwidth_gbs, bytes_per_act)
    moved = tokens * (out_features * in_features * bytes_per_weight + (in_features + out_features) * bytes_per_act)
    return max(c, moved / (bandwidth_gbs * 1e9))


@mutant("q23_2", "forgets the factor 2 (one FLOP per weight): 5 tokens")
def ridge_one_flop():
    return 40e9 * 0.5 / 4e9


@mutant("q23_2", "answers for fp32 weights (4 bytes each): 20 tokens")
def ridge_fp32():
    return 40e9 * 4 / (2 * 4e9)


@mutant("q23_2", "inverts the balance (bandwidth over compute): 0.4 tokens")
def ridge_inverted():
    return 2 * 4e9 / (40e9 * 0.5)
