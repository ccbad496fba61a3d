"""Affine grids: hand-checked values, exact code ranges, shapes, errors, and the Q4_1 losslessness property."""
import pytest
import torch

from lessonlib.quant.affine import (QuantScheme, compute_qparams, dequantize, expand_qparams, fake_quant,
                                    quantize)


def test_asym_2bit_hand_checked():
    w = torch.tensor([[-1.0, 0.0, 0.4, 2.0]])
    qw = quantize(w, QuantScheme(2, -1, False))
    # min -1, max 2: s = 3/3 = 1, z = 1; codes round(w + 1) = [0, 1, 1.4->1, 3]
    assert torch.equal(qw.codes, torch.tensor([[0, 1, 1, 3]], dtype=torch.int32))
    assert torch.allclose(qw.scales, torch.tensor([[1.0]])) and torch.allclose(qw.zeros, torch.tensor([[1.0]]))
    assert torch.equal(qw.dequantize(), torch.tensor([[-1.0, 0.0, 0.0, 2.0]]))


def test_sym_3bit_hand_checked():
    w = torch.tensor([[-1.2, 0.0, 0.4, 2.0]])
    qw = quantize(w, QuantScheme(3, -1, True, restricted=True))
    # restricted: absmax 2, qmax 3: s = 2/3; w/s = [-1.8, 0, 0.6, 3] -> [-2, 0, 1, 3]
    assert torch.equal(qw.codes, torch.tensor([[-2, 0, 1, 3]], dtype=torch.int32))
    assert torch.all(qw.zeros == 0)
    torch.testing.assert_close(qw.dequantize(), torch.tensor([[-4 / 3, 0.0, 2 / 3, 2.0]]))
    # full grid (default; GPTQ reference, compressed-tensors): s = 2 / 3.5 = 4/7, all 8 codes -4..3;
    # w/s = [-2.1, 0, 0.7, 3.5] -> [-2, 0, 1, 4 -> clamped to 3]
    qf = quantize(w, QuantScheme(3, -1, True))
    torch.testing.assert_close(qf.scales, torch.tensor([[4 / 7]]))
    assert torch.equal(qf.codes, torch.tensor([[-2, 0, 1, 3]], dtype=torch.int32))
    torch.testing.assert_close(qf.dequantize(), torch.tensor([[-8 / 7, 0.0, 4 / 7, 12 / 7]]))


