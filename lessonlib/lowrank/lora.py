"""LoRA adapters around any frozen base layer (full precision or quantized).

Hu et al. (2021), "LoRA: Low-Rank Adaptation of Large Language Models", section 4.1, eq. (3):

    h = W0 x + (alpha / r) B A x,      A (r, in) random (Kaiming-uniform), B (out, r) = 0

so the adapted layer starts exactly at the base.  Only A and B train.  After training the update can be merged,
W = W0 + (alpha / r) B A, for zero inference overhead (and unmerged again).  QLoRA (Dettmers et al. 2023) keeps
the base in 4 bits: the base here may be any module mapping (..., in) -> (..., out), e.g. ``QuantLinear``; such
a base cannot be merged into (the sum is not on the quantization grid), so ``merge`` raises for it.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..models import get_weight, is_linear_like, replace_submodule, set_weight
from ..atomic import atomic, protect

__all__ = ["LoRALinear", "apply_lora", "lora_parameters", "merge_all"]


class LoRALinear(nn.Module):
    """``base(x) + (alpha / r) * dropout(x) A^T B^T`` with a frozen ``base``.

    ``in_features`` / ``out_features`` are read from the base (``nn.Linear``, GPT-2 ``Conv1D`` or anything
    with those attributes, such as ``QuantLinear``) unless given.  ``seed`` makes A's initialisation
    reproducible.
    """

    def __init__(self, base: nn.Module, r: int = 8, alpha: float | None = None, dropout: float = 0.0,
                 in_features: int | None = None, out_features: int | None = None, seed: int = 0):
        super().__init__()
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise ValueError(f"r={r!r} must be a positive int")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout} is outside [0, 1)")
        if is_linear_like(base):
            out_f, in_f = get_weight(base).shape
        else:
            in_f, out_f = getattr(base, "in_features", None), getattr(base, "out_features", None)
        in_f, out_f = in_features or in_f, out_features or out_f
        if not in_f or not out_f:
            raise ValueError(f"cannot infer in/out features of a {type(base).__name__}; pass in_features= and "
                             "out_features=")
        self.base, self.r, self.in_features, self.out_features = base, r, int(in_f), int(out_f)
        self.alpha = float(r if alpha is None else alpha)
        self.scaling = self.alpha / r
        for p in self.base.parameters():
            p.requires_grad_(False)
        ref = next(iter(list(base.parameters()) + list(base.buffers())), None)
        dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
        device = ref.device if ref is not None else None
        g = torch.Generator().manual_seed(seed)
        bound = 1 / math.sqrt(self.in_features)  # = kaiming_uniform_(a=sqrt(5)), as nn.Linear and the LoRA code
        a = (torch.rand(r, self.in_features, generator=g, dtype=torch.float64) * 2 - 1) * bound
        self.lora_A = nn.Parameter(a.to(device=device, dtype=dtype))  # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, device=device, dtype=dtype))  # (out, r)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    def delta_weight(self) -> torch.Tensor:
        """(alpha / r) B A, (out, in)."""
        return self.scaling * (self.lora_B @ self.lora_A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)  # (..., out)
        if self.merged:
            return y
        z = self.dropout(x) @ self.lora_A.t().to(x.dtype)  # (..., r)
        return y + self.scaling * (z @ self.lora_B.t().to(x.dtype))  # (..., out)

    @torch.no_grad()
    def merge(self) -> None:
        """W0 <- W0 + (alpha / r) B A; the adapter path is then skipped.  Raises if merged or not mergeable."""
        if self.merged:
            raise ValueError("adapter is already merged; call unmerge() first")
        if not is_linear_like(self.base):
            raise TypeError(f"cannot merge into a {type(self.base).__name__} base: the merged weight is not "
                            "representable (keep the adapter separate, as QLoRA does)")
        set_weight(self.base, get_weight(self.base) + self.delta_weight().to(get_weight(self.base).dtype))
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Undo :meth:`merge` (W0 <- W0 - (alpha / r) B A)."""
        if not self.merged:
            raise ValueError("adapter is not merged")
        set_weight(self.base, get_weight(self.base) - self.delta_weight().to(get_weight(self.base).dtype))
        self.merged = False

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, r={self.r}, alpha={self.alpha}, merged={self.merged}"


@atomic
def apply_lora(model: nn.Module, targets: tuple[str, ...] = ("q_proj", "v_proj"), r: int = 8,
               alpha: float | None = None, dropout: float = 0.0, seed: int = 0) -> list[str]:
    """Wrap every module whose name ends with one of ``targets`` in a :class:`LoRALinear`; freeze the rest.

    Returns the wrapped module names (raises if none matched, so a typo is never a silent no-op).
    """
    names = [n for n, m in model.named_modules()
             if n and n.split(".")[-1] in targets and not isinstance(m, LoRALinear)]
    if not names:
        raise ValueError(f"no module name ends with one of {targets}")
    for p in model.parameters():
        p.requires_grad_(False)
    for k, n in enumerate(names):
        replace_submodule(model, n, LoRALinear(model.get_submodule(n), r, alpha, dropout, seed=seed + k))
    return names


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable adapter parameters (every A and B)."""
    return [p for m in model.modules() if isinstance(m, LoRALinear) for p in (m.lora_A, m.lora_B)]


@atomic
def merge_all(model: nn.Module) -> int:
    """Merge every unmerged adapter; returns how many were merged."""
    mods = [m for m in model.modules() if isinstance(m, LoRALinear) and not m.merged]
    for m in mods:
        protect(m)  # merge() adds B A into the base weight in place
        m.merge()
    return len(mods)
