"""rANS (range asymmetric numeral systems) coding of integer symbol tensors, interleaved over many lanes.

Duda (2013), "Asymmetric numeral systems", and Giesen (2014), "Interleaved entropy coders": a state ``x``
absorbs symbol ``s`` with quantized frequency ``f_s`` (sum ``M = 2^prob_bits``) and cumulative ``c_s`` as

    encode:  x' = floor(x / f_s) * M + (x mod f_s) + c_s
    decode:  slot = x' mod M;  s = the symbol with c_s <= slot < c_s + f_s;  x = f_s * floor(x' / M) + slot - c_s

with 32-bit states kept in ``[L, 2^32)``, ``L = 2^16``, renormalised by 16-bit words (at most one per step).
The encoder runs backwards over the symbols; the decoder forwards.  Symbols ``i, i+K, i+2K, ...`` go to lane
``i mod K``; the lanes run in lock-step as numpy vectors and share one word stream ordered the way the
decoder consumes it (step ascending, lane ascending), so only the K final states are overhead (32 bits each).

Stream body: dtype, shape | n | prob_bits | frequency table | lanes | values CRC-32 | final states (uint32) |
words (uint16).
After decoding, every lane must be back at the initial state ``L`` with every word consumed: a built-in
integrity check on top of the container's CRC.  It misses a few flips (a changed word can still end every
lane at ``L``), so the body also stores a CRC-32 of the dtype and decoded values (``bitstream.values_crc``):
with a recomputed container CRC, every single flipped bit that changes the decoded tensor is still detected
(tested over every bit of a stream).  Declared sizes are bounded before any allocation: the symbol count by
``MAX_SYMBOLS`` and by the information the words can carry, the words by the stream's length, the symbols
per lane by ``MAX_STEPS``.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np
import torch

from .bitstream import (CorruptStreamError, alphabet_counts, as_symbols, open_body, pack_table, start_body,
                        symbol_indices, unpack_table, uvarint, values_crc, write_container)

__all__ = ["RANS_L", "MAX_STEPS", "quantize_frequencies", "RansModel", "rans_encode", "rans_decode", "default_lanes",
           "default_steps"]

RANS_L = 1 << 16  # lower bound of the normalised state interval
MAX_STEPS = 1 << 20  # symbols per lane: bounds the decoder's sequential loop (the default lanes give <= 8192)
_MAGIC = b"LLRA"
_MAX_PROB_BITS = 16


def quantize_frequencies(counts: np.ndarray, prob_bits: int = _MAX_PROB_BITS) -> np.ndarray:
    """Scale positive ``counts`` to integers >= 1 summing to exactly ``2^prob_bits``.

    Start from floor(count * M / N) clipped to >= 1, hand out the remainder by largest fractional part, and
    remove any excess where it costs the fewest expected bits (count_s * log2(f_s / (f_s - 1))).
    """
    if not 1 <= prob_bits <= _MAX_PROB_BITS:
        raise ValueError(f"prob_bits={prob_bits} is outside 1..{_MAX_PROB_BITS}")
    counts = np.asarray(counts, np.int64)
    m = 1 << prob_bits
    if counts.size == 0 or (counts <= 0).any():
        raise ValueError("counts must be a non-empty array of positive integers")
    if counts.size > m:
        raise ValueError(f"{counts.size} symbols do not fit a {prob_bits}-bit frequency table (at most {m}); "
                         "raise prob_bits or use Huffman")
    total = int(counts.sum())
    exact = counts.astype(np.float64) * m / total
    f = np.maximum(1, np.floor(exact).astype(np.int64))
    diff = m - int(f.sum())
    if diff > 0:
        order = np.argsort(-(exact - np.floor(exact)), kind="stable")
        f[order[:diff]] += 1  # diff < number of symbols, since each floor lost less than 1
    heap = [(float(c) * math.log2(fs / (fs - 1)), i) for i, (c, fs) in enumerate(zip(counts, f)) if fs > 1]
    heapq.heapify(heap)
    while diff < 0:
        _, i = heapq.heappop(heap)
        f[i] -= 1
        diff += 1
        if f[i] > 1:
            heapq.heappush(heap, (float(counts[i]) * math.log2(f[i] / (f[i] - 1)), i))
    return f


@dataclass(frozen=True)
class RansModel:
    """A static rANS model: sorted alphabet, quantized frequencies summing to ``2^prob_bits``."""
    symbols: np.ndarray  # (S,) int64 sorted
    freqs: np.ndarray  # (S,) int64, sum 2^prob_bits
    prob_bits: int

    def __post_init__(self):
        if int(self.freqs.sum()) != (1 << self.prob_bits) or (self.freqs <= 0).any():
            raise ValueError(f"frequencies must be positive and sum to 2^{self.prob_bits}")

    @property
    def cum(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.freqs)[:-1]]).astype(np.int64)  # (S,)

    @classmethod
    def from_counts(cls, symbols: np.ndarray, counts: np.ndarray, prob_bits: int = _MAX_PROB_BITS) -> "RansModel":
        return cls(np.asarray(symbols, np.int64), quantize_frequencies(counts, prob_bits), prob_bits)

    @classmethod
    def from_data(cls, x: np.ndarray | torch.Tensor, prob_bits: int = _MAX_PROB_BITS) -> "RansModel":
        values, counts = alphabet_counts(as_symbols(x).values)
        return cls.from_counts(values, counts, prob_bits)

    def ideal_bits(self, x: np.ndarray | torch.Tensor) -> float:
        """Bits an ideal coder spends on ``x`` under this model's quantized probabilities."""
        idx = symbol_indices(as_symbols(x).values, self.symbols)
        return float(np.sum(self.prob_bits - np.log2(self.freqs[idx])))


