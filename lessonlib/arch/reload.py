"""Reloading a model whose blocks were pruned unevenly (different head counts or FFN widths per block).

A Hugging Face config holds one ``num_attention_heads``, ``num_key_value_heads`` and ``intermediate_size`` for
every block, so ``from_pretrained`` cannot rebuild a model where block 3 kept 6 heads and block 7 kept 9: the
saved tensors do not fit the shapes the config describes.  ``save_pretrained`` still writes every tensor
with its real shape, and the shapes are all that is needed: ``load_pruned`` builds the model from its config,
replaces every linear layer whose saved weight has another shape by one of its class in the saved shape (and
a layer saved as two low-rank factors ``name.0`` / ``name.1`` by that ``Linear -> Linear`` pair, as
``lessonlib.lowrank.lowrank_model`` builds it), sets the per-module head counts the attention code reads
(found from the block layout, ``lessonlib.layout``) and the MLP widths, and loads the state dict strictly.  Uniformly
pruned models (which ``from_pretrained`` reloads) load the same way.
"""
from __future__ import annotations

import glob
import os

import torch
from torch import nn

from ..layout import block_layout
from ..lowrank.svd import low_rank_linear
from ..models import _is_conv1d, find_block_list, is_linear_like
from .structure import set_attention_counts

__all__ = ["load_pruned"]


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)


def _shaped_like(module: nn.Module, saved: torch.Tensor, bias: bool) -> nn.Module:
    """A layer of ``module``'s class whose weight has the saved shape (Linear (out, in), Conv1D (in, out))."""
    new = module.__class__.__new__(module.__class__)
    new.__dict__ = module.__dict__.copy()
    new._parameters, new._buffers, new._modules = dict(module._parameters), dict(module._buffers), dict(module._modules)
    new.weight = nn.Parameter(torch.empty(saved.shape, dtype=module.weight.dtype))
    conv = _is_conv1d(module)
    n_out = saved.shape[1] if conv else saved.shape[0]
    new.bias = nn.Parameter(torch.empty(n_out, dtype=module.weight.dtype)) if bias else None
    if conv:
        new.nx, new.nf = saved.shape
    else:
        new.out_features, new.in_features = saved.shape
    return new


def _fix_head_counts(model: nn.Module) -> None:
    """Re-derive the per-module head bookkeeping and MLP widths from the (possibly reshaped) projections."""
    for block in find_block_list(model)[1]:
        lay = block_layout(model, block)
        if lay.attn is not None and lay.q is not None and lay.k is not None and lay.head_dim:
            set_attention_counts(block.get_submodule(lay.attn), lay.n_heads, lay.n_kv, lay.head_dim)
        if lay.mlp_out is not None:
            for m in block.modules():
                if isinstance(getattr(m, "intermediate_size", None), int) and m is not block:
                    m.intermediate_size = lay.mlp_out.weight().shape[1]


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
        state.update(load_file(f))
    model = cls(cfg)
    for name, lin in list(model.named_modules()):
        if not is_linear_like(lin):
            continue
        w = state.get(f"{name}.weight")
        a, b = state.get(f"{name}.0.weight"), state.get(f"{name}.1.weight")
        if w is None and a is not None and b is not None:  # factorised by lessonlib.lowrank: Linear -> Linear
            _replace(model, name, low_rank_linear(a, b, state.get(f"{name}.1.bias")))
        elif w is not None and tuple(w.shape) != tuple(lin.weight.shape):
            _replace(model, name, _shaped_like(lin, w, f"{name}.bias" in state))
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
