"""How close do real coders get to the Shannon entropy, and what does the Deep Compression pipeline store?

* ``shannon_entropy``: empirical order-0 entropy H = -sum p_i log2 p_i (Shannon 1948), the lower bound in
  bits per symbol for any coder that codes symbols independently with one static model.
* ``compare_coders``: Huffman and rANS from this package vs zstd, gzip and lzma on the *same* raw bytes (the
  symbols in their smallest integer dtype), with real stream sizes (headers included) and MB/s.
* ``deep_compress``: Han, Mao & Dally (2016), "Deep Compression": magnitude prune -> k-means weight sharing
  -> entropy coding, storing positions as relative indices with filler zeros (their Fig. 2) and reporting the
  real byte count of each stage, then decoding the final bytes and checking the weights come back exactly.
* ``prune_quantize_code_sizes``: the bytes of a model of ``params`` weights at each step of prune ->
  quantize -> entropy-code, on paper (with or without the cost of the positions), and
  ``coded_bits_per_weight``: the real bits per weight of a pruned, quantized tensor whose codes (zeros
  included) are entropy coded.
"""
from __future__ import annotations

import gzip
import lzma
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import zstandard

from ..evaluate import bytes_at_precision
from ..prune.magnitude import magnitude_mask
from ..quant.affine import QuantScheme, quantize
from .bitstream import alphabet_counts, as_symbols, pack_fixed_width
from .huffman import huffman_decode, huffman_encode
from .rans import rans_decode, rans_encode

__all__ = ["shannon_entropy", "raw_symbol_bytes", "general_purpose_sizes", "CoderResult", "compare_coders",
           "format_results", "relative_index_encode", "relative_index_decode", "DeepCompressionResult",
           "deep_compress", "prune_quantize_code_sizes", "coded_bits_per_weight", "pruned_codes", "CODERS"]

CODERS = {"huffman": (huffman_encode, huffman_decode), "rans": (rans_encode, rans_decode)}


def shannon_entropy(x: np.ndarray | torch.Tensor) -> float:
    """Empirical entropy in bits per symbol of an integer tensor (0.0 for empty or constant tensors)."""
    v = as_symbols(x).values
    if v.size == 0:
        return 0.0
    _, counts = alphabet_counts(v)
    p = counts / v.size
    return float(max(0.0, -(p * np.log2(p)).sum()))


def raw_symbol_bytes(x: np.ndarray | torch.Tensor) -> bytes:
    """The symbols in the smallest signed/unsigned integer dtype that holds them: the general coders' input."""
    v = as_symbols(x).values
    if v.size == 0:
        return b""
    lo, hi = int(v.min()), int(v.max())
    for dt in (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.int64):
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return v.astype(dt).tobytes()
    raise AssertionError("unreachable: int64 holds every symbol")


def general_purpose_sizes(raw: bytes, zstd_level: int = 19) -> dict[str, int]:
    """Compressed sizes of ``raw`` with zstd (``zstd_level``), gzip -9 and xz/lzma preset 6."""
    return {f"zstd-{zstd_level}": len(zstandard.ZstdCompressor(level=zstd_level).compress(raw)),
            "gzip-9": len(gzip.compress(raw, 9, mtime=0)), "lzma-6": len(lzma.compress(raw, preset=6))}


@dataclass
class CoderResult:
    name: str
    n_bytes: int
    bits_per_symbol: float
    entropy: float  # bits per symbol
    encode_mb_s: float  # MB of raw symbol bytes per second
    decode_mb_s: float
    exact: bool  # decoded == input

    @property
    def overhead(self) -> float:
        """Relative excess over the entropy bound (0.01 = 1% more bits than H)."""
        return self.bits_per_symbol / self.entropy - 1 if self.entropy > 0 else float("inf")


