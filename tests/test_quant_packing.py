"""Bit packing: hand-checked bytes, exact round trips for every width, byte counts, bad input."""
import pytest
import torch

from lessonlib.quant.packing import pack_codes, packed_row_bytes, storage_bytes, unpack_codes


def test_int4_two_per_byte_low_nibble_first():
    codes = torch.tensor([[1, 2, 15, 0, 7]], dtype=torch.int32)
    packed = pack_codes(codes, 4)
    assert packed.dtype == torch.uint8
    assert packed.tolist() == [[1 | 2 << 4, 15, 7]]  # odd length: last byte half used
    assert torch.equal(unpack_codes(packed, 4, 5), codes)


def test_3bit_eight_codes_in_three_bytes():
    codes = torch.tensor([[7, 0, 5, 1, 2, 3, 4, 6]], dtype=torch.int32)
    packed = pack_codes(codes, 3)
    assert packed.shape == (1, 3)
    stream = sum(int(c) << (3 * i) for i, c in enumerate(codes[0]))  # little-endian bit stream
    assert packed[0].tolist() == [(stream >> (8 * b)) & 0xFF for b in range(3)]


def test_signed_codes_offset():
    codes = torch.tensor([[-8, -1, 0, 7]], dtype=torch.int32)
    packed = pack_codes(codes, 4, signed=True)
    assert packed.tolist() == [[0 | 7 << 4, 8 | 15 << 4]]
    assert torch.equal(unpack_codes(packed, 4, 4, signed=True), codes)


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("signed", [False, True])
def test_round_trip_every_width(bits, signed):
    g = torch.Generator().manual_seed(bits)
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1)) if signed else (0, 2 ** bits)
    for n in (1, 7, 64, 577):
        codes = torch.randint(lo, hi, (5, n), generator=g, dtype=torch.int32)
        packed = pack_codes(codes, bits, signed=signed)
        assert packed.shape == (5, -(-n * bits // 8)) == (5, packed_row_bytes(n, bits))
        assert torch.equal(unpack_codes(packed, bits, n, signed=signed), codes)


def test_storage_bytes():
    packed = pack_codes(torch.zeros(576, 576, dtype=torch.int32), 4)
    scales = torch.ones(576, 9, dtype=torch.float16)
    assert storage_bytes(packed, scales, None) == 576 * 288 + 576 * 9 * 2


def test_bad_input_raises():
    with pytest.raises(ValueError, match="does not fit"):
        pack_codes(torch.tensor([[16]]), 4)
    with pytest.raises(ValueError, match="does not fit"):
        pack_codes(torch.tensor([[-9]]), 4, signed=True)
    with pytest.raises(ValueError, match="outside 2..8"):
        pack_codes(torch.tensor([[1]]), 9)
    with pytest.raises(ValueError, match="integer"):
        pack_codes(torch.tensor([[1.0]]), 4)
    with pytest.raises(ValueError, match="bytes"):
        unpack_codes(torch.zeros(1, 3, dtype=torch.uint8), 4, 8)
