"""Graded exercise of notebook 03 (GPTQ): one column update of GPTQ's inner loop.

``gptq_column_update`` changes ``W1`` in place by contract, so its checks call it directly (``checks.call``
would hand it a copy) and look at ``W1`` afterwards.  Column ``i`` itself is not checked:
whether it ends at ``q`` or keeps its old value, GPTQ stores ``q`` separately and never reads it again;
for the same reason updating the (zero) entries ``U1[i, :i]`` of the upper factor is allowed.
Every expected value below is worked out by hand in the comment beside it.
"""
from __future__ import annotations

import torch

from .checks import Check, CheckFailure, GradingTimeout, assert_close, assert_tensor, prop
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
