"""Physical shrinking of linear-like layers and the bookkeeping that goes with it, for any layout.

``resize_linear_like`` keeps chosen output rows / input columns of an ``nn.Linear`` (or a subclass such as
Falcon's ``FalconLinear``) or a GPT-2 ``Conv1D`` and returns a layer of the *same class*, so the model's own
forward still runs.  ``holder_rows`` maps kept channels of logical projections (``lessonlib.layout.Proj``,
possibly rows of a fused QKV or gate_up layer) onto the rows of the layers that hold them.
``set_attention_counts`` writes new head counts into whatever attributes an attention module reads.
"""
from __future__ import annotations

import torch
from torch import nn

from ..layout import Proj
from ..models import is_conv1d, get_weight, is_linear_like

__all__ = ["resize_linear_like", "holder_rows", "set_attention_counts", "set_config_width"]


@torch.no_grad()
def resize_linear_like(module: nn.Module, rows: torch.Tensor | None = None,
                       cols: torch.Tensor | None = None) -> nn.Module:
    """A copy of ``module`` (same class) keeping output rows ``rows`` and input columns ``cols`` (None = all).

    The bias follows the rows.  dtype, device and requires_grad are kept.  Weight layout: (out, in) for
    ``nn.Linear``, (in, out) for ``Conv1D``.
    """
    if not is_linear_like(module):
        raise TypeError(f"expected a linear-like layer, got {type(module).__name__}")
    w = get_weight(module)  # (out, in)
    r = torch.arange(w.shape[0]) if rows is None else torch.as_tensor(rows, dtype=torch.long)
    c = torch.arange(w.shape[1]) if cols is None else torch.as_tensor(cols, dtype=torch.long)
    if r.numel() == 0 or c.numel() == 0:
        raise ValueError("resize_linear_like would keep no row or no column; at least one of each must stay")
    new_w = w[r.to(w.device)][:, c.to(w.device)]  # (rows', cols')
    new = module.__class__.__new__(module.__class__)
    new.__dict__ = module.__dict__.copy()
    new._parameters, new._buffers, new._modules = dict(module._parameters), dict(module._buffers), dict(module._modules)
    rg = module.weight.requires_grad
    new.weight = nn.Parameter((new_w.t() if is_conv1d(module) else new_w).contiguous(), requires_grad=rg)
    if getattr(module, "bias", None) is not None:
        new.bias = nn.Parameter(module.bias.data[r.to(w.device)].clone(), requires_grad=module.bias.requires_grad)
    if is_conv1d(module):
        new.nf, new.nx = int(r.numel()), int(c.numel())
    else:
        new.out_features, new.in_features = int(r.numel()), int(c.numel())
    return new


def holder_rows(projs: list[Proj], keep: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rows to keep in each holding layer when projection ``projs[j]`` keeps its channels ``keep[j]``.

    Rows of one fused holder are merged and sorted, which keeps its layout (contiguous, per-head, grouped).
    """
    out: dict[str, list[torch.Tensor]] = {}
    for p, k in zip(projs, keep):
        k = torch.as_tensor(k, dtype=torch.long)
        out.setdefault(p.name, []).append(k if p.rows is None else p.rows[k])
    return {n: torch.cat(v).unique(sorted=True) for n, v in out.items()}


def set_attention_counts(attn: nn.Module, n_q: int, n_kv: int, head_dim: int) -> None:
    """Write the head counts an attention module (and its submodules) read in their forward."""
    for m in attn.modules():
        for a in ("num_heads", "num_attention_heads"):
            if isinstance(getattr(m, a, None), int):
                setattr(m, a, n_q)
        for a in ("num_key_value_heads", "num_kv_heads"):
            if isinstance(getattr(m, a, None), int) and not getattr(m, "multi_query", False):
                setattr(m, a, n_kv)
        if isinstance(getattr(m, "num_key_value_groups", None), int):
            m.num_key_value_groups = n_q // n_kv
        if isinstance(getattr(m, "all_head_size", None), int):
            m.all_head_size = n_q * head_dim
        if isinstance(getattr(m, "split_size", None), int) and is_conv1d(getattr(m, "c_attn", None) or nn.Identity()):
            m.split_size = n_q * head_dim  # GPT-2 splits c_attn's output into three equal parts


_WIDTH_ATTRS = ("intermediate_size", "ffn_dim", "n_inner", "ffn_hidden_size", "moe_intermediate_size")


def set_config_width(cfg, old: int, new: int) -> None:
    """Set the config's FFN width attribute(s) that held ``old`` to ``new`` (whatever the family calls it)."""
    for a in _WIDTH_ATTRS:
        if getattr(cfg, a, None) == old or (hasattr(cfg, a) and getattr(cfg, a) is None and 4 * cfg.hidden_size == old):
            setattr(cfg, a, new)
