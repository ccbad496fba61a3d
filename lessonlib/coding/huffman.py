"""Canonical Huffman coding of integer symbol tensors (encoder and decoder, vectorised with numpy).

Huffman (1952), "A Method for the Construction of Minimum-Redundancy Codes": repeatedly merge the two least
frequent nodes; a symbol's code length is its leaf depth.  Canonical codes (as in DEFLATE, RFC 1951 section
3.2.2) are then fully determined by the lengths, so the header stores only the code lengths.  Han et al.
(2016), "Deep Compression", Huffman-code the cluster indices and the sparse index gaps this way.

Stream body (inside the checked container of :mod:`lessonlib.coding.bitstream`)::

    dtype, shape | n symbols | code-length table | block size | values CRC-32 | bits per block (varints) |
    packed bits

The symbols are cut into blocks of ``block`` symbols whose bit offsets are stored, so the decoder walks all
blocks in lock-step (one numpy step per symbol position within a block) instead of one Python step per symbol.
Codes are limited to ``MAX_CODE_LEN`` bits (Kraft-sum repair) so a window of the bitstream fits in 64 bits.
A complete Huffman code decodes *any* bit string, so the container's CRC alone would let a flipped payload
bit through if the CRC were recomputed (a tool that rewrites the file, a forger).  The body therefore also
stores a CRC-32 of the tensor's dtype and *decoded* values (``bitstream.values_crc``), checked after
decoding, and the decoder checks that every block ends exactly at its stored bit count.

Detected even with a recomputed container CRC: every single flipped bit that changes the decoded tensor
(flips that do not, such as the last byte's padding, are harmless; tested over every bit of a stream), every
error the values' CRC-32 catches (a changed dtype, a shifted table, any burst of up to 32 bits; anything else
with probability 1 - 2^-32), a bit pattern that matches no code, and a block whose codes end before or after
its stored bit count.  Not detected: a forger who also recomputes the inner CRC (no checksum can stop that).
Declared sizes are bounded before anything is allocated: the symbol count by ``MAX_SYMBOLS`` and by the
payload (every code is at least one bit), the block count by the bytes that hold the block lengths.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
import torch

from .bitstream import (CorruptStreamError, SymbolTensor, alphabet_counts, as_symbols, open_body, pack_table,
                        start_body, symbol_indices, unpack_table, uvarint, values_crc, write_container)

__all__ = ["MAX_CODE_LEN", "huffman_code_lengths", "limit_code_lengths", "canonical_codes", "HuffmanCode",
           "huffman_encode", "huffman_decode"]

MAX_CODE_LEN = 32
_MAGIC = b"LLHF"
_CHUNK = 1 << 16  # symbols packed per vectorised chunk
_TABLE_BITS = 16  # codes up to this long decode through a 2^lmax lookup table


def huffman_code_lengths(freqs: np.ndarray | list[int]) -> np.ndarray:
    """Optimal prefix-code lengths for positive frequencies (Huffman 1952, the two-smallest-merge loop).

    ``freqs`` (n,) positive counts -> lengths (n,) int64.  A single symbol gets length 1.  Ties are broken by
    node creation order, so the result is deterministic.  Example: ``[5, 2, 1, 1] -> [1, 2, 3, 3]``.
    """
    f = np.asarray(freqs, dtype=np.int64).reshape(-1)
    if f.size == 0:
        return np.zeros(0, dtype=np.int64)
    if (f <= 0).any():
        raise ValueError(f"frequencies must be positive, got min {int(f.min())} (drop absent symbols first)")
    if f.size == 1:
        return np.ones(1, dtype=np.int64)
    # BEGIN SOLUTION
    n = f.size
    heap = [(int(c), i) for i, c in enumerate(f)]  # (weight, node id); leaves are nodes 0..n-1
    heapq.heapify(heap)
    parent = np.full(2 * n - 1, -1, dtype=np.int64)  # internal nodes get ids n..2n-2
    nxt = n
    while len(heap) > 1:
        w1, a = heapq.heappop(heap)
        w2, b = heapq.heappop(heap)
        parent[a] = parent[b] = nxt
        heapq.heappush(heap, (w1 + w2, nxt))
        nxt += 1
    depth = np.zeros(2 * n - 1, dtype=np.int64)  # the root (id 2n-2) has depth 0
    for node in range(2 * n - 3, -1, -1):  # a parent's id is always larger than its children's
        depth[node] = depth[parent[node]] + 1
    return depth[:n]
    # END SOLUTION


def limit_code_lengths(lengths: np.ndarray, freqs: np.ndarray, max_len: int = MAX_CODE_LEN) -> np.ndarray:
    """Cap code lengths at ``max_len`` and repair the Kraft inequality sum 2^-l <= 1.

    Capped symbols overflow the Kraft sum; we lengthen the rarest symbols still below the cap (cheapest in
    expected bits) until the sum fits, then shorten the most frequent symbols while slack allows.
    """
    if not 1 <= max_len <= 57:
        raise ValueError(f"max_len={max_len} is outside 1..57")
    lengths = np.asarray(lengths, np.int64).copy()
    if lengths.size > (1 << max_len):
        raise ValueError(f"{lengths.size} symbols cannot have codes of at most {max_len} bits")
    if lengths.size == 0 or lengths.max() <= max_len:
        return lengths
    lengths = np.minimum(lengths, max_len)
    unit = 1 << max_len  # Kraft sum in units of 2^-max_len
    kraft = int(np.sum(np.left_shift(1, max_len - lengths)))
    order = np.argsort(np.asarray(freqs), kind="stable")  # rarest first
    while kraft > unit:
        for s in order:
            if lengths[s] < max_len:
                kraft -= 1 << (max_len - lengths[s] - 1)
                lengths[s] += 1
                break
    for s in order[::-1]:  # most frequent first: use the slack
        while lengths[s] > 1 and kraft + (1 << (max_len - lengths[s])) <= unit:
            kraft += 1 << (max_len - lengths[s])
            lengths[s] -= 1
    return lengths


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical code values (uint64) for code ``lengths`` (RFC 1951 3.2.2): shorter codes first, then by index."""
    lengths = np.asarray(lengths, np.int64)
    if lengths.size == 0:
        return np.zeros(0, np.uint64)
    if lengths.min() < 1 or lengths.max() > 57:
        raise ValueError(f"code lengths must be in 1..57, got [{lengths.min()}, {lengths.max()}]")
    if sum(2.0 ** -lengths.astype(np.float64)) > 1 + 1e-12:
        raise ValueError("code lengths violate the Kraft inequality (not a prefix code)")
    order = np.lexsort((np.arange(lengths.size), lengths))
    codes = np.zeros(lengths.size, np.uint64)
    code, prev = 0, int(lengths[order[0]])
    for k, s in enumerate(order):
        ln = int(lengths[s])
        if k:
            code = (code + 1) << (ln - prev)
        codes[s], prev = code, ln
    return codes