def default_steps(n: int) -> int:
    """Symbols per lane (rANS) or per block (Huffman): 8 sqrt(n) clipped to 512..8192.

    The numpy loop runs once per step, so fewer steps are faster; each lane/block costs about 32 bits, so
    fewer lanes compress better.  8 sqrt(n) keeps that overhead near 4 / sqrt(n) bits per symbol
    (0.004 bits at a million symbols) while small tensors stay quick.
    """
    return int(min(8192, max(512, 8 * math.isqrt(max(n, 1)))))


def default_lanes(n: int) -> int:
    """Number of interleaved rANS lanes for ``n`` symbols (each runs about ``default_steps(n)`` symbols)."""
    return max(1, min(1 << 16, -(-n // default_steps(n))))


def rans_encode(x: np.ndarray | torch.Tensor, model: RansModel | None = None, prob_bits: int = _MAX_PROB_BITS,
                lanes: int | None = None) -> bytes:
    """Encode an integer tensor with interleaved rANS; the model is fitted to ``x`` unless given."""
    st = as_symbols(x)
    model = model if model is not None else (RansModel.from_data(st.values, prob_bits) if st.values.size else None)
    n = st.values.size
    if lanes is not None:
        from ..checks import positive_int
        positive_int("lanes", lanes)
    k = default_lanes(n) if lanes is None else lanes
    if n and -(-n // k) > MAX_STEPS:
        raise ValueError(f"lanes={lanes} gives {-(-n // k)} symbols per lane for {n} symbols, more than "
                         f"MAX_STEPS={MAX_STEPS}; use at least {-(-n // MAX_STEPS)} lanes (or the default)")
    body = start_body(st)
    if model is None:  # empty tensor, no model given
        body += uvarint(0) + pack_table(np.zeros(0), np.zeros(0))
        return write_container(_MAGIC, bytes(body))
    idx = symbol_indices(st.values, model.symbols)  # (N,)
    body += uvarint(model.prob_bits) + pack_table(model.symbols, model.freqs) + uvarint(k)
    if n == 0:
        return write_container(_MAGIC, bytes(body))
    body += values_crc(st.values, st.dtype).to_bytes(4, "little")
    pb = model.prob_bits
    freq, cum = model.freqs.astype(np.uint64), model.cum.astype(np.uint64)
    xmax_all = (((RANS_L >> pb) << 16) * freq)[idx]  # (N,) renormalise when x >= this
    f_all, c_all = freq[idx], cum[idx]  # (N,) gathered once, outside the sequential loop
    steps = -(-n // k)
    x = np.full(k, RANS_L, np.uint64)  # (K,) states
    chunks = []
    for t in range(steps - 1, -1, -1):
        sl = slice(t * k, min(n, (t + 1) * k))  # only the last step can be short
        xs = x[:sl.stop - sl.start]
        emit = xs >= xmax_all[sl]
        if emit.any():
            chunks.append((xs[emit] & np.uint64(0xFFFF))[::-1])  # lanes descending; reversed at the end
            xs[emit] >>= np.uint64(16)
        q, rem = np.divmod(xs, f_all[sl])
        x[:xs.size] = (q << np.uint64(pb)) + rem + c_all[sl]
    words = np.concatenate(chunks)[::-1].astype("<u2") if chunks else np.zeros(0, "<u2")
    body += x.astype("<u4").tobytes() + uvarint(words.size) + words.tobytes()
    return write_container(_MAGIC, bytes(body))


def rans_decode(data: bytes) -> np.ndarray:
    """Decode a stream from :func:`rans_encode`; damage raises :class:`CorruptStreamError`."""
    r, dtype, shape, n = open_body(data, _MAGIC)
    pb = r.uvarint()
    symbols, freqs = unpack_table(r)
    if symbols.size == 0:
        if n:
            raise CorruptStreamError("empty frequency table for a non-empty tensor")
        r.done()
        return np.zeros(shape, dtype)
    if not 1 <= pb <= _MAX_PROB_BITS or int(freqs.sum()) != (1 << pb):
        raise CorruptStreamError(f"bad frequency table (prob_bits={pb}, sum={int(freqs.sum())})")
    k = r.uvarint()
    if n == 0:
        r.done()
        return np.zeros(shape, dtype)
    if not 1 <= k <= n or -(-n // k) > MAX_STEPS:
        raise CorruptStreamError(f"bad lane count {k} for {n} symbols (at most {MAX_STEPS} symbols per lane)")
    crc = int.from_bytes(r.take(4), "little")
    x = r.array("<u4", k).astype(np.uint64)  # (K,)
    nwords = r.uvarint()
    if nwords > (len(r.data) - r.pos) // 2:
        raise CorruptStreamError(f"stream declares {nwords} words but holds {len(r.data) - r.pos} bytes")
    # every symbol costs at least log2(M / f_max) bits; the words and the K states' growth from 2^16 to 2^32
    # carry at most 16 (nwords + K) bits (twice that, plus slack, allowed for rounding): a forged count fails here
    min_bits = pb - math.log2(int(freqs.max()))
    if n * min_bits > 2 * 16 * (nwords + k) + 64:
        raise CorruptStreamError(f"stream declares {n} symbols, more than its {nwords} words can hold")
    words = r.array("<u2", nwords).astype(np.uint64)
    r.done()
    m = 1 << pb
    cum = np.concatenate([[0], np.cumsum(freqs)[:-1]])
    slot2sym = np.repeat(np.arange(symbols.size), freqs)  # (M,)
    freq_u, cum_u = freqs.astype(np.uint64), cum.astype(np.uint64)
    steps = -(-n // k)
    out = np.empty(steps * k, np.int64)
    ptr = 0
    for t in range(steps):
        kt = min(k, n - t * k)
        xs = x[:kt]
        slot = xs & np.uint64(m - 1)
        s = slot2sym[slot]  # (kt,)
        out[t * k:t * k + kt] = s
        xs = freq_u[s] * (xs >> np.uint64(pb)) + slot - cum_u[s]
        need = xs < RANS_L
        cnt = int(need.sum())
        if cnt:
            if ptr + cnt > nwords:
                raise CorruptStreamError("rANS word stream ends early")
            xs[need] = (xs[need] << np.uint64(16)) | words[ptr:ptr + cnt]
            ptr += cnt
        x[:kt] = xs
    if ptr != nwords or (x != RANS_L).any():
        raise CorruptStreamError("rANS states did not return to their initial value: the stream is corrupt")
    values = symbols[out[:n]]
    if values_crc(values, dtype) != crc:
        raise CorruptStreamError("checksum of the decoded symbols does not match: the stream is corrupt")
    return values.astype(dtype).reshape(shape)
