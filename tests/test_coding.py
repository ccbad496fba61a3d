"""Entropy coding: Huffman / rANS round trips, literal bit patterns, corrupt streams, entropy, Deep Compression."""
import heapq
import math
import struct
import zlib

import numpy as np
import pytest
import torch

from lessonlib.coding import (CorruptStreamError, HuffmanCode, RansModel, coded_bits_per_weight, prune_quantize_code_sizes,
                              canonical_codes, compare_coders, deep_compress, huffman_code_lengths, huffman_decode,
                              huffman_encode, pack_fixed_width, quantize_frequencies, rans_decode, rans_encode,
                              shannon_entropy, unpack_fixed_width)
from lessonlib.coding.compare import relative_index_decode, relative_index_encode
from lessonlib.coding.huffman import limit_code_lengths

CODECS = [(huffman_encode, huffman_decode), (rans_encode, rans_decode)]


def _reference_huffman_cost(freqs):
    """Slow reference: the optimal total code length equals the sum of all merged node weights."""
    h = list(freqs)
    heapq.heapify(h)
    cost = 0
    while len(h) > 1:
        a, b = heapq.heappop(h), heapq.heappop(h)
        cost += a + b
        heapq.heappush(h, a + b)
    return cost


def _sparse_codes(n, seed=0, zero=0.8):
    rng = np.random.default_rng(seed)
    return (rng.integers(-8, 8, n) * (rng.random(n) >= zero)).astype(np.int8)


# ----------------------------------------------------------------------------- Huffman construction
def test_huffman_lengths_literal():
    assert huffman_code_lengths([5, 2, 1, 1]).tolist() == [1, 2, 3, 3]
    assert huffman_code_lengths([1, 1, 1, 1]).tolist() == [2, 2, 2, 2]
    assert huffman_code_lengths([7]).tolist() == [1]
    assert huffman_code_lengths([]).tolist() == []


def test_huffman_lengths_optimal_vs_reference_and_kraft():
    rng = np.random.default_rng(1)
    for _ in range(20):
        f = rng.integers(1, 1000, rng.integers(2, 60))
        ln = huffman_code_lengths(f)
        assert int((f * ln).sum()) == _reference_huffman_cost(f.tolist())
        assert math.isclose(float(np.sum(2.0 ** -ln)), 1.0)  # a full binary tree


def test_huffman_lengths_reject_bad_freqs():
    with pytest.raises(ValueError, match="positive"):
        huffman_code_lengths([3, 0, 1])


def test_length_limit_keeps_kraft():
    fib = [1, 1]
    while len(fib) < 40:
        fib.append(fib[-1] + fib[-2])
    ln = huffman_code_lengths(fib)
    assert ln.max() == 39  # Fibonacci frequencies give the deepest tree
    lim = limit_code_lengths(ln, np.array(fib), max_len=12)
    assert lim.max() <= 12 and float(np.sum(2.0 ** -lim)) <= 1.0
    x = np.repeat(np.arange(40), np.minimum(fib, 2000))
    assert np.array_equal(huffman_decode(huffman_encode(x)), x)  # deep code, still exact


def test_canonical_codes_literal_and_prefix_free():
    assert canonical_codes(np.array([2, 1, 3, 3])).tolist() == [0b10, 0b0, 0b110, 0b111]
    ln = huffman_code_lengths(np.random.default_rng(2).integers(1, 100, 30))
    codes = canonical_codes(ln)
    words = [format(int(c), f"0{int(l)}b") for c, l in zip(codes, ln)]
    for i, a in enumerate(words):
        for j, b in enumerate(words):
            assert i == j or not b.startswith(a)
    with pytest.raises(ValueError, match="Kraft"):
        canonical_codes(np.array([1, 1, 1]))


def test_huffman_literal_bits():
    data = huffman_encode(np.array([0, 0, 1], np.int64))  # lengths 1,1 -> codes 0,1 -> bits 001
    assert data[-1] == 0b00100000
    code = HuffmanCode.from_data(np.array([0, 0, 0, 1, 2]))
    assert code.lengths.tolist() == [1, 2, 2]
    assert code.bits_for(np.array([0, 1, 2])) == 5


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("enc,dec", CODECS)
@pytest.mark.parametrize("case", ["empty", "empty2d", "one", "single_symbol", "two", "large_alphabet",
                                  "skewed", "wide_range", "uint8", "bool", "int64_2d"])
def test_round_trip_edge_cases(enc, dec, case):
    rng = np.random.default_rng(3)
    x = {"empty": np.zeros(0, np.int64), "empty2d": np.zeros((3, 0), np.int16), "one": np.array([-5], np.int32),
         "single_symbol": np.full(1000, 7, np.int8), "two": np.array([1, 0], np.int64),
         "large_alphabet": rng.integers(-3000, 3000, 20000).astype(np.int32),
         "skewed": np.where(rng.random(30000) < 0.999, 0, rng.integers(1, 50, 30000)).astype(np.int16),
         "wide_range": rng.choice(np.array([-2 ** 40, 3, 2 ** 50]), 500),
         "uint8": rng.integers(0, 256, 5000).astype(np.uint8), "bool": rng.random(777) < 0.3,
         "int64_2d": rng.integers(-2, 3, (37, 53))}[case]
    y = dec(enc(x))
    assert y.dtype == x.dtype and y.shape == x.shape and np.array_equal(y, x)


