"""Byte-level plumbing shared by the entropy coders: a checked container, varints, alphabet tables, bit packing.

Every coded stream in ``lessonlib.coding`` is a *container*::

    magic (4 bytes) | version (1) | body length (8, little endian) | CRC-32 of the body (4) | body

so a truncated stream (length mismatch) or a flipped bit (checksum mismatch) raises
:class:`CorruptStreamError` before any symbol is decoded: a damaged file never turns into wrong weights.
The body starts with the tensor's dtype and shape, then the coder's own table and payload.

Alphabet tables (Huffman code lengths, rANS frequencies) are written either *dense* (one value per integer in
``[min, max]``, 0 = absent) or *sparse* (symbol deltas + values), whichever is shorter.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "CorruptStreamError", "ByteReader", "SymbolTensor", "as_symbols", "write_container", "read_container",
    "uvarint", "svarint", "pack_table", "unpack_table", "pack_fixed_width", "unpack_fixed_width",
    "symbol_indices", "alphabet_counts", "start_body", "open_body", "MAX_SYMBOLS", "check_symbol_count",
    "values_crc",
]

_VERSION = 1
MAX_SYMBOLS = 1 << 27  # the largest tensor a stream may declare (134M symbols; SmolLM2's largest has 28M)
_HEADER = struct.Struct("<4sBQI")  # magic, version, body length, crc32
_DTYPES: dict[int, np.dtype] = {1: np.dtype(np.int8), 2: np.dtype(np.int16), 3: np.dtype(np.int32),
                                4: np.dtype(np.int64), 5: np.dtype(np.uint8), 6: np.dtype(np.uint16),
                                7: np.dtype(np.uint32), 8: np.dtype(np.uint64), 9: np.dtype(np.bool_)}
_DTYPE_CODES = {v: k for k, v in _DTYPES.items()}


class CorruptStreamError(ValueError):
    """The coded bytes are truncated, damaged, or not a stream of the expected kind."""


# ----------------------------------------------------------------------------- symbol tensors
@dataclass(frozen=True)
class SymbolTensor:
    """A flattened integer tensor: ``values`` (N,) int64 plus what is needed to rebuild it."""
    values: np.ndarray  # (N,) int64
    shape: tuple[int, ...]
    dtype: np.dtype


def as_symbols(x: np.ndarray | torch.Tensor) -> SymbolTensor:
    """Accept an integer (or bool) numpy array / torch tensor of any shape; floats raise ``TypeError``."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
        if x.size == 0:
            x = x.astype(np.int64)
    if x.dtype not in _DTYPE_CODES:
        raise TypeError(f"symbols must be an integer or bool tensor, got dtype {x.dtype}; "
                        f"allowed: {sorted(str(d) for d in _DTYPE_CODES)} (quantize floats to codes first)")
    if x.dtype == np.uint64 and x.size and int(x.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"uint64 symbol {int(x.max())} does not fit the int64 symbol range")
    return SymbolTensor(x.reshape(-1).astype(np.int64), tuple(int(d) for d in x.shape), x.dtype)


_LUT_SPAN = 1 << 20  # value ranges up to this size use direct lookup tables instead of sorting


