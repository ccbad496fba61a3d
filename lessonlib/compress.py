"""``compress_(model, config, calib=None, filter_fn=None)``: one entry point for every compression technique.

The shape is torchao's ``quantize_(model, config)``: the config's type says which technique runs, its fields
how.  Each technique file declares a frozen, validated config and registers its handler
(``lessonlib.technique.register``)::

    from lessonlib.compress import compress_, GPTQConfig, WandaConfig, NM, QuantScheme, PerGroup

    res = compress_(model, WandaConfig(NM(2, 4)), calib)                       # 2:4, calibrated
    res = compress_(model, GPTQConfig(QuantScheme(4, PerGroup(64)), act_order=True), calib,
                    filter_fn=lambda m, fqn: "mlp" in fqn)                     # only the MLPs
    res.layers["model.layers.0.mlp.up_proj"].mask / .weight / .packed / .stats

Layers are selected by ``filter_fn(module, fqn)`` (default: every linear layer inside the transformer
blocks) and results are keyed by fully qualified module name.  The model changes in place, all or nothing
(the drivers are ``lessonlib.atomic``).  The pipeline's stages, the ledger's experiments, the notebooks'
helpers and the CLI all call this function; the layer-level pure functions (``gptq_quantize``,
``wanda_mask``, ...) stay what tests and exercises call.
"""
from __future__ import annotations

import contextlib
import copy
import time
from typing import Iterator

import torch
from torch import nn

from .checks import short
from .models import decoder_blocks, find_block_list, is_linear_like, linear_modules
from .technique import CompressResult, FilterFn, LayerResult, TechniqueConfig, config_class, handler_for, registered
# the technique families register their configs when imported
from .lowrank.svd import SVDConfig
from .prune.magnitude import MagnitudeConfig
from .prune.masks import NM, Unstructured, as_pattern, pattern_of
from .prune.sparsegpt import SparseGPTConfig
from .prune.wanda import WandaConfig
from .quant.affine import PerChannel, PerGroup, PerTensor, QuantScheme
from .quant.awq import AWQConfig
from .quant.gptq import GPTQConfig
from .quant.qat_train import QATConfig
from .quant.rtn import RTNConfig
from .share.clustering import ClusterConfig

__all__ = ["compress_", "compressed_copy", "quantized_copy", "prune_with", "first_blocks", "in_blocks", "CompressResult", "LayerResult",
           "TechniqueConfig", "config_class", "registered", "GPTQConfig", "AWQConfig", "RTNConfig", "QATConfig",
           "WandaConfig", "SparseGPTConfig", "MagnitudeConfig", "SVDConfig", "ClusterConfig", "QuantScheme",
           "PerTensor", "PerChannel", "PerGroup", "Unstructured", "NM", "as_pattern", "pattern_of"]


def in_blocks(model: nn.Module) -> FilterFn:
    """The default selection: linear-like layers inside the transformer blocks (``models.find_block_list``)."""
    prefix = find_block_list(model)[0] + "."
    return lambda m, fqn: is_linear_like(m) and fqn.startswith(prefix)


def compress_(model: nn.Module, config: TechniqueConfig, calib: torch.Tensor | None = None,
              filter_fn: FilterFn | None = None, device: str = "auto") -> CompressResult:
    """Apply the technique ``config`` describes to ``model`` in place; returns a ``CompressResult`` (one
    ``LayerResult`` per changed layer by fully qualified name, and the seconds it took).

    ``calib`` (N, T) token windows are required by calibrated techniques (``config.requires_calib()``) and
    refused by the others (passing data a method ignores is a mistake worth hearing about).
    ``filter_fn(module, fqn)`` further restricts the default selection (linear layers inside the blocks).
    Raises ``TypeError`` for an unregistered config, ``ValueError`` when nothing was selected.
    """
    handler = handler_for(config)
    if config.requires_calib() and calib is None:
        raise ValueError(f"{type(config).__name__} needs calibration batches: compress_(model, config, calib=(N, T))")
    if not config.requires_calib() and calib is not None:
        raise ValueError(f"{type(config).__name__} uses no calibration data; drop calib= (it would be ignored)")
    if filter_fn is not None and not callable(filter_fn):
        raise TypeError(f"filter_fn={short(filter_fn)} must be callable as filter_fn(module, fqn) -> bool")
    base = in_blocks(model)
    keep = base if filter_fn is None else (lambda m, fqn: base(m, fqn) and bool(filter_fn(m, fqn)))
    if not any(keep(m, n) for n, m in linear_modules(model).items()):
        raise ValueError(f"compress_({type(config).__name__}) selected no layer; check filter_fn")
    t0 = time.perf_counter()
    layers = handler(model, config, calib, keep, device)
    return CompressResult(config, layers, time.perf_counter() - t0)


