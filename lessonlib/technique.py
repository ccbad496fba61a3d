"""What every compression technique declares, so that one entry point (``lessonlib.compress.compress_``) can
run any of them: a frozen config dataclass, registered with the model-level handler that applies it, and
one result type per layer.

This is the shape of torchao's ``quantize_(model, config)``: the config *is* the choice of technique (its
type selects the handler), validated when it is built; the handler walks the model and returns a
``LayerResult`` per layer it changed, keyed by the layer's fully qualified name (``model.named_modules()``).

A technique file (``quant/gptq.py``, ``prune/wanda.py``, ...) writes::

    @dataclass(frozen=True)
    class GPTQConfig(TechniqueConfig):
        method: ClassVar[str] = "gptq"       # the name recipes and notebooks use
        needs_calib: ClassVar[bool] = True
        scheme: QuantScheme = QuantScheme(4, 64)
        ...

    @register(GPTQConfig)
    def _apply(model, config, calib, filter_fn, device) -> dict[str, LayerResult]: ...

This module is core: it imports nothing from the technique families (they import it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from .checks import short

__all__ = ["TechniqueConfig", "LayerResult", "CompressResult", "Handler", "FilterFn", "register", "handler_for",
           "config_class", "registered"]

FilterFn = Callable[[nn.Module, str], bool]  # (module, fully qualified name) -> compress this layer?


@dataclass(frozen=True)
class TechniqueConfig:
    """Base of every technique's config.  ``method`` names the technique (recipes, notebooks);
    ``needs_calib`` says whether ``compress_`` must be given calibration batches."""

    method: ClassVar[str] = ""
    needs_calib: ClassVar[bool] = False

    def requires_calib(self) -> bool:
        """Whether this config (not only its class) needs calibration data; e.g. SVD only when whitened."""
        return self.needs_calib


@dataclass
class LayerResult:
    """What a technique did to one layer.

    ``weight``: the layer's new weight (out, in) (for GPT-2's ``Conv1D`` too), the tensor the model now holds
    (no copy), or None when the layer was replaced by other modules (low-rank factors); ``mask``: bool keep-
    mask (out, in) of a pruned layer, else None; ``packed``: the technique's own compact form when it has
    one (``GPTQResult`` / ``AWQResult`` with codes and grids, ``ClusteredWeight``), else None; ``stats``:
    small numbers about the layer (relative error, rank, bytes, loss)."""

    weight: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    packed: Any = None
    stats: dict = field(default_factory=dict)


@dataclass
class CompressResult:
    """What ``compress_`` returns: the config it applied, the ``LayerResult`` of every layer it changed by
    fully qualified name, and the wall seconds it took."""

    config: TechniqueConfig
    layers: dict[str, LayerResult]
    seconds: float = 0.0

    def masks(self) -> dict[str, torch.Tensor]:
        """Keep-masks of the pruned layers by fully qualified name."""
        return {n: r.mask for n, r in self.layers.items() if r.mask is not None}

    def packed(self) -> dict[str, Any]:
        """The technique's own per-layer results (e.g. ``GPTQResult``) by name, for ``quantize_(qparams=...)``."""
        return {n: r.packed for n, r in self.layers.items() if r.packed is not None}

    def stats(self, key: str) -> dict[str, Any]:
        """One statistic of every layer that has it, by name."""
        return {n: r.stats[key] for n, r in self.layers.items() if key in r.stats}


Handler = Callable[[nn.Module, TechniqueConfig, "torch.Tensor | None", "FilterFn | None", str],
                   dict[str, LayerResult]]
_HANDLERS: dict[type, Handler] = {}
_BY_NAME: dict[str, type] = {}


def register(config_type: type) -> Callable[[Handler], Handler]:
    """Decorator: ``handler(model, config, calib, filter_fn, device) -> {fqn: LayerResult}`` applies configs
    of ``config_type`` (a frozen ``TechniqueConfig`` dataclass with a unique ``method`` name)."""
    if not (isinstance(config_type, type) and issubclass(config_type, TechniqueConfig)):
        raise TypeError(f"register() needs a TechniqueConfig subclass, got {short(config_type)}")
    name = config_type.method
    if not name or (name in _BY_NAME and _BY_NAME[name] is not config_type):
        raise ValueError(f"{config_type.__name__}.method={name!r} must be a non-empty name no other config uses")

    def deco(fn: Handler) -> Handler:
        _HANDLERS[config_type] = fn
        _BY_NAME[name] = config_type
        return fn
    return deco


def handler_for(config: TechniqueConfig) -> Handler:
    """The handler registered for ``type(config)``; TypeError naming the registered configs otherwise."""
    fn = _HANDLERS.get(type(config))
    if fn is None:
        raise TypeError(f"config={short(config)} is not a registered technique config; use one of "
                        f"{sorted(c.__name__ for c in _HANDLERS)}")
    return fn


def config_class(method: str) -> type:
    """The config class registered under ``method`` ("gptq", "wanda", ...); ValueError listing them otherwise."""
    if method not in _BY_NAME:
        raise ValueError(f"method={short(method)} is not a registered technique; choose one of {sorted(_BY_NAME)}")
    return _BY_NAME[method]


def registered() -> dict[str, type]:
    """Every registered technique: method name -> config class."""
    return dict(_BY_NAME)
