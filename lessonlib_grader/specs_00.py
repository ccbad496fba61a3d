"""Graded exercises of notebook 00 (model anatomy): byte accounting and perplexity.

Every expected value below is computed by hand in the comment beside it; none comes from the reference.
"""
from __future__ import annotations

import math
import random

import torch

from .checks import (agrees_with_reference, assert_close, assert_python_float, assert_tensor, call,
                     literal, prop)
from .registry import Exercise

NOTEBOOK = "00_model_anatomy"
LN = math.log


# ------------------------------------------------------------------ q00_1 bytes_at_precision
@prop("returns a plain Python number")
def _q1_type(fn, ref):
    assert_python_float(call(fn, 1000, 4, _ref=ref), what="bytes_at_precision(1000, 4)")


@prop("one more weight past a group boundary adds exactly one group (ceil, not floor)")
def _q1_boundary(fn, ref):
    # 128 weights = 1 group, 129 weights = 2 groups: +1 weight at 4 bits (0.5 B) + one fp16 scale (2 B)
    a = float(call(fn, 128, 4, 128, 16, 0, _ref=ref))
    b = float(call(fn, 129, 4, 128, 16, 0, _ref=ref))
    assert_close(b - a, 2.5, what="bytes_at_precision(129, 4, 128) - bytes_at_precision(128, 4, 128)")


@prop("without groups the size is proportional to n_params and to bits")
def _q1_linear(fn, ref):
    one = float(call(fn, 3000, 4, _ref=ref))
    assert_close(float(call(fn, 6000, 4, _ref=ref)), 2 * one, what="bytes_at_precision(6000, 4) vs 2x (3000, 4)")
    assert_close(float(call(fn, 3000, 8, _ref=ref)), 2 * one, what="bytes_at_precision(3000, 8) vs 2x (3000, 4)")


def _q1_case(gen: torch.Generator, rng: random.Random):
    return (rng.randint(1, 10_000_000), rng.choice([2, 3, 4, 8, 16, 2.5]), rng.choice([0, 32, 64, 100, 128]),
            rng.choice([16, 32]), rng.choice([0, 4, 8, 16])), {}


Q00_1 = Exercise(
    id="q00_1", points=4, notebook=NOTEBOOK, reference="lessonlib.evaluate:bytes_at_precision",
    statement="Return the number of bytes that n_params weights take at `bits` bits each. When group_size > 0, "
              "every group of group_size weights (the last one may be partial) also stores one scale of "
              "scale_bits and one zero point of zero_bits.",
    hints=("Count bits first and divide by 8 once at the end.",
           "1000 weights in groups of 128 make 8 groups, not 7: use math.ceil.",
           "zero_bits is 0 for symmetric quantisation; it is still stored once per group when it is not."),
    checks=(
        literal("16-bit weights", (1000, 16), expected=2000.0),  # 1000 * 16 / 8
        literal("4-bit weights", (1000, 4), expected=500.0),  # 1000 * 4 / 8
        literal("fractional bits per weight", (8, 2.5), expected=2.5),  # 8 * 2.5 / 8
        literal("groups of 128 with a partial last group", (1000, 4, 128), expected=516.0),  # 500 + 8 groups * 2 B
        literal("scale and zero point per group", (1000, 4, 128, 16, 4), expected=520.0),  # 500 + 8 * 20 / 8
        literal("a 4096x4096 layer, 3 bits, g64, fp16 scale and zero", (4096 * 4096, 3, 64, 16, 16),
                expected=7340032.0),  # 16777216*3/8 = 6291456, + 262144 groups * 4 B = 1048576
        literal("group_size=0 stores no scales", (1000, 4, 0, 16, 16), expected=500.0),
        literal("no weights, no groups", (0, 4, 128), expected=0.0),  # ceil(0 / 128) = 0 groups
        _q1_type, _q1_boundary, _q1_linear,
        agrees_with_reference("matches the reference on random layer sizes", _q1_case, n_cases=20, rtol=1e-9),
    ),
)


# ------------------------------------------------------------------ q00_2 kv_cache_bytes_per_token
@prop("returns a plain Python number")
def _q2_type(fn, ref):
    assert_python_float(call(fn, 30, 3, 64, _ref=ref), what="kv_cache_bytes_per_token(30, 3, 64)")


@prop("proportional to every argument")
def _q2_linear(fn, ref):
    base = float(call(fn, 4, 2, 16, 2, _ref=ref))
    for args in ((8, 2, 16, 2), (4, 4, 16, 2), (4, 2, 32, 2), (4, 2, 16, 4)):
        assert_close(float(call(fn, *args, _ref=ref)), 2 * base,
                     what=f"kv_cache_bytes_per_token{args} vs 2x kv_cache_bytes_per_token(4, 2, 16, 2)")


def _q2_case(gen: torch.Generator, rng: random.Random):
    return (rng.randint(1, 96), rng.randint(1, 64), rng.choice([32, 64, 80, 96, 128, 256]),
            rng.choice([0.5, 1, 2, 4])), {}