def alphabet_counts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values and their counts (``np.unique``, via ``bincount`` when the range is small)."""
    if values.size and int(values.max()) - int(values.min()) < _LUT_SPAN:
        lo = int(values.min())
        counts = np.bincount(values - lo)
        present = np.flatnonzero(counts)
        return present.astype(np.int64) + lo, counts[present].astype(np.int64)
    return np.unique(values, return_counts=True)


def symbol_indices(values: np.ndarray, alphabet: np.ndarray) -> np.ndarray:
    """Position of each value in the sorted ``alphabet``; a value that is not in it raises ``ValueError``."""
    if alphabet.size == 0:
        if values.size:
            raise ValueError(f"symbol {int(values[0])} is not in the code table (the table is empty)")
        return np.zeros(0, dtype=np.int64)
    lo, hi = int(alphabet[0]), int(alphabet[-1])
    if values.size and hi - lo < _LUT_SPAN and lo <= int(values.min()) and int(values.max()) <= hi:
        lut = np.full(hi - lo + 1, -1, np.int64)
        lut[alphabet - lo] = np.arange(alphabet.size)
        idx_c = lut[values - lo]  # (N,)
        bad = idx_c < 0
    else:
        idx = np.searchsorted(alphabet, values)  # (N,)
        idx_c = np.minimum(idx, alphabet.size - 1)
        bad = alphabet[idx_c] != values
    if bad.any():
        missing = np.unique(values[bad])
        raise ValueError(f"symbols {missing[:10].tolist()} are not in the code table "
                         f"(table has {alphabet.size} symbols in [{int(alphabet[0])}, {int(alphabet[-1])}])")
    return idx_c


def write_header_shape(st: SymbolTensor) -> bytes:
    out = bytearray([_DTYPE_CODES[st.dtype]])
    out += uvarint(len(st.shape))
    for d in st.shape:
        out += uvarint(d)
    return bytes(out)


def read_header_shape(r: "ByteReader") -> tuple[np.dtype, tuple[int, ...], int]:
    code = r.byte()
    if code not in _DTYPES:
        raise CorruptStreamError(f"unknown dtype code {code} in stream")
    ndim = r.uvarint()
    if ndim > 32:
        raise CorruptStreamError(f"implausible tensor rank {ndim}")
    shape = tuple(r.uvarint() for _ in range(ndim))
    n = 1
    for d in shape:  # Python ints: a forged shape cannot overflow into a small or negative count
        n *= d
    check_symbol_count(n, CorruptStreamError)
    return _DTYPES[code], shape, n


def check_symbol_count(n: int, error: type[Exception] = ValueError) -> None:
    """Refuse a tensor of more than ``MAX_SYMBOLS`` symbols (a forged header must not allocate gigabytes)."""
    if n > MAX_SYMBOLS:
        raise error(f"stream declares {n} symbols, more than the maximum {MAX_SYMBOLS} "
                    "(lessonlib.coding.bitstream.MAX_SYMBOLS); refusing to decode it")


def values_crc(values: np.ndarray, dtype: np.dtype) -> int:
    """CRC-32 of a tensor's dtype and symbol values (int64 little endian): the coders' end-to-end check of what
    they decoded, which also catches damage in the tables and header that a recomputed container CRC lets by."""
    return zlib.crc32(np.ascontiguousarray(values, dtype="<i8").tobytes(), zlib.crc32(np.dtype(dtype).str.encode()))


def start_body(st: SymbolTensor) -> bytearray:
    """The common start of every coder's body: dtype, shape and symbol count."""
    check_symbol_count(st.values.size)
    return bytearray(write_header_shape(st)) + uvarint(st.values.size)


def open_body(data: bytes, magic: bytes) -> tuple["ByteReader", np.dtype, tuple[int, ...], int]:
    """Check the container and read the common start: ``(reader, dtype, shape, n)``."""
    r = ByteReader(read_container(data, magic))
    dtype, shape, n = read_header_shape(r)
    if r.uvarint() != n:
        raise CorruptStreamError("symbol count does not match the shape")
    return r, dtype, shape, n


# ----------------------------------------------------------------------------- container
def write_container(magic: bytes, body: bytes) -> bytes:
    """Wrap ``body`` with magic, version, length and CRC-32 (see the module docstring)."""
    return _HEADER.pack(magic, _VERSION, len(body), zlib.crc32(body)) + body


def read_container(data: bytes | bytearray | memoryview, magic: bytes) -> bytes:
    """Check magic, version, length and checksum; return the body or raise :class:`CorruptStreamError`."""
    data = bytes(data)
    if len(data) < _HEADER.size:
        raise CorruptStreamError(f"stream of {len(data)} bytes is shorter than the {_HEADER.size}-byte header")
    m, ver, n, crc = _HEADER.unpack_from(data)
    if m != magic:
        raise CorruptStreamError(f"bad magic {m!r}: expected {magic!r} (wrong coder or not a coded stream)")
    if ver != _VERSION:
        raise CorruptStreamError(f"stream version {ver} is not supported (expected {_VERSION})")
    body = data[_HEADER.size:]
    if len(body) != n:
        raise CorruptStreamError(f"stream truncated or padded: header says {n} body bytes, found {len(body)}")
    if zlib.crc32(body) != crc:
        raise CorruptStreamError("checksum mismatch: the stream is corrupt")
    return body


