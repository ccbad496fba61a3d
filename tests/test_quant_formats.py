"""Today's number formats: literal levels, limits and scale exponents; encode/decode round trips."""
import pytest
import torch

from lessonlib.quant.formats import (FORMATS, bits_per_weight, decode, encode, fake_quant_format, fp4_e2m1_levels,
                                     nf4_levels)

# bitsandbytes' / QLoRA's NF4 table (the 16 values of the 4-bit NormalFloat), to 6 decimals
NF4 = [-1.0, -0.696193, -0.525073, -0.394917, -0.284441, -0.184773, -0.091050, 0.0,
       0.079580, 0.160930, 0.246112, 0.337915, 0.440710, 0.562617, 0.722957, 1.0]


def test_nf4_levels_are_the_qlora_table():
    torch.testing.assert_close(nf4_levels(), torch.tensor(NF4), atol=2e-6, rtol=0)


def test_fp8_limits_and_literal_round_trip():
    w = torch.tensor([[448.0, -1.0, 0.5, 0.0]])  # absmax 448: scale 1 for E4M3
    e, s = encode(w, "fp8_e4m3")
    assert e.dtype == torch.float8_e4m3fn and float(s) == 1.0
    assert torch.equal(decode(e, s, "fp8_e4m3"), w)  # all four are E4M3 numbers
    e5, s5 = encode(w, "fp8_e5m2")
    assert float(s5) == 448.0 / 57344.0 and torch.finfo(e5.dtype).max == 57344.0
    # E4M3 has 3 mantissa bits: 1.0625 (= 1 + 1/16) is not representable and rounds to 1.0 or 1.125
    assert float(torch.tensor(1.0625).to(torch.float8_e4m3fn).float()) in (1.0, 1.125)


def test_mx_scales_are_powers_of_two_from_the_block_max():
    w = torch.zeros(1, 64)
    w[0, 0], w[0, 1], w[0, 32] = 3.0, 0.4, 104.0  # block 0 absmax 3, block 1 absmax 104
    el, s = encode(w, "mxfp4")
    # FP4 E2M1 max 6 = 1.5 * 2^2: X = 2^(floor(log2 amax) - 2): 2^(1 - 2) = 0.5 and 2^(6 - 2) = 16
    assert s.tolist() == [[0.5, 16.0]]
    assert el[0, 0] == 6.0 and el[0, 1] == 1.0 and el[0, 32] == 6.0  # 0.4/0.5 = 0.8 -> 1; 104/16 = 6.5 -> saturates at 6
    assert set(el.abs().unique().tolist()) <= set(fp4_e2m1_levels().tolist())
    el8, s8 = encode(w, "mxfp8")
    assert s8.tolist() == [[2.0 ** (1 - 8), 2.0 ** (6 - 8)]]  # E4M3's largest normal is 1.75 * 2^8
    assert float(decode(el8, s8, "mxfp8")[0, 32]) == 104.0  # 416 = 1.625 * 2^8 is an E4M3 number
    w[0, 32] = 100.0  # 400 lies halfway between E4M3's 384 and 416: ties go to the even mantissa, 384
    assert float(fake_quant_format(w, "mxfp8")[0, 32]) == 96.0


@pytest.mark.parametrize("fmt", FORMATS)
def test_error_is_small_and_decode_is_idempotent(fmt):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, 128, generator=g) * 0.02
    wh = fake_quant_format(w, fmt)
    rel = float((wh - w).norm() / w.norm())
    assert 0 < rel < (0.15 if bits_per_weight(fmt, 128) < 5 else 0.07)
    assert torch.equal(fake_quant_format(wh, fmt), wh) or fmt == "int4_g64"  # on-grid values stay


def test_bits_per_weight_and_errors():
    assert bits_per_weight("nf4") == 4.25 and bits_per_weight("mxfp4") == 4.25 and bits_per_weight("mxfp8") == 8.25
    assert bits_per_weight("fp8_e4m3", 576) == 8 + 32 / 576
    with pytest.raises(ValueError, match="in_features"):
        bits_per_weight("fp8_e5m2")
    with pytest.raises(ValueError, match="nf3"):
        encode(torch.randn(2, 64), "nf3")
    with pytest.raises(ValueError, match="multiple"):
        encode(torch.randn(2, 48), "mxfp4")
    with pytest.raises(ValueError, match="non-finite"):
        encode(torch.full((2, 64), float("nan")), "nf4")