@pytest.mark.parametrize("enc,dec", CODECS)
def test_round_trip_torch_and_lanes(enc, dec):
    t = torch.from_numpy(_sparse_codes(50_001, seed=4))
    assert np.array_equal(dec(enc(t)), t.numpy())
    x = _sparse_codes(3001, seed=5)
    for kw in ({"lanes": 1}, {"lanes": 7}) if enc is rans_encode else ({"block": 1}, {"block": 100}):
        assert np.array_equal(dec(enc(x, **kw)), x)


def test_single_symbol_costs():
    x = np.full(10_000, 3, np.int8)
    assert 8 * len(rans_encode(x, lanes=1)) < 400  # rANS spends no payload bits on a certain symbol
    assert len(rans_encode(x, lanes=1)) == len(rans_encode(x[:200], lanes=1))  # size independent of n
    assert len(huffman_encode(x)) >= 10_000 // 8  # Huffman needs at least 1 bit per symbol


@pytest.mark.parametrize("cls,enc", [(HuffmanCode, huffman_encode), (RansModel, rans_encode)])
def test_symbol_outside_table_raises(cls, enc):
    model = cls.from_data(np.array([0, 1, 2, 2]))
    assert enc(np.array([2, 1]), model)  # symbols from the table are fine
    with pytest.raises(ValueError, match=r"\[3\] are not in the code table"):
        enc(np.array([0, 3]), model)


def test_float_symbols_raise():
    with pytest.raises(TypeError, match="integer"):
        huffman_encode(np.array([0.5, 1.0]))


