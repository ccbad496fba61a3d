"""Graded exercise of notebook 21 (the pipeline): pick the recipe that fits a size budget with the best PPL.

Every expected answer is worked out by hand in the comment beside it.
"""
from __future__ import annotations

import random

from .checks import literal, Check, CheckFailure, call, prop
from .registry import Exercise

NOTEBOOK = "21_pipeline"

ROWS = [("a", 100, 20.0), ("b", 50, 25.0), ("c", 40, 25.0), ("d", 200, 10.0)]


def _kind(kind: str):
    return lambda c: Check(c.name, kind, c.run)


def _expect(fn, ref, rows, budget, want: str) -> None:
    got = call(fn, rows, budget, _ref=ref)
    if got != want:
        raise CheckFailure(f"best_under_budget({rows}, budget_bytes={budget})\n  expected {want!r}, got {got!r}")


@_kind("literal")
@prop("budget 100: a (100 B, PPL 20) fits and beats b and c (PPL 25); d (200 B) is too big")
def _fits(fn, ref):
    _expect(fn, ref, ROWS, 100, "a")


@_kind("literal")
@prop("budget 1000: everything fits, d has the lowest PPL (10)")
def _all_fit(fn, ref):
    _expect(fn, ref, ROWS, 1000, "d")


@_kind("literal")
@prop("budget 60: b and c fit with the same PPL 25; the tie goes to the smaller c (40 B)")
def _tie(fn, ref):
    _expect(fn, ref, ROWS, 60, "c")


@_kind("literal")
@prop("budget 40: c (exactly 40 B) fits -- the budget is inclusive")
def _inclusive(fn, ref):
    _expect(fn, ref, ROWS, 40, "c")


@_kind("literal")
@prop("same PPL and same bytes: the earlier row wins ([x, y] -> x)")
def _first(fn, ref):
    _expect(fn, ref, [("x", 10, 5.0), ("y", 10, 5.0)], 10, "x")


@prop("nothing fits (budget 39): ValueError naming the smallest candidate 'c'")
def _none_fits(fn, ref):
    try:
        got = fn(list(ROWS), 39)
    except ValueError as e:
        if "'c'" not in str(e) and "c" not in str(e).split():
            raise CheckFailure(f"best_under_budget(..., 39) raised ValueError({e!s}) but the message should name "
                               "the smallest candidate 'c'") from None
        return
    except Exception as e:  # noqa: BLE001 - the student's bug
        raise CheckFailure(f"best_under_budget(..., 39) should raise ValueError, raised "
                           f"{type(e).__name__}: {e}") from None
    raise CheckFailure(f"best_under_budget(..., 39): no candidate fits, expected ValueError, got {got!r}")


@_kind("reference")
@prop("agrees with the reference on 40 random candidate lists and budgets")
def _random(fn, ref):
    rng = random.Random(0)
    for i in range(40):
        rows = [(f"r{j}", rng.randint(1, 20) * 10, float(rng.randint(10, 14))) for j in range(rng.randint(1, 6))]
        budget = rng.randint(min(r[1] for r in rows), 220)
        _expect(fn, ref, rows, budget, ref(list(rows), budget))


Q21_1 = Exercise(
    id="q21_1", points=3, notebook=NOTEBOOK, reference="lessonlib.pipeline.budget:best_under_budget",
    statement="Given measured candidate recipes as (name, bytes, ppl) rows and a size budget in bytes, return the "
              "name of the candidate with the lowest perplexity among those with bytes <= budget. Ties in "
              "perplexity go to the smaller model, then to the earlier row. When nothing fits, raise ValueError "
              "naming the smallest candidate.",
    hints=("Filter first: keep the rows with bytes <= budget_bytes (the budget is inclusive).",
           "min() over tuples (ppl, bytes, row index, name) applies all the tie rules at once.",
           "If the filtered list is empty, find the row with the fewest bytes and put its name in the error."),
    checks=(_fits, _all_fit, _tie, _inclusive, _first, _none_fits, _random),
)

from .concept import answer_function_checks, choice, number  # noqa: E402  (concept questions)

Q21_2 = Exercise(
    id="q21_2", points=2, notebook=NOTEBOOK, reference="lessonlib.concepts:llama70b_7b_int4_ratio",
    statement="Concept question (a number). A 70B-parameter model in fp16 is distilled into a 7B student, whose "
              "weights are then stored in INT4 (4 bits per weight; ignore scales and the embedding's format). "
              "How many times smaller is the final model than the 70B fp16 model?",
    hints=("Bytes per weight: fp16 = 2, INT4 = 0.5.", "Compute both sizes in bytes, then divide."),
    checks=(number("the ratio", 40.0), *answer_function_checks("number")),  # 140 GB / 3.5 GB
)

Q21_3 = Exercise(
    id="q21_3", points=2, notebook=NOTEBOOK, reference="lessonlib.concepts:joint_beats_sequential_choice",
    statement="Concept question (return one letter). When does joint compression (pruning and quantizing in one "
              "pass, as SparseGPT can) beat the same two steps one after the other, at the same final size? "
              "A: never, the bytes are equal so the quality is equal; B: when the weights kept by one step can "
              "compensate the other step's error: the joint solver updates the surviving weights knowing they "
              "will be quantized, while the sequential pipeline prunes for full-precision survivors and then "
              "quantizes without revisiting that choice; C: only when the model is fine-tuned afterwards; D: "
              "when the two steps commute.",
    hints=("Where does each method put the error of the second step?",),
    checks=(choice("the letter of the right explanation", "B"), *answer_function_checks("letter")),
)

Q21_4 = Exercise(
    id="q21_4", points=2, notebook=NOTEBOOK, reference="lessonlib.concepts:csr_int4_break_even",
    statement="Concept question (a number). The chapter showed that INT4 weights with a bitmask of positions save "
              "bytes only above a sparsity of 1/b. Now store the positions as CSR instead: one 16-bit column index "
              "per nonzero beside its 4-bit code (ignore the row pointers and the scales, which both layouts share "
              "with dense INT4). Above which sparsity s does the sparse layout hold fewer bytes than dense INT4?",
    hints=("Bytes per weight: dense INT4 0.5; sparse (1 - s) x (0.5 + 2).",),
    checks=(number("the break-even sparsity", 0.8), *answer_function_checks("number")),  # (1 - s) 2.5 < 0.5
)

Q21_5 = Exercise(
    id="q21_5", points=2, notebook=NOTEBOOK, reference="lessonlib.concepts:latency_control_choice",
    statement="Concept question (return one letter). In the chapter's widget the compressed model keeps float "
              "weights that carry the compressed values (rounded, or zero). Which control changes the measured "
              "latency of a forward pass, beyond the machine's noise? A: the bit width; B: the magnitude sparsity; "
              "C: the fraction of blocks dropped; D: all three, since each one shrinks the file.",
    hints=("Which of the three changes the number of multiply-adds a dense kernel performs?",),
    checks=(choice("the letter of the right answer", "C"), *answer_function_checks("letter")),
)

EXERCISES = [Q21_1, Q21_2, Q21_3, Q21_4, Q21_5]
