"""compress_(model, config, calib, filter_fn): one entry point, typed configs, results by full module name."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch

from lessonlib.compress import (NM, AWQConfig, ClusterConfig, GPTQConfig, MagnitudeConfig, PerChannel, PerGroup,
                                PerTensor, QuantScheme, RTNConfig, SparseGPTConfig, SVDConfig, Unstructured,
                                WandaConfig, compress_, config_class)
from lessonlib.models import get_weight, linear_modules, tiny_causal_lm
from lessonlib.prune.masks import is_nm_sparse, pattern_of
from lessonlib.quant.affine import fake_quant
from lessonlib.quant.gptq import gptq_quantize
from lessonlib.quant.qlinear import QuantLinear, quantize_
from lessonlib.technique import TechniqueConfig

CALIB = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))


def _model():
    return tiny_causal_lm("llama", layers=2, seed=4)


@pytest.mark.parametrize("cfg", [RTNConfig(QuantScheme(4, PerGroup(16))), GPTQConfig(QuantScheme(4, 16)),
                                 AWQConfig(QuantScheme(4, 16), n_grid=4), WandaConfig(NM(2, 4)),
                                 SparseGPTConfig(0.5), MagnitudeConfig(Unstructured(0.3)), ClusterConfig(4, iters=3),
                                 SVDConfig(rank=2)], ids=lambda c: type(c).__name__)
def test_every_config_runs_and_names_layers_in_full(cfg):
    m = _model()
    res = compress_(m, cfg, CALIB if cfg.requires_calib() else None)
    assert set(res.layers) == set(linear_modules(_model()))  # the 14 block linears, by fully qualified name
    assert all(n.startswith("model.layers.") for n in res.layers) and res.seconds >= 0


def test_filter_fn_selects_by_module_and_full_name():
    m = _model()
    before = {n: get_weight(x).clone() for n, x in linear_modules(m).items()}
    res = compress_(m, WandaConfig(0.5), CALIB, filter_fn=lambda mod, fqn: fqn.endswith("mlp.up_proj"))
    assert sorted(res.layers) == ["model.layers.0.mlp.up_proj", "model.layers.1.mlp.up_proj"]
    for n, x in linear_modules(m).items():
        w = get_weight(x)
        if n in res.layers:
            assert torch.equal(w != 0, res.layers[n].mask) and float((w == 0).float().mean()) == 0.5
        else:
            assert torch.equal(w, before[n])
    with pytest.raises(ValueError, match="selected no layer"):
        compress_(_model(), MagnitudeConfig(0.5), filter_fn=lambda mod, fqn: False)


def test_rtn_result_is_the_fake_quantized_weight_and_nm_is_n_kept_of_m():
    m, ref = _model(), _model()
    sch = QuantScheme(3, PerGroup(16))
    res = compress_(m, RTNConfig(sch))
    for n, x in linear_modules(ref).items():
        assert torch.equal(res.layers[n].weight, fake_quant(get_weight(x), sch))
    m = _model()
    res = compress_(m, MagnitudeConfig(NM(3, 4)))
    assert all(is_nm_sparse(get_weight(x), 3, 4) for x in linear_modules(m).values())
    assert all(float(r.mask.float().mean()) == 0.75 for r in res.layers.values())  # 3 kept of every 4


def test_calibration_is_required_or_refused_and_unknown_configs_fail():
    with pytest.raises(ValueError, match="calibration"):
        compress_(_model(), GPTQConfig())
    with pytest.raises(ValueError, match="no calibration"):
        compress_(_model(), RTNConfig(), CALIB)

    @dataclass(frozen=True)
    class Nope(TechniqueConfig):
        method = "nope"
    with pytest.raises(TypeError, match="not a registered"):
        compress_(_model(), Nope())
    with pytest.raises(ValueError, match="method='hqq'"):
        config_class("hqq")
    assert config_class("gptq") is GPTQConfig


def test_configs_validate_when_built():
    with pytest.raises(TypeError, match="QuantScheme"):
        GPTQConfig(4)
    with pytest.raises(ValueError, match="exactly one"):
        SVDConfig(energy=0.9, rank=4)
    with pytest.raises(ValueError, match="sparsity=1.5"):
        WandaConfig(1.5)
    with pytest.raises(ValueError, match="keep_n=4, group_m=2"):
        NM(4, 2)
    with pytest.raises(ValueError, match="conflicts"):
        pattern_of(0.3, 2, 4)
    with pytest.raises(ValueError, match="size"):
        PerGroup(0)
    with pytest.raises(ValueError, match="group_size=-2"):
        QuantScheme(4, -2)
    with pytest.raises(TypeError, match="PerTensor"):
        QuantScheme(4, "g64")
    assert QuantScheme(4, PerGroup(64)) == QuantScheme(4, 64) and QuantScheme(4, PerChannel()).group_size == -1
    assert QuantScheme(4, 0).granularity == PerTensor() and QuantScheme(4, 32).granularity == PerGroup(32)
    with pytest.raises(Exception):
        GPTQConfig().act_order = True  # frozen


def test_gptq_takes_a_scheme_and_quantize_reads_it_from_the_result():
    g = torch.Generator().manual_seed(1)
    W, X = torch.randn(8, 32, generator=g), torch.randn(64, 32, generator=g)
    H = 2 / 64 * X.T @ X
    sch = QuantScheme(4, 16, sym=True)
    new, old = gptq_quantize(W, H, sch), gptq_quantize(W, H, 4, 16, True)  # the older separate fields still work
    assert torch.equal(new.weight, old.weight) and new.scheme == sch
    with pytest.raises(TypeError, match="not both"):
        gptq_quantize(W, H, sch, group_size=16)
    m = _model()
    res = compress_(m, GPTQConfig(QuantScheme(4, 16)), CALIB)
    quantize_(m, filter_fn=lambda mod, fqn: fqn in res.layers, qparams=res.packed())  # no scheme passed again
    q = m.get_submodule("model.layers.0.mlp.up_proj")
    assert isinstance(q, QuantLinear) and q.scheme == QuantScheme(4, 16)
    x = torch.randn(3, 64, generator=g)
    w = res.layers["model.layers.0.mlp.up_proj"].weight  # (out, in), the weight GPTQ chose
    torch.testing.assert_close(q(x), x @ w.T, rtol=1e-4, atol=1e-5)  # packed on exactly GPTQ's grid


def test_compress_is_all_or_nothing():
    m = _model()
    ref = copy.deepcopy(m.state_dict())
    with pytest.raises(ValueError):
        compress_(m, RTNConfig(QuantScheme(4, 48)))  # 48 does not divide the 64-wide rows
    assert all(torch.equal(v, ref[k]) for k, v in m.state_dict().items())
