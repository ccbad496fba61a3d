"""Graded exercise of notebook 20 (activation sparsity): a down projection that skips inactive units.

The student writes :func:`lessonlib.sparsity.activation.sparse_down_proj`: y = h W_down^T + b reading only the
rows of W_down^T (d_ff, d) whose unit is active (|h| > threshold) for at least one token.  To tell a real skip
from a dense product, some checks put NaN in the rows of units that are inactive for every token: a dense
product gives 0 * NaN = NaN there, a gathered one never reads them.  Expected values are computed by hand in
the comments; the random cases compare with the dense product of the thresholded h.
"""
from __future__ import annotations

import math

import torch

from .checks import Check, CheckFailure, assert_close, assert_python_float, assert_tensor, call, prop
from .registry import Exercise

NOTEBOOK = "20_activation_sparsity"

T = torch.tensor
NAN = math.nan


def _kind(kind: str):
    """Re-label a check written with ``prop`` as a hand-computed literal or a comparison with the reference."""
    return lambda c: Check(c.name, kind, c.run)


def _expect(fn, ref, h, w_t, expected, bias=None, threshold=0.0, note=""):
    h, w_t, expected = T(h), T(w_t), T(expected)
    b = None if bias is None else T(bias)
    what = f"sparse_down_proj(h={h.tolist()}, w_down_t={w_t.tolist()}, bias={bias}, threshold={threshold}){note}"
    got = call(fn, h, w_t, b, threshold, _ref=ref)
    assert_tensor(got, what=what, shape=tuple(expected.shape), dtype=h.dtype)
    assert_close(got, expected, what=what, atol=1e-6)


@_kind("literal")
@prop("one token: h = [1, 0, 2] reads rows 0 and 2 only -> [7, 0]")
def _one_token(fn, ref):
    # 1 * [1, 2] + 2 * [3, -1] = [7, 0]; row 1 (unit 1 is zero) holds NaN and must not be read
    _expect(fn, ref, [[1.0, 0.0, 2.0]], [[1.0, 2.0], [NAN, NAN], [3.0, -1.0]], [[7.0, 0.0]],
            note="  (row 1 is NaN: it belongs to a zero unit and must be skipped)")


@_kind("literal")
@prop("two tokens: a unit is skipped only if it is zero for every token")
def _two_tokens(fn, ref):
    # unit 0 is live for token 0 only, unit 1 for none (NaN row), unit 2 for both:
    # token 0: 1 * [1, 2] + 2 * [3, -1] = [7, 0]; token 1: 0 * [1, 2] - 1 * [3, -1] = [-3, 1]
    _expect(fn, ref, [[1.0, 0.0, 2.0], [0.0, 0.0, -1.0]], [[1.0, 2.0], [NAN, NAN], [3.0, -1.0]],
            [[7.0, 0.0], [-3.0, 1.0]], note="  (row 1 is NaN: unit 1 is zero for both tokens)")


@_kind("literal")
@prop("threshold 0.1: entries with |h| <= 0.1 count as zero, also inside an active unit")
def _threshold(fn, ref):
    # live: token 0 -> unit 1 only (0.05 <= 0.1), token 1 -> unit 0 only (0.08 <= 0.1); identity rows:
    # y = [[0, 1], [0.5, 0]]; unit 2 (|-0.02|, |0.09| <= 0.1) is skipped: its row is NaN
    _expect(fn, ref, [[0.05, 1.0, -0.02], [0.5, 0.08, 0.09]], [[1.0, 0.0], [0.0, 1.0], [NAN, NAN]],
            [[0.0, 1.0], [0.5, 0.0]], threshold=0.1)


@_kind("literal")
@prop("|h| equal to the threshold counts as zero: h = [0.5, 1], threshold 0.5 -> [0, 1]")
def _at_threshold(fn, ref):
    _expect(fn, ref, [[0.5, 1.0]], [[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0]], threshold=0.5)  # 0.5 <= 0.5: dropped


@_kind("literal")
@prop("the bias is added once per output, also when no unit is active: h = 0, b = [1, -1] -> [[1, -1], [1, -1]]")
def _bias(fn, ref):
    _expect(fn, ref, [[0.0, 0.0], [0.0, 0.0]], [[NAN, NAN], [NAN, NAN]], [[1.0, -1.0], [1.0, -1.0]],
            bias=[1.0, -1.0])
    _expect(fn, ref, [[2.0, 0.0]], [[1.0, 3.0], [NAN, NAN]], [[2.5, 4.0]], bias=[0.5, -2.0])  # 2 * [1, 3] + b


@prop("the order of the units does not matter: permuting the columns of h with the rows of W^T keeps y")
def _permutation(fn, ref):
    g = torch.Generator().manual_seed(3)
    h = torch.relu(torch.randn(3, 40, generator=g))  # (3, 40)
    h[:, ::3] = 0.0  # every third unit idle for all tokens
    w_t, b = torch.randn(40, 6, generator=g), torch.randn(6, generator=g)
    perm = torch.randperm(40, generator=g)
    what = "sparse_down_proj(h, w_down_t, b) vs the same with the units permuted"
    y = call(fn, h, w_t, b, 0.0, _ref=ref)
    assert_tensor(y, what=what, shape=(3, 6), dtype=h.dtype)
    assert_close(call(fn, h[:, perm], w_t[perm], b, 0.0, _ref=ref), y, what=what, rtol=1e-5, atol=1e-5)


