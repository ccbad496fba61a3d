"""The roofline model, measured on this machine: memory bandwidth, matmul rate, and decode time predicted
from the bytes a token moves.

Williams, Waterman and Patterson (2009, "Roofline: an insightful visual performance model for multicore
architectures", CACM 52(4)) bound a kernel's rate by ``min(peak FLOP/s, bandwidth x intensity)``, where
the arithmetic intensity is FLOPs per byte moved from memory.  A linear layer (out, in) applied to T
tokens does 2 T out in FLOPs and reads out x in weights of ``b`` bytes each, so its intensity is about
2 T / b FLOP per byte: at batch 1 (decoding, T = 1) it is tiny and the layer is bandwidth-bound, so its
time is bytes / bandwidth and halving the bytes per weight halves it; at a 512-token prefill it is large
and the layer is compute-bound, so fewer weight bytes save nothing and a slower arithmetic (bf16 without
native units, dequantization) costs.  That is why weight-only quantization speeds up decoding, not
prefill (GPTQ, Frantar et al. 2022, arXiv:2210.17323, section 5; AWQ, Lin et al. 2023, arXiv:2306.00978,
section 4; "LLM Inference Unveiled", Yuan et al. 2024, arXiv:2402.16363, section 2 applies the roofline
to LLM decoding).

The bandwidth is measured as STREAM does (McCalpin 1995): ``copy`` a = b moves 2 arrays, ``triad``
a = b + s c moves 3, with arrays far larger than the last-level cache.
"""
from __future__ import annotations

import contextlib
import copy
import time
from typing import Iterator

import torch
from torch import nn

from .checks import positive_int

__all__ = ["threads", "best_seconds", "stream_bandwidth", "matmul_rate", "attainable", "linear_intensity", "roofline_seconds",
           "decode_bytes_per_token", "predict_decode_seconds", "packed_model", "decode_seconds", "prefill_seconds"]

