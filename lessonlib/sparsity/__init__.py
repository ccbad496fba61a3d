"""Activation sparsity: measuring zero FFN activations, ReLU-fication, and a down projection that skips them."""
from .activation import (ActivationSparsityMonitor, SparseDownProj, activation_sparsity, ffn_down_projections,
                         relufied_ffn, relufy_llama_mlp, sparse_down_proj, time_sparse_down_proj)

__all__ = ["ActivationSparsityMonitor", "SparseDownProj", "activation_sparsity", "ffn_down_projections",
           "relufied_ffn", "relufy_llama_mlp", "sparse_down_proj", "time_sparse_down_proj"]
