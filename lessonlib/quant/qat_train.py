"""QAT fine-tuning of a causal LM: fake-quantized linear layers trained through the straight-through estimator.

Jacob et al. 2018 ("Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
Inference", section 3) train with the quantizer in the forward pass; LLM-QAT (Liu et al. 2023) does the same
for LLMs.  Here every decoder-block linear layer becomes a ``QATLinear`` (``qat.prepare_qat``): its forward
uses Q(W) with the group grid refitted from the current W on every step (``clip="refit"``: the STE's clipped
branch never fires) or frozen at an MSE-best clipping range (``clip="mse"``: weights outside it get no
gradient), its backward the clipped STE (``qat.FakeQuantSTE``).  The loss is the next-token cross-entropy on calibration windows (N, T).

Only the latent linear weights train (embeddings, norms and the tied ``lm_head`` stay frozen), so the result
is a quantized model of exactly the PTQ layout.  Two optimisers:

* ``"sgd"``: SGD with momentum and a learning rate decaying to zero (cosine).  The decay matters: with a
  constant step, latent weights near a rounding boundary keep flipping between two codes (Nagel et al.
  2022, "Overcoming Oscillations in Quantization-Aware Training").
* ``"adam"``: Adam with the same cosine decay; needs a much smaller learning rate, because Adam's
  normalised step moves *every* latent weight by about lr, boundary or not.  On a toy layer Adam made QAT
  worse than RTN; on SmolLM2 (3-bit g64, 12 steps of 4 x 256 tokens) Adam at 1e-4 took the held-out
  perplexity from 176.6 (RTN) to 57.3, which is the recipe ``claims.exp_quant.QAT_RECIPE`` uses.

The batch of step s is a fixed function of (seed, s) (``training.batch_indices``), so runs repeat.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, ClassVar

import torch
from torch import nn
from torch.nn.utils import skip_init
from tqdm.auto import tqdm

from ..config import progress_disabled
from ..training import batch_indices, check_loss
from ..evaluate import next_token_nll
from ..models import replace_submodule
from ..technique import FilterFn, LayerResult, TechniqueConfig, register
from .affine import QuantScheme
from .qat import QATLinear, fake_quant_ste, prepare_qat
from ..atomic import atomic, protect

__all__ = ["QATConfig", "QATReport", "cosine_lr", "qat_finetune", "freeze_qat"]

OPTIMIZERS = ("sgd", "adam")


@dataclass
class QATReport:
    """``losses`` the training loss of every step (on that step's batch, through the fake quantizer);
    ``lrs`` the learning rate used at each step; ``seconds`` wall time; ``n_trained`` trained parameters."""

    losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    seconds: float = 0.0
    n_trained: int = 0
    optimizer: str = "sgd"
    scheme: str = ""


def cosine_lr(base: float, step: int, steps: int, final_frac: float = 0.0) -> float:
    """Learning rate of step ``step`` (0-based) of ``steps``: cosine from ``base`` to ``final_frac * base``."""
    if steps < 1 or not 0 <= step < steps:
        raise ValueError(f"step={step} must lie in 0..steps-1 with steps={steps} >= 1")
    if not 0.0 <= final_frac <= 1.0:
        raise ValueError(f"final_frac={final_frac} is outside [0, 1]")
    t = step / max(steps - 1, 1)  # 0 .. 1
    return base * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * t)))


def _check(batches: torch.Tensor, steps: int, lr: float, batch_size: int, optimizer: str) -> None:
    if not isinstance(batches, torch.Tensor) or batches.dim() != 2 or batches.dtype != torch.long \
            or batches.shape[0] < 1 or batches.shape[1] < 2:
        raise ValueError(f"batches must be a LongTensor (N, T) with N >= 1, T >= 2; got "
                         f"{getattr(batches, 'dtype', type(batches))} {tuple(getattr(batches, 'shape', ()))}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r} must be a positive int")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive int")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr={lr!r} must be a positive finite number")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer={optimizer!r}; choose one of {OPTIMIZERS}")


@atomic
def qat_finetune(model: nn.Module, batches: torch.Tensor, scheme: QuantScheme, steps: int, lr: float,
                 batch_size: int = 4, optimizer: str = "sgd", momentum: float = 0.9, final_frac: float = 0.0,
                 grad_clip: float = 1.0, seed: int = 0,
                 filter_fn: Callable[[nn.Module, str], bool] | None = None, clip: str = "refit") -> QATReport:
    """Quantization-aware fine-tuning of ``model`` in place on token windows ``batches`` (N, T).

    Swaps the selected linear layers (default: all but ``lm_head``) for ``QATLinear`` with ``scheme``
    unless the model already has QAT layers, freezes everything else, and runs ``steps`` optimiser steps
    of ``batch_size`` windows with a cosine-decayed learning rate.  Afterwards the model is in eval mode and
    its forward is the quantized model's (``convert_qat`` packs it).  Raises if the loss becomes non-finite.
    """
    _check(batches, steps, lr, batch_size, optimizer)
    if not any(isinstance(m, QATLinear) for m in model.modules()):
        prepare_qat(model, scheme, filter_fn, clip=clip)
    for p in model.parameters():
        p.requires_grad_(False)
    params = [m.weight for m in model.modules() if isinstance(m, QATLinear)]
    for p in params:
        p.requires_grad_(True)
        protect(p)  # the optimiser writes in place; an open lessonlib.atomic.transaction can undo it
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum)
    else:
        opt = torch.optim.Adam(params, lr=lr)
    dev = params[0].device
    report = QATReport(n_trained=sum(p.numel() for p in params), optimizer=optimizer, scheme=str(scheme))
    torch.manual_seed(seed)
    model.train()
    t0 = time.perf_counter()
    try:
        for step in tqdm(range(steps), desc=f"QAT {scheme}", disable=progress_disabled(), leave=False):
            lr_s = cosine_lr(lr, step, steps, final_frac)
            for g in opt.param_groups:
                g["lr"] = lr_s
            x = batches[batch_indices(batches.shape[0], batch_size, step, seed)].to(dev)  # (B, T)
            logits = model(input_ids=x).logits  # (B, T, V)
            loss = next_token_nll(logits, x)
            check_loss(loss, step, "QAT loss", f"lower lr={lr}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            opt.step()
            report.losses.append(float(loss.detach()))
            report.lrs.append(lr_s)
    finally:
        model.eval()
        for p in params:
            p.requires_grad_(False)
    report.seconds = time.perf_counter() - t0
    return report


@atomic
@torch.no_grad()
def freeze_qat(model: nn.Module) -> dict[str, nn.Linear]:
    """Swap every ``QATLinear`` back for a plain ``nn.Linear`` holding its fake-quantized weight Q(W) (what its
    forward used: the fixed range of ``clip="mse"`` layers, else the grid refitted to W), like the other
    fake-quant drivers leave a model; returns the new layers by name."""
    new: dict[str, nn.Linear] = {}
    for n, m in list(model.named_modules()):
        if not isinstance(m, QATLinear):
            continue
        lin = skip_init(nn.Linear, m.in_features, m.out_features, bias=m.bias is not None,  # no random init:
                        device=m.weight.device, dtype=m.weight.dtype)  # every value is overwritten below
        lin.weight.copy_(fake_quant_ste(m.weight, m.scheme, qparams=m.qparams()))  # the fixed range when set
        if m.bias is not None:
            lin.bias.copy_(m.bias)
        replace_submodule(model, n, lin)
        new[n] = lin
    return new


@dataclass(frozen=True)
class QATConfig(TechniqueConfig):
    """QAT for ``compress_``: ``steps`` optimiser steps of ``batch_size`` calibration windows through the fake
    quantizer on ``scheme`` (STE), cosine-decayed ``lr``; afterwards the layers are plain linears holding Q(W)."""

    method: ClassVar[str] = "qat"
    needs_calib: ClassVar[bool] = True
    scheme: QuantScheme = QuantScheme(4, 64)
    steps: int = 32
    lr: float = 1e-4
    batch_size: int = 4
    optimizer: str = "adam"
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.scheme, QuantScheme):
            raise TypeError(f"QATConfig(scheme={self.scheme!r}) must be a QuantScheme")
        _check(torch.zeros(1, 2, dtype=torch.long), self.steps, self.lr, self.batch_size, self.optimizer)


@register(QATConfig)
def _apply_qat(model: nn.Module, cfg: QATConfig, calib: torch.Tensor, filter_fn: FilterFn | None,
               device: str) -> dict[str, LayerResult]:
    with torch.enable_grad():
        rep = qat_finetune(model, calib, cfg.scheme, cfg.steps, cfg.lr, batch_size=cfg.batch_size,
                           optimizer=cfg.optimizer, seed=cfg.seed, filter_fn=filter_fn)
    new = freeze_qat(model)
    for q in model.parameters():
        q.requires_grad_(True)
    return {n: LayerResult(weight=lin.weight, stats={"final_loss": rep.losses[-1]}) for n, lin in new.items()}
