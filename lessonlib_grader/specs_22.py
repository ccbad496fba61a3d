"""Concept question of notebook 22 (reproducing the sources): reading a verdict as a rule applied to numbers."""
from __future__ import annotations

from .registry import Exercise
from .concept import answer_function_checks, choice

NOTEBOOK = "22_reproducing_the_sources"

Q22_1 = Exercise(
    id="q22_1", points=2, notebook=NOTEBOOK, reference="lessonlib.concepts:verdict_reading_choice",
    statement="Concept question (return one letter). A claim's rule reads: the sparsity from which a CSR matmul beats "
              "the dense one must lie in [0.5, 0.8] for each of three layer shapes (AND). The sparsities are measured "
              "on a grid of steps of 0.1, and a run finds 0.8, 0.8 and 0.9. What is the verdict, and what does it "
              "say? A: holds, because two of the three shapes are in range; B: does not hold at this scale, because "
              "one shape misses the range, by a single step of the grid: the verdict is as strong as the rule and "
              "the noise allow, so look at the margin (and rerun) before reading it as a large disagreement with "
              "the source; C: invalid run, because the three shapes disagree; D: does not hold, which shows that "
              "the source's number is wrong.",
    hints=("An AND of three conditions needs all three.", "How far outside the range is 0.9 on this grid?"),
    checks=(choice("the letter of the right reading", "B"), *answer_function_checks("letter")),
)

EXERCISES = [Q22_1]