Q00_2 = Exercise(
    id="q00_2", points=3, notebook=NOTEBOOK, reference="lessonlib.evaluate:kv_cache_bytes_per_token",
    statement="Return the bytes of KV cache that one token occupies: every layer stores a key vector and a "
              "value vector of head_dim elements for each KV head, each element taking bytes_per_elem bytes.",
    hints=("Both K and V are cached.",
           "With grouped-query attention only the n_kv_heads KV heads are cached, not all attention heads.",
           "bytes_per_elem may be fractional (0.5 for a 4-bit cache)."),
    checks=(
        literal("SmolLM2-135M, fp16 cache", (30, 3, 64), expected=23040.0),  # 2*30*3*64*2
        literal("Llama-2-7B (MHA, 32 KV heads), fp16", (32, 32, 128, 2), expected=524288.0),  # 0.5 MiB
        literal("Llama-3-8B (GQA, 8 KV heads), fp16", (32, 8, 128, 2), expected=131072.0),
        literal("int8 cache", (30, 3, 64, 1), expected=11520.0),  # 2*30*3*64*1
        literal("4-bit cache", (30, 3, 64, 0.5), expected=5760.0),  # 2*30*3*64*0.5
        _q2_type, _q2_linear,
        agrees_with_reference("matches the reference on random model shapes", _q2_case, n_cases=20, rtol=1e-9),
    ),
)


# ------------------------------------------------------------------ q00_3 next_token_nll
_L3 = LN(3.0)
# Row [0, ln 3] gives p = [1/4, 3/4]; row [ln 3, 0] gives p = [3/4, 1/4]; row [0, 0] gives [1/2, 1/2].
_ROWS = torch.tensor([[0.0, _L3], [_L3, 0.0], [0.0, 0.0]])  # (T=3, V=2)


@prop("returns a 0-dim floating-point tensor for (T, V) and (B, T, V) inputs")
def _q3_scalar(fn, ref):
    for logits, tokens in ((torch.zeros(4, 3), torch.tensor([0, 1, 2, 0])),
                           (torch.zeros(2, 4, 3), torch.tensor([[0, 1, 2, 0], [2, 2, 1, 0]]))):
        got = call(fn, logits, tokens, _ref=ref)
        assert_tensor(got, what=f"next_token_nll on logits of shape {tuple(logits.shape)}", shape=(), floating=True)


def _q3_random(seed: int, batch: bool):
    gen = torch.Generator().manual_seed(seed)
    shape = (3, 6, 7) if batch else (6, 7)
    logits = torch.randn(*shape, generator=gen) * 2
    tokens = torch.randint(0, 7, shape[:-1], generator=gen)
    return logits, tokens


@prop("the last position's logits predict nothing (changing them changes nothing)")
def _q3_last(fn, ref):
    for batch in (False, True):
        logits, tokens = _q3_random(1, batch)
        a = call(fn, logits, tokens, _ref=ref)
        changed = logits.clone()
        changed[..., -1, :] = torch.linspace(-5, 5, logits.shape[-1])
        b = call(fn, changed, tokens, _ref=ref)
        assert_close(b, a, what=f"next_token_nll with different logits at the last position (batch={batch}); "
                                "position t predicts token t+1, so the last logits are unused")


@prop("the first token is never predicted (changing it changes nothing)")
def _q3_first(fn, ref):
    for batch in (False, True):
        logits, tokens = _q3_random(2, batch)
        a = call(fn, logits, tokens, _ref=ref)
        changed = tokens.clone()
        changed[..., 0] = (changed[..., 0] + 3) % logits.shape[-1]
        b = call(fn, logits, changed, _ref=ref)
        assert_close(b, a, what=f"next_token_nll with a different first token (batch={batch}); "
                                "no logits predict token 0")


@prop("adding a constant to a row of logits changes nothing (softmax is shift-invariant)")
def _q3_shift(fn, ref):
    logits, tokens = _q3_random(3, True)
    a = call(fn, logits, tokens, _ref=ref)
    b = call(fn, logits + torch.arange(6.0).view(1, 6, 1) * 7.0, tokens, _ref=ref)
    assert_close(b, a, what="next_token_nll(logits + c_t, tokens)", rtol=1e-4, atol=1e-5)


@prop("a (T, V) sequence scores the same as a batch of one (1, T, V)")
def _q3_batch1(fn, ref):
    logits, tokens = _q3_random(4, False)
    a = call(fn, logits, tokens, _ref=ref)
    b = call(fn, logits.unsqueeze(0), tokens.unsqueeze(0), _ref=ref)
    assert_close(b, a, what="next_token_nll(logits[None], tokens[None]) vs next_token_nll(logits, tokens)")


def _q3_case(gen: torch.Generator, rng: random.Random):
    b, t, v = rng.randint(1, 3), rng.randint(2, 9), rng.randint(2, 17)
    shape = (b, t, v) if rng.random() < 0.6 else (t, v)
    logits = torch.randn(*shape, generator=gen) * 3
    tokens = torch.randint(0, v, shape[:-1], generator=gen)
    return (logits, tokens), {}


