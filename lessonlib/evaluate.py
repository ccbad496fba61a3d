"""Measuring models: perplexity, accuracy, parameters by component, real bytes, latency.

Perplexity follows the GPTQ evaluation protocol (Frantar et al. 2022, reference ``datautils``/``opt.py``):
the held-out text is tokenized as one stream, cut into non-overlapping windows of ``seqlen`` tokens (the
tail is dropped), each window is scored independently, and

    PPL = exp( sum_w nll_w * seqlen / (W * seqlen) )

where ``nll_w`` is the mean next-token negative log-likelihood inside window ``w``.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .config import get_profile, progress_disabled
from .data import eval_tokens, windows
from .models import max_positions
from .checks import positive_int
from .storage import bitmask_bytes, csr_bytes, model_bytes, tensor_bytes  # re-exported: byte accounting lives in storage

__all__ = [
    "bytes_at_precision", "kv_cache_bytes_per_token", "next_token_nll", "token_nlls", "perplexity_from_window_nlls",
    "PerplexityResult", "window_nlls", "perplexity", "accuracy", "classification_accuracy", "param_counts", "model_bytes",
    "tensor_bytes", "csr_bytes", "bitmask_bytes", "LatencyResult", "measure_latency", "generation_speed",
    "matmul_gflops", "bigram_perplexity",
]


# ------------------------------------------------------------------ graded exercises (notebook 00)
def bytes_at_precision(n_params: int, bits: float, group_size: int = 0, scale_bits: int = 16,
                       zero_bits: int = 0) -> float:
    """Bytes needed to store ``n_params`` weights at ``bits`` each.

    With ``group_size`` > 0 every group of that many weights (the last one may be partial, so
    ``ceil(n_params / group_size)`` groups) also stores one scale of ``scale_bits`` and one zero point of
    ``zero_bits`` (0 for symmetric schemes).  Example: 70e9 weights at 16 bits = 140e9 bytes.
    """
    if n_params < 0:
        raise ValueError(f"n_params={n_params} must be >= 0")
    if not 0 < bits <= 64:
        raise ValueError(f"bits={bits} must be in (0, 64]")
    if group_size < 0:
        raise ValueError(f"group_size={group_size} must be >= 0 (0 = no per-group parameters)")
    # BEGIN SOLUTION
    total_bits = n_params * bits
    if group_size > 0:
        n_groups = math.ceil(n_params / group_size)
        total_bits += n_groups * (scale_bits + zero_bits)
    return total_bits / 8
    # END SOLUTION


def kv_cache_bytes_per_token(n_layers: int, n_kv_heads: int, head_dim: int, bytes_per_elem: float = 2) -> float:
    """Bytes of KV cache one token occupies: a key and a value vector per KV head per layer.

    Grouped-query attention shrinks this by ``n_heads / n_kv_heads`` (Ainslie et al. 2023).
    """
    for name, v in (("n_layers", n_layers), ("n_kv_heads", n_kv_heads), ("head_dim", head_dim)):
        if v <= 0:
            raise ValueError(f"{name}={v} must be positive")
    # BEGIN SOLUTION
    return 2 * n_layers * n_kv_heads * head_dim * bytes_per_elem
    # END SOLUTION


def next_token_nll(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood (natural log) of each next token.

    ``logits`` (T, V) or (B, T, V) are the model's outputs for ``tokens`` (T,) or (B, T); position t
    predicts token t+1, so T-1 predictions per sequence are scored.  Returns a scalar tensor.
    """
    if logits.dim() == 2:
        logits, tokens = logits.unsqueeze(0), tokens.unsqueeze(0)
    if logits.shape[:2] != tokens.shape or tokens.shape[1] < 2:
        raise ValueError(f"logits {tuple(logits.shape)} and tokens {tuple(tokens.shape)} must agree on (B, T), T >= 2")
    # BEGIN SOLUTION
    pred = logits[:, :-1, :].float()  # (B, T-1, V): position t predicts t+1
    target = tokens[:, 1:]  # (B, T-1)
    return F.cross_entropy(pred.reshape(-1, pred.shape[-1]), target.reshape(-1))
    # END SOLUTION