@dataclass(frozen=True)
class HuffmanCode:
    """A canonical Huffman code over the sorted alphabet ``symbols`` with code ``lengths``."""
    symbols: np.ndarray  # (S,) int64, sorted
    lengths: np.ndarray  # (S,) int64
    codes: np.ndarray  # (S,) uint64

    @classmethod
    def from_counts(cls, symbols: np.ndarray, counts: np.ndarray, max_len: int = MAX_CODE_LEN) -> "HuffmanCode":
        symbols, counts = np.asarray(symbols, np.int64), np.asarray(counts, np.int64)
        if symbols.shape != counts.shape or (symbols.size > 1 and (np.diff(symbols) <= 0).any()):
            raise ValueError("symbols must be sorted, distinct and match counts in shape")
        lengths = limit_code_lengths(huffman_code_lengths(counts), counts, max_len)
        return cls(symbols, lengths, canonical_codes(lengths))

    @classmethod
    def from_lengths(cls, symbols: np.ndarray, lengths: np.ndarray) -> "HuffmanCode":
        lengths = np.asarray(lengths, np.int64)
        return cls(np.asarray(symbols, np.int64), lengths, canonical_codes(lengths))

    @classmethod
    def from_data(cls, x: np.ndarray | torch.Tensor, max_len: int = MAX_CODE_LEN) -> "HuffmanCode":
        values, counts = alphabet_counts(as_symbols(x).values)
        return cls.from_counts(values, counts, max_len)

    def bits_for(self, x: np.ndarray | torch.Tensor) -> int:
        """Payload bits this code spends on ``x`` (no header)."""
        return int(self.lengths[symbol_indices(as_symbols(x).values, self.symbols)].sum())


