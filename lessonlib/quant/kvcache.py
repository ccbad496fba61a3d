"""KV-cache quantization: int8 / int4 keys and values with per-token or per-head scales.

At long context the cache, not the weights, fills memory: 2 x layers x kv_heads x head_dim numbers per
token (``evaluate.kv_cache_bytes_per_token``).  Storing them as b-bit integers with a symmetric scale
(the full 2^b-level grid of ``affine``) cuts it by 16/b minus the scales; KIVI (Liu et al. 2024,
arXiv:2402.02750) and KVQuant (Hooper et al. 2024, arXiv:2401.18079) study the granularity: keys have
outlier channels, values do not.  Here:

* ``granularity="token"``: one scale per (token, head) over the head_dim numbers (what is appended per
  step, so it streams);
* ``granularity="head"``: one scale per (head) over every token of the window (coarser, fewer scales).

``QuantizedKVCache`` is a ``transformers`` ``DynamicCache`` that fake-quantizes every key/value it is
given before storing it, so attention reads the quantized cache; ``kv_perplexity`` measures it.
"""
from __future__ import annotations

import torch
from torch import nn

from ..evaluate import perplexity_from_window_nlls, window_nlls

__all__ = ["quantize_kv", "kv_bytes_per_token", "QuantizedKVCache", "kv_perplexity"]

_GRAN = ("token", "head")


def _check(bits: int, granularity: str) -> None:
    if isinstance(bits, bool) or bits not in (2, 3, 4, 8):
        raise ValueError(f"bits={bits!r} must be 2, 3, 4 or 8")
    if granularity not in _GRAN:
        raise ValueError(f"granularity={granularity!r} must be one of {_GRAN}")


def quantize_kv(x: torch.Tensor, bits: int, granularity: str = "token") -> tuple[torch.Tensor, torch.Tensor]:
    """Keys or values (B, H, T, D) -> int8 codes (B, H, T, D) in [-2^(b-1), 2^(b-1) - 1] and float32 scales,
    (B, H, T, 1) per token or (B, H, 1, 1) per head.  Dequantize with ``codes * scales``."""
    _check(bits, granularity)
    if x.dim() != 4:
        raise ValueError(f"expected keys/values of shape (B, H, T, D), got {tuple(x.shape)}")
    dims = (-1,) if granularity == "token" else (-2, -1)
    amax = x.float().abs().amax(dim=dims, keepdim=True)
    s = amax / ((2 ** bits - 1) / 2)  # full symmetric grid, as affine.QuantScheme(sym=True)
    s = torch.where(s > 0, s, torch.ones_like(s))
    q = torch.round(x.float() / s).clamp_(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return q.to(torch.int8), s


def kv_bytes_per_token(n_layers: int, n_kv_heads: int, head_dim: int, bits: int | None = None,
                       granularity: str = "token", scale_bytes: int = 2) -> float:
    """Cache bytes per token: ``bits=None`` is a float16 cache; else b-bit codes plus, per token, one scale per
    head for keys and one for values (``"token"``); per-head scales are shared by the window (counted 0)."""
    for name, v in (("n_layers", n_layers), ("n_kv_heads", n_kv_heads), ("head_dim", head_dim)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name}={v!r} must be a positive int")
    if bits is None:
        return 2.0 * n_layers * n_kv_heads * head_dim * 2
    _check(bits, granularity)
    per_head = head_dim * bits / 8 + (scale_bytes if granularity == "token" else 0)
    return 2.0 * n_layers * n_kv_heads * per_head


def _fake(x: torch.Tensor, bits: int, granularity: str) -> torch.Tensor:
    q, s = quantize_kv(x, bits, granularity)
    return (q.float() * s).to(x.dtype)


def _cache_class():
    from transformers import DynamicCache

    class QuantizedKVCache(DynamicCache):
        """A ``DynamicCache`` whose stored keys and values are fake-quantized (``bits``, ``granularity``)."""

        def __init__(self, bits: int = 8, granularity: str = "token", **kw):
            _check(bits, granularity)
            super().__init__(**kw)
            self.bits, self.granularity = bits, granularity

        def update(self, key_states, value_states, *args, **kwargs):
            return super().update(_fake(key_states, self.bits, self.granularity),
                                  _fake(value_states, self.bits, self.granularity), *args, **kwargs)

    return QuantizedKVCache


def __getattr__(name: str):
    if name == "QuantizedKVCache":
        return _cache_class()
    raise AttributeError(name)


@torch.no_grad()
def kv_perplexity(model: nn.Module, windows: torch.Tensor, bits: int | None = None,
                  granularity: str = "token") -> float:
    """Perplexity over token ``windows`` (W, T) with the cache quantized (``bits=None``: the float cache).

    The whole window runs in one forward with the cache on; attention then reads every key/value back from
    the (quantized) cache, as decoding would."""
    if bits is not None:
        _check(bits, granularity)
    cls = _cache_class()
    kw = None if bits is None else (lambda: {"past_key_values": cls(bits, granularity), "use_cache": True})
    nlls = window_nlls(model, windows, forward_kwargs=kw)  # (W,), a fresh cache per window
    return perplexity_from_window_nlls(nlls.double(), windows.shape[1])
