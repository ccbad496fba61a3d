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
from ..models import find_block_list, is_conv1d, is_linear_like, replace_submodule
from .structure import set_attention_counts

__all__ = ["load_pruned"]


def _shaped_like(module: nn.Module, saved: torch.Tensor, bias: bool) -> nn.Module:
    """A layer of ``module``'s class whose weight has the saved shape (Linear (out, in), Conv1D (in, out))."""
    new = module.__class__.__new__(module.__class__)
    new.__dict__ = module.__dict__.copy()
    new._parameters, new._buffers, new._modules = dict(module._parameters), dict(module._buffers), dict(module._modules)
    new.weight = nn.Parameter(torch.empty(saved.shape, dtype=module.weight.dtype))
    conv = is_conv1d(module)
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


def _rename_saved_keys(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Apply transformers' own checkpoint renamings (e.g. GPT-NeoX saves ``lm_head`` as ``embed_out``)."""
    import re

    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightRenaming
        renames = [(t.source_patterns[0], t.target_patterns[0]) for t in get_model_conversion_mapping(model)
                   if type(t) is WeightRenaming and len(t.source_patterns) == 1 and len(t.target_patterns) == 1]
    except (ImportError, AttributeError, TypeError):  # older transformers: names are saved as they are
        renames = []
    own = set(model.state_dict())
    for k in [k for k in state if k not in own]:
        for src, dst in renames:
            k2 = re.sub(src, dst, k)
            if k2 != k and k2 in own:
                state[k2] = state.pop(k)
                break


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
    dtypes = {t.dtype for t in state.values() if t.is_floating_point()}
    dtype = dtypes.pop() if len(dtypes) == 1 else torch.float32
    # transformers loads every tensor whose shape fits (and converts legacy layouts, e.g. per-expert MoE
    # weights into 3-D tensors); the layers it could not fill are rebuilt from the saved shapes below
    import logging
    lg = logging.getLogger("transformers.modeling_utils")
    level = lg.level
    lg.setLevel(logging.ERROR)
    try:
        model = cls.from_pretrained(path, dtype=dtype, ignore_mismatched_sizes=True)
    finally:
        lg.setLevel(level)
    _rename_saved_keys(model, state)
    fixed = 0
    for name, lin in list(model.named_modules()):
        if not is_linear_like(lin):
            continue
        w = state.get(f"{name}.weight")
        a, b = state.get(f"{name}.0.weight"), state.get(f"{name}.1.weight")
        if w is None and a is not None and b is not None:  # factorised by lessonlib.lowrank: Linear -> Linear
            replace_submodule(model, name, low_rank_linear(a, b, state.get(f"{name}.1.bias")))
            fixed += 1
        elif w is not None and tuple(w.shape) != tuple(lin.weight.shape):
            new = _shaped_like(lin, w, f"{name}.bias" in state)
            new.weight.data = w.to(dtype)
            if f"{name}.bias" in state:
                new.bias.data = state[f"{name}.bias"].to(dtype)
            replace_submodule(model, name, new)
            fixed += 1
    _fix_head_counts(model)
    own = model.state_dict()
    wrong = [k for k, t in state.items() if k in own and not torch.equal(own[k].cpu(), t.to(own[k].dtype))]
    if wrong:
        raise ValueError(f"saved tensors {wrong[:5]} did not load into the rebuilt {cls.__name__}")
    return model.to(device=device, dtype=dtype).eval()
