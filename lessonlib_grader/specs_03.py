"""Graded exercises of notebook 03 (GPTQ): one column update of GPTQ's inner loop (q03_1), the whole lazy-batch
loop with act-order (q03_3), and a concept question (q03_2).

``gptq_column_update`` changes ``W1`` in place by contract, so its checks call it directly (``checks.call``
would hand it a copy) and look at ``W1`` afterwards.  Column ``i`` itself is not checked:
whether it ends at ``q`` or keeps its old value, GPTQ stores ``q`` separately and never reads it again;
for the same reason updating the (zero) entries ``U1[i, :i]`` of the upper factor is allowed.
Every expected value below is worked out by hand in the comment beside it.
"""
from __future__ import annotations

import torch

from .checks import (Check, CheckFailure, GradingTimeout, agrees_with_reference, assert_close, assert_tensor,
                     call, literal, prop)
from .concept import concept_checks
from .registry import Exercise

NOTEBOOK = "03_gptq"
_U3 = torch.tensor([[1.0, 2.0, 1.0], [0.0, 2.0, 1.0], [0.0, 0.0, 1.0]])  # upper factor, diagonal [1, 2, 1]


def _direct(fn, what: str, *args):
    """Call the student's function on these very tensors (its in-place effect on W1 stays visible)."""
    try:
        return fn(*args)
    except (NotImplementedError, GradingTimeout, CheckFailure):
        raise
    except Exception as exc:
        raise CheckFailure(f"calling {what}\n  raised {type(exc).__name__}: {exc}") from None


def _run(fn, ref, W1, U1, i, q, what):
    W1 = W1.clone()
    err = _direct(fn, what, W1, U1.clone(), i, q.clone())
    assert_tensor(err, what=f"{what}: the returned err", shape=(W1.shape[0],), floating=True)
    return W1, err


def _case(name: str, W1: list, i: int, q: list, err_want: list, later_want: list, U1=_U3) -> Check:
    """A hand-computed case (a literal check; written out because W1 changes in place)."""
    def run(fn, ref):
        W, Q = torch.tensor(W1), torch.tensor(q)
        what = f"gptq_column_update(W1={W1}, U1={U1.tolist()}, i={i}, q={q})"
        W_after, err = _run(fn, ref, W, U1, i, Q, what)
        assert_close(err, torch.tensor(err_want), what=f"{what}: err = (W1[:, i] - q) / U1[i, i]", atol=1e-6)
        assert_close(W_after[:, i + 1:], torch.tensor(later_want),
                     what=f"{what}: W1[:, {i + 1}:] after the call (updated in place)", atol=1e-6)
        if i > 0:
            assert_close(W_after[:, :i], W[:, :i], what=f"{what}: W1[:, :{i}] (already quantized columns must "
                                                       "not change)", atol=0)
    return Check(name, "literal", run)


# i = 0: err = (2.4 - 2) / 1 = 0.4; W1[:, 1:] -= 0.4 * [2, 1] -> [1.0 - 0.8, 1.3 - 0.4] = [0.2, 0.9]
_LIT_ROW = _case("the error moves the later columns along the row U1[i, i:]", [[2.4, 1.0, 1.3]], 0, [2.0],
                 [0.4], [[0.2, 0.9]])
# i = 1, U1[1, 1] = 2: err = (0.2 - 0) / 2 = 0.1; W1[:, 2] -= 0.1 * 1 -> 0.8; column 0 stays 2.0
_LIT_DIAG = _case("the error is divided by the diagonal U1[i, i]", [[2.0, 0.2, 0.9]], 1, [0.0], [0.1], [[0.8]])
# two rows share U1; i = 0: errs [0.4, -0.5]; row 0 -> [0.2, 0.9]; row 1: [3 + 1.0, 1 + 0.5] = [4.0, 1.5]
_LIT_ROWS = _case("every row uses its own error with the shared U1", [[2.4, 1.0, 1.3], [-1.5, 3.0, 1.0]], 0,
                  [2.0, -1.0], [0.4, -0.5], [[0.2, 0.9], [4.0, 1.5]])
# i = 2 is the last column: nothing later to update; err = (0.8 - 1) / 1 = -0.2
_LIT_LAST = _case("the last column only returns its error", [[2.0, 0.0, 0.8]], 2, [1.0], [-0.2],
                  torch.zeros(1, 0).tolist())


