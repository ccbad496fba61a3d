"""Answers to the sources' practice problems, graded as concept questions in chapters 13, 19, 21, 23 and 24.

Each function takes no argument and returns the answer: a number, or one letter of the choices printed in the
chapter.  The reader writes the body in the notebook; the grader compares it with these.
"""
from __future__ import annotations

__all__ = ["pruned_quantized_coded_mb", "temperature_information_choice", "llama70b_7b_int4_ratio",
           "joint_beats_sequential_choice", "int4_ridge_tokens", "nf4_double_quant_bits"]


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


def int4_ridge_tokens() -> float:
    """Chapter 23: tokens per call at which an INT4 layer (0.5 bytes/weight) on a 40 GFLOP/s, 4 GB/s CPU stops
    being memory-bound (activation bytes ignored)."""
    # BEGIN SOLUTION
    peak, bandwidth, bytes_per_weight = 40e9, 4e9, 0.5
    return peak * bytes_per_weight / (2 * bandwidth)  # 2 T / peak = b_w / bandwidth
    # END SOLUTION


def nf4_double_quant_bits() -> float:
    """Chapter 24: bits per weight of NF4 in blocks of 64 with 8-bit absmaxes and one fp32 constant per 256
    absmaxes (QLoRA's double quantization)."""
    # BEGIN SOLUTION
    return 4 + 8 / 64 + 32 / (64 * 256)
    # END SOLUTION
