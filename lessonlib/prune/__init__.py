"""Unstructured and N:M pruning: masks, magnitude, Wanda, SparseGPT, OBS, movement pruning, sparse kernels.

Conventions (details in ``lessonlib.prune.masks``): a mask is a bool tensor (out, in) with True = keep;
sparsity is the fraction pruned, in [0, 1); N:M is ``keep_n`` *kept* of every ``group_m`` consecutive
input weights (the 2:4 sparse-tensor-core convention; ``keep_n=2, group_m=4`` is 2:4, ``keep_n=3, group_m=4`` keeps 3 of 4).
"""
from .magnitude import (cubic_sparsity, global_magnitude_masks, gradual_magnitude_prune, magnitude_mask,
                        magnitude_prune_model, magnitude_row_mask)
from .masks import (MaskHandle, SparsityReport, apply_mask, apply_mask_, is_nm_sparse, n_to_prune, nm_mask, overall_sparsity,
                    prune_lowest, register_mask, remove_mask, sparsity, sparsity_report)
from .movement import (movement_backward, movement_score_update, movement_train_step, soft_movement_mask, topk_mask,
                       topk_ste)
from .obs import obs_prune
from .sparsegpt import sparsegpt_prune, sparsegpt_prune_model
from .wanda import wanda_mask, wanda_prune_model

__all__ = [
    "MaskHandle", "SparsityReport", "apply_mask", "apply_mask_", "is_nm_sparse", "n_to_prune", "nm_mask", "overall_sparsity",
    "prune_lowest", "register_mask", "remove_mask", "sparsity", "sparsity_report",
    "magnitude_mask", "magnitude_row_mask", "global_magnitude_masks", "magnitude_prune_model", "cubic_sparsity",
    "gradual_magnitude_prune", "wanda_mask", "wanda_prune_model", "sparsegpt_prune", "sparsegpt_prune_model",
    "obs_prune", "movement_backward", "movement_score_update", "movement_train_step", "soft_movement_mask", "topk_mask", "topk_ste",
]