def token_nlls(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood (nats, float32) of every next token, unreduced: ``logits`` (T, V) or (B, T, V)
    for ``tokens`` (T,) or (B, T) give (T-1,) or (B, T-1); their mean is ``next_token_nll``.  For per-token
    decisions (early exits choose per token); a perplexity still goes through ``perplexity_from_window_nlls``.
    """
    if logits.dim() not in (2, 3) or logits.shape[:-1] != tokens.shape or tokens.shape[-1] < 2:
        raise ValueError(f"logits {tuple(logits.shape)} and tokens {tuple(tokens.shape)} must agree on (B, T) or "
                         "(T,), T >= 2")
    logp = torch.log_softmax(logits[..., :-1, :].float(), dim=-1)  # (..., T-1, V): position t predicts t+1
    return -logp.gather(-1, tokens[..., 1:, None]).squeeze(-1)  # (..., T-1)


def perplexity_from_window_nlls(nlls: torch.Tensor, seqlen: int) -> float:
    """Perplexity from per-window mean NLLs (GPTQ protocol): exp(sum(nll_w * seqlen) / (W * seqlen))."""
    nlls = torch.as_tensor(nlls, dtype=torch.float64)
    if nlls.dim() != 1 or nlls.numel() == 0:
        raise ValueError(f"nlls must be a non-empty 1-D tensor, got shape {tuple(nlls.shape)}")
    if seqlen <= 0:
        raise ValueError(f"seqlen={seqlen} must be positive")
    # BEGIN SOLUTION
    total = (nlls * seqlen).sum()
    return float(torch.exp(total / (nlls.numel() * seqlen)))
    # END SOLUTION


# ------------------------------------------------------------------ perplexity
@dataclass
class PerplexityResult:
    ppl: float
    nll: float  # mean per-token NLL, nats
    windows: int
    seqlen: int
    tokens: int
    seconds: float
    tokens_per_s: float
    window_nlls: list[float] = field(default_factory=list, repr=False)  # per window, for bootstrap intervals
    top1: float | None = None  # next-token top-1 accuracy over the same windows (``perplexity(..., top1=True)``)

    def as_dict(self) -> dict:
        return asdict(self)


def _model_device(model: nn.Module) -> torch.device:
    from .models import compute_device
    return compute_device(model)  # also right for models dispatched by accelerate (offloaded weights on meta)


def _score_windows(model: nn.Module, wins: torch.Tensor, batch_size: int, forward_kwargs: Callable[[], dict] | None,
                   progress: bool, top1: bool) -> tuple[torch.Tensor, int]:
    """The one scoring loop: ``(W,)`` float32 mean next-token NLL of each window of ``wins`` (W, T), and the
    number of next tokens that are the logits' argmax (counted only with ``top1``).  The model runs in eval
    mode (restored after) on its compute device; ``forward_kwargs()`` gives each forward's keyword arguments
    (default ``use_cache=False``; a fresh KV cache per batch, for instance)."""
    dev = _model_device(model)
    was_training = model.training
    model.eval()
    nlls, hits = [], 0
    try:
        for i in tqdm(range(0, wins.shape[0], batch_size), desc=f"perplexity ({wins.shape[0]} x {wins.shape[1]})",
                      disable=progress_disabled() or not progress, leave=False):
            batch = wins[i: i + batch_size].to(dev)  # (B, T)
            kw = {"use_cache": False} if forward_kwargs is None else forward_kwargs()
            logits = model(batch, **kw).logits  # (B, T, V)
            nlls.extend(next_token_nll(logits[b], batch[b]) for b in range(batch.shape[0]))
            if top1:
                hits += int((logits[:, :-1].argmax(-1) == batch[:, 1:]).sum())
    finally:
        model.train(was_training)
    return torch.stack(nlls).float().cpu(), hits


@torch.inference_mode()
def window_nlls(model: nn.Module, wins: torch.Tensor, batch_size: int = 1,
                forward_kwargs: Callable[[], dict] | None = None, progress: bool = False) -> torch.Tensor:
    """Mean next-token NLL (nats) of each token window of ``wins`` (W, T), as a ``(W,)`` float32 tensor:
    the per-window numbers ``perplexity`` is made of (``perplexity_from_window_nlls`` turns them into a
    perplexity, ``.mean()`` is the mean NLL of equal windows).

    ``forward_kwargs()`` is called before each forward for its keyword arguments (default
    ``{"use_cache": False}``), e.g. to give each window a fresh quantized KV cache.  Raises ``ValueError``
    for windows that are not (W >= 1, T >= 2) token ids within the model's positions, and
    ``FloatingPointError`` naming the window whose NLL is not finite.
    """
    from .checks import integer
    if not isinstance(wins, torch.Tensor) or wins.dim() != 2 or wins.shape[0] < 1 or wins.shape[1] < 2 \
            or wins.is_floating_point():
        raise ValueError(f"wins must be (W, T) token ids with W >= 1, T >= 2, got "
                         f"{tuple(wins.shape) if isinstance(wins, torch.Tensor) else type(wins).__name__}")
    if wins.shape[1] > max_positions(model):
        raise ValueError(f"windows of {wins.shape[1]} tokens exceed the model's maximum of {max_positions(model)} positions")
    integer("batch_size", batch_size, lo=1, where="windows per forward")
    if forward_kwargs is not None and not callable(forward_kwargs):
        raise TypeError(f"forward_kwargs must be a callable returning a dict, got {type(forward_kwargs).__name__}")
    nlls, _ = _score_windows(model, wins, batch_size, forward_kwargs, progress, top1=False)
    bad = (~torch.isfinite(nlls)).nonzero()
    if bad.numel():
        raise FloatingPointError(f"window {int(bad[0])} has a non-finite NLL ({float(nlls[bad[0]])}): the model "
                                 "produced inf/NaN logits")
    return nlls


@torch.inference_mode()
def perplexity(model: nn.Module, tokenizer=None, corpus: str = "speeches", split: str = "eval",
               seqlen: int | None = None, max_windows: int | None = None, tokens: torch.Tensor | None = None,
               batch_size: int = 1, profile=None, progress: bool = True, top1: bool = False) -> PerplexityResult:
    """Perplexity of a causal LM on a held-out split (GPTQ protocol, see the module docstring).

    Give either ``tokenizer`` (the ``corpus``/``split`` is tokenized and cached) or a 1-D ``tokens``
    stream.  ``seqlen`` and ``max_windows`` default to the profile's ``seqlen`` / ``eval_windows``
    (0 = every window).  ``top1=True`` also counts, in the same forward passes, how often the argmax of the
    logits is the next token (``PerplexityResult.top1``).
    """
    prof = get_profile(profile)
    seqlen = prof.seqlen if seqlen is None else seqlen
    max_windows = prof.eval_windows if max_windows is None else max_windows
    from .checks import integer
    integer("seqlen", seqlen, lo=2, where="tokens per perplexity window")
    integer("max_windows", max_windows, lo=0, where="0 means all")
    integer("batch_size", batch_size, lo=1, where="windows per forward")
    if seqlen > max_positions(model):
        raise ValueError(f"seqlen={seqlen} exceeds the model's maximum of {max_positions(model)} positions")
    if tokens is None:
        if tokenizer is None:
            raise ValueError("give a tokenizer (to read a corpus) or a 1-D tokens tensor")
        tokens = eval_tokens(tokenizer, corpus, split)
    wins = windows(tokens, seqlen, max_windows)  # (W, seqlen)
    t0 = time.perf_counter()
    nlls, hits = _score_windows(model, wins, batch_size, None, progress, top1)
    secs = time.perf_counter() - t0
    nll_t = nlls.double()  # (W,)
    ppl = perplexity_from_window_nlls(nll_t, seqlen)
    if not math.isfinite(ppl):
        raise FloatingPointError(f"perplexity is not finite ({ppl}): the model produced inf/NaN logits")
    n_tok = wins.numel()
    return PerplexityResult(ppl=ppl, nll=float(nll_t.mean()), windows=wins.shape[0], seqlen=seqlen,
                            tokens=n_tok, seconds=secs, tokens_per_s=n_tok / max(secs, 1e-9),
                            window_nlls=[float(x) for x in nll_t],
                            top1=hits / (wins.shape[0] * (seqlen - 1)) if top1 else None)


# ------------------------------------------------------------------ accuracy
def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows whose argmax equals the label."""
    if logits.shape[0] != labels.shape[0] or logits.shape[0] == 0:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} need the same, non-zero length")
    return float((logits.argmax(-1) == labels).float().mean())