def test_asym_group_hand_checked():
    # two groups of 2 per row, each group maps its min to code 0 and max to 15 (4-bit)
    w = torch.tensor([[0.0, 1.5, -3.0, 0.0], [2.0, 2.0, 1.0, 4.0]])
    qw = quantize(w, QuantScheme(4, 2, False))
    torch.testing.assert_close(qw.scales, torch.tensor([[0.1, 0.2], [1.0, 0.2]]))
    assert torch.equal(qw.codes, torch.tensor([[0, 15, 0, 15], [0, 0, 0, 15]], dtype=torch.int32))
    torch.testing.assert_close(qw.dequantize(), w)  # two distinct values per group lie on the grid


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("sym", [False, True])
@pytest.mark.parametrize("group_size", [0, -1, 16])
def test_grid_is_exact(bits, sym, group_size):
    torch.manual_seed(bits)
    w = torch.randn(8, 64) * 3
    sch = QuantScheme(bits, group_size, sym, restricted=sym)
    qw = quantize(w, sch)
    rows = 1 if group_size == 0 else 8
    assert qw.scales.shape == (rows, sch.n_groups(64)) and qw.codes.shape == w.shape
    assert int(qw.codes.min()) >= sch.qmin and int(qw.codes.max()) <= sch.qmax
    if sym:
        assert (sch.qmin, sch.qmax) == (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        assert int(qw.codes.abs().max()) == sch.qmax  # the absmax lands on +-qmax
    else:
        assert (sch.qmin, sch.qmax) == (0, 2 ** bits - 1)
        assert int(qw.codes.min()) == 0 and int(qw.codes.max()) == 2 ** bits - 1  # min and max are grid ends
    wq = qw.dequantize()
    s = expand_qparams(qw.scales, 64)
    assert torch.all((w - wq).abs() <= s / 2 + 1e-5)  # nearest grid point: error at most half a step
    torch.testing.assert_close(fake_quant(wq, sch), wq, atol=1e-5, rtol=0)  # idempotent


def test_fake_quant_keeps_dtype_and_shape():
    w = torch.randn(4, 32, dtype=torch.float16)
    out = fake_quant(w, QuantScheme(4, 16))
    assert out.dtype == torch.float16 and out.shape == w.shape


def test_constant_and_zero_groups_are_exact():
    w = torch.tensor([[0.7] * 4 + [0.0] * 4])
    for sch in [QuantScheme(4, 4, False), QuantScheme(4, 4, True, restricted=True)]:
        torch.testing.assert_close(fake_quant(w, sch), w)
    # the full symmetric grid clips +max by half a step: 0.7 / (0.7 / 7.5) = 7.5 -> code 7
    torch.testing.assert_close(fake_quant(w, QuantScheme(4, 4, True))[0, :4], torch.full((4,), 0.7 * 7 / 7.5))


def test_clip_ratio_shrinks_range():
    w = torch.tensor([[-1.0, -0.25, 0.1, 4.0]])
    s, z = compute_qparams(w, QuantScheme(8, -1, False), clip_ratio=0.5)
    # range clipped to [-1, min(4, 0.5 * 4)] = [-1, 2]
    torch.testing.assert_close(s, torch.tensor([[3.0 / 255]]))
    wq = fake_quant(w, QuantScheme(8, -1, False), clip_ratio=0.5)
    assert abs(float(wq[0, 3]) - 2.0) < 1e-6  # the outlier is clipped to the end of the range
    ssym, _ = compute_qparams(w, QuantScheme(4, -1, True), clip_ratio=torch.tensor([[0.25]]))
    torch.testing.assert_close(ssym, torch.tensor([[1.0 / 7.5]]))
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="clip_ratio"):
            compute_qparams(w, QuantScheme(4, -1), clip_ratio=bad)


def test_bad_inputs_raise():
    for bits in (1, 9):
        with pytest.raises(ValueError, match="bits"):
            QuantScheme(bits, 64)
    with pytest.raises(TypeError, match="bits=4.0 must be an int"):
        QuantScheme(4.0, 64)
    with pytest.raises(ValueError, match="group_size"):
        QuantScheme(4, -2)
    with pytest.raises(ValueError, match="does not divide"):
        quantize(torch.randn(4, 576), QuantScheme(4, 128))
    w = torch.randn(4, 8)
    w[1, 2] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        quantize(w, QuantScheme(4, -1))
    w[1, 2] = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        fake_quant(w, QuantScheme(4, -1))
    with pytest.raises(ValueError, match="2-D"):
        quantize(torch.randn(8), QuantScheme(4, -1))


