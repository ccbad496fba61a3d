"""Tried bad inputs, entropy coding (issue 23): forged and damaged Huffman/rANS streams stay harmless."""
from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from bad_inputs import answers, cases, check_case
from lessonlib.coding import huffman_decode, huffman_encode, rans_decode, rans_encode
from lessonlib.coding.bitstream import (_HEADER, MAX_SYMBOLS, CorruptStreamError, pack_table, uvarint,
                                        write_container)
from lessonlib.coding.huffman import HuffmanCode
from lessonlib.coding.rans import MAX_STEPS, RansModel

X = np.random.default_rng(0).integers(-3, 4, size=(8, 16)).astype(np.int8)
HUF, RANS = b"LLHF", b"LLRA"


def _head(n: int, dims: tuple[int, ...] | None = None) -> bytes:
    """dtype int8 (code 1), shape, symbol count: the common start of a body."""
    dims = (n,) if dims is None else dims
    return bytes([1]) + uvarint(len(dims)) + b"".join(uvarint(d) for d in dims) + uvarint(n)


def _rans(n: int, lanes: int = 1, nwords: int = 0, words: bytes = b"", table=((0, 1), (1 << 15, 1 << 15))) -> bytes:
    syms, freqs = np.array(table[0]), np.array(table[1])
    body = _head(n) + uvarint(16) + pack_table(syms, freqs) + uvarint(lanes) + bytes(4) + bytes(4 * lanes)
    return write_container(RANS, body + uvarint(nwords) + words)


def _huff(n: int, block: int, bits: list[int], payload: bytes) -> bytes:
    body = _head(n) + pack_table(np.array([0, 1]), np.array([1, 1])) + uvarint(block) + bytes(4)
    return write_container(HUF, body + b"".join(uvarint(b) for b in bits) + payload)


def _recrc(stream: bytes, body: bytes) -> bytes:
    m, v, _, _ = _HEADER.unpack_from(stream)
    return _HEADER.pack(m, v, len(body), zlib.crc32(body)) + body


CODING = [
    ("rans-1e9-symbols", lambda: rans_decode(_rans(10 ** 9)), CorruptStreamError, "1000000000 symbols"),
    ("huffman-1e9-symbols", lambda: huffman_decode(_huff(10 ** 9, 10 ** 9, [1], b"\x00")), CorruptStreamError,
     "1000000000 symbols"),
    ("shape-overflow", lambda: rans_decode(write_container(RANS, _head(0, (2 ** 40, 2 ** 40)))), CorruptStreamError,
     str(2 ** 80)),
    ("rans-max-symbols-plus-one", lambda: rans_decode(_rans(MAX_SYMBOLS + 1)), CorruptStreamError,
     str(MAX_SYMBOLS + 1)),
    ("rans-steps-per-lane", lambda: rans_decode(_rans(MAX_STEPS + 1, lanes=1)), CorruptStreamError, "lane count"),
    ("rans-words-beyond-stream", lambda: rans_decode(_rans(4, lanes=1, nwords=10 ** 6)), CorruptStreamError,
     "1000000 words"),
    ("rans-info-bound", lambda: rans_decode(_rans(100000, lanes=100)), CorruptStreamError, "100000 symbols"),
    ("rans-lanes-zero", lambda: rans_decode(_rans(4, lanes=0)), CorruptStreamError, "lane count 0"),
    ("huffman-blocks-beyond-stream", lambda: huffman_decode(_huff(10 ** 6, 1, [], b"")), CorruptStreamError,
     "1000000 blocks"),
    ("huffman-payload-too-small", lambda: huffman_decode(_huff(64, 64, [8], b"\x00")), CorruptStreamError,
     "64 symbols"),
    ("huffman-block-zero", lambda: huffman_decode(_huff(4, 0, [], b"")), CorruptStreamError, "block size"),
    ("bad-magic", lambda: rans_decode(huffman_encode(X)), CorruptStreamError, "b'LLHF'"),
    ("truncated", lambda: huffman_decode(huffman_encode(X)[:-3]), CorruptStreamError, "truncated"),
    ("short-header", lambda: rans_decode(b"LLRA"), CorruptStreamError, "4 bytes"),
    ("crc-flip", lambda: rans_decode(rans_encode(X)[:-1] + b"\x00"), CorruptStreamError, "checksum"),
    ("encode-float", lambda: huffman_encode(torch.randn(4)), TypeError, "float32"),
    ("encode-rans-float", lambda: rans_encode(np.ones(3)), TypeError, "float64"),
    ("rans-lanes-float", lambda: rans_encode(X, lanes=2.5), TypeError, "lanes=2.5"),
    ("rans-lanes-zero-encode", lambda: rans_encode(X, lanes=0), ValueError, "lanes=0"),
    ("rans-too-many-steps", lambda: rans_encode(np.zeros(MAX_STEPS + 1, np.int8), lanes=1), ValueError,
     f"MAX_STEPS={MAX_STEPS}"),
    ("huffman-block-zero-encode", lambda: huffman_encode(X, block=0), ValueError, "block=0"),
    ("huffman-unknown-symbol", lambda: huffman_encode(np.array([9]), code=HuffmanCode.from_data(np.array([0, 1]))),
     ValueError, "[9]"),
    ("rans-prob-bits", lambda: RansModel.from_data(X, prob_bits=20), ValueError, "prob_bits=20"),
]


@pytest.mark.parametrize("call, exc, needle", cases(CODING))
def test_coding_bad_input(call, exc, needle):
    check_case(call, exc, needle)


def _every_flip_detected(encode, decode) -> None:
    """Every single flipped body bit, with the container CRC recomputed, raises CorruptStreamError or leaves the
    decoded tensor identical (padding bits of the last byte; a block size that still covers the tensor)."""
    x = X[:4, :12]
    s = encode(x)
    body = s[_HEADER.size:]
    missed = []
    for i in range(len(body)):
        for b in range(8):
            bb = bytearray(body)
            bb[i] ^= 1 << b
            try:
                y = decode(_recrc(s, bytes(bb)))
            except CorruptStreamError:
                continue
            if y.dtype != x.dtype or y.shape != x.shape or not np.array_equal(y, x):
                missed.append((i, b, y.dtype))
    assert missed == []


def _roundtrip_after_checks() -> None:
    for enc, dec in ((huffman_encode, huffman_decode), (rans_encode, rans_decode)):
        for x in (X, np.zeros(0, np.int8), np.array([True, False]), np.full(5000, 7, np.int64)):
            y = dec(enc(x))
            assert y.dtype == x.dtype and np.array_equal(y, x)


def _forged_fails_fast() -> None:
    """A forged count of 10^9 symbols is refused from the header: no allocation for it, no decoding loop.
    Measured in bytes (tracemalloc also sees numpy's buffers), not in seconds, so it holds on any machine."""
    import tracemalloc
    forged = _rans(10 ** 9)
    tracemalloc.start()
    try:
        with pytest.raises(CorruptStreamError, match="1000000000 symbols"):
            rans_decode(forged)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"{peak} bytes allocated to refuse a {len(forged)}-byte stream"


ANSWERS = [
    ("huffman-every-flip", lambda: _every_flip_detected(huffman_encode, huffman_decode)),
    ("rans-every-flip", lambda: _every_flip_detected(rans_encode, rans_decode)),
    ("roundtrip", _roundtrip_after_checks),
    ("forged-fast", _forged_fails_fast),
]


@pytest.mark.parametrize("check", answers(ANSWERS))
def test_coding_documented_answer(check):
    check()