_KINDS = {"copy": 2, "triad": 3}  # arrays moved per element


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``, restoring the previous count afterwards."""
    positive_int("n", n)
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def best_seconds(fn, repeats: int) -> float:
    """The fastest of ``repeats`` timed calls of ``fn`` after one untimed warm-up call (wall seconds)."""
    fn()  # warm-up: pages touched, caches in their steady state
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def stream_bandwidth(kind: str = "triad", mib: int = 128, repeats: int = 5, n_threads: int | None = None) -> float:
    """Memory bandwidth in GB/s (10^9 bytes per second) from a STREAM-like kernel on float32 arrays of
    ``mib`` MiB each: ``copy`` (a = b, 2 arrays moved) or ``triad`` (a = b + s c, 3 arrays).  The best of
    ``repeats`` runs is kept, as STREAM does.  Arrays must exceed the last-level cache for the figure to
    be the DRAM bandwidth (this machine's L3 is tens of MiB: use >= 128 MiB)."""
    if kind not in _KINDS:
        raise ValueError(f"kind={kind!r} must be one of {sorted(_KINDS)}")
    positive_int("mib", mib)
    positive_int("repeats", repeats)
    n = mib * 2 ** 20 // 4
    a, b, c = torch.empty(n), torch.rand(n), torch.rand(n)
    fn = (lambda: a.copy_(b)) if kind == "copy" else (lambda: torch.add(b, c, alpha=3.0, out=a))
    with threads(n_threads or torch.get_num_threads()):
        t = best_seconds(fn, repeats)
    return _KINDS[kind] * n * 4 / t / 1e9


def matmul_rate(n: int = 1024, dtype: torch.dtype = torch.float32, repeats: int = 5,
                n_threads: int | None = None) -> float:
    """Dense (n x n) @ (n x n) matmul rate in GFLOP/s (2 n^3 FLOPs per product, best of ``repeats``)."""
    positive_int("n", n)
    positive_int("repeats", repeats)
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype={dtype} must be float32, bfloat16 or float16")
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(dtype)
    b = torch.randn(n, n, generator=g).to(dtype)
    with threads(n_threads or torch.get_num_threads()), torch.no_grad():
        t = best_seconds(lambda: a @ b, repeats)
    return 2 * n ** 3 / t / 1e9


def attainable(intensity: float | torch.Tensor, peak_gflops: float, bandwidth_gbs: float):
    """The roofline: attainable GFLOP/s = min(peak, bandwidth x intensity) (intensity in FLOP/byte)."""
    if peak_gflops <= 0 or bandwidth_gbs <= 0:
        raise ValueError(f"peak_gflops={peak_gflops} and bandwidth_gbs={bandwidth_gbs} must be > 0")
    if isinstance(intensity, torch.Tensor):
        return torch.clamp(bandwidth_gbs * intensity, max=peak_gflops)
    if intensity < 0:
        raise ValueError(f"intensity={intensity} must be >= 0")
    return min(peak_gflops, bandwidth_gbs * intensity)


def linear_intensity(tokens: int, out_features: int, in_features: int, bytes_per_weight: float,
                     bytes_per_act: float = 4.0) -> float:
    """FLOPs per byte of one linear layer on ``tokens`` tokens: 2 T out in FLOPs over the bytes moved,
    out in b_w (weights) + T (in + out) b_a (activations read and written)."""
    for k, v in (("tokens", tokens), ("out_features", out_features), ("in_features", in_features)):
        positive_int(k, v)
    if bytes_per_weight <= 0 or bytes_per_act <= 0:
        raise ValueError(f"bytes_per_weight={bytes_per_weight} and bytes_per_act={bytes_per_act} must be > 0")
    flops = 2 * tokens * out_features * in_features
    moved = out_features * in_features * bytes_per_weight + tokens * (in_features + out_features) * bytes_per_act
    return flops / moved


def roofline_seconds(tokens: int, out_features: int, in_features: int, bytes_per_weight: float,
                     peak_gflops: float, bandwidth_gbs: float, bytes_per_act: float = 4.0) -> float:
    """The roofline's time for one linear layer (out, in) on ``tokens`` tokens: the slower of computing
    its 2 T out in FLOPs at ``peak_gflops`` and moving its bytes (out in b_w for the weights, T (in + out)
    b_a for the activations read and written) at ``bandwidth_gbs`` (10^9 bytes/s).  Both pipes work at
    once, so the time is the maximum of the two, not their sum (Williams et al. 2009)."""
    for k, v in (("tokens", tokens), ("out_features", out_features), ("in_features", in_features)):
        positive_int(k, v)
    for k, v in (("bytes_per_weight", bytes_per_weight), ("peak_gflops", peak_gflops),
                 ("bandwidth_gbs", bandwidth_gbs), ("bytes_per_act", bytes_per_act)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise ValueError(f"{k}={v!r} must be a number > 0")
    # BEGIN SOLUTION
    flops = 2.0 * tokens * out_features * in_features
    moved = out_features * in_features * bytes_per_weight + tokens * (in_features + out_features) * bytes_per_act
    compute_s = flops / (peak_gflops * 1e9)
    memory_s = moved / (bandwidth_gbs * 1e9)
    seconds = max(compute_s, memory_s)
    # END SOLUTION
    return seconds


def decode_bytes_per_token(model: nn.Module, context: int = 0, kv_bytes_per_elem: float | None = None) -> int:
    """Bytes one decoding step reads from memory: every parameter and buffer of the model once, except the
    token-embedding table, of which only one row is read (when the LM head is tied to it, the head reads it
    all, and it is counted once), plus the KV cache of ``context`` earlier tokens.

    Packed layers count their packed bytes (codes, scales, zeros), so the same function gives fp32, bf16,
    INT8 and INT4 models' traffic."""
    if isinstance(context, bool) or not isinstance(context, int) or context < 0:
        raise ValueError(f"context={context!r} must be an int >= 0")
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    emb_w = getattr(emb, "weight", None)
    tied = emb_w is not None and head is not None and getattr(head, "weight", None) is emb_w
    seen: set[int] = set()
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in seen or t.device.type == "meta":
            continue
        seen.add(id(t))
        if t is emb_w and not tied:
            total += t.shape[1] * t.element_size()  # one row gathered
        else:
            total += t.numel() * t.element_size()
    if context:
        cfg = model.config
        heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        eb = kv_bytes_per_elem if kv_bytes_per_elem is not None else next(model.parameters()).element_size()
        total += int(2 * cfg.num_hidden_layers * heads * head_dim * eb * context)
    return total


def predict_decode_seconds(bytes_per_token: float, bandwidth_gbs: float) -> float:
    """The roofline's decode time per token: bytes read / bandwidth (a lower bound: it ignores compute,
    kernel launch and Python overhead, which at 135M parameters are not negligible)."""
    if bytes_per_token <= 0 or bandwidth_gbs <= 0:
        raise ValueError(f"bytes_per_token={bytes_per_token} and bandwidth_gbs={bandwidth_gbs} must be > 0")
    return bytes_per_token / (bandwidth_gbs * 1e9)


def packed_model(model: nn.Module, body, head=None, act_dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """A copy of ``model`` whose decoder linears are quantized with ``body`` (a ``QuantScheme``) and whose LM
    head uses ``head`` (None: left in float), every quantized layer on torch's packed CPU kernels
    (``quant.kernels.to_kernels``).  ``model`` is not changed."""
    from .quant.kernels import to_kernels
    from .models import is_linear_like
    from .quant.qlinear import default_filter, quantize_

    m = copy.deepcopy(model)
    quantize_(m, body)  # decoder linears
    if head is not None:  # the LM head (default_filter leaves it out)
        quantize_(m, head, filter_fn=lambda mod, n: is_linear_like(mod) and not default_filter(mod, n))
    to_kernels(m, act_dtype)
    return m


@torch.no_grad()
def decode_seconds(model: nn.Module, prompt: torch.Tensor, new: int, clock=time.perf_counter) -> float:
    """Seconds for ``new`` greedy tokens at batch 1 after ``prompt`` (1, T), KV cache on; the prompt's
    own prefill is not timed.  ``clock``: ``time.perf_counter`` (wall) or ``time.thread_time`` (CPU time of
    this thread: with one thread, the time spent waiting for a core on a shared machine is left out)."""
    positive_int("new", new)
    if prompt.dim() != 2 or prompt.shape[0] != 1:
        raise ValueError(f"prompt must be (1, T) token ids, got {tuple(prompt.shape)}")
    out = model(prompt, use_cache=True)
    past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)  # (1, 1)
    t0 = clock()
    for _ in range(new):
        out = model(nxt, past_key_values=past, use_cache=True)
        past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
    return clock() - t0


@torch.no_grad()
def prefill_seconds(model: nn.Module, ids: torch.Tensor, clock=time.perf_counter) -> float:
    """Seconds (``clock``, as in ``decode_seconds``) of one forward over ``ids`` (1, T) without a cache."""
    t0 = clock()
    model(ids, use_cache=False)
    return clock() - t0
