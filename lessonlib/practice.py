"""Answers to the sources' practice problems, graded as concept questions in chapters 11 and 13-21.

Each function takes no argument and returns the answer: a number, or one letter of the choices printed in the
chapter.  The reader writes the body in the notebook; the grader compares it with these.
"""
from __future__ import annotations

__all__ = ["pruned_quantized_coded_mb", "temperature_information_choice", "llama70b_7b_int4_ratio",
           "joint_beats_sequential_choice", "rescaling_block_choice", "projection_direction_choice",
           "exit_speedup_choice", "imp_fraction_left", "largest_saving_rank", "clustered_bytes", "batched_skip_choice"]


def pruned_quantized_coded_mb() -> float:
    """100M fp32 parameters, keep 10%, 4-bit, then 1.5 bits per survivor after coding: the size in MB."""
    # BEGIN SOLUTION
    survivors = 100_000_000 * 0.10  # 1e7 weights survive the pruning
    return survivors * 1.5 / 8 / 1e6  # 1.5 coded bits each, in MB
    # END SOLUTION


def temperature_information_choice() -> str:
    """Chapter 13: why a high temperature carries more information per example (one letter, see the chapter)."""
    # BEGIN SOLUTION
    return "C"
    # END SOLUTION


def llama70b_7b_int4_ratio() -> float:
    """Chapter 21: 70B fp16 distilled to 7B, then INT4 weights only: how many times smaller than the 70B model."""
    # BEGIN SOLUTION
    teacher_bytes = 70e9 * 2  # fp16: 140 GB
    student_bytes = 7e9 * 0.5  # INT4: 3.5 GB
    return teacher_bytes / student_bytes
    # END SOLUTION


def joint_beats_sequential_choice() -> str:
    """Chapter 21: when joint compression beats sequential compression (one letter, see the chapter)."""
    # BEGIN SOLUTION
    return "B"
    # END SOLUTION


def rescaling_block_choice() -> str:
    """Chapter 11, q11_2: one letter, see the chapter."""
    # BEGIN SOLUTION
    return "B"
    # END SOLUTION


def projection_direction_choice() -> str:
    """Chapter 14, q14_2: one letter, see the chapter."""
    # BEGIN SOLUTION
    return "A"
    # END SOLUTION


def exit_speedup_choice() -> str:
    """Chapter 15, q15_2: one letter, see the chapter."""
    # BEGIN SOLUTION
    return "A"
    # END SOLUTION


def imp_fraction_left() -> float:
    """Chapter 16, q16_2: a number, see the chapter."""
    # BEGIN SOLUTION
    rounds, rate = 5, 0.2
    return (1 - rate) ** rounds  # each round keeps 80% of the survivors
    # END SOLUTION


def largest_saving_rank() -> int:
    """Chapter 17, q17_2: a number, see the chapter."""
    # BEGIN SOLUTION
    d_out, d_in = 576, 1536
    return (d_out * d_in - 1) // (d_out + d_in)  # largest r with r (d_in + d_out) < d_in d_out
    # END SOLUTION


def clustered_bytes() -> int:
    """Chapter 18, q18_2: a number, see the chapter."""
    # BEGIN SOLUTION
    n, k = 576 * 1536, 16
    return n * 4 // 8 + 4 * k  # ceil(log2 16) = 4-bit indices + float32 codebook
    # END SOLUTION


def batched_skip_choice() -> str:
    """Chapter 20, q20_3: one letter, see the chapter."""
    # BEGIN SOLUTION
    return "B"
    # END SOLUTION
