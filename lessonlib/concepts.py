"""Reference answers of every concept question answered by a function (chapters 01-24: the chapters' own
questions and the sources' practice problems of chapters 13, 19 and 21), graded by ``lessonlib_grader.concept``.

Each question is a zero-argument function the reader fills in, returning one letter (a choice) or a number.
The question text lives in the notebook and in the exercise statement (``lessonlib_grader/specs_NN.py``);
the reasoning behind each answer is in the comment beside it, so a reader who checks can learn from it.
"""
from __future__ import annotations

__all__ = ["q01_c1", "q02_c1", "q03_c1", "q04_c1", "q05_c1", "q06_c1", "q07_c1", "q08_c1", "q09_c1",
           "pruned_quantized_coded_mb", "temperature_information_choice", "llama70b_7b_int4_ratio",
           "joint_beats_sequential_choice", "int4_ridge_tokens", "nf4_double_quant_bits",
           "rescaling_block_choice", "projection_direction_choice", "exit_speedup_choice", "imp_fraction_left", "largest_saving_rank", "clustered_bytes", "batched_skip_choice",
           "heads_removed_params", "mqa_cache_mib", "moe_memory_compute_choice", "student_risk_bound",
           "csr_int4_break_even", "latency_control_choice", "verdict_reading_choice"]


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


# ---- the sources' practice problems (chapters 13, 19, 21; formerly lessonlib/practice.py) ----
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


# ---- chapters 23 and 24 ----
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


# ---- chapters 11, 14-18 and 20 ----
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


# ---- chapters 10, 12, 13, 21 and 22: predict from what the chapter derived or measured ----
def heads_removed_params() -> int:
    """Chapter 10, q10_4: a number, see the chapter."""
    # BEGIN SOLUTION
    blocks, hidden, head_dim, removed = 30, 576, 64, 3  # one query head of each of the 3 KV groups
    return blocks * 2 * removed * head_dim * hidden  # rows of W_Q and columns of W_O; W_K, W_V untouched
    # END SOLUTION


def mqa_cache_mib() -> float:
    """Chapter 12, q12_2: a number, see the chapter."""
    # BEGIN SOLUTION
    blocks, kv_heads, head_dim, fp16, context = 30, 1, 64, 2, 8192
    return 2 * blocks * kv_heads * head_dim * fp16 * context / 2 ** 20  # K and V, every block, every token
    # END SOLUTION


def moe_memory_compute_choice() -> str:
    """Chapter 12, q12_3: one letter, see the chapter."""
    # BEGIN SOLUTION
    return "B"  # all 8 experts are stored, each token runs its top 2 (plus a tiny router)
    # END SOLUTION


def student_risk_bound() -> float:
    """Chapter 13, q13_3: a number, see the chapter."""
    # BEGIN SOLUTION
    teacher_risk, forward_kl = 0.10, 0.08
    return teacher_risk + (forward_kl / 2) ** 0.5  # R(S) <= R(T) + sqrt(KL(p_T || p_S) / 2) (Pinsker)
    # END SOLUTION


def csr_int4_break_even() -> float:
    """Chapter 21, q21_4: a number, see the chapter."""
    # BEGIN SOLUTION
    value_bytes, index_bytes = 4 / 8, 2  # per nonzero: a 4-bit code and a 16-bit column index
    return 1 - value_bytes / (value_bytes + index_bytes)  # (1 - s)(0.5 + 2) < 0.5  <=>  s > 0.8
    # END SOLUTION


def latency_control_choice() -> str:
    """Chapter 21, q21_5: one letter, see the chapter."""
    # BEGIN SOLUTION
    return "C"  # rounded or zeroed float weights cost a dense kernel the same work; fewer blocks, less work
    # END SOLUTION


def verdict_reading_choice() -> str:
    """Chapter 22, q22_1: one letter, see the chapter."""
    # BEGIN SOLUTION
    return "B"  # the rule's AND fails on one shape; 0.9 vs 0.8 is one grid step, so rerun before reading more into it
    # END SOLUTION
