"""The symmetric grid with all 2^b levels (the GPTQ reference's and compressed-tensors' convention) against
the restricted 2^b - 1 level grid, on seeded GPTQ layer problems."""
import pytest
import torch

from lessonlib.quant.affine import QuantScheme, compute_qparams
from lessonlib.quant.gptq import gptq_quantize, hessian_error


def test_scale_is_the_reference_quantizers():
    # GPTQ's Quantizer (sym): scale = 2 max / (2^b - 1), zero = 2^(b-1) on codes 0..2^b-1 -> levels -8..7 at 4 bits
    w = torch.tensor([[0.3, -1.5, 0.0, 0.75]])
    for bits in (3, 4, 8):
        s, z = compute_qparams(w, QuantScheme(bits, -1, True))
        assert abs(float(s) - 2 * 1.5 / (2 ** bits - 1)) < 1e-7 and float(z) == 0.0
        sr, _ = compute_qparams(w, QuantScheme(bits, -1, True, restricted=True))
        assert abs(float(sr) - 1.5 / (2 ** (bits - 1) - 1)) < 1e-7
    with pytest.raises(ValueError, match="restricted"):
        QuantScheme(4, 64, sym=False, restricted=True)


@pytest.mark.parametrize("bits, group_size", [(4, -1), (4, 64), (3, -1)])
def test_full_grid_gptq_has_the_lower_layer_objective(bits, group_size):
    g = torch.Generator().manual_seed(bits * 100 + group_size)
    W = torch.randn(48, 128, generator=g)
    X = torch.randn(512, 128, generator=g) @ (torch.eye(128) + 0.3 * torch.randn(128, 128, generator=g))
    H = 2 / X.shape[0] * X.T @ X  # (in, in)
    full = gptq_quantize(W, H, bits, group_size, sym=True)
    restr = gptq_quantize(W, H, bits, group_size, sym=True, restricted=True)
    e_full, e_restr = hessian_error(W, full.weight, H), hessian_error(W, restr.weight, H)
    assert e_full < e_restr  # one more level and a finer step: the reference's objective is reachable again
    assert int(full.codes.min()) >= -(2 ** (bits - 1)) and int(full.codes.max()) <= 2 ** (bits - 1) - 1
    assert full.scheme == QuantScheme(bits, group_size, True) and restr.scheme.restricted
