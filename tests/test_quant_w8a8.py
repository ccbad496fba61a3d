"""Model-level W8A8: calibrated ranges, outputs close to float, migration helps with outlier channels."""
import copy

import pytest
import torch
from torch import nn

from lessonlib.models import decoder_blocks
from lessonlib.quant.smoothquant import W8A8Linear
from lessonlib.quant.w8a8 import (ObserverStats, apply_w8a8, calibrate_activations, layer_w8a8,
                                w8a8_quantize_model)


def _calib():
    return torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def _rel_err(a, b):
    return float((a - b).norm() / b.norm())


@torch.no_grad()
def _with_outliers(model, factor=40.0, channels=(3, 11, 29)):
    """The same function with outlier activation channels: scale the input norm's gain of some channels up
    and the matching q/k/v and gate/up weight columns down (x * g_j feeds W[:, j]: the product is unchanged)."""
    for b in decoder_blocks(model):
        for norm, lins in ((b.input_layernorm, (b.self_attn.q_proj, b.self_attn.k_proj, b.self_attn.v_proj)),
                           (b.post_attention_layernorm, (b.mlp.gate_proj, b.mlp.up_proj))):
            for j in channels:
                norm.weight[j] *= factor
                for lin in lins:
                    lin.weight[:, j] /= factor
    return model


def test_observer_stats_adapter():
    st = ObserverStats(2, observer="minmax")
    st.add(torch.tensor([[[1.0, -3.0], [2.0, 0.5]]]))
    assert torch.equal(st.absmax(), torch.tensor([2.0, 3.0]))
    p = ObserverStats(1, observer="percentile", percentile=50.0)
    p.add(torch.arange(1, 11, dtype=torch.float32).reshape(1, 10, 1))  # |x| = 1..10, 50th percentile = 5
    assert float(p.absmax()[0]) == 5.0
    with pytest.raises(ValueError, match="observer"):
        ObserverStats(2, observer="mse")
    with pytest.raises(ValueError, match="width"):
        st.add(torch.zeros(1, 3))


def test_layer_w8a8_static_and_dynamic():
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(32, 8)
    x = torch.randn(64, 32, generator=g)
    x[:, 5] *= 50  # one outlier channel
    amax = x.abs().amax(0)
    y = lin(x).detach()
    errs = {}
    for alpha in (None, 0.5):
        errs[alpha] = _rel_err(layer_w8a8(lin, amax, alpha)(x), y)
    assert errs[0.5] < errs[None] < 0.05
    dyn = layer_w8a8(lin, amax, 0.5, static=False, per_token=True)
    assert dyn.act_absmax is None and dyn.per_token and _rel_err(dyn(x), y) < 0.02
    with pytest.raises(ValueError, match="per_token"):
        layer_w8a8(lin, amax, 0.5, static=True, per_token=True)


@pytest.mark.parametrize("observer", ["minmax", "percentile"])
def test_model_outputs_stay_close(tiny_llama, observer):
    ids = _calib()
    ref = tiny_llama(ids).logits
    q = copy.deepcopy(tiny_llama)
    rep = w8a8_quantize_model(q, ids, alpha=0.5, observer=observer, device="cpu")
    lins = [m for m in q.modules() if isinstance(m, W8A8Linear)]
    assert len(lins) == 14 and len(rep.act_absmax) == 14 and isinstance(q.lm_head, nn.Linear)
    assert all(rep.smooth[n].shape == rep.act_absmax[n].shape for n in rep.act_absmax)
    err = _rel_err(q(ids).logits, ref)
    assert 0 < err < 0.05
    if observer == "minmax":  # the first layer sees the embeddings: its range is their exact max
        x0 = tiny_llama.model.layers[0].input_layernorm(tiny_llama.model.embed_tokens(ids))
        assert torch.allclose(rep.act_absmax["model.layers.0.self_attn.q_proj"], x0.abs().amax((0, 1)), rtol=1e-5)


def test_migration_helps_with_outlier_channels(tiny_llama):
    ids = _calib()
    model = _with_outliers(tiny_llama)
    ref = model(ids).logits
    errs = {}
    for alpha in (None, 0.5):
        q = copy.deepcopy(model)
        w8a8_quantize_model(q, ids, alpha=alpha, device="cpu")
        errs[alpha] = _rel_err(q(ids).logits, ref)
    assert errs[0.5] < 0.5 * errs[None]


def test_bad_arguments(tiny_llama):
    with pytest.raises(ValueError, match="alpha"):
        w8a8_quantize_model(tiny_llama, _calib(), alpha=1.5)
    with pytest.raises(ValueError, match="observer"):
        w8a8_quantize_model(tiny_llama, _calib(), observer="kl")


def test_one_shot_calibration_matches_sequential_on_first_layer(tiny_llama):
    ids = _calib()
    ranges = calibrate_activations(tiny_llama, ids)
    assert len(ranges) == 14
    x0 = tiny_llama.model.layers[0].input_layernorm(tiny_llama.model.embed_tokens(ids))
    assert torch.allclose(ranges["model.layers.0.self_attn.q_proj"], x0.abs().amax((0, 1)), rtol=1e-5)
    ref = tiny_llama(ids).logits
    q = copy.deepcopy(tiny_llama)
    smooth = apply_w8a8(q, ranges, alpha=0.5)
    assert all(isinstance(q.get_submodule(n), W8A8Linear) for n in ranges) and len(smooth) == 14
    assert _rel_err(q(ids).logits, ref) < 0.05
    pct = calibrate_activations(tiny_llama, ids, observer="percentile", percentile=50.0)
    assert all((pct[n] <= ranges[n] + 1e-6).all() for n in ranges)  # a median never exceeds the max