@_kind("reference")
@prop("seeded ReLU-sparse activations (float32 and float64, with and without bias and threshold): equals the "
      "dense product of the thresholded h, in h's dtype")
def _random(fn, ref):
    g = torch.Generator().manual_seed(0)
    for tokens, d_ff, d, thr, with_bias, dt in ((1, 64, 16, 0.0, False, torch.float32),
                                                (4, 96, 24, 0.0, True, torch.float64),
                                                (3, 128, 8, 0.3, True, torch.float32),
                                                (8, 48, 12, 0.5, False, torch.float64)):
        h = torch.relu(torch.randn(tokens, d_ff, generator=g, dtype=dt))  # (tokens, d_ff), about half zeros
        h[:, torch.randperm(d_ff, generator=g)[: d_ff // 2]] = 0.0  # half of the units idle for every token
        w_t = torch.randn(d_ff, d, generator=g, dtype=dt)
        b = torch.randn(d, generator=g, dtype=dt) if with_bias else None
        dense = (h * (h.abs() > thr)) @ w_t + (0 if b is None else b)  # (tokens, d)
        what = (f"sparse_down_proj on random h ({tokens}, {d_ff}) {dt}, d={d}, threshold={thr}, "
                f"bias={'yes' if with_bias else 'no'}")
        got = call(fn, h, w_t, b, thr, _ref=ref)
        assert_tensor(got, what=what, shape=(tokens, d), dtype=dt)
        assert_close(got, dense, what=what, rtol=1e-5, atol=1e-5)


Q20_1 = Exercise(
    id="q20_1", points=4, notebook=NOTEBOOK, reference="lessonlib.sparsity.activation:sparse_down_proj",
    statement="Compute the down projection y = h @ w_down_t + bias of an FFN intermediate h (tokens, d_ff) while "
              "reading only the rows of w_down_t (d_ff, d) whose unit is active, |h| > threshold, for at least "
              "one token; entries with |h| <= threshold count as exactly 0. bias (d,) may be None. Return y "
              "(tokens, d) in h's dtype; rows of inactive units must never be read.",
    hints=("live = h.abs() > threshold is (tokens, d_ff); live.any(0) marks the units needed by some token.",
           "Gather the active columns of h and the active rows of w_down_t with the same index tensor "
           "(nonzero() or index_select).",
           "With a threshold, zero the small entries of h (h * live) before gathering."),
    checks=(_one_token, _two_tokens, _threshold, _at_threshold, _bias, _permutation, _random),
)



def _relu_ffn(fn, ref, x, wg, wu, wd, what):
    got = call(fn, x, wg, wu, wd, _ref=ref)
    if not isinstance(got, tuple) or len(got) != 2:
        raise CheckFailure(f"{what}\n  expected a tuple (y, zero_fraction), got {type(got).__name__}")
    y, z = got
    assert_tensor(y, what=f"{what}: y", shape=(x.shape[0], wd.shape[0]), dtype=x.dtype)
    assert_python_float(z, what=f"{what}: zero_fraction")
    return y, z


@_kind("literal")
@prop("one token, d = 2, d_ff = 2: the negative gate gives the one zero -> y = [3, 6], zero fraction 0.5")
def _relu_literal(fn, ref):
    # x = [1, 2]; gate pre-activations x W_gate^T = [1*1 + 2*0, 1*(-1) + 2*0] = [1, -1] -> ReLU [1, 0]
    # up x W_up^T = [1*1 + 2*1, 1*0 + 2*1] = [3, 2]; h = [1*3, 0*2] = [3, 0]: one exact zero of two
    # y = h W_down^T with W_down = [[1, 5], [2, 7]] -> [3*1 + 0*5, 3*2 + 0*7] = [3, 6]
    x, wg, wu, wd = T([[1.0, 2.0]]), T([[1.0, 0.0], [-1.0, 0.0]]), T([[1.0, 1.0], [0.0, 1.0]]), T([[1.0, 5.0], [2.0, 7.0]])
    what = "relufied_ffn(x=[[1, 2]], w_gate=[[1, 0], [-1, 0]], w_up=[[1, 1], [0, 1]], w_down=[[1, 5], [2, 7]])"
    y, z = _relu_ffn(fn, ref, x, wg, wu, wd, what)
    assert_close(y, T([[3.0, 6.0]]), what=f"{what}: y", atol=1e-6)
    if abs(z - 0.5) > 1e-9:
        raise CheckFailure(f"{what}: zero_fraction = {z!r}, expected 0.5 (h = [3, 0])")


@_kind("literal")
@prop("ReLU acts on the gate only: a negative UP value with a positive gate stays negative, a zero up value "
      "counts as a zero of h too")
def _relu_gate_only(fn, ref):
    # x = [1, 1]; gate = [2, 1, -3] -> ReLU [2, 1, 0]; up = [-1, 0, 4]; h = [-2, 0, 0]: two zeros of three
    # (unit 1 through up = 0, unit 2 through the gate); W_down = I-like (2, 3) = [[1, 0, 0], [0, 1, 1]] -> y = [-2, 0]
    x = T([[1.0, 1.0]])
    wg, wu = T([[1.0, 1.0], [0.5, 0.5], [-1.0, -2.0]]), T([[-0.5, -0.5], [1.0, -1.0], [2.0, 2.0]])
    wd = T([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    what = "relufied_ffn with gate [2, 1, -3] and up [-1, 0, 4] for x = [1, 1]"
    y, z = _relu_ffn(fn, ref, x, wg, wu, wd, what)
    assert_close(y, T([[-2.0, 0.0]]), what=f"{what}: y", atol=1e-6)
    if abs(z - 2 / 3) > 1e-6:
        raise CheckFailure(f"{what}: zero_fraction = {z!r}, expected 2/3 (h = [-2, 0, 0])")


@_kind("reference")
@prop("seeded random FFNs (float32 and float64): y equals ReLU(x Wg^T) * (x Wu^T) @ Wd^T and the zero fraction "
      "is that of h (near one half: the gate pre-activations are symmetric)")
def _relu_random(fn, ref):
    g = torch.Generator().manual_seed(1)
    for tokens, d, d_ff, dt in ((5, 8, 32, torch.float32), (16, 12, 64, torch.float64), (1, 4, 6, torch.float32)):
        x = torch.randn(tokens, d, generator=g, dtype=dt)
        wg, wu = torch.randn(d_ff, d, generator=g, dtype=dt), torch.randn(d_ff, d, generator=g, dtype=dt)
        wd = torch.randn(d, d_ff, generator=g, dtype=dt)
        gate = x @ wg.T  # (tokens, d_ff)
        h = torch.relu(gate) * (x @ wu.T)
        what = f"relufied_ffn on random x ({tokens}, {d}), d_ff = {d_ff}, {dt}"
        y, z = _relu_ffn(fn, ref, x, wg, wu, wd, what)
        assert_close(y, h @ wd.T, what=f"{what}: y", rtol=1e-5, atol=1e-5)
        if abs(z - float((h == 0).double().mean())) > 1e-6:  # float32 means round
            raise CheckFailure(f"{what}: zero_fraction = {z!r}, expected {float((h == 0).double().mean())!r}")


@prop("the order of the FFN units does not matter: permuting them (rows of W_gate, W_up, columns of W_down) keeps "
      "y and the zero fraction")
def _relu_permutation(fn, ref):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(6, 10, generator=g)
    wg, wu, wd = torch.randn(24, 10, generator=g), torch.randn(24, 10, generator=g), torch.randn(10, 24, generator=g)
    perm = torch.randperm(24, generator=g)
    what = "relufied_ffn(x, W_gate, W_up, W_down) vs the same with the 24 units permuted"
    y, z = _relu_ffn(fn, ref, x, wg, wu, wd, what)
    y2, z2 = _relu_ffn(fn, ref, x, wg[perm], wu[perm], wd[:, perm], what)
    assert_close(y2, y, what=f"{what}: y", rtol=1e-5, atol=1e-5)
    if abs(z2 - z) > 1e-9:
        raise CheckFailure(f"{what}: zero_fraction changed from {z!r} to {z2!r}")


Q20_2 = Exercise(
    id="q20_2", points=3, notebook=NOTEBOOK, reference="lessonlib.sparsity.activation:relufied_ffn",
    statement="ReLU-fy a LLaMA MLP: with x (tokens, d), w_gate and w_up (d_ff, d) and w_down (d, d_ff), compute the "
              "FFN intermediate with ReLU in place of SiLU on the gate, then the output y (tokens, d) in x's dtype. "
              "Return (y, zero_fraction), the second the fraction of entries of the intermediate that are exactly 0, "
              "as a Python float.",
    hints=("The gate is x @ w_gate.T (tokens, d_ff); only it goes through the activation.",
           "The intermediate is the elementwise product of the activated gate and the up projection.",
           "A zero can come from the gate or from the up projection: count the zeros of the product."),
    checks=(_relu_literal, _relu_gate_only, _relu_permutation, _relu_random),
)

from .concept import answer_function_checks, choice  # noqa: E402  (concept questions)

Q20_3 = Exercise(
    id='q20_3', points=2, notebook=NOTEBOOK, reference="lessonlib.concepts:batched_skip_choice",
    statement='Concept question (return one letter). A batched down projection multiplies the FFN intermediate of 32 tokens at once. Which units may it skip? A: units that are zero for at least one token of the batch; B: units that are zero for every token of the batch; C: units whose mean activation over the batch is near zero; D: units that are zero for the first token.',
    hints=('A skipped row of W_down^T is skipped for every token of the batch.',),
    checks=(choice("the letter of the right answer", 'B'), *answer_function_checks("letter")),
)

EXERCISES = [Q20_1, Q20_2, Q20_3]
