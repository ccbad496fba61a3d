"""The sequential, layer-wise calibration engine shared by GPTQ, SparseGPT, Wanda and AWQ.

The idea (GPTQ, Frantar et al. 2022, section 4 "Step 3"; SparseGPT section 4): never hold more than one
transformer block and the calibration activations on the accelerator.

1. Run the model on N calibration sequences only up to block 0 and keep its inputs, (N, T, C).
2. For block i: attach hooks to its linear layers that feed each layer's inputs into a statistics
   accumulator (a Hessian 2/N sum x x^T, or per-channel input norms), run the N inputs through the block,
   hand the statistics to the caller, who compresses the block's weights in place.
3. Recompute the block's outputs *with the compressed weights*: they are block i+1's inputs, so later
   blocks are calibrated on what the compressed model really produces.

Memory is one block plus N x T x C activations, which is what lets a 70B model be compressed on one GPU.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from .atomic import protect
from .config import progress_disabled
from .checks import all_finite
from .experts import unrolled_experts
from .models import (UnsupportedError, block_linears, decoder_blocks, get_weight, is_dispatched, max_positions,
                     resolve_device)

__all__ = ["ModuleNames", "Stats", "HessianStats", "InputNormStats", "InputSampleStats", "capture_block_inputs",
           "capture_block_kwargs", "capture_calibration",
           "run_block", "run_sequential", "SequentialReport", "check_token_batches", "block_stats"]


class Stats(Protocol):
    def add(self, x: torch.Tensor) -> None: ...


class HessianStats:
    """Running H = 2/N * sum_n x_n x_n^T over the N calibration tokens seen so far, (in, in), float32.

    The layer-wise objective ||W X - W' X||^2 has this Hessian with respect to each row of W.
    ``sym_blocks`` > 1 selects the faster accumulation: the raw sum X^T X is built from the upper
    ``sym_blocks`` x ``sym_blocks`` tiles only (the lower ones are their transposes: about 40% fewer flops
    for 4 tiles) and normalised by 2/N once, when ``hessian()`` is read.  The result agrees with the
    default (a running mean, rescaled at every ``add``) to float rounding and is exactly symmetric.
    """

    def __init__(self, n_in: int, device: torch.device | str = "cpu", sym_blocks: int = 1):
        if isinstance(sym_blocks, bool) or not isinstance(sym_blocks, int) or sym_blocks < 1:
            raise ValueError(f"sym_blocks={sym_blocks!r} must be a positive int")
        self.H = torch.zeros(n_in, n_in, dtype=torch.float32, device=device)  # (in, in)
        self.n = 0
        self.sym_blocks = sym_blocks
        self._fresh = True  # sym_blocks > 1: whether self.H already holds 2/N * the raw sum

    def add(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).to(self.H.device, torch.float32)  # (tokens, in)
        if x.shape[1] != self.H.shape[0]:
            raise ValueError(f"input width {x.shape[1]} does not match the Hessian's {self.H.shape[0]}")
        m = x.shape[0]
        if self.sym_blocks > 1:
            self._add_raw(x)
            self.n += m
            return
        self.H.mul_(self.n / (self.n + m))  # rescale the running mean to the new count
        self.n += m
        x = x * math.sqrt(2.0 / self.n)
        self.H.addmm_(x.t(), x)  # (in, tokens) @ (tokens, in)

    def _add_raw(self, x: torch.Tensor) -> None:
        if not hasattr(self, "_S"):
            self._S = torch.zeros_like(self.H)  # raw sum X^T X, upper tiles only until read
        n_in, b = x.shape[1], -(-x.shape[1] // self.sym_blocks)
        for i in range(0, n_in, b):
            self._S[i:i + b, i:].addmm_(x[:, i:i + b].t(), x[:, i:])  # (b, tokens) @ (tokens, in - i)
        self._fresh = False

    def hessian(self) -> torch.Tensor:
        if self.n == 0:
            raise RuntimeError("no calibration inputs reached this layer")
        if self.sym_blocks > 1 and not self._fresh:
            S, n_in, b = self._S, self._S.shape[0], -(-self._S.shape[0] // self.sym_blocks)
            for i in range(0, n_in, b):
                S[i + b:, i:i + b] = S[i:i + b, i + b:].t()  # mirror the upper tiles
            torch.mul(S, 2.0 / self.n, out=self.H)
            self._fresh = True
        return self.H


class InputNormStats:
    """Per-input-channel statistics over tokens: mean x_j^2 (Wanda's ||X_j||^2 / N), mean |x_j| (AWQ), max |x_j|."""

    def __init__(self, n_in: int, device: torch.device | str = "cpu"):
        self.sq = torch.zeros(n_in, dtype=torch.float64, device=device)
        self.abs = torch.zeros(n_in, dtype=torch.float64, device=device)
        self.max = torch.zeros(n_in, dtype=torch.float32, device=device)
        self.n = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).to(self.sq.device, torch.float32)  # (tokens, in)
        if x.shape[1] != self.sq.shape[0]:
            raise ValueError(f"input width {x.shape[1]} does not match {self.sq.shape[0]} channels")
        self.sq += x.pow(2).sum(0, dtype=torch.float64)
        self.abs += x.abs().sum(0, dtype=torch.float64)
        self.max = torch.maximum(self.max, x.abs().amax(0))
        self.n += x.shape[0]

    def _check(self) -> None:
        if self.n == 0:
            raise RuntimeError("no calibration inputs reached this layer")

    def sq_norms(self) -> torch.Tensor:
        """Mean of x_j^2 over tokens, (in,); sqrt of it ranks channels like ||X_j||_2."""
        self._check()
        return (self.sq / self.n).float()

    def abs_mean(self) -> torch.Tensor:
        self._check()
        return (self.abs / self.n).float()

    def absmax(self) -> torch.Tensor:
        self._check()
        return self.max


