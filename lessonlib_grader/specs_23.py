"""Graded exercises of notebook 23 (the roofline): a layer's time on the roofline, and where a low-bit layer
stops being memory-bound.

q23_1: the student writes :func:`lessonlib.roofline.roofline_seconds`, the larger of the compute time
(2 T out in FLOPs at the peak rate) and the memory time (weight and activation bytes at the bandwidth).
The literal cases are computed by hand in the comments; one is memory-bound, one compute-bound, so summing
the two times, taking the smaller one or forgetting the activations all fail.
q23_2: a concept question (a number).
"""
from __future__ import annotations

import random

import torch

from .checks import agrees_with_reference, assert_close, call, literal, prop
from .registry import Exercise
from .concept import answer_function_checks  # concept questions: (answer type, reference agreement)

NOTEBOOK = "23_roofline"


def _case(gen: torch.Generator, rng: random.Random):
    args = (rng.choice([1, 2, 8, 64, 512]), rng.randint(16, 8192), rng.randint(16, 8192),
            rng.choice([4.0, 2.0, 1.0, 0.5625, 0.5]), rng.uniform(5.0, 500.0), rng.uniform(1.0, 50.0))
    return args, {"bytes_per_act": rng.choice([4.0, 2.0])}


@prop("more tokens never take less time, and more bandwidth never makes a layer slower")
def _monotone(fn, ref):
    times = [call(fn, t, 1536, 576, 0.5, 40.0, 4.0, _ref=ref) for t in (1, 2, 4, 16, 128, 1024)]
    for a, b in zip(times, times[1:]):
        if b < a * (1 - 1e-9):
            from .checks import CheckFailure
            raise CheckFailure(f"roofline_seconds fell from {a:.3e} s to {b:.3e} s when the tokens grew: {times}")
    slow, fast = (call(fn, 1, 1536, 576, 4.0, 40.0, bw, _ref=ref) for bw in (2.0, 20.0))
    assert_close(fast, slow / 10, what="a memory-bound layer (1 token, fp32) with 10x the bandwidth",
                 rtol=2e-2)


Q23_1 = Exercise(
    id="q23_1", points=4, notebook=NOTEBOOK, reference="lessonlib.roofline:roofline_seconds",
    statement="Return the roofline's time in seconds for one linear layer (out_features, in_features) applied to "
              "`tokens` tokens: the layer does 2 * tokens * out * in FLOPs at peak_gflops (10^9 FLOP/s) and moves "
              "out * in * bytes_per_weight weight bytes plus tokens * (in + out) * bytes_per_act activation bytes "
              "at bandwidth_gbs (10^9 bytes/s). Compute and memory traffic overlap.",
    hints=("Work out both times separately: FLOPs / (peak * 1e9) and bytes / (bandwidth * 1e9).",
           "They overlap, so the layer takes as long as the slower of the two.",
           "GB/s here means 10^9 bytes per second, not 2^30."),
    checks=(
        # memory-bound: 2e6 FLOPs / 1e11 = 2e-5 s; (4e6 + 2000 * 4) bytes / 1e10 = 4.008e-4 s
        literal("1 token through a 1000x1000 fp32 layer (100 GFLOP/s, 10 GB/s): memory-bound",
                (1, 1000, 1000, 4.0, 100.0, 10.0), expected=4.008e-4, rtol=1e-6, atol=0.0),
        # compute-bound: 2e9 / 1e11 = 0.02 s; (4e6 + 1000 * 2000 * 4) / 1e10 = 1.2e-3 s
        literal("1000 tokens through the same layer: compute-bound",
                (1000, 1000, 1000, 4.0, 100.0, 10.0), expected=0.02, rtol=1e-6, atol=0.0),
        # INT4 weights, bf16 activations: 4096^2 * 0.5 + 8192 * 2 = 8404992 bytes / 4e9 = 2.101248e-3 s
        # (compute: 2 * 4096^2 / 4e10 = 8.39e-4 s)
        literal("1 token, 4096x4096 INT4 weights, bf16 activations (40 GFLOP/s, 4 GB/s)",
                (1, 4096, 4096, 0.5, 40.0, 4.0), {"bytes_per_act": 2.0}, expected=2.101248e-3, rtol=1e-6, atol=0.0),
        _monotone,
        agrees_with_reference("seeded layers, token counts and machines", _case, n_cases=12, rtol=1e-9, atol=0.0),
    ),
)

Q23_2 = Exercise(
    id="q23_2", points=2, notebook=NOTEBOOK, reference="lessonlib.concepts:int4_ridge_tokens",
    statement="Concept question (a number). A large linear layer holds INT4 weights (0.5 bytes per weight) on a "
              "CPU that computes 40 GFLOP/s and reads 4 GB/s. Ignoring activation bytes, at how many tokens per "
              "call does its compute time equal its weight-reading time (where it stops being memory-bound)?",
    hints=("Per weight: 2 T FLOPs against 0.5 bytes read once, whatever T is.",
           "Set 2 T / peak = b_w / bandwidth and solve for T; compare with fp32 (4 bytes per weight)."),
    checks=(literal("the number", (), expected=2.5, rtol=1e-3), *answer_function_checks("number")),
)

EXERCISES = [Q23_1, Q23_2]