def _pack_bits(codes: np.ndarray, lens: np.ndarray) -> bytes:
    """Concatenate variable-length codes MSB-first into bytes. ``codes``, ``lens``: (N,)."""
    parts = []
    for i in range(0, lens.size, _CHUNK):
        c, ln = codes[i:i + _CHUNK], lens[i:i + _CHUNK]
        width = int(ln.max())
        j = np.arange(width, dtype=np.uint64)  # (width,)
        left = c << (width - ln).astype(np.uint64)  # (n,) codes left-aligned in `width` bits
        bits = ((left[:, None] >> (np.uint64(width - 1) - j)) & np.uint64(1)).astype(np.uint8)  # (n, width)
        parts.append(bits[j[None, :] < ln[:, None].astype(np.uint64)])
    return np.packbits(np.concatenate(parts)).tobytes() if parts else b""


def huffman_encode(x: np.ndarray | torch.Tensor, code: HuffmanCode | None = None, block: int | None = None) -> bytes:
    """Encode an integer tensor; the code is built from ``x`` unless given (then unknown symbols raise).

    ``block``: symbols per independently decodable block (default ``rans.default_steps(n)``).
    """
    from .rans import default_steps

    block = default_steps(int(np.prod(np.shape(x)))) if block is None else int(block)
    if block < 1:
        raise ValueError(f"block={block} must be >= 1")
    st: SymbolTensor = as_symbols(x)
    code = code if code is not None else HuffmanCode.from_data(st.values)
    idx = symbol_indices(st.values, code.symbols)  # (N,)
    lens, codes = code.lengths[idx], code.codes[idx]  # (N,), (N,)
    n = st.values.size
    body = start_body(st) + pack_table(code.symbols, code.lengths) + uvarint(block)
    if n:
        body += values_crc(st.values, st.dtype).to_bytes(4, "little")
        for bb in np.add.reduceat(lens, np.arange(0, n, block)):  # bits per block
            body += uvarint(int(bb))
        body += _pack_bits(codes, lens)
    return write_container(_MAGIC, bytes(body))