class ByteReader:
    """Sequential reader over a body; reading past the end raises :class:`CorruptStreamError`."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise CorruptStreamError(f"stream ends early: wanted {n} bytes at offset {self.pos} of {len(self.data)}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def byte(self) -> int:
        return self.take(1)[0]

    def uvarint(self) -> int:
        shift, out = 0, 0
        while True:
            b = self.byte()
            out |= (b & 0x7F) << shift
            if b < 0x80:
                return out
            shift += 7
            if shift > 63:
                raise CorruptStreamError("varint longer than 64 bits")

    def svarint(self) -> int:
        z = self.uvarint()
        return (z >> 1) ^ -(z & 1)

    def array(self, dtype: str, count: int) -> np.ndarray:
        dt = np.dtype(dtype)
        return np.frombuffer(self.take(dt.itemsize * count), dtype=dt).copy()

    def done(self) -> None:
        if self.pos != len(self.data):
            raise CorruptStreamError(f"{len(self.data) - self.pos} unexpected trailing bytes")


def uvarint(v: int) -> bytes:
    """LEB128 unsigned varint."""
    if v < 0:
        raise ValueError(f"uvarint needs a non-negative integer, got {v}")
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def svarint(v: int) -> bytes:
    """Zig-zag signed varint."""
    return uvarint((v << 1) ^ (v >> 63) if v < 0 else v << 1)


# ----------------------------------------------------------------------------- alphabet tables
def pack_table(symbols: np.ndarray, values: np.ndarray) -> bytes:
    """Serialise sorted distinct ``symbols`` (int64) with positive ``values`` (dense or sparse, the shorter)."""
    symbols, values = np.asarray(symbols, np.int64), np.asarray(values, np.int64)
    if symbols.size == 0:
        return bytes([0]) + uvarint(0)
    if (values <= 0).any():
        raise ValueError("table values must be positive (0 marks an absent symbol)")
    lo, hi = int(symbols[0]), int(symbols[-1])
    sparse = bytearray([1]) + uvarint(symbols.size) + svarint(lo)
    for d in np.diff(symbols):
        sparse += uvarint(int(d) - 1)
    for v in values:
        sparse += uvarint(int(v))
    span = hi - lo + 1
    if span <= 4 * symbols.size + 64:
        dense_vals = np.zeros(span, np.int64)
        dense_vals[symbols - lo] = values
        dense = bytearray([2]) + uvarint(span) + svarint(lo)
        for v in dense_vals:
            dense += uvarint(int(v))
        if len(dense) < len(sparse):
            return bytes(dense)
    return bytes(sparse)


def unpack_table(r: ByteReader) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`pack_table`: ``(symbols, values)``."""
    mode = r.byte()
    if mode == 0:
        if r.uvarint() != 0:
            raise CorruptStreamError("bad empty table")
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    count = r.uvarint()
    if count > len(r.data) - r.pos:  # every entry takes at least one byte
        raise CorruptStreamError(f"table claims {count} entries in a {len(r.data)}-byte stream")
    lo = r.svarint()
    if mode == 1:
        deltas = np.array([r.uvarint() + 1 for _ in range(count - 1)], np.int64)
        symbols = lo + np.concatenate([[0], np.cumsum(deltas)]).astype(np.int64)
        values = np.array([r.uvarint() for _ in range(count)], np.int64)
    elif mode == 2:
        dense = np.array([r.uvarint() for _ in range(count)], np.int64)
        symbols = lo + np.flatnonzero(dense).astype(np.int64)
        values = dense[dense > 0]
    else:
        raise CorruptStreamError(f"unknown table mode {mode}")
    if values.size and (values <= 0).any():
        raise CorruptStreamError("table has non-positive values")
    return symbols, values


# ----------------------------------------------------------------------------- fixed-width packing
def pack_fixed_width(values: np.ndarray, bits: int) -> bytes:
    """Pack non-negative integers (< 2**bits) MSB-first at ``bits`` bits each (Deep Compression index storage)."""
    if not 1 <= bits <= 32:
        raise ValueError(f"bits={bits} is outside 1..32")
    v = np.asarray(values, np.int64).reshape(-1)
    if v.size and (v.min() < 0 or v.max() >= (1 << bits)):
        raise ValueError(f"values in [{v.min()}, {v.max()}] do not fit in {bits} unsigned bits")
    shifts = np.arange(bits - 1, -1, -1, dtype=np.int64)  # (bits,)
    bitmat = ((v[:, None] >> shifts) & 1).astype(np.uint8)  # (N, bits)
    return np.packbits(bitmat.reshape(-1)).tobytes()


def unpack_fixed_width(data: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_fixed_width`; raises if ``data`` is too short for ``count`` values."""
    if not 1 <= bits <= 32:
        raise ValueError(f"bits={bits} is outside 1..32")
    need = (count * bits + 7) // 8
    if len(data) < need:
        raise CorruptStreamError(f"{len(data)} bytes cannot hold {count} values of {bits} bits ({need} needed)")
    flat = np.unpackbits(np.frombuffer(data, np.uint8))[: count * bits].reshape(count, bits).astype(np.int64)
    return flat @ (1 << np.arange(bits - 1, -1, -1, dtype=np.int64))  # (count,)