@torch.inference_mode()
def classification_accuracy(model: nn.Module, tokenizer, texts: list[str], labels: torch.Tensor,
                            batch_size: int = 64, max_length: int = 128) -> float:
    """Accuracy of a sequence-classification model (``.logits`` output) on ``texts``."""
    if len(texts) != len(labels) or not texts:
        raise ValueError(f"{len(texts)} texts and {len(labels)} labels: need the same, non-zero count")
    dev = _model_device(model)
    model.eval()
    outs = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(texts[i: i + batch_size], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt").to(dev)
        outs.append(model(**enc).logits.float().cpu())
    return accuracy(torch.cat(outs), labels)


# ------------------------------------------------------------------ parameters and bytes
def _component(name: str) -> str:
    n = name.lower()
    leaf = n.rsplit(".", 2)[-2] if n.count(".") else n
    if "norm" in leaf or leaf.startswith("ln_") or leaf in ("ln_f",):
        return "norms"
    if "embed" in n or n.startswith(("transformer.wte", "transformer.wpe")) or ".wte." in n or ".wpe." in n:
        return "embeddings"
    if n.startswith("lm_head") or n.startswith("cls."):
        return "lm_head"
    if "attn" in n or "attention" in n:
        return "attention"
    if "mlp" in n or "intermediate" in n or ".fc1." in n or ".fc2." in n or ".output.dense." in n \
            or "feed_forward" in n or "experts" in n:
        return "ffn"
    return "other"


def param_counts(model: nn.Module) -> dict[str, int]:
    """Parameters by component: embeddings, attention, ffn, norms, lm_head, other, and total.

    Tied parameters (SmolLM2's lm_head is the embedding matrix) are counted once, under the first name
    that owns them.
    """
    out = dict.fromkeys(("embeddings", "attention", "ffn", "norms", "lm_head", "other"), 0)
    for name, p in model.named_parameters(remove_duplicate=True):
        out[_component(name)] += p.numel()
    out["total"] = sum(out.values())
    return out


# ------------------------------------------------------------------ time
@dataclass
class LatencyResult:
    median_s: float
    p10_s: float
    p90_s: float
    repeats: int

    def as_dict(self) -> dict:
        return asdict(self)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def measure_latency(fn: Callable[[], object], warmup: int = 2, repeats: int | None = None,
                    profile=None) -> LatencyResult:
    """Wall time of ``fn()``: ``warmup`` untimed calls, then the median of ``repeats`` timed ones."""
    repeats = get_profile(profile).bench_repeats if repeats is None else repeats
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats={repeats} must be >= 1 and warmup={warmup} >= 0")
    for _ in range(warmup):
        fn()
    _sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
    q = statistics.quantiles(times, n=10, method="inclusive") if len(times) > 1 else [times[0]] * 9
    return LatencyResult(median_s=statistics.median(times), p10_s=q[0], p90_s=q[-1], repeats=repeats)


@torch.inference_mode()
def generation_speed(model: nn.Module, tokenizer, prompt: str = "The convention opened with",
                     new_tokens: int = 32, repeats: int = 3) -> dict:
    """Greedy generation throughput: new tokens per second (median over ``repeats``), and the text."""
    ids = tokenizer(prompt, return_tensors="pt").to(_model_device(model))
    out = None

    def run():
        nonlocal out
        out = model.generate(**ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)

    lat = measure_latency(run, warmup=1, repeats=repeats)
    return {"tokens_per_s": new_tokens / lat.median_s, "median_s": lat.median_s,
            "text": tokenizer.decode(out[0], skip_special_tokens=True)}


def matmul_gflops(n: int = 1024, dtype: torch.dtype = torch.float32, device: str = "cpu", repeats: int = 5) -> float:
    """This machine's own dense matmul rate in GFLOP/s (n x n x n), the yardstick benchmarks divide by."""
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    lat = measure_latency(lambda: a @ b, warmup=2, repeats=repeats)
    return 2 * n ** 3 / lat.median_s / 1e9


def bigram_perplexity(train: torch.Tensor, test: torch.Tensor, vocab_size: int, lam: float = 0.7) -> float:
    """Perplexity of an interpolated bigram count model fit on ``train`` tokens: a size-matched baseline.

    p(b | a) = lam * c(a, b) / c(a) + (1 - lam) * (c(b) + 1) / (N + V)  (add-one unigram back-off).
    """
    if not 0 <= lam < 1:
        raise ValueError(f"lam={lam} must be in [0, 1)")
    positive_int("vocab_size", vocab_size, where="bigram_perplexity")
    if train.numel() < 2 or test.numel() < 2:
        raise ValueError("need at least two train and two test tokens")
    for name, t in (("train", train), ("test", test)):
        if t.is_floating_point() or t.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer token ids, got dtype {t.dtype}")
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= vocab_size:
            raise ValueError(f"{name} token ids span [{lo}, {hi}], outside the vocabulary 0..{vocab_size - 1}")
    tr, te = train.long().cpu(), test.long().cpu()
    uni = torch.bincount(tr, minlength=vocab_size).double()  # (V,)
    p_uni = (uni + 1) / (uni.sum() + vocab_size)
    pair = tr[:-1] * vocab_size + tr[1:]
    keys, counts = torch.unique(pair, return_counts=True)  # sparse bigram table
    ctx = torch.bincount(tr[:-1], minlength=vocab_size).double()
    q = te[:-1] * vocab_size + te[1:]
    pos = torch.searchsorted(keys, q).clamp(max=keys.numel() - 1)
    c_ab = torch.where(keys[pos] == q, counts[pos].double(), torch.zeros_like(q, dtype=torch.float64))
    c_a = ctx[te[:-1]]
    p_bi = torch.where(c_a > 0, c_ab / c_a.clamp(min=1), torch.zeros_like(c_ab))
    p = lam * p_bi + (1 - lam) * p_uni[te[1:]]
    return float(torch.exp(-p.log().mean()))