Q00_3 = Exercise(
    id="q00_3", points=5, notebook=NOTEBOOK, reference="lessonlib.evaluate:next_token_nll",
    statement="Return the mean negative log-likelihood (natural log) of the next tokens: logits[t] is the "
              "model's prediction for tokens[t+1]. Average over every predicted position of every sequence "
              "and return a 0-dim tensor.",
    hints=("Shift: drop the last position of the logits and the first token.",
           "F.cross_entropy takes (N, V) logits and (N,) targets and already averages.",
           "log(softmax(x)) underflows for confident models; use log_softmax or cross_entropy."),
    checks=(
        literal("uniform logits give ln(V)", (torch.zeros(4, 5), torch.tensor([0, 1, 2, 3])),
                expected=torch.tensor(LN(5.0))),  # every prediction has p = 1/5
        literal("hand-checked 2-token vocabulary", (_ROWS, torch.tensor([0, 1, 0])),
                expected=torch.tensor(-LN(0.75))),  # row0 -> token 1 (p 3/4), row1 -> token 0 (p 3/4)
        literal("a batch of two sequences", (torch.stack([_ROWS, _ROWS]), torch.tensor([[0, 1, 0], [1, 0, 1]])),
                expected=torch.tensor((-2 * LN(0.75) - 2 * LN(0.25)) / 4)),  # seq 2: p 1/4 twice
        literal("large logits stay finite", (torch.tensor([[200.0, 0.0], [0.0, 0.0]]), torch.tensor([0, 1])),
                expected=torch.tensor(200.0)),  # -log softmax([200, 0])[1] = 200 + log(1 + e^-200)
        _q3_scalar, _q3_last, _q3_first, _q3_shift, _q3_batch1,
        agrees_with_reference("matches the reference on random logits", _q3_case, n_cases=10,
                              rtol=1e-5, atol=1e-5),
    ),
)


# ------------------------------------------------------------------ q00_4 perplexity_from_window_nlls
@prop("returns a plain Python float")
def _q4_type(fn, ref):
    assert_python_float(call(fn, torch.tensor([1.0, 2.0]), 256, _ref=ref),
                        what="perplexity_from_window_nlls(tensor([1., 2.]), 256)")


_NLLS = torch.tensor([2.1, 3.7, 2.9, 4.4, 3.0], dtype=torch.float64)


@prop("the order of the windows does not matter")
def _q4_order(fn, ref):
    a = call(fn, _NLLS, 256, _ref=ref)
    b = call(fn, _NLLS.flip(0), 256, _ref=ref)
    assert_close(b, a, what="perplexity_from_window_nlls(reversed nlls, 256) vs (nlls, 256)", rtol=1e-9)


@prop("the window length cancels when all windows have the same length")
def _q4_seqlen(fn, ref):
    a = call(fn, _NLLS, 128, _ref=ref)
    b = call(fn, _NLLS, 2048, _ref=ref)
    assert_close(b, a, what="perplexity_from_window_nlls(nlls, 2048) vs (nlls, 128)", rtol=1e-9)


@prop("scoring every window twice leaves the perplexity unchanged")
def _q4_twice(fn, ref):
    a = call(fn, _NLLS, 256, _ref=ref)
    b = call(fn, torch.cat([_NLLS, _NLLS]), 256, _ref=ref)
    assert_close(b, a, what="perplexity_from_window_nlls(nlls repeated twice, 256) vs (nlls, 256)", rtol=1e-9)


def _q4_case(gen: torch.Generator, rng: random.Random):
    w = rng.randint(1, 20)
    dtype = rng.choice([torch.float32, torch.float64])
    nlls = (1 + 4 * torch.rand(w, generator=gen, dtype=torch.float64)).to(dtype)
    return (nlls, rng.choice([128, 256, 512, 2048])), {}


Q00_4 = Exercise(
    id="q00_4", points=3, notebook=NOTEBOOK, reference="lessonlib.evaluate:perplexity_from_window_nlls",
    statement="Turn per-window mean NLLs (each window scores seqlen tokens) into the perplexity of the whole "
              "text as in the GPTQ protocol: exp of the total NLL divided by the total number of tokens. "
              "Return a Python float.",
    hints=("Average negative log-likelihoods, then exponentiate; do not average perplexities.",
           "nll_w is a mean over seqlen tokens, so nll_w * seqlen is that window's total.",
           "float(t) turns a 0-dim tensor into a Python float."),
    checks=(
        literal("two windows", (torch.tensor([LN(2.0), LN(8.0)]), 256), expected=4.0,
                result=assert_python_float),  # exp((ln 2 + 3 ln 2) / 2) = exp(2 ln 2)
        literal("one window", (torch.tensor([LN(10.0)]), 128), expected=10.0, result=assert_python_float),
        literal("a perfect model", (torch.zeros(3), 2048), expected=1.0, result=assert_python_float),
        literal("three windows", (torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), 512),
                expected=math.e ** 2, result=assert_python_float),  # exp(mean) = exp(2)
        _q4_type, _q4_order, _q4_seqlen, _q4_twice,
        agrees_with_reference("matches the reference on random window NLLs", _q4_case, n_cases=10, rtol=1e-5),
    ),
)

EXERCISES = [Q00_1, Q00_2, Q00_3, Q00_4]