# ----------------------------------------------------------------------------- corrupt streams
@pytest.mark.parametrize("enc,dec", CODECS)
def test_corrupt_and_truncated_streams_raise(enc, dec):
    data = enc(_sparse_codes(4000, seed=6))
    rng = np.random.default_rng(7)
    for pos in rng.choice(len(data), 25, replace=False):
        bad = bytearray(data)
        bad[pos] ^= 1 << int(rng.integers(8))
        with pytest.raises(CorruptStreamError):
            dec(bytes(bad))
    for cut in (0, 5, 17, len(data) // 2, len(data) - 1):
        with pytest.raises(CorruptStreamError):
            dec(data[:cut])
    with pytest.raises(CorruptStreamError, match="truncated or padded"):
        dec(data + b"\x00")


def test_wrong_coder_magic():
    with pytest.raises(CorruptStreamError, match="magic"):
        rans_decode(huffman_encode(np.arange(10)))


def _rewrap(data: bytes, mutate) -> bytes:
    magic, ver, _, _ = struct.unpack_from("<4sBQI", data)
    body = bytearray(data[17:])
    mutate(body)
    return struct.pack("<4sBQI", magic, ver, len(body), zlib.crc32(bytes(body))) + bytes(body)


def test_rans_payload_damage_caught_even_with_valid_checksum():
    """A forged stream with a recomputed CRC: rANS's own check (all lanes end in state L) still fires."""
    data = rans_encode(_sparse_codes(20_000, seed=8))

    def flip(body):
        body[len(body) - 40] ^= 0xFF

    with pytest.raises(CorruptStreamError, match="rANS"):
        rans_decode(_rewrap(data, flip))


def test_huffman_block_table_damage_caught_even_with_valid_checksum():
    """Huffman payload bits are guarded by the CRC; a payload that disagrees with the stored bit counts is
    caught structurally."""
    data = huffman_encode(_sparse_codes(20_000, seed=8))

    def grow_payload(body):
        body.extend(b"\x00\x00")

    with pytest.raises(CorruptStreamError, match="does not hold"):
        huffman_decode(_rewrap(data, grow_payload))


# ----------------------------------------------------------------------------- entropy and model
def test_shannon_entropy_literal():
    assert shannon_entropy(np.array([0, 0, 1, 1])) == pytest.approx(1.0)
    assert shannon_entropy(np.array([0, 0, 0, 1])) == pytest.approx(0.8112781244591328)
    assert shannon_entropy(np.full(9, 4)) == 0.0
    assert shannon_entropy(np.zeros(0, np.int64)) == 0.0


def test_quantize_frequencies():
    assert quantize_frequencies([1, 1, 2], 2).tolist() == [1, 1, 2]
    f = quantize_frequencies([10 ** 6] + [1] * 300, 10)  # 300 rare symbols force the excess branch
    assert f.sum() == 1024 and f.min() >= 1 and f[0] == 1024 - 300
    with pytest.raises(ValueError, match="do not fit"):
        quantize_frequencies([1] * 5, 2)


def test_rans_within_one_percent_of_entropy_on_large_tensor():
    x = _sparse_codes(1 << 21, seed=9)
    h = shannon_entropy(x)
    bits = 8 * len(rans_encode(x)) / x.size
    assert h <= bits <= 1.01 * h
    assert bits < 8 * len(huffman_encode(x)) / x.size  # Huffman pays >= 1 bit for the 80% zeros


def test_compare_coders_rows():
    x = _sparse_codes(20_000, seed=10)
    rows = {r.name: r for r in compare_coders(x, zstd_level=3)}
    assert set(rows) == {"huffman", "rans", "zstd-3", "gzip-9", "lzma-6", "raw"}
    assert all(r.exact for r in rows.values())
    assert rows["raw"].bits_per_symbol == 8.0
    assert rows["rans"].bits_per_symbol >= rows["rans"].entropy


# ----------------------------------------------------------------------------- packing, Deep Compression
def test_fixed_width_packing_literal_and_round_trip():
    assert pack_fixed_width(np.array([1, 2, 3]), 2) == bytes([0b01101100])
    v = np.random.default_rng(11).integers(0, 32, 1001)
    assert np.array_equal(unpack_fixed_width(pack_fixed_width(v, 5), 5, 1001), v)
    with pytest.raises(ValueError, match="do not fit"):
        pack_fixed_width(np.array([4]), 2)
    with pytest.raises(CorruptStreamError):
        unpack_fixed_width(b"\x00", 5, 3)


def test_relative_index_literal():
    keep = np.zeros(12, bool)
    keep[[1, 10]] = True
    gaps, real = relative_index_encode(keep, gap_bits=2)  # span 4: 8 zeros before position 10 need 2 fillers
    assert gaps.tolist() == [1, 3, 3, 0] and real.tolist() == [True, False, False, True]
    assert relative_index_decode(gaps).tolist() == [1, 5, 9, 10]


def test_deep_compress_stages_and_exact_round_trip():
    w = torch.randn(120, 200, generator=torch.Generator().manual_seed(12))
    r = deep_compress(w, sparsity=0.9, k=16, gap_bits=5)
    s = r.stage_bytes
    assert s["dense_fp32"] == 4 * w.numel()
    assert s["dense_fp32"] > s["pruned_relidx"] > s["clustered"] > s["coded"]
    assert r.nnz == w.numel() - round(0.9 * w.numel())
    assert int((r.weight != 0).sum()) == r.nnz and r.weight.unique().numel() <= 16
    kept = r.weight != 0
    assert torch.equal(kept, w.abs() >= w.abs().flatten().sort().values[-r.nnz])  # the largest survive
    assert 8 * s["coded"] / r.n_weights == pytest.approx(r.bits_per_weight()["coded"])
    rr = deep_compress(w, sparsity=0.9, k=16, coder="rans")
    assert torch.equal(rr.weight, r.weight)


def test_prune_quantize_code_sizes_worked_problem():
    # 100M fp32 weights, 90% pruned, 4-bit survivors coded at 1.5 bits: 400 MB -> 5 MB -> 1.875 MB
    out = prune_quantize_code_sizes(100_000_000, 0.9, 4, 1.5)
    assert out["dense_fp32"] == 400e6 and out["quantized_values"] == 5e6
    assert out["final"] == pytest.approx(1.875e6) and out["ratio"] == pytest.approx(213.333, rel=1e-4)
    assert prune_quantize_code_sizes(100_000_000, 0.9, 4, 1.5, position_bits_per_nonzero=4.0)["final"] == \
        pytest.approx(1.875e6 + 5e6)
    with pytest.raises(ValueError, match="prune_fraction=1.0"):
        prune_quantize_code_sizes(100_000_000, 1.0, 4, 1.5)
    with pytest.raises(ValueError, match="coded_bits_per_nonzero=0"):
        prune_quantize_code_sizes(100_000_000, 0.9, 4, 0)


def test_coded_bits_per_weight_on_gaussian_weight():
    w = torch.randn(256, 512, generator=torch.Generator().manual_seed(13))
    out = coded_bits_per_weight(w, sparsity=0.8, bits=4)
    assert out["zero_fraction"] >= 0.8
    assert out["entropy"] <= out["rans"] < 2.0
    assert 1.0 <= out["huffman"] < 2.0


@pytest.mark.model
def test_coded_bits_per_weight_on_smollm2_mlp_weight():
    from lessonlib.models import decoder_blocks, load_model

    model, _ = load_model(device="cpu")
    w = decoder_blocks(model)[10].mlp.down_proj.weight.detach()
    out = coded_bits_per_weight(w, sparsity=0.8, bits=4)
    assert 1.0 <= out["rans"] <= 2.0 and out["rans"] <= 1.01 * out["entropy"] + 0.01
