"""Pruning masks: validation, selection, N:M patterns, applying them, keeping them during fine-tuning, reports.

Conventions used by every module in ``lessonlib.prune``:

* A **mask** is a ``torch.bool`` tensor with the weight's shape ``(out, in)``; ``True`` means the weight is
  **kept**, ``False`` means it is pruned (set to zero).  ``apply_mask(W, mask) == W * mask``.
* **Sparsity** is the fraction of *pruned* (zero) entries, a float in ``[0, 1)``.  A matrix with ``numel``
  entries pruned at sparsity ``s`` loses exactly ``n_to_prune(numel, s) = floor(s * numel + 0.5)`` entries
  (nearest integer, halves rounded up).  Ties between equal scores are broken by position: the entry with
  the smaller (row-major) index is pruned first, so every mask is deterministic.
* **N:M** means N *kept* of every M, the convention of NVIDIA's 2:4 sparse tensor cores (Mishra et al.
  2021, arXiv:2104.08378) and of the N:M literature: ``keep_n`` of every ``group_m`` *consecutive weights
  along the input dimension* survive (the ``group_m - keep_n`` lowest scores of each group are pruned), so
  ``keep_n=2, group_m=4`` is 2:4 and ``keep_n=3, group_m=4`` keeps 3 of 4.  (The Wanda / SparseGPT
  reference code's ``prune_n`` counts the *pruned* weights instead; that name is gone from lessonlib, so
  a call with ``prune_n=`` fails with a TypeError instead of silently meaning the opposite.)  ``keep_n=group_m=0``
  means "no N:M pattern" (unstructured).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import torch
from torch import nn

from ..models import LayoutError, is_conv1d, block_linears, decoder_blocks, encoder_blocks, get_weight

__all__ = [
    "Unstructured", "NM", "SparsityPattern", "as_pattern", "pattern_of", "pattern_name",
    "check_sparsity", "check_nm", "resolve_sparsity", "n_to_prune", "check_mask", "prune_lowest_count", "prune_lowest", "nm_mask",
    "is_nm_sparse", "apply_mask", "apply_mask_", "sparsity", "overall_sparsity", "MaskHandle", "register_mask",
    "remove_mask", "model_linears", "LayerSparsity", "SparsityReport", "sparsity_report",
]


# ----------------------------------------------------------------------------- validation
def check_sparsity(sparsity: float) -> float:
    """``sparsity`` as a float, or ValueError unless it is a real number in ``[0, 1)``."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not math.isfinite(sparsity):
        raise ValueError(f"sparsity={sparsity!r} must be a finite number in [0, 1)")
    if not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"sparsity={sparsity} is outside [0, 1): 0 keeps every weight, 1 would prune all")
    return float(sparsity)


def check_nm(keep_n: int, group_m: int, in_features: int | None = None) -> bool:
    """Validate an N:M pattern (``keep_n`` kept of every ``group_m``); True when one is requested.

    ``keep_n = group_m = 0`` means unstructured (returns False).  Otherwise ``0 < keep_n < group_m`` and
    ``group_m`` must divide ``in_features`` (when given), or ValueError.
    """
    for name, v in (("keep_n", keep_n), ("group_m", group_m)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise ValueError(f"{name}={v!r} must be an int")
    if keep_n == 0 and group_m == 0:
        return False
    if not 0 < keep_n < group_m:
        raise ValueError(f"N:M pattern keep_n={keep_n}, group_m={group_m} is invalid: need 0 < keep_n < "
                         "group_m (keep_n weights kept out of every group_m), or both 0 for unstructured")
    if in_features is not None and in_features % group_m != 0:
        raise ValueError(f"group_m={group_m} does not divide the input dimension {in_features}; "
                         "N:M groups are group_m consecutive input columns")
    return True


def resolve_sparsity(sparsity: float, keep_n: int, group_m: int, in_features: int | None = None) -> float:
    """The sparsity that will be reached: ``sparsity`` itself, or ``1 - keep_n / group_m`` under N:M.

    Under N:M the pattern fixes the sparsity, so ``sparsity`` must equal ``1 - keep_n / group_m`` (as in the
    reference scripts, which pass ``sparsity_ratio=0.5`` with 2:4); a different value raises ValueError
    instead of being silently ignored.
    """
    s = check_sparsity(sparsity)
    if check_nm(keep_n, group_m, in_features):
        nm = (group_m - keep_n) / group_m
        if abs(s - nm) > 1e-9:
            raise ValueError(f"sparsity={s} conflicts with the {keep_n}:{group_m} pattern, which prunes exactly "
                             f"{nm:g}; pass sparsity={nm:g} (or keep_n=group_m=0 for unstructured)")
        return nm
    return s


@dataclass(frozen=True)
class Unstructured:
    """Prune the fraction ``sparsity`` (in [0, 1)) of each layer's weights, anywhere in the matrix (the
    comparison group is the technique's: per row for Wanda and SparseGPT, per matrix for magnitude)."""

    sparsity: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "sparsity", check_sparsity(self.sparsity))

    def args(self) -> tuple[float, int, int]:
        """``(sparsity, keep_n, group_m)``, the arguments of the layer-level functions."""
        return self.sparsity, 0, 0

    def __str__(self) -> str:
        return f"{round(100 * self.sparsity)}%"