@contextlib.contextmanager
def first_blocks(model: nn.Module, n: int | None) -> Iterator[nn.Module]:
    """Within the block, ``model`` has only its first ``n`` decoder blocks (None: all), so a sequential
    driver compresses (and runs) only those; the removed blocks come back afterwards, untouched."""
    blocks = decoder_blocks(model)
    if n is None:
        yield model
        return
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(blocks):
        raise ValueError(f"n={short(n)} blocks is outside 1..{len(blocks)}")
    rest = list(blocks)[n:]
    del blocks[n:]
    try:
        yield model
    finally:
        blocks.extend(rest)


def compressed_copy(model: nn.Module, config: TechniqueConfig, calib: torch.Tensor | None = None,
                    n_blocks: int | None = None, filter_fn: FilterFn | None = None,
                    device: str = "auto") -> tuple[nn.Module, CompressResult]:
    """A deep copy of ``model`` compressed by ``compress_`` (only its first ``n_blocks`` decoder blocks when
    given: a slow method stays quick in a notebook), and the ``CompressResult``; ``model`` is untouched."""
    m = copy.deepcopy(model)
    with first_blocks(m, n_blocks):
        res = compress_(m, config, calib, filter_fn, device)
    return m, res


def _config_with(method: str, field: str, value, **kw) -> TechniqueConfig:
    cls = config_class(method)
    if field not in getattr(cls, "__dataclass_fields__", {}):
        kind = {"scheme": "quantizer", "pattern": "pruning method"}[field]
        raise ValueError(f"method={short(method)} is not a {kind}; choose one of "
                         f"{sorted(n for n, c in registered().items() if field in c.__dataclass_fields__)}")
    return cls(value, **kw)


def quantized_copy(model: nn.Module, method: str, scheme: QuantScheme, calib: torch.Tensor | None = None,
                   n_blocks: int | None = None, **kw) -> tuple[nn.Module, float]:
    """Notebook shorthand: a deep copy of ``model`` whose decoder-block linears (of the first ``n_blocks``
    blocks; None = all) are fake-quantized by the registered quantizer ``method`` ("rtn", "gptq", "awq";
    extra keywords go to its config, e.g. ``act_order=True``), and the seconds the quantization took."""
    cfg = _config_with(method, "scheme", scheme, **kw)
    m, res = compressed_copy(model, cfg, calib if cfg.requires_calib() else None, n_blocks)
    return m, res.seconds


def prune_with(model: nn.Module, method: str, sparsity: float, calib: torch.Tensor | None = None,
               keep_n: int = 0, group_m: int = 0, device: str = "cpu") -> float:
    """Notebook shorthand: prune ``model`` in place with the registered pruning ``method`` ("magnitude",
    "wanda", "sparsegpt") at ``sparsity`` or N:M (``keep_n`` kept of every ``group_m``); returns the seconds.
    ``calib`` (N, T) feeds the calibrated methods (magnitude needs none and ignores it)."""
    cfg = _config_with(method, "pattern", pattern_of(sparsity, keep_n, group_m))
    return compress_(model, cfg, calib if cfg.requires_calib() else None, device=device).seconds
