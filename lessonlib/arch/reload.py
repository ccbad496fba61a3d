"""Reloading a model whose blocks were pruned unevenly (different head counts or FFN widths per block).

A Hugging Face config holds one ``num_attention_heads``, ``num_key_value_heads`` and ``intermediate_size`` for
every block, so ``from_pretrained`` cannot rebuild a model where block 3 kept 6 heads and block 7 kept 9: the
saved tensors do not fit the shapes the config describes.  ``save_pretrained`` still writes every tensor
with its real shape, and the shapes are all that is needed: ``load_pruned`` builds the model from its config,
replaces every ``nn.Linear`` whose saved weight has another shape by one of the saved shape, sets the few
per-module head counts the attention code reads (``num_key_value_groups`` of a LLaMA attention, the head
count of a BERT self-attention, the width of a LLaMA MLP) and loads the state dict strictly.  Uniformly
pruned models (which ``from_pretrained`` reloads) load the same way.
"""
from __future__ import annotations

import glob
import os

import torch
from torch import nn

__all__ = ["load_pruned"]


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)


def _fix_head_counts(model: nn.Module) -> None:
    """Re-derive the per-module head bookkeeping from the (possibly reshaped) projections."""
    for m in model.modules():
        if all(hasattr(m, a) for a in ("q_proj", "k_proj", "head_dim")):  # LLaMA-style attention
            n_q, n_kv = m.q_proj.out_features // m.head_dim, m.k_proj.out_features // m.head_dim
            m.num_key_value_groups = n_q // n_kv
        if all(hasattr(m, a) for a in ("query", "key", "attention_head_size")):  # BERT self-attention
            m.num_attention_heads = m.query.out_features // m.attention_head_size
            m.all_head_size = m.query.out_features
        if all(hasattr(m, a) for a in ("down_proj", "intermediate_size")):  # LLaMA MLP
            m.intermediate_size = m.down_proj.in_features


@torch.no_grad()
def load_pruned(path: str, device: str | torch.device = "cpu") -> nn.Module:
    """Load a model saved with ``save_pretrained(path)`` whatever its per-block head counts and FFN widths.

    The model class is the config's ``architectures[0]`` (a ``transformers`` class); the result is in eval
    mode, in the saved dtype, on ``device``.  Raises ValueError when ``path`` holds no safetensors weights or
    when a saved tensor has no place in the rebuilt model.
    """
    import transformers
    from safetensors.torch import load_file

    if not os.path.isdir(path):
        raise ValueError(f"path={path!r} is not a folder written by save_pretrained")
    cfg = transformers.AutoConfig.from_pretrained(path)
    archs = getattr(cfg, "architectures", None) or []
    cls = getattr(transformers, archs[0], None) if archs else None
    if cls is None:
        raise ValueError(f"config.architectures={archs!r} names no transformers model class")
    files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    if not files:
        raise ValueError(f"no *.safetensors file in {path!r}; save the model with save_pretrained(path)")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            state.update(load_file(f))
        except Exception as e:  # safetensors' own errors name neither the file nor what to do
            raise ValueError(f"{f}: not a readable safetensors file ({type(e).__name__}: {str(e)[:200]})") from e
    model = cls(cfg)
    for name, lin in list(model.named_modules()):
        w = state.get(f"{name}.weight")
        if isinstance(lin, nn.Linear) and w is not None and tuple(w.shape) != tuple(lin.weight.shape):
            out_f, in_f = w.shape  # (out, in) as saved
            _replace(model, name, nn.Linear(in_f, out_f, bias=f"{name}.bias" in state))
    _fix_head_counts(model)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"saved tensors {unexpected[:5]} have no place in a {cls.__name__}")
    model.tie_weights()
    own = model.state_dict()
    loaded = {own[k].data_ptr() for k in state if k in own}
    untied = [k for k in missing if own[k].data_ptr() not in loaded]
    if untied:
        raise ValueError(f"tensors {untied[:5]} are missing from {path!r} and are not tied to a saved one")
    dtypes = {t.dtype for t in state.values() if t.is_floating_point()}
    dtype = dtypes.pop() if len(dtypes) == 1 else torch.float32
    return model.to(device=device, dtype=dtype).eval()