def _timed(fn, arg, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn(arg)
        best = min(best, time.perf_counter() - t0)
    return out, max(best, 1e-9)


def compare_coders(x: np.ndarray | torch.Tensor, zstd_level: int = 19, repeats: int = 1) -> list[CoderResult]:
    """Bits per symbol of Huffman, rANS, zstd, gzip and lzma on the same symbols, with speeds and round trips."""
    if repeats < 1:
        raise ValueError(f"repeats={repeats} must be >= 1")
    st = as_symbols(x)
    if st.values.size == 0:
        raise ValueError("cannot compare coders on an empty tensor")
    n, h = st.values.size, shannon_entropy(st.values)
    arr = st.values.reshape(st.shape).astype(st.dtype)
    raw = raw_symbol_bytes(st.values)
    mb = len(raw) / 1e6
    rows: list[CoderResult] = []
    for name, (enc, dec) in CODERS.items():
        data, te = _timed(enc, arr, repeats)
        back, td = _timed(dec, data, repeats)
        rows.append(CoderResult(name, len(data), 8 * len(data) / n, h, mb / te, mb / td,
                                bool(back.shape == arr.shape and np.array_equal(back, arr))))
    generic = {f"zstd-{zstd_level}": (zstandard.ZstdCompressor(level=zstd_level).compress,
                                      zstandard.ZstdDecompressor().decompress),
               "gzip-9": (lambda b: gzip.compress(b, 9, mtime=0), gzip.decompress),
               "lzma-6": (lambda b: lzma.compress(b, preset=6), lzma.decompress)}
    for name, (enc, dec) in generic.items():
        data, te = _timed(enc, raw, repeats)
        back, td = _timed(dec, data, repeats)
        rows.append(CoderResult(name, len(data), 8 * len(data) / n, h, mb / te, mb / td, back == raw))
    rows.append(CoderResult("raw", len(raw), 8 * len(raw) / n, h, float("inf"), float("inf"), True))
    return rows


def format_results(rows: list[CoderResult]) -> str:
    """A plain-text table of :func:`compare_coders` rows."""
    lines = [f"{'coder':<10} {'bytes':>10} {'bits/sym':>9} {'vs H':>8} {'enc MB/s':>9} {'dec MB/s':>9} exact"]
    for r in rows:
        lines.append(f"{r.name:<10} {r.n_bytes:>10} {r.bits_per_symbol:>9.4f} {100 * r.overhead:>7.2f}% "
                     f"{r.encode_mb_s:>9.1f} {r.decode_mb_s:>9.1f} {r.exact}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- Deep Compression
def relative_index_encode(keep: np.ndarray, gap_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the kept entries of a flat mask as relative indices (Deep Compression Fig. 2).

    Each entry stores the number of zeros skipped before it, at most ``2^gap_bits - 1``; a longer run gets
    *filler* entries (gap ``2^gap_bits - 1`` + an explicit zero value), each covering ``2^gap_bits``
    positions.  Returns ``(gaps (E,), is_real (E,) bool)``; trailing zeros need no entries.
    """
    if not 1 <= gap_bits <= 32:
        raise ValueError(f"gap_bits={gap_bits} is outside 1..32")
    pos = np.flatnonzero(np.asarray(keep, bool).reshape(-1))  # (nnz,)
    zeros = np.diff(np.concatenate([[-1], pos])) - 1  # (nnz,) zeros before each kept entry
    span = 1 << gap_bits
    n_fill = zeros // span  # (nnz,)
    seg = n_fill + 1
    total = int(seg.sum())
    gaps = np.full(total, span - 1, np.int64)  # (E,)
    real = np.zeros(total, bool)
    last = np.cumsum(seg) - 1  # index of each real entry
    gaps[last] = zeros - n_fill * span
    real[last] = True
    return gaps, real


def relative_index_decode(gaps: np.ndarray) -> np.ndarray:
    """Flat position of every entry (fillers included) from relative indices: cumsum(gap + 1) - 1."""
    return np.cumsum(np.asarray(gaps, np.int64) + 1) - 1


@dataclass
class DeepCompressionResult:
    """Real bytes after each stage of prune -> cluster -> code, and the decoded weight."""
    n_weights: int
    nnz: int
    fillers: int
    stage_bytes: dict[str, int]  # dense_fp32, pruned_relidx, clustered, coded
    value_bytes: int  # coded cluster indices (entries incl. fillers)
    position_bytes: int  # coded relative indices
    weight: torch.Tensor = field(repr=False)  # (out, in) decoded from the coded bytes

    def bits_per_weight(self) -> dict[str, float]:
        return {k: 8 * v / self.n_weights for k, v in self.stage_bytes.items()}

    def ratios(self) -> dict[str, float]:
        return {k: self.stage_bytes["dense_fp32"] / v for k, v in self.stage_bytes.items()}

    @property
    def value_bits_per_nonzero(self) -> float:
        return 8 * self.value_bytes / max(self.nnz, 1)

    @property
    def position_bits_per_nonzero(self) -> float:
        return 8 * self.position_bytes / max(self.nnz, 1)


def deep_compress(w: torch.Tensor, sparsity: float = 0.9, k: int = 16, gap_bits: int = 5,
                  coder: str = "huffman", iters: int = 30) -> DeepCompressionResult:
    """Deep Compression of one weight (out, in): prune ``sparsity`` by magnitude, share ``k`` values
    (entry 0 = the exact zero used by pruned positions and fillers), code values and gaps with ``coder``.

    Stage bytes are lengths of real byte strings: fp32 values, fixed-width packed indices/gaps, coded streams
    (with their headers), plus the float32 codebook.  The coded stage is decoded and must rebuild the clustered
    weight exactly.  Han et al. use ``gap_bits`` 5 for fully connected layers and 8 for convolutions.
    """
    if w.dim() != 2:
        raise ValueError(f"weight must be 2-D (out, in), got shape {tuple(w.shape)}")
    if coder not in CODERS:
        raise ValueError(f"unknown coder {coder!r}; choose one of {sorted(CODERS)}")
    from ..share.clustering import cluster_weight, index_bits  # lazy: clustering imports coding.bitstream

    w = w.detach().float().cpu()
    keep = magnitude_mask(w, sparsity)  # (out, in) bool
    cw = cluster_weight(w * keep, k, iters, keep_zero=True)
    idx_flat = cw.indices.reshape(-1).numpy()  # (N,)
    gaps, real = relative_index_encode(cw.indices.reshape(-1).numpy() != 0, gap_bits)  # (E,), (E,)
    pos = relative_index_decode(gaps)  # (E,)
    vals = np.where(real, idx_flat[pos], 0)  # (E,) cluster index per entry, 0 for fillers
    fp32_vals = np.where(real, (w * keep).reshape(-1).numpy()[pos], 0).astype("<f4")
    packed_gaps = pack_fixed_width(gaps, gap_bits)
    enc, dec = CODERS[coder]
    coded_vals, coded_gaps = enc(vals.astype(np.int16)), enc(gaps.astype(np.int32))
    book = cw.codebook.numpy().astype("<f4").tobytes()
    stage = {"dense_fp32": 4 * w.numel(),
             "pruned_relidx": len(fp32_vals.tobytes()) + len(packed_gaps),
             "clustered": len(pack_fixed_width(vals, index_bits(k))) + len(packed_gaps) + len(book),
             "coded": len(coded_vals) + len(coded_gaps) + len(book)}
    # decode the coded bytes back into a weight: the number reported is only honest if this round-trips
    d_vals, d_gaps = dec(coded_vals).astype(np.int64), dec(coded_gaps)
    flat = np.zeros(w.numel(), np.float32)
    flat[relative_index_decode(d_gaps)] = np.frombuffer(book, "<f4")[d_vals]
    rebuilt = torch.from_numpy(flat).reshape(w.shape)
    if not torch.equal(rebuilt, cw.dense()):
        raise AssertionError("Deep Compression round trip failed: decoded weight differs from the clustered one")
    return DeepCompressionResult(w.numel(), int(keep.sum()), int((~real).sum()), stage, len(coded_vals),
                                 len(coded_gaps), rebuilt)


def prune_quantize_code_sizes(params: int, prune_fraction: float, bits: int, coded_bits_per_nonzero: float,
                              position_bits_per_nonzero: float = 0.0) -> dict[str, float]:
    """Bytes at each step of Deep Compression's pipeline (Han et al. 2016) for ``params`` fp32 weights: dense
    -> prune ``prune_fraction`` -> quantize the survivors to ``bits`` -> entropy-code them at
    ``coded_bits_per_nonzero`` bits each, plus ``position_bits_per_nonzero`` for where they are.

    The textbook version ignores the positions (``position_bits_per_nonzero=0``); pass e.g. the measured
    ``DeepCompressionResult.position_bits_per_nonzero`` to include them.  Keys: ``dense_fp32``, ``nonzero``
    (a count), ``pruned_fp32_values``, ``quantized_values``, ``coded_values``, ``positions``, ``final`` (bytes)
    and ``ratio`` (dense / final).
    """
    if not 0 <= prune_fraction < 1:
        raise ValueError(f"prune_fraction={prune_fraction} is outside [0, 1)")
    if params <= 0 or coded_bits_per_nonzero <= 0 or position_bits_per_nonzero < 0:
        raise ValueError(f"params={params} and coded_bits_per_nonzero={coded_bits_per_nonzero} must be positive, "
                         f"position_bits_per_nonzero={position_bits_per_nonzero} >= 0")
    nnz = round(params * (1 - prune_fraction))
    out = {"dense_fp32": bytes_at_precision(params, 32), "nonzero": float(nnz),
           "pruned_fp32_values": bytes_at_precision(nnz, 32), "quantized_values": bytes_at_precision(nnz, bits),
           "coded_values": bytes_at_precision(nnz, coded_bits_per_nonzero)}
    out["positions"] = nnz * position_bits_per_nonzero / 8
    out["final"] = out["coded_values"] + out["positions"]
    out["ratio"] = out["dense_fp32"] / out["final"]
    return out


def pruned_codes(w: torch.Tensor, sparsity: float = 0.8, bits: int = 4, group_size: int = -1) -> np.ndarray:
    """Integer codes (out, in) of a weight pruned to ``sparsity`` by magnitude, then quantized symmetrically to
    ``bits`` (per output channel by default); pruned weights stay code 0.  int8 for bits <= 8, else int16."""
    if w.dim() != 2:
        raise ValueError(f"weight must be 2-D (out, in), got shape {tuple(w.shape)}")
    w = w.detach().float().cpu()
    keep = magnitude_mask(w, sparsity)
    codes = quantize(w * keep, QuantScheme(bits=bits, group_size=group_size, sym=True)).codes  # (out, in) int32
    return (codes * keep).to(torch.int8 if bits <= 8 else torch.int16).numpy()


def coded_bits_per_weight(w: torch.Tensor, sparsity: float, bits: int, group_size: int = -1) -> dict[str, float]:
    """Real bits per weight of a pruned and quantized weight (out, in) whose codes are entropy coded: prune
    ``sparsity`` by magnitude, quantize symmetrically to ``bits`` (per output channel by default; pruned
    weights stay code 0), and code the codes of *all* weights (zeros included, so no positions are stored).

    Returns the zero fraction, the order-0 entropy, and the bits per weight of Huffman, rANS and zstd-19 as
    real byte strings (headers included), with ``raw_bits`` = ``bits`` for comparison.
    """
    codes = pruned_codes(w, sparsity, bits, group_size)  # (out, in)
    n = codes.size
    return {"zero_fraction": float((codes == 0).mean()), "entropy": shannon_entropy(codes),
            "huffman": 8 * len(huffman_encode(codes)) / n, "rans": 8 * len(rans_encode(codes)) / n,
            "zstd": 8 * len(zstandard.ZstdCompressor(level=19).compress(raw_symbol_bytes(codes))) / n,
            "raw_bits": float(bits)}