@dataclass(frozen=True)
class NM:
    """N:M: ``keep_n`` weights *kept* of every ``group_m`` consecutive input weights (``NM(2, 4)`` is 2:4)."""

    keep_n: int = 2
    group_m: int = 4

    def __post_init__(self) -> None:
        if not check_nm(self.keep_n, self.group_m):
            raise ValueError("NM(0, 0) is no pattern; use Unstructured(sparsity) for unstructured pruning")

    @property
    def sparsity(self) -> float:
        return (self.group_m - self.keep_n) / self.group_m

    def args(self) -> tuple[float, int, int]:
        return self.sparsity, self.keep_n, self.group_m

    def __str__(self) -> str:
        return f"{self.keep_n}:{self.group_m}"


SparsityPattern = Unstructured | NM


def as_pattern(pattern: SparsityPattern | float) -> SparsityPattern:
    """A pattern from ``Unstructured(s)``, ``NM(n, m)`` or a bare sparsity (a float in [0, 1): unstructured)."""
    if isinstance(pattern, (Unstructured, NM)):
        return pattern
    if isinstance(pattern, bool) or not isinstance(pattern, (int, float)):
        raise TypeError(f"pattern={pattern!r} must be Unstructured(sparsity), NM(keep_n, group_m) or a sparsity in "
                        f"[0, 1), got {type(pattern).__name__}")
    return Unstructured(pattern)


def pattern_of(sparsity: float, keep_n: int = 0, group_m: int = 0) -> SparsityPattern:
    """The typed pattern of the older ``(sparsity, keep_n, group_m)`` arguments (checked by ``resolve_sparsity``:
    under N:M ``sparsity`` must equal 1 - keep_n / group_m)."""
    resolve_sparsity(sparsity, keep_n, group_m)
    return NM(keep_n, group_m) if keep_n or group_m else Unstructured(sparsity)


def pattern_name(sparsity: float, keep_n: int = 0, group_m: int = 0) -> str:
    """'50%' for unstructured, '2:4' for N:M (keep_n kept of every group_m): ``str(pattern_of(...))``."""
    return str(pattern_of(sparsity, keep_n, group_m))


def n_to_prune(numel: int, sparsity: float) -> int:
    """How many of ``numel`` entries are pruned at ``sparsity``: ``floor(sparsity * numel + 0.5)``."""
    return int(math.floor(check_sparsity(sparsity) * numel + 0.5))


def _check_matrix(x: torch.Tensor, name: str = "weight") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D (out, in), got shape {tuple(x.shape)}")
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")


def check_mask(mask: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``mask`` unchanged, or ValueError/TypeError unless it is a bool tensor of the weight's shape."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor of dtype torch.bool, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask has dtype {mask.dtype}; masks are torch.bool (True = keep), "
                         "convert with mask.bool() if it holds 0/1")
    if tuple(mask.shape) != tuple(weight.shape):
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not match the weight's shape {tuple(weight.shape)}")
    return mask


# ----------------------------------------------------------------------------- selection
def prune_lowest_count(scores: torch.Tensor, k: int, per_row: bool = False) -> torch.Tensor:
    """Keep-mask pruning the ``k`` lowest scores of a ``(out, in)`` matrix (``per_row``: ``k`` in every row).

    Ties go to the smaller (row-major) index, so the mask is deterministic: the same mask as pruning the first
    ``k`` of a stable sort, found with a selection (``kthvalue``, linear time) instead of the sort.
    """
    _check_matrix(scores, "scores")
    group = scores.shape[1] if per_row else scores.numel()
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 0 <= k <= group:
        raise ValueError(f"k={k!r} must be an int in 0..{group} (entries per comparison group)")
    mask = torch.ones_like(scores, dtype=torch.bool)  # (out, in)
    if per_row and k:  # per row: the k-th smallest (a selection), then ties at it pruned lowest index first
        thr = scores.kthvalue(k, dim=1, keepdim=True).values  # (out, 1)
        below = scores < thr  # (out, in)
        tied = scores == thr  # (out, in): at least one per row
        need = k - below.sum(1, keepdim=True)  # (out, 1) ties to prune in each row, >= 1
        mask = ~(below | (tied & (tied.cumsum(1) <= need)))
    elif k:  # a selection, not a sort: the k-th smallest score, then ties at it pruned lowest index first
        flat = scores.reshape(-1)  # (out * in,)
        thr = flat.kthvalue(k).values
        keep = flat >= thr
        tied = (flat == thr).nonzero().squeeze(1)  # ascending indices
        keep[tied[: k - int((~keep).sum())]] = False
        mask = keep.view_as(scores)
    return mask


