"""Low-rank factorisation: truncated SVD (plain, SVD-LLM whitened, ASVD) of linear layers and LoRA adapters."""
from .lora import LoRALinear, apply_lora, lora_parameters, merge_all
from .svd import (asvd_split, breakeven_rank, factorize_linear, low_rank_linear, lowrank_model, lowrank_params,
                  rank_from_energy, rank_from_knee, svd_split, whitened_svd_split)

__all__ = ["LoRALinear", "apply_lora", "lora_parameters", "merge_all", "asvd_split", "breakeven_rank",
           "factorize_linear", "low_rank_linear", "lowrank_model", "lowrank_params", "rank_from_energy",
           "rank_from_knee", "svd_split", "whitened_svd_split"]