class InputSampleStats:
    """Keeps up to ``max_rows`` input rows (a seeded reservoir sample), (rows, in): for searches that need X itself."""

    def __init__(self, n_in: int, device: torch.device | str = "cpu", max_rows: int = 4096, seed: int = 0):
        self.n_in, self.max_rows, self.rows, self.seen = n_in, max_rows, [], 0
        self.gen = torch.Generator().manual_seed(seed)
        self.device = device

    def add(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).detach().to(self.device, torch.float32)
        self.rows.append(x)
        self.seen += x.shape[0]

    def sample(self) -> torch.Tensor:
        if not self.rows:
            raise RuntimeError("no calibration inputs reached this layer")
        x = torch.cat(self.rows)  # (tokens, in)
        if x.shape[0] > self.max_rows:
            idx = torch.randperm(x.shape[0], generator=self.gen)[: self.max_rows]
            x = x[idx.sort().values.to(x.device)]
        self.rows = [x]
        return x


class ModuleNames(dict):
    """``id(module) -> qualified name`` of ``model``'s modules, also for modules that appear later (the
    per-expert views ``lessonlib.experts`` installs while a MoE block is calibrated): an unknown id is
    looked up again.  Every module seen is kept alive, so an id is never reused for another module."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self._alive = model, []
        self._scan()

    def _scan(self) -> None:
        for n, m in self.model.named_modules():
            if id(m) not in self:
                self[id(m)] = n
                self._alive.append(m)

    def __missing__(self, key: int) -> str:
        self._scan()
        if not dict.__contains__(self, key):
            raise KeyError(f"module {key} is not part of the model")
        return dict.__getitem__(self, key)


class _Stop(Exception):
    pass


def check_token_batches(model: nn.Module, batches: torch.Tensor, what: str = "calibration batches") -> None:
    """``batches`` must be a non-empty (N, T) integer tensor whose ids are in the model's vocabulary and whose
    length T fits its context (``config.max_position_embeddings``); raises ValueError/TypeError saying which."""
    if not isinstance(batches, torch.Tensor):
        raise TypeError(f"{what} must be a (N, T) LongTensor of token ids, got {type(batches).__name__}")
    if batches.dim() != 2 or batches.shape[0] == 0 or batches.shape[1] == 0:
        raise ValueError(f"{what} must be a non-empty (N, T) token tensor, got {tuple(batches.shape)}")
    if batches.is_floating_point() or batches.dtype == torch.bool or batches.is_complex():
        raise TypeError(f"{what} must hold integer token ids, got dtype {batches.dtype}")
    ctx = max_positions(model) if getattr(model, "config", None) is not None else None
    if ctx and batches.shape[1] > ctx:
        raise ValueError(f"{what} of {batches.shape[1]} tokens are longer than the model's context of {ctx} "
                         "positions (config.max_position_embeddings); use a shorter seqlen")
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    lo, hi = int(batches.min()), int(batches.max())
    if lo < 0 or (isinstance(vocab, int) and hi >= vocab):
        raise ValueError(f"{what} hold token ids in [{lo}, {hi}], outside the vocabulary 0..{vocab - 1 if vocab else '?'}")


def _move_outside_blocks(model: nn.Module, blocks: nn.ModuleList, device: torch.device) -> dict:
    """Move every parameter/buffer not inside ``blocks`` to ``device``; return what to restore."""
    inside = {id(t) for t in list(blocks.parameters()) + list(blocks.buffers())}
    moved = {}
    for mod in model.modules():
        for k, p in list(mod._parameters.items()):
            if p is not None and id(p) not in inside and p.device != device:
                moved[(id(mod), "p", k)] = (mod, p.device)
                p.data = p.data.to(device)
        for k, b in list(mod._buffers.items()):
            if b is not None and id(b) not in inside and b.device != device:
                moved[(id(mod), "b", k)] = (mod, b.device)
                mod._buffers[k] = b.to(device)
    return moved


def _restore(moved: dict) -> None:
    for (_, kind, k), (mod, dev) in moved.items():
        if kind == "p":
            mod._parameters[k].data = mod._parameters[k].data.to(dev)
        else:
            mod._buffers[k] = mod._buffers[k].to(dev)


@torch.no_grad()
def capture_block_inputs(model: nn.Module, batches: torch.Tensor, device: torch.device | str = "auto"):
    """Inputs of block 0 for each calibration sequence: ``(hiddens, kwargs)``.

    ``hiddens`` is a list of (1, T, C) tensors; ``kwargs`` (attention mask, position ids, rotary
    embeddings, ...) are what the model passed to block 0, identical for every sequence of length T.  Other
    blocks may get other arguments (sliding-window layers): ``capture_calibration`` returns them all.
    """
    check_token_batches(model, batches)
    from .layout import require
    require(model, "calibrate")
    if is_dispatched(model):
        raise UnsupportedError(
            "calibrate is not supported on a model dispatched by accelerate (device_map/offload): its hooks "
            "hold the weights; load it with load_model(name, device='cpu') and pass device='cuda' here, "
            "and the blocks are onloaded to the GPU one at a time")
    dev = resolve_device(device)
    blocks = decoder_blocks(model)
    moved = _move_outside_blocks(model, blocks, dev)
    b0_dev = next(blocks[0].parameters()).device
    blocks[0].to(dev)
    hiddens, kw = [], {}

    def hook(_mod, args, kwargs):
        hiddens.append(args[0] if args else kwargs.pop("hidden_states"))
        kw.clear()
        kw.update({k: v for k, v in kwargs.items() if k != "hidden_states"})
        raise _Stop

    h = blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for i in range(batches.shape[0]):
            try:
                model(batches[i: i + 1].to(dev), use_cache=False)
            except _Stop:
                pass
    finally:
        h.remove()
        blocks[0].to(b0_dev)
        _restore(moved)
    return hiddens, _clean(kw)


def _clean(kw: dict) -> dict:
    kw = {k: v for k, v in kw.items() if k not in ("hidden_states", "past_key_values", "past_key_value", "layer_past")}
    kw["use_cache"] = False
    return kw


@torch.no_grad()
def capture_block_kwargs(model: nn.Module, hiddens: list[torch.Tensor], kw0: dict, sample: torch.Tensor,
                         device: torch.device | str = "auto") -> list[dict]:
    """The keyword arguments the model passes to *each* block for sequences shaped like ``sample`` (1, T).

    Blocks differ: Gemma-2/3 and Mistral-style models give sliding-window layers another attention mask
    than global ones, and Gemma-3 another rotary table.  One forward of ``sample`` runs with every block
    replaced by the identity (nothing but block 0 ever runs, so this costs no block memory); each block's
    arguments are recorded as the model built them.  ``hiddens``/``kw0`` (block 0's captured inputs) give
    the blocks' output format.
    """
    dev = resolve_device(device)
    blocks = decoder_blocks(model)
    b0_dev = next(blocks[0].parameters()).device
    blocks[0].to(dev)
    try:
        y = blocks[0](hiddens[0], **kw0)
    finally:
        blocks[0].to(b0_dev)
    rest = tuple(y[1:]) if isinstance(y, (tuple, list)) else None
    kws: list[dict] = [{} for _ in blocks]
    saved = [b.__dict__.get("forward") for b in blocks]

    def fake(i: int):
        def fwd(*args, **kwargs):
            x = args[0] if args else kwargs["hidden_states"]
            kws[i] = _clean(kwargs)
            if i == len(blocks) - 1:
                raise _Stop
            return x if rest is None else (x, *rest)
        return fwd

    for i, b in enumerate(blocks):
        b.forward = fake(i)
    moved = _move_outside_blocks(model, blocks, dev)
    try:
        model(sample.to(dev), use_cache=False)
    except _Stop:
        pass
    finally:
        for b, f in zip(blocks, saved):
            if f is None:
                del b.forward
            else:
                b.forward = f
        _restore(moved)
    return kws


@torch.no_grad()
def capture_calibration(model: nn.Module, batches: torch.Tensor, device: torch.device | str = "auto"
                        ) -> tuple[list[torch.Tensor], list[dict]]:
    """Block 0's inputs for every calibration sequence and every block's own keyword arguments."""
    hiddens, kw0 = capture_block_inputs(model, batches, device)
    return hiddens, capture_block_kwargs(model, hiddens, kw0, batches[:1], device)


def run_block(block: nn.Module, hiddens: list[torch.Tensor], kwargs: dict) -> list[torch.Tensor]:
    """The block's outputs for each input, (1, T, C) each."""
    outs = []
    for x in hiddens:
        y = block(x, **kwargs)
        outs.append(y[0] if isinstance(y, (tuple, list)) else y)
    return outs


@dataclass
class SequentialReport:
    seconds: float = 0.0
    block_seconds: list[float] = field(default_factory=list)
    tokens: int = 0


class _StatsHooks:
    """Forward pre-hooks that feed each hooked layer's input into its statistics object.

    ``share_inputs``: layers that receive the very same input tensor within one block forward (q/k/v
    read one normalised hidden state, gate/up another) get one shared statistics object, fed once;
    the sharing is read off the first forward and checked in every later one.  Once the first forward
    has shown that every hooked layer runs exactly once, later forwards stop (``_Stop``) as soon as the
    last hooked layer has its input: the rest of the block is not needed for statistics.
    """

    def __init__(self, linears: dict[str, nn.Module], make: Callable[..., Stats], dev, share_inputs: bool):
        self.linears, self.make, self.dev, self.share = linears, make, dev, share_inputs
        self.st: dict[str, Stats] = {}
        self.alias: dict[str, str] = {}  # layer -> the layer whose statistics it shares
        self.last: dict[str, torch.Tensor] = {}  # this forward's input of each layer, kept alive for `is`
        self.calls: dict[str, int] = {}
        self.first, self.stop_early = True, False
        self.handles = [lin.register_forward_pre_hook(self._hook(n)) for n, lin in linears.items()]

    def _new(self, name: str) -> Stats:
        return self.make(get_weight(self.linears[name]).shape[1], self.dev)

    def _hook(self, name: str):
        def hook(_mod, args):
            x = args[0]  # the caller's tensor object itself (``detach()`` would make a new one each call)
            if not all_finite(x):
                raise ValueError(f"the input of layer {name!r} has {int((~torch.isfinite(x)).sum())} non-finite "
                                 "entries (NaN or inf): the statistics would be garbage; check the model and batches")
            self.calls[name] = self.calls.get(name, 0) + 1
            if name in self.alias:
                if self.last.get(self.alias[name]) is not x:
                    raise RuntimeError(f"layer {name!r} shared the input of {self.alias[name]!r} in the first "
                                       "forward but not in a later one; use share_inputs=False")
            else:
                owner = None
                if self.share and self.first and name not in self.st:
                    owner = next((n for n, t in self.last.items() if t is x), None)
                if owner is not None:
                    self.alias[name] = self.alias.get(owner, owner)
                    self.st[name] = self.st[self.alias[name]]
                else:
                    if name not in self.st:
                        self.st[name] = self._new(name)
                    self.st[name].add(x.detach())
            self.last[name] = x
            if self.stop_early and len(self.calls) == len(self.linears):
                raise _Stop
        return hook

    def run(self, block: nn.Module, hiddens: list[torch.Tensor], kwargs: dict) -> dict[str, Stats]:
        try:
            for x in hiddens:
                self.last.clear()
                self.calls.clear()
                try:
                    block(x, **kwargs)
                except _Stop:
                    pass
                if self.first:
                    self.first = False
                    self.stop_early = len(self.calls) == len(self.linears) and all(
                        c == 1 for c in self.calls.values())
        finally:
            self.last.clear()
            for h in self.handles:
                h.remove()
        for n in self.linears:  # a layer the forward never reached: empty statistics (hessian() raises)
            if n not in self.st:
                self.st[n] = self._new(n)
        return {n: self.st[n] for n in self.linears}


@torch.no_grad()
def run_sequential(model: nn.Module, batches: torch.Tensor,
                   compress: Callable[[int, nn.Module, dict[str, Stats]], None],
                   stats: Callable[..., Stats] | None = HessianStats, device: torch.device | str = "auto",
                   filter_fn: Callable[[nn.Module, str], bool] | None = None, groups: list[list[str]] | None = None,
                   progress: bool = True, share_inputs: bool = False) -> SequentialReport:
    """Walk the decoder blocks one at a time, compressing each on statistics of its real inputs.

    ``compress(i, block, stats)`` gets block ``i`` (on ``device``) and a dict from linear-layer name
    (e.g. ``"self_attn.q_proj"``) to its statistics object (built by ``stats(in_features, device)``);
    it changes the block's weights in place.  ``groups`` (GPTQ's "true sequential" mode) lists groups of
    layer names handled one after another, each calibrated after the previous group was compressed.
    ``filter_fn(module, fqn)`` (the one layer-selection convention of lessonlib, as in ``compress_``) skips
    the layers it returns False for; ``fqn`` is the layer's fully qualified name in ``model``.  ``share_inputs=True``: layers that read the
    same input tensor (q/k/v, gate/up) map to one shared statistics object, accumulated once.
    """
    dev = resolve_device(device)
    t_start = time.perf_counter()
    from .layout import refuse_untouched
    refuse_untouched(model, "layer-wise calibrated compression (GPTQ, AWQ, Wanda, SparseGPT, whitened SVD)")
    hiddens, kws = capture_calibration(model, batches, dev)
    blocks = decoder_blocks(model)
    fqn = ModuleNames(model) if filter_fn is not None else None  # also names MoE experts' per-expert views
    report = SequentialReport(tokens=batches.numel())
    for i in tqdm(range(len(blocks)), desc="blocks", disable=progress_disabled() or not progress, leave=False):
        t0 = time.perf_counter()
        block = blocks[i]
        home = next(block.parameters()).device
        block.to(dev)
        unroll = unrolled_experts(block)  # MoE: one nn.Linear view per expert, fed only its routed tokens
        unroll.__enter__()
        linears = {n: m for n, m in block_linears(block).items() if filter_fn is None or filter_fn(m, fqn[id(m)])}
        for group in (groups or [list(linears)]):
            unknown = [n for n in group if n not in block_linears(block)]
            if unknown:
                raise ValueError(f"layer names {unknown} are not in block {i}; it has {list(block_linears(block))}")
            group = [n for n in group if n in linears]
            st: dict[str, Stats] = {}
            if stats is not None and group:
                st = _StatsHooks({n: linears[n] for n in group}, stats, dev, share_inputs).run(block, hiddens, kws[i])
            if group:
                protect(block)  # an open lessonlib.atomic.transaction can undo what compress changes
                try:
                    compress(i, block, st)
                except (ValueError, TypeError) as e:
                    if type(e) not in (ValueError, TypeError) or str(e).startswith("block "):
                        raise
                    raise type(e)(f"block {i} (layers {group}): {e}") from e  # name where it failed
        if i + 1 < len(blocks):
            hiddens = run_block(block, hiddens, kws[i])  # inputs of block i+1, from the compressed block
        unroll.__exit__(None, None, None)
        block.to(home)
        report.block_seconds.append(time.perf_counter() - t0)
    report.seconds = time.perf_counter() - t_start
    return report


@torch.no_grad()
def block_stats(model: nn.Module, calib: torch.Tensor, block: int = 0, stats: Callable[..., Stats] = HessianStats,
                device: torch.device | str = "cpu") -> dict[str, Stats]:
    """Statistics (``stats(in_features, device)``: HessianStats, InputNormStats, InputSampleStats...) of the
    inputs of every linear layer of decoder block ``block`` of the *unchanged* model on ``calib`` (N, T),
    by layer name within the block.  Only the blocks up to ``block`` run, so early blocks are cheap; for
    layer-level demos (OBS against SparseGPT, GPTQ on one real layer).  Uses the hooks of ``run_sequential``."""
    blocks = decoder_blocks(model)
    if isinstance(block, bool) or not isinstance(block, int) or not 0 <= block < len(blocks):
        raise ValueError(f"block={block!r} is outside 0..{len(blocks) - 1}")
    dev = resolve_device(device)
    hiddens, kws = capture_calibration(model, calib, dev)
    for i in range(block):
        hiddens = run_block(blocks[i], hiddens, kws[i])
    return _StatsHooks(block_linears(blocks[block]), stats, dev, False).run(blocks[block], hiddens, kws[block])
