"""Graded exercise of notebook 17 (low rank): the truncated-SVD split W ~ B A.

Singular vectors are only defined up to sign, so the checks compare sign-free quantities: the product B A,
the Gram matrices A A^T = B^T B = diag(s_1..s_r) of the balanced split, shapes and dtypes.  Every expected
value is computed by hand in the comment beside it.
"""
from __future__ import annotations

import torch

from .checks import Check, CheckFailure, assert_close, assert_tensor, call, prop
from .registry import Exercise


def _kind(kind: str):
    """Re-label a check written with ``prop`` as a hand-computed literal or a comparison with the reference."""
    return lambda c: Check(c.name, kind, c.run)


NOTEBOOK = "17_low_rank"

T = torch.tensor


def _split(fn, ref, w: torch.Tensor, rank: int, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    got = call(fn, w, rank, _ref=ref)
    if not isinstance(got, tuple) or len(got) != 2:
        raise CheckFailure(f"{what}\n  expected a tuple (A, B), got {type(got).__name__}")
    A, B = got
    assert_tensor(A, what=f"{what}: A", shape=(rank, w.shape[1]), dtype=w.dtype)
    assert_tensor(B, what=f"{what}: B", shape=(w.shape[0], rank), dtype=w.dtype)
    return A, B


@_kind("literal")
@prop("diag(3, 1) at rank 1 keeps the 3: B A = [[3, 0], [0, 0]], A A^T = B^T B = [[3]]")
def _diag(fn, ref):
    A, B = _split(fn, ref, T([[3.0, 0.0], [0.0, 1.0]]), 1, "svd_split(diag(3, 1), rank=1)")
    assert_close(B @ A, T([[3.0, 0.0], [0.0, 0.0]]), what="B @ A for svd_split(diag(3, 1), 1)", atol=1e-5)
    # A = sqrt(3) * (+-e1)^T, B = (+-e1) sqrt(3): each factor carries sqrt(s)
    assert_close(A @ A.T, T([[3.0]]), what="A @ A.T for svd_split(diag(3, 1), 1) (A = sqrt(S_r) V_r^T)", atol=1e-5)
    assert_close(B.T @ B, T([[3.0]]), what="B.T @ B for svd_split(diag(3, 1), 1) (B = U_r sqrt(S_r))", atol=1e-5)


@_kind("literal")
@prop("an off-diagonal 2x3 matrix at rank 2 is rebuilt exactly, Gram matrices diag(4, 2)")
def _wide(fn, ref):
    w = T([[0.0, 4.0, 0.0], [0.0, 0.0, -2.0]])  # singular values 4 and 2 (rows are orthogonal)
    A, B = _split(fn, ref, w, 2, "svd_split([[0, 4, 0], [0, 0, -2]], rank=2)")
    assert_close(B @ A, w, what="B @ A at full rank", atol=1e-5)
    assert_close(A @ A.T, T([[4.0, 0.0], [0.0, 2.0]]), what="A @ A.T (largest singular value first)", atol=1e-5)
    assert_close(B.T @ B, T([[4.0, 0.0], [0.0, 2.0]]), what="B.T @ B (largest singular value first)", atol=1e-5)


@_kind("literal")
@prop("a rank-1 matrix u v^T is rebuilt exactly at rank 1")
def _rank1(fn, ref):
    w = T([[1.0], [2.0], [2.0]]) @ T([[2.0, 0.0, -1.0, 2.0]])  # |u| = 3, |v| = 3 -> s_1 = 9
    A, B = _split(fn, ref, w, 1, "svd_split(u v^T with u = [1, 2, 2], v = [2, 0, -1, 2], rank=1)")
    assert_close(B @ A, w, what="B @ A for a rank-1 matrix", atol=1e-5)
    assert_close(A @ A.T, T([[9.0]]), what="A @ A.T for a rank-1 matrix with s_1 = |u| |v| = 9", atol=1e-4)


@_kind("literal")
@prop("keeps the largest singular values: diag(1, 5, 2) at rank 2 keeps 5 and 2")
def _order(fn, ref):
    A, B = _split(fn, ref, torch.diag(T([1.0, 5.0, 2.0])), 2, "svd_split(diag(1, 5, 2), rank=2)")
    assert_close(B @ A, torch.diag(T([0.0, 5.0, 2.0])), what="B @ A for svd_split(diag(1, 5, 2), 2)", atol=1e-5)


@prop("float32 in, float32 out; float64 in, float64 out; the input is not modified")
def _dtypes(fn, ref):
    g = torch.Generator().manual_seed(0)
    for dt in (torch.float32, torch.float64):
        _split(fn, ref, torch.randn(5, 4, generator=g).to(dt), 2, f"svd_split on a {dt} (5, 4) weight")


@_kind("reference")
@prop("Eckart-Young on random weights: B A matches the best rank-r approximation, Gram matrices diag(s_1..s_r)")
def _random(fn, ref):
    g = torch.Generator().manual_seed(1)
    for out_f, in_f, r in ((6, 4, 2), (3, 7, 3), (8, 8, 5), (10, 5, 1)):
        w = torch.randn(out_f, in_f, generator=g, dtype=torch.float64)
        A, B = _split(fn, ref, w, r, f"svd_split(random ({out_f}, {in_f}) weight, rank={r})")
        rA, rB = ref(w.clone(), r)
        what = f"random ({out_f}, {in_f}) weight at rank {r}"
        assert_close(B @ A, rB @ rA, what=f"B @ A for a {what}", rtol=1e-6, atol=1e-8)
        assert_close(A @ A.T, rA @ rA.T, what=f"A @ A.T for a {what}", rtol=1e-6, atol=1e-8)
        assert_close(B.T @ B, rB.T @ rB, what=f"B.T @ B for a {what}", rtol=1e-6, atol=1e-8)


Q17_1 = Exercise(
    id="q17_1", points=4, notebook=NOTEBOOK, reference="lessonlib.lowrank.svd:svd_split",
    statement="Split a weight W (out, in) into the best rank-r factors W ~ B @ A by the truncated SVD "
              "W = U S V^T: A = sqrt(S_r) V_r^T of shape (r, in) and B = U_r sqrt(S_r) of shape (out, r), "
              "keeping the r largest singular values and sharing each one evenly between the two factors. "
              "Return (A, B) in the dtype of W.",
    hints=("torch.linalg.svd(W, full_matrices=False) returns U, S, Vh with S sorted descending.",
           "Scale the rows of Vh[:r] and the columns of U[:, :r] by sqrt(S[:r]).",
           "Compute in float64 for accuracy and cast back with .to(W.dtype)."),
    checks=(_diag, _wide, _rank1, _order, _dtypes, _random),
)

from .checks import literal  # noqa: E402
from .concept import answer_function_checks  # noqa: E402  (concept questions)

Q17_2 = Exercise(
    id='q17_2', points=2, notebook=NOTEBOOK, reference="lessonlib.concepts:largest_saving_rank",
    statement="Concept question (a number). SmolLM2's down projection is 576 x 1536. What is the largest rank r at which its split B A (B: 576 x r, A: r x 1536) stores fewer numbers than the dense matrix?",
    hints=('The split stores r (d_in + d_out) numbers.',),
    checks=(literal("the number", (), expected=418, rtol=1e-6), *answer_function_checks("number")),
)

EXERCISES = [Q17_1, Q17_2]