def _random_block(seed: int, out: int = 5, b: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(4 * b, b, generator=gen, dtype=torch.float64) @ torch.randn(b, b, generator=gen, dtype=torch.float64)
    h = x.T @ x / x.shape[0] + 0.1 * torch.eye(b, dtype=torch.float64)  # (B, B) SPD, correlated
    u = torch.linalg.cholesky(torch.linalg.inv(h), upper=True)  # U^T U = H^-1, diagonal far from 1
    return torch.randn(out, b, generator=gen, dtype=torch.float64) * 2, u


@prop("updates W1 in place (the caller's block must see the change)")
def _q1_inplace(fn, ref):
    W, U = _random_block(1)
    before = W.clone()
    _direct(fn, "gptq_column_update(W1 (5, 12), U1 (12, 12), i=3, q)", W, U, 3, torch.round(W[:, 3]))
    if torch.equal(W[:, 4:], before[:, 4:]):
        raise CheckFailure("gptq_column_update(W1 (5, 12), U1, i=3, q=round(W1[:, 3]))\n  W1[:, 4:] is unchanged "
                           "after the call; update W1 in place (W1[:, i:] -= ...), not a copy of it")


def _q1_agree_run(fn, ref):
    for seed in (2, 3):
        W, U = _random_block(seed)
        for i in range(W.shape[1]):
            q = torch.round(W[:, i] * 2) / 2  # a grid of step 0.5
            W_ref = W.clone()
            e_ref = ref(W_ref, U, i, q)
            what = f"random block (seed {seed}), gptq_column_update(W1 (5, 12), U1 (12, 12), i={i}, q)"
            W_got, e_got = _run(fn, ref, W, U, i, q, what)
            assert_close(e_got, e_ref, what=f"{what}: err", rtol=1e-7, atol=1e-9)
            assert_close(W_got[:, i + 1:], W_ref[:, i + 1:], what=f"{what}: W1[:, {i + 1}:]", rtol=1e-7, atol=1e-9)
            W = W_ref


_q1_agree = Check("matches the reference on random blocks at every column", "reference", _q1_agree_run)


@prop("column after column it reproduces GPTQ's quantized block and errors")
def _q1_loop(fn, ref):
    W0, U = _random_block(4, out=4, b=10)

    def gptq_block(update):
        W = W0.clone()
        Q, E = torch.zeros_like(W), torch.zeros_like(W)
        for i in range(W.shape[1]):
            q = torch.round(W[:, i])  # integer grid
            Q[:, i] = q
            E[:, i] = update(W, U, i, q)
        return Q, E

    Q_ref, E_ref = gptq_block(ref)

    def student(W, U_, i, q):
        err = _direct(fn, f"gptq_column_update(W1 (4, 10), U1 (10, 10), i={i}, q)", W, U_.clone(), i, q.clone())
        assert_tensor(err, what=f"gptq_column_update(..., i={i}, ...): the returned err", shape=(W.shape[0],))
        return err

    Q, E = gptq_block(student)
    what = "quantizing a random (4, 10) block column by column with your update (q = round(W1[:, i]))"
    assert_close(Q, Q_ref, what=f"{what}: the quantized columns", atol=1e-9)
    assert_close(E, E_ref, what=f"{what}: the errors Err1 used for the lazy update of later blocks",
                 rtol=1e-7, atol=1e-9)


Q03_1 = Exercise(
    id="q03_1", points=6, notebook=NOTEBOOK, reference="lessonlib.quant.gptq:gptq_column_update",
    statement="One OBS step of GPTQ on a block of columns, in place. W1 (out, B) holds the block's current "
              "weights, U1 (B, B) the matching block of the upper Cholesky factor U of H^-1 (U^T U = H^-1), and "
              "column i has just been quantized to q (out,). Compute err = (W1[:, i] - q) / U1[i, i] and spread "
              "it over the columns not yet quantized: W1[:, i:] -= err (outer product) U1[i, i:]. Return err.",
    hints=("err has one entry per output row: shape (out,). The update is an outer product (out, 1) x (1, B - i).",
           "Use the row U1[i, i:] of the upper factor, not the column U1[i:, i].",
           "Change W1 itself (W1[:, i:] -= ...): GPTQ reads the updated later columns from the same tensor."),
    checks=(_LIT_ROW, _LIT_DIAG, _LIT_ROWS, _LIT_LAST, _q1_inplace, _q1_agree, _q1_loop),
    time_limit_s=20.0,
)

EXERCISES = [Q03_1]


# ------------------------------------------------------------------ q03_2: concept question
Q03_C1 = Exercise(
    id="q03_2", points=1, notebook=NOTEBOOK, reference="lessonlib.concepts:q03_c1",
    statement='After GPTQ has fixed columns 0..k-1 it needs the inverse Hessian of the remaining problem. Where does it read the part it needs? A: row k of H^-1. B: row k of the upper Cholesky factor of H^-1. C: column k of the Cholesky factor of H. D: the diagonal of H. Return one letter.',
    hints=("Section 2's derive-then-check cell compares each candidate with the explicitly recomputed inverse.",),
    checks=concept_checks("q03_2", "B"),
)
EXERCISES = [*EXERCISES, Q03_C1]


# ------------------------------------------------------------------ q03_3 gptq_lazy_batch
# H_LIT^-1 = [[1, .5], [.5, 1.25]] = U^T U with U = [[1, .5], [0, 1]] (check: U^T U = [[1, .5], [.5, .25 + 1]]).
_H_LIT = torch.tensor([[1.25, -0.5], [-0.5, 1.0]], dtype=torch.float64)
_H_SWAP = torch.tensor([[1.0, -0.5], [-0.5, 1.25]], dtype=torch.float64)  # _H_LIT with its two columns swapped
_W_LIT = torch.tensor([[1.4, 0.6]], dtype=torch.float64)


def _lazy(name: str, W, H, block_size: int, act_order: bool, want: list) -> Check:
    return literal(name, (W, H, torch.round, block_size, act_order), expected=torch.tensor(want, dtype=torch.float64),
                   atol=1e-9)


# column 0: q = round(1.4) = 1, err = (1.4 - 1) / U_00 = 0.4; column 1: 0.6 - 0.4 * U_01 = 0.6 - 0.2 = 0.4 -> 0
# (round-to-nearest alone would give [1, 1])
_L3_INBLOCK = _lazy("the first column's error moves the second inside a block", _W_LIT, _H_LIT, 2, False, [[1.0, 0.0]])
# block_size 1: the same update must arrive through the deferred update W[:, i2:] -= Err1 @ U[i1:i2, i2:]
_L3_DEFERRED = _lazy("the deferred update carries the error to the next block", _W_LIT, _H_LIT, 1, False, [[1.0, 0.0]])
# act-order: diag(_H_SWAP) = [1, 1.25], so column 1 goes first; permuted, H is _H_LIT and W is [1.4, 0.6], so the
# arithmetic is the case above, [1, 0] in visiting order, i.e. [0, 1] in the original order
_L3_ACT = _lazy("act-order visits large H_jj first and returns the original column order", torch.tensor([[0.6, 1.4]],
                dtype=torch.float64), _H_SWAP, 2, True, [[0.0, 1.0]])
# without act-order on _H_SWAP: U = [[sqrt(1.25), 0.5 / sqrt(1.25)], [0, sqrt(0.8)]]; q0 = 1,
# err = -0.4 / 1.118 = -0.358, column 1: 1.4 + 0.358 * 0.447 = 1.56 -> 2
_L3_NOACT = _lazy("without act-order the columns go left to right", torch.tensor([[0.6, 1.4]], dtype=torch.float64),
                  _H_SWAP, 2, False, [[1.0, 2.0]])
# edge: one input column: nothing to update, the result is round(W)
_L3_ONECOL = _lazy("a single column is just rounded", torch.tensor([[0.7], [-1.2], [2.5]], dtype=torch.float64),
                   torch.tensor([[2.0]], dtype=torch.float64), 4, True, [[1.0], [-1.0], [2.0]])


def _spd(gen: torch.Generator, n: int, unit_diag: bool = False) -> torch.Tensor:
    x = torch.randn(3 * n, n, generator=gen, dtype=torch.float64) @ torch.randn(n, n, generator=gen, dtype=torch.float64)
    h = 2 / x.shape[0] * x.T @ x
    h = h + 0.05 * h.diagonal().mean() * torch.eye(n, dtype=torch.float64)  # damped: positive definite
    if unit_diag:  # every H_jj equal: act-order must keep the original order (a stable sort)
        d = h.diagonal().rsqrt()
        h = (d[:, None] * h * d[None, :]).fill_diagonal_(1.0)  # exactly 1: the scaling leaves ~1e-16 noise
    return h


def _half(col: torch.Tensor) -> torch.Tensor:
    return torch.round(col * 2) / 2  # a grid of step 0.5


@prop("the result does not depend on block_size (the deferred update equals the immediate one)")
def _q3_blocks(fn, ref):
    gen = torch.Generator().manual_seed(7)
    W, H = torch.randn(5, 12, generator=gen, dtype=torch.float64) * 2, _spd(gen, 12)
    for act in (False, True):
        base = call(fn, W, H, _half, 12, act, _ref=ref)
        assert_tensor(base, what=f"gptq_lazy_batch(W (5, 12), H, quant, 12, act_order={act})", shape=(5, 12))
        for b in (1, 2, 5, 20):
            got = call(fn, W, H, _half, b, act, _ref=ref)
            assert_close(got, base, what=f"gptq_lazy_batch(W (5, 12), H, quant, block_size={b}, act_order={act}) "
                                         f"against block_size=12 (one block)", atol=1e-9)


@prop("with a diagonal Hessian it is round-to-nearest, column by column, in the original order")
def _q3_diag(fn, ref):
    gen = torch.Generator().manual_seed(8)
    W = torch.randn(4, 9, generator=gen, dtype=torch.float64) * 2
    H = torch.diag(torch.rand(9, generator=gen, dtype=torch.float64) + 0.5)
    for act in (False, True):
        got = call(fn, W, H, _half, 4, act, _ref=ref)
        assert_close(got, _half(W), what=f"gptq_lazy_batch(W (4, 9), diagonal H, quant, 4, act_order={act}): "
                                         "no error can move, so the answer is quant(W)", atol=1e-9)


@prop("ties: when every H_jj is equal, act-order keeps the original column order")
def _q3_ties(fn, ref):
    gen = torch.Generator().manual_seed(9)
    W, H = torch.randn(4, 10, generator=gen, dtype=torch.float64) * 2, _spd(gen, 10, unit_diag=True)
    plain = call(fn, W, H, _half, 3, False, _ref=ref)
    got = call(fn, W, H, _half, 3, True, _ref=ref)
    assert_close(got, plain, what="gptq_lazy_batch(W (4, 10), H with a constant diagonal, quant, 3, act_order=True) "
                                  "against act_order=False (sort stably: equal H_jj keep their order)", atol=1e-9)


def _q3_case(gen, rng):
    n = rng.randint(3, 14)
    W = torch.randn(rng.randint(1, 6), n, generator=gen, dtype=torch.float64) * 2
    return (W, _spd(gen, n), _half, rng.randint(1, n + 2), rng.random() < 0.5), {}


_q3_agree = agrees_with_reference("matches the reference on random weights, block sizes and act-order", _q3_case,
                                  n_cases=8, seed=3, atol=1e-9)

Q03_3 = Exercise(
    id="q03_3", points=6, notebook=NOTEBOOK, reference="lessonlib.quant.gptq:gptq_lazy_batch",
    statement="GPTQ's whole loop on one weight W (out, in) with its damped Hessian H (in, in). If act_order, visit "
              "the columns in decreasing H_jj (stable sort) and permute W and H alike. With U the upper Cholesky "
              "factor of H^-1, go through the columns in blocks of block_size: inside a block, quantize each column "
              "with quant (it sees every earlier update) and push its error into the block's later columns at once; "
              "apply the block's errors to all later blocks only when the block is done (the deferred update). "
              "Return the quantized weight (out, in) in the original column order; do not change W or H.",
    hints=("The in-block step is q03_1's column update; keep the scaled errors err = (w - q) / U_ii of the block in "
           "a matrix Err1 (out, B).",
           "The deferred update is one matrix product of Err1 with the block's rows of U, restricted to the "
           "columns after the block.",
           "torch.argsort(..., descending=True, stable=True); undo the permutation with argsort(perm).",
           "Work on a clone of W: the caller's tensor must not change."),
    checks=(_L3_INBLOCK, _L3_DEFERRED, _L3_ACT, _L3_NOACT, _L3_ONECOL, _q3_blocks, _q3_diag, _q3_ties, _q3_agree),
    time_limit_s=20.0,
)
EXERCISES = [*EXERCISES, Q03_3]
