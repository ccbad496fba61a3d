"""Reference answers of the concept questions of chapters 00-09 (graded by ``lessonlib.grading``).

Each question is a zero-argument function the reader fills in, returning one letter (a choice) or a number.
The question text lives in the notebook and in the exercise statement (``lessonlib/grading/specs_NN.py``);
the reasoning behind each answer is in the comment beside it, so a reader who checks can learn from it.
"""
from __future__ import annotations

__all__ = ["concept_checks", "q01_c1", "q02_c1", "q03_c1", "q04_c1", "q05_c1", "q06_c1", "q07_c1", "q08_c1", "q09_c1"]


def q01_c1() -> float:
    """By what factor does the rounding MSE of a uniform grid fall from 4 to 6 bits (same range)?"""
    # BEGIN SOLUTION
    return 16.0  # each bit halves the step s; the MSE s^2 / 12 falls by 4 per bit
    # END SOLUTION


def q02_c1() -> str:
    """Which linear of a LLaMA block has its SmoothQuant factor folded into the *rows of another linear*?"""
    # BEGIN SOLUTION
    return "C"  # o_proj: attention is linear in V, so 1/s goes into v_proj's rows (down_proj likewise into up_proj)
    # END SOLUTION


def q03_c1() -> str:
    """Where does GPTQ read the inverse it needs for column k after columns 0..k-1 are fixed?"""
    # BEGIN SOLUTION
    return "B"  # row k of the upper Cholesky factor U of H^-1 (times U_kk): no inverse is recomputed
    # END SOLUTION


def q04_c1() -> str:
    """Why does scaling a salient input channel up by s > 1 before rounding (and down after) help?"""
    # BEGIN SOLUTION
    return "A"  # its rounding error is divided by s while the group's step barely grows (s modest, one channel)
    # END SOLUTION


def q05_c1() -> float:
    """Fraction of weights with zero STE gradient when the grid is refitted to each group's min/max every step."""
    # BEGIN SOLUTION
    return 0.0  # every weight lies inside its own group's range, so the clipped branch never fires
    # END SOLUTION


def q06_c1() -> float:
    """Fraction of zeros in a 3:4 sparse matrix (N:M = N kept of every M)."""
    # BEGIN SOLUTION
    return 0.25  # 3 of 4 kept, 1 of 4 zero
    # END SOLUTION


def q07_c1() -> str:
    """Wanda's score is the OBS saliency with the Hessian replaced by what?"""
    # BEGIN SOLUTION
    return "A"  # its diagonal: [H^-1]_qq = 1 / H_qq, so w^2 / [H^-1]_qq = w^2 H_qq ~ (|w| ||x_q||)^2
    # END SOLUTION


def q08_c1() -> float:
    """Above which sparsity does CSR (fp16 values + int32 column indices) store fewer bytes than dense fp16?"""
    # BEGIN SOLUTION
    return 2.0 / 3.0  # (1 - s)(2 + 4) bytes < 2 bytes per weight (row pointers are negligible)
    # END SOLUTION


def q09_c1() -> str:
    """A pruned classifier's held-out accuracy equals the majority-class share. What does that mean?"""
    # BEGIN SOLUTION
    return "B"  # it answers one class for everything: collapsed; a comparison built on it measures nothing
    # END SOLUTION



def concept_checks(qid: str, answer: str | float, rtol: float = 1e-3, atol: float = 1e-2) -> tuple:
    """The grading checks of one concept question: the answer (literal), its type (property) and agreement
    with the reference function (reference).  ``answer`` is a letter A-D or a number (compared with tolerance)."""
    from .grading.checks import Check, CheckFailure, assert_close, call

    def _get(fn, ref):
        got = call(fn, _ref=ref)
        if isinstance(answer, str):
            if not isinstance(got, str) or len(got.strip()) != 1 or got.strip().upper() not in "ABCD":
                raise CheckFailure(f"{qid}: return one letter A, B, C or D as a string, got {got!r}")
            return got.strip().upper()
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            raise CheckFailure(f"{qid}: return a number, got {type(got).__name__} {got!r}")
        return float(got)

    def _same(got, want, what):
        if isinstance(answer, str):
            if got != want:
                raise CheckFailure(f"{what}: {got} is not the answer; reread the derivation and try again")
        else:
            assert_close(got, float(want), what=what, rtol=rtol, atol=atol)

    def literal_run(fn, ref):
        _same(_get(fn, ref), answer, f"{qid}")

    def type_run(fn, ref):
        _get(fn, ref)

    def ref_run(fn, ref):
        want = ref()
        _same(_get(fn, ref), want.strip().upper() if isinstance(want, str) else want, f"{qid} against the reference")

    kind = "one letter A-D" if isinstance(answer, str) else "a number"
    return (Check("the answer", "literal", literal_run), Check(f"returns {kind}", "property", type_run),
            Check("agrees with the reference answer", "reference", ref_run))