def huffman_decode(data: bytes) -> np.ndarray:
    """Decode a stream from :func:`huffman_encode`; damage raises :class:`CorruptStreamError`."""
    r, dtype, shape, n = open_body(data, _MAGIC)
    symbols, lengths = unpack_table(r)
    block = r.uvarint()
    if n == 0:
        r.done()
        return np.zeros(shape, dtype)
    if symbols.size == 0 or block < 1 or lengths.max() > MAX_CODE_LEN:
        raise CorruptStreamError("bad code table or block size")
    try:
        code = HuffmanCode.from_lengths(symbols, lengths)
    except ValueError as e:
        raise CorruptStreamError(f"bad code lengths: {e}") from e
    block = min(block, n)  # one block holds everything: the same decoding, a grid of n (not `block`) cells
    crc = int.from_bytes(r.take(4), "little")
    nblocks = -(-n // block)
    if nblocks > len(r.data) - r.pos:  # each block length is a varint of at least one byte
        raise CorruptStreamError(f"stream declares {nblocks} blocks but holds {len(r.data) - r.pos} bytes")
    block_bits = np.array([r.uvarint() for _ in range(nblocks)], np.int64)  # (B,)
    payload = r.take(len(r.data) - r.pos)
    if (int(block_bits.sum()) + 7) // 8 != len(payload):
        raise CorruptStreamError(f"payload of {len(payload)} bytes does not hold {int(block_bits.sum())} bits")
    if n > 8 * len(payload) or (block_bits < np.minimum(block, n - block * np.arange(nblocks))).any():
        raise CorruptStreamError(f"stream declares {n} symbols, more than its {8 * len(payload)} payload bits "
                                 "can hold (every code is at least one bit)")

    # canonical decoding tables: left-aligned upper limits per length, index offsets, first codes
    lmax = int(lengths.max())
    order = np.lexsort((np.arange(symbols.size), lengths))  # canonical order
    sorted_syms = symbols[order]
    count = np.bincount(lengths, minlength=lmax + 1)[1:]  # (lmax,) codes per length 1..lmax
    first = np.zeros(lmax, np.int64)
    for ln in range(1, lmax):
        first[ln] = (first[ln - 1] + count[ln - 1]) << 1
    offset = np.concatenate([[0], np.cumsum(count)[:-1]])  # (lmax,)
    shifts = lmax - np.arange(1, lmax + 1)
    limits = ((first + count) << shifts).astype(np.uint64)  # (lmax,) nondecreasing

    fast = lmax <= _TABLE_BITS  # direct lookup: every lmax-bit window -> (symbol, length)
    if fast:
        win_all = np.arange(1 << lmax, dtype=np.uint64)
        li_all = np.searchsorted(limits, win_all, side="right")  # (2^lmax,)
        ok = li_all < lmax
        li_c = np.minimum(li_all, lmax - 1)
        rank_all = (win_all >> shifts[li_c].astype(np.uint64)).astype(np.int64) - first[li_c]
        tab_sym = np.where(ok, sorted_syms[np.clip(offset[li_c] + rank_all, 0, symbols.size - 1)], 0)
        tab_len = np.where(ok, li_c + 1, 0)  # 0 marks a bit pattern that matches no code
    buf = np.frombuffer(payload + bytes(8), np.uint8)
    words = np.ndarray((buf.size - 7,), dtype=">u8", buffer=buf, strides=(1,)).astype(np.uint64)  # 64-bit windows
    pos = np.concatenate([[0], np.cumsum(block_bits)[:-1]])  # (B,) start bit of each block
    end = pos + block_bits
    out = np.empty(nblocks * block, np.int64)
    grid = out.reshape(nblocks, block)
    last = n - (nblocks - 1) * block  # symbols in the last block
    for t in range(block):
        k = nblocks if t < last else nblocks - 1  # blocks still active
        if k == 0:
            break
        p = pos[:k]
        win = (words[p >> 3] << (p & 7).astype(np.uint64)) >> np.uint64(64 - lmax)  # (k,) next lmax bits
        if fast:
            ln = tab_len[win]
            if not ln.all():
                raise CorruptStreamError("bit pattern matches no code")
            grid[:k, t] = tab_sym[win]
            pos[:k] = p + ln
            continue
        li = np.searchsorted(limits, win, side="right")  # (k,) code length - 1
        if (li >= lmax).any():
            raise CorruptStreamError("bit pattern matches no code")
        ln = li + 1
        rank = (win >> shifts[li].astype(np.uint64)).astype(np.int64) - first[li]
        grid[:k, t] = sorted_syms[offset[li] + rank]
        pos[:k] = p + ln
    if (pos != end).any():
        raise CorruptStreamError("decoded bit count differs from the stored block lengths")
    if values_crc(out[:n], dtype) != crc:
        raise CorruptStreamError("checksum of the decoded symbols does not match: the payload is corrupt")
    return out[:n].astype(dtype).reshape(shape)