def _q4_1_tensor(out: int, n_in: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A weight built like llama.cpp Q4_1: per block of 32, w = d * q + m with fp16 d, m and both ends used."""
    g = torch.Generator().manual_seed(seed)
    G = n_in // 32
    d = (torch.rand(out, G, 1, generator=g) * 0.02 + 0.002).half().float()
    m = (-torch.rand(out, G, 1, generator=g) * 0.2).half().float()
    q = torch.randint(0, 16, (out, G, 32), generator=g)
    q[..., 0], q[..., 1] = 0, 15  # the block's min and max map to the end codes
    q = q[..., torch.randperm(32, generator=g)]
    return (d * q + m).reshape(out, n_in), q.reshape(out, n_in).to(torch.int32)


def test_rtn_is_lossless_on_a_q4_1_grid():
    w, q = _q4_1_tensor(48, 192)
    qw = quantize(w, QuantScheme(4, 32, False))
    assert torch.equal(qw.codes, q)  # the very same integer codes
    lossless = (qw.dequantize() - w).abs().max()
    assert lossless <= 1e-6 * w.abs().max()  # float round-off only
    for other in [QuantScheme(4, 64, False), QuantScheme(4, 32, True), QuantScheme(3, 32, False)]:
        err = (fake_quant(w, other) - w).abs().max()
        assert err > 1000 * lossless + 1e-4, other


@pytest.mark.model
def test_smollm2_weights_lie_on_the_q4_1_grid():
    from lessonlib.models import block_linears, decoder_blocks, get_weight, load_model

    model, _ = load_model(device="cpu")
    for name, lin in block_linears(decoder_blocks(model)[0]).items():
        w = get_weight(lin)
        assert (fake_quant(w, QuantScheme(4, 32, False)) - w).abs().max() <= 1e-6 * w.abs().max(), name
        assert (fake_quant(w, QuantScheme(4, 64, False)) - w).abs().max() > 1e-3 * w.abs().max(), name


def test_dequantize_with_g_idx():
    codes = torch.tensor([[0, 1, 2, 3]], dtype=torch.int32)
    scales = torch.tensor([[1.0, 10.0]])
    zeros = torch.tensor([[0.0, 1.0]])
    g_idx = torch.tensor([1, 0, 1, 0])
    out = dequantize(codes, scales, zeros, g_idx=g_idx)
    assert torch.equal(out, torch.tensor([[-10.0, 1.0, 10.0, 3.0]]))


def test_integer_zero_point_grid_by_hand():
    from lessonlib.quant.affine import QuantScheme, compute_qparams, fake_quant
    w = torch.tensor([[-0.6, 0.0, 1.0, 2.4]])
    # float zero: s = 3.0 / 3 = 1, z = 0.6 -> grid {-0.6, 0.4, 1.4, 2.4}: 0 is not on it
    torch.testing.assert_close(fake_quant(w, QuantScheme(2, -1)), torch.tensor([[-0.6, 0.4, 1.4, 2.4]]))
    # integer zero: s = 1, z = round(0.6) = 1 -> grid {-1, 0, 1, 2}
    s, z = compute_qparams(w, QuantScheme(2, -1, int_zero=True))
    torch.testing.assert_close(s, torch.tensor([[1.0]]))
    assert torch.equal(z, torch.tensor([[1.0]]))
    torch.testing.assert_close(fake_quant(w, QuantScheme(2, -1, int_zero=True)), torch.tensor([[-1.0, 0.0, 1.0, 2.0]]))
    # an all-positive group is widened to [0, max]: s = 1.7 / 3, z = 0, and 0.2 rounds to 0
    wp = torch.tensor([[0.2, 0.5, 1.0, 1.7]])
    s, z = compute_qparams(wp, QuantScheme(2, -1, int_zero=True))
    torch.testing.assert_close(s, torch.tensor([[1.7 / 3]]))
    assert torch.equal(z, torch.tensor([[0.0]]))
    torch.testing.assert_close(fake_quant(wp, QuantScheme(2, -1, int_zero=True)),
                               torch.tensor([[0.0, 1.7 / 3, 3.4 / 3, 1.7]]))


def test_integer_zero_point_properties():
    from lessonlib.quant.affine import QuantScheme, compute_qparams, quantize
    w = torch.randn(8, 128, generator=torch.Generator().manual_seed(0))
    sch = QuantScheme(4, 32, int_zero=True)
    s, z = compute_qparams(w, sch)
    assert torch.equal(z, z.round()) and z.min() >= 0 and z.max() <= 15
    qw = quantize(w, sch)
    assert torch.all(qw.dequantize()[w == 0] == 0)
    zero = torch.zeros(2, 32)
    assert torch.equal(quantize(zero, sch).dequantize(), zero)  # an all-zero group stays exact
    err_int = (qw.dequantize() - w).abs().max(dim=1).values
    assert torch.all(err_int <= (s.max(dim=1).values / 2 + 1e-6))  # still round-to-nearest within the range
    with pytest.raises(ValueError, match="int_zero"):
        QuantScheme(4, 32, sym=True, int_zero=True)
    assert str(sch) == "asym4-g32-intzero"