def prune_lowest(scores: torch.Tensor, sparsity: float, per_row: bool = False) -> torch.Tensor:
    """Keep-mask that prunes the lowest-scoring entries of a ``(out, in)`` score matrix.

    ``per_row=False``: exactly ``n_to_prune(out * in, sparsity)`` entries of the whole matrix (one comparison
    group).  ``per_row=True``: exactly ``n_to_prune(in, sparsity)`` entries in every row (per-output
    comparison group, as in Wanda).  Ties go to the smaller index (stable sort).
    """
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2:
        _check_matrix(scores, "scores")  # raises the type / shape error; the values are checked by prune_lowest_count
    group = scores.shape[1] if per_row else scores.numel()
    return prune_lowest_count(scores, n_to_prune(group, sparsity), per_row)


def nm_mask(scores: torch.Tensor, keep_n: int, group_m: int) -> torch.Tensor:
    """N:M keep-mask: in each group of ``group_m`` consecutive input columns of every row, keep the
    ``keep_n`` highest scores, i.e. prune the ``group_m - keep_n`` lowest (ties: the leftmost is pruned first).  Mishra et al. 2021 (2:4 sparse tensor
    cores); the selection rule of the Wanda and SparseGPT reference code.

    scores: (out, in) with ``in % group_m == 0``.  Returns a bool mask (out, in), True = keep.
    """
    _check_matrix(scores, "scores")
    if not check_nm(keep_n, group_m, scores.shape[1]):
        raise ValueError("nm_mask needs an N:M pattern; got keep_n=group_m=0")
    # BEGIN SOLUTION
    out, inp = scores.shape
    groups = scores.reshape(out, inp // group_m, group_m)  # (out, in/m, m)
    lowest = torch.argsort(groups, dim=-1, stable=True)[..., :group_m - keep_n]  # (out, in/m, m - n) pruned
    mask = torch.ones_like(groups, dtype=torch.bool)
    mask.scatter_(-1, lowest, False)
    return mask.reshape(out, inp)
    # END SOLUTION


def is_nm_sparse(weight_or_mask: torch.Tensor, keep_n: int, group_m: int) -> bool:
    """True when every group of ``group_m`` consecutive input entries holds at most ``keep_n`` non-zeros.

    Works on a weight (zeros = pruned) or a bool keep-mask (False = pruned); N:M as in the module docstring.
    """
    _check_matrix(weight_or_mask, "weight_or_mask")
    if not check_nm(keep_n, group_m, weight_or_mask.shape[1]):
        raise ValueError("is_nm_sparse needs an N:M pattern; got keep_n=group_m=0")
    out, inp = weight_or_mask.shape
    kept = (weight_or_mask != 0).reshape(out, inp // group_m, group_m).sum(-1)  # (out, in/m)
    return bool((kept <= keep_n).all())


# ----------------------------------------------------------------------------- applying and measuring
def apply_mask(weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A new weight with the pruned entries (mask False) set to exactly zero."""
    check_mask(mask, weight)
    return weight.masked_fill(~mask, 0)


def apply_mask_(module: nn.Module, mask: torch.Tensor) -> None:
    """Prune a linear layer in place: the entries of its (out, in) weight where ``mask`` is False become exactly
    zero.  Same result as ``set_weight(module, apply_mask(get_weight(module), mask))`` without the new weight and
    the copy back (two passes over a model's weights); an open ``lessonlib.atomic`` transaction can undo it."""
    w = get_weight(module)  # (out, in): a view, so the fill lands in the layer
    check_mask(mask, w)
    from ..atomic import protect
    protect(module.weight)
    w.masked_fill_(~mask.to(w.device), 0)


def sparsity(x: torch.Tensor) -> float:
    """Exact fraction of pruned entries: zeros of a weight, or False entries of a bool keep-mask."""
    if not isinstance(x, torch.Tensor) or x.numel() == 0:
        raise ValueError("sparsity() needs a non-empty tensor")
    return float((x == 0).sum().item()) / x.numel()


def overall_sparsity(tensors) -> float:
    """Fraction of pruned entries over several weights / masks together (weighted by their sizes)."""
    tensors = list(tensors.values()) if isinstance(tensors, dict) else list(tensors)
    total = sum(t.numel() for t in tensors)
    if total == 0:
        raise ValueError("overall_sparsity() needs at least one non-empty tensor")
    return float(sum(int((t == 0).sum().item()) for t in tensors)) / total


@dataclass
class MaskHandle:
    """A mask registered on a linear layer; ``remove()`` re-applies it one last time and detaches it."""
    module: nn.Module
    mask: torch.Tensor  # (out, in), True = keep
    hooks: list = field(default_factory=list)

    def apply(self) -> None:
        get_weight(self.module).masked_fill_(~self.mask, 0)  # get_weight is a view: in place on the layer

    def remove(self) -> None:
        if getattr(self.module, "_lessonlib_mask", None) is not self:
            raise ValueError("this mask is no longer registered on its module")
        self.apply()
        for h in self.hooks:
            h.remove()
        del self.module._lessonlib_mask


def register_mask(module: nn.Module, mask: torch.Tensor) -> MaskHandle:
    """Keep the pruned weights of a linear layer at zero during fine-tuning.

    Zeroes them now, zeroes their gradient (so optimiser state never moves them), and zeroes them again
    before every forward pass (covers weight decay or stale momentum).  The parameter keeps its name, so
    state dicts and optimisers are unaffected.  ``remove_mask(module)`` or ``handle.remove()`` undoes it.
    """
    check_mask(mask, get_weight(module))
    if hasattr(module, "_lessonlib_mask"):
        raise ValueError(f"{type(module).__name__} already has a registered mask; remove_mask() it first")
    mask = mask.to(module.weight.device)
    handle = MaskHandle(module, mask)
    param_mask = mask.t() if is_conv1d(module) else mask  # gradient has the parameter's layout
    handle.hooks.append(module.weight.register_hook(lambda g: g.masked_fill(~param_mask, 0)))
    handle.hooks.append(module.register_forward_pre_hook(lambda m, args: handle.apply()))
    module._lessonlib_mask = handle
    handle.apply()
    return handle


def remove_mask(module: nn.Module) -> torch.Tensor:
    """Detach the mask registered on ``module`` (zeroing the pruned weights once more); returns the mask."""
    handle = getattr(module, "_lessonlib_mask", None)
    if handle is None:
        raise ValueError(f"{type(module).__name__} has no registered mask")
    handle.remove()
    return handle.mask


# ----------------------------------------------------------------------------- model-level report
def model_linears(model: nn.Module) -> dict[str, nn.Module]:
    """Every linear layer of the transformer blocks (decoder or encoder) by fully qualified name (also a MoE
    expert's per-expert view while ``experts.unrolled_model_experts`` is active)."""
    from ..calib import ModuleNames
    from ..layout import check_coverage
    check_coverage(model, "pruning the blocks' linear layers")
    try:
        blocks = decoder_blocks(model)
    except LayoutError:
        blocks = encoder_blocks(model)
    fqn = ModuleNames(model)
    return {fqn[id(m)]: m for b in blocks for m in block_linears(b).values()}


@dataclass(frozen=True)
class LayerSparsity:
    name: str
    shape: tuple[int, int]
    zeros: int
    numel: int

    @property
    def sparsity(self) -> float:
        return self.zeros / self.numel


@dataclass(frozen=True)
class SparsityReport:
    layers: list[LayerSparsity]

    @property
    def overall(self) -> float:
        return sum(r.zeros for r in self.layers) / sum(r.numel for r in self.layers)

    def format(self) -> str:
        lines = [f"{'layer':<32} {'shape':>12} {'sparsity':>9}"]
        lines += [f"{r.name:<32} {str(r.shape):>12} {r.sparsity:>9.4f}" for r in self.layers]
        lines.append(f"{'overall':<32} {'':>12} {self.overall:>9.4f}")
        return "\n".join(lines)


def sparsity_report(model: nn.Module) -> SparsityReport:
    """Exact sparsity of every linear layer in the transformer blocks, and overall."""
    rows = []
    for name, m in model_linears(model).items():
        w = get_weight(m)
        rows.append(LayerSparsity(name, tuple(w.shape), int((w == 0).sum().item()), w.numel()))
    if not rows:
        raise ValueError("the model has no linear layers in its transformer blocks")
    return SparsityReport(rows)
