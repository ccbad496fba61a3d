"""Observers and SmoothQuant: exact invariance before quantization, lower W8A8 error with migration."""
import pytest
import torch
from torch import nn

from lessonlib.quant.smoothquant import (MinMaxObserver, PercentileObserver, W8A8Linear, quantize_activation,
                                         smooth_scales, smooth_weight, w8a8_linear)


def outlier_acts(n=256, c=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=g)
    x[:, [3, 17, 40]] *= 60  # systematic outlier channels, as in LLM activations
    return x


def test_minmax_observer_hand_checked():
    ob = MinMaxObserver()
    ob.observe(torch.tensor([[1.0, -2.0], [3.0, 0.5]]))
    ob.observe(torch.tensor([[-4.0, 1.0]]))
    assert torch.equal(ob.absmax(), torch.tensor([4.0, 2.0]))
    t = MinMaxObserver(per_channel=False)
    t.observe(torch.tensor([[1.0, -2.0]]))
    assert float(t.absmax()) == 2.0
    with pytest.raises(RuntimeError):
        MinMaxObserver().absmax()
    with pytest.raises(ValueError, match="non-finite"):
        ob.observe(torch.tensor([[float("nan"), 0.0]]))


def test_percentile_observer_ignores_rare_spikes():
    x = torch.arange(1, 1001, dtype=torch.float32).reshape(-1, 1)  # |x| = 1..1000
    ob = PercentileObserver(99.0)
    ob.observe(x[:500])
    ob.observe(-x[500:])
    assert float(ob.absmax()) == 990.0
    mm = MinMaxObserver(per_channel=False)
    mm.observe(x)
    assert float(mm.absmax()) == 1000.0
    with pytest.raises(ValueError, match="percentile"):
        PercentileObserver(0.0)


def test_smoothing_is_exact_before_quantization():
    x, W = outlier_acts(), torch.randn(32, 64, generator=torch.Generator().manual_seed(1))
    s = smooth_scales(x.abs().amax(0), W, 0.5)
    torch.testing.assert_close((x / s) @ smooth_weight(W, s).T, x @ W.T, rtol=1e-5, atol=1e-4)
    p2 = 2.0 ** torch.round(torch.log2(s))  # power-of-two scales: every product is bit-exact
    assert torch.equal((x / p2) @ smooth_weight(W, p2).T, x @ W.T)
    # eq. 4 by hand for one channel: max|X_3|^0.5 / max|W_:,3|^0.5
    assert float(s[3]) == pytest.approx(float(x[:, 3].abs().max() ** 0.5 / W[:, 3].abs().max() ** 0.5), rel=1e-5)


def test_migration_lowers_w8a8_error():
    x_cal, x_test = outlier_acts(seed=2), outlier_acts(seed=3)
    lin = nn.Linear(64, 32).requires_grad_(False)
    ref = lin(x_test).detach()
    absmax = MinMaxObserver()
    absmax.observe(x_cal)
    plain = W8A8Linear.from_linear(lin, absmax.absmax(), alpha=None)
    smooth = W8A8Linear.from_linear(lin, absmax.absmax(), alpha=0.5)
    e_plain = float(((plain(x_test) - ref) ** 2).mean())
    e_smooth = float(((smooth(x_test) - ref) ** 2).mean())
    assert e_smooth < 0.3 * e_plain
    # the dynamic per-tensor path gives the same picture
    s = smooth_scales(absmax.absmax(), lin.weight.data)
    e_dyn = float(((w8a8_linear(x_test, lin.weight.data, lin.bias) - ref) ** 2).mean())
    e_dyn_s = float(((w8a8_linear(x_test / s, smooth_weight(lin.weight.data, s), lin.bias) - ref) ** 2).mean())
    assert e_dyn_s < 0.3 * e_dyn


def test_activation_quant_grid():
    x = torch.tensor([[1.0, -0.5, 127.0]])
    out = quantize_activation(x, absmax=127.0)  # step 1: integers are exact, -0.5 rounds to 0 (half to even)
    assert torch.equal(out, torch.tensor([[1.0, -0.0, 127.0]]))
    out = quantize_activation(torch.tensor([[300.0]]), absmax=127.0)
    assert float(out) == 127.0  # clipped to the static range
    per_tok = quantize_activation(torch.tensor([[1.0, 2.0], [100.0, 50.0]]), per_token=True)
    torch.testing.assert_close(per_tok, torch.tensor([[1.0, 2.0], [100.0, 50.0]]), atol=0.4, rtol=0)
