"""Old name of the practice problems' answers: they live in :mod:`lessonlib.concepts` with every other
concept question (one answers module). Kept so ``from lessonlib.practice import ...`` still works."""
from __future__ import annotations

from .concepts import (joint_beats_sequential_choice, llama70b_7b_int4_ratio, pruned_quantized_coded_mb,
                       temperature_information_choice, int4_ridge_tokens, nf4_double_quant_bits,
                       rescaling_block_choice, projection_direction_choice, exit_speedup_choice, imp_fraction_left, largest_saving_rank, clustered_bytes, batched_skip_choice)

__all__ = ["pruned_quantized_coded_mb", "temperature_information_choice", "llama70b_7b_int4_ratio",
           "joint_beats_sequential_choice", "int4_ridge_tokens", "nf4_double_quant_bits",
           "rescaling_block_choice", "projection_direction_choice", "exit_speedup_choice", "imp_fraction_left", "largest_saving_rank", "clustered_bytes", "batched_skip_choice"]
