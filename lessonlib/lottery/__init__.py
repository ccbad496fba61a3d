"""Lottery tickets: iterative magnitude pruning with rewinding to iteration 0 or k, and the random re-init control."""
from .imp import (LeNet300100, LotteryRow, accuracy_of, format_lottery_table, imp_round, layer_prune_mask,
                  lottery_experiment, mask_sparsity, mnist_splits, prunable_weights, train_masked)

__all__ = ["LeNet300100", "LotteryRow", "accuracy_of", "format_lottery_table", "imp_round", "layer_prune_mask",
           "lottery_experiment", "mask_sparsity", "mnist_splits", "prunable_weights", "train_masked"]
