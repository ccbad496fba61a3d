"""Tried bad inputs, quantization (issue 23): schemes, grids, GPTQ/OBQ on degenerate Hessians, model drivers."""
from __future__ import annotations

import copy

import pytest
import torch

from bad_inputs import answers, cases, check_case, tiny
from lessonlib.quant.affine import QuantScheme, compute_qparams, fake_quant, quantize
from lessonlib.quant.gptq import gptq_quantize, gptq_quantize_model
from lessonlib.quant.obq import obq_quantize
from lessonlib.quant.rtn import rtn_quantize_model
from lessonlib.quant.w8a8 import w8a8_quantize_model

G = torch.Generator().manual_seed(0)
W = torch.randn(4, 8, generator=G)
X = torch.randn(64, 8, generator=G)
H = X.T @ X / 64
NAN_W = W.clone()
NAN_W[1, 2] = float("nan")


def _asym_h(scale: float) -> torch.Tensor:
    E = torch.zeros(8, 8)
    E[0, 5] = scale * float(H.norm())
    return H + E


def _model():
    return copy.deepcopy(tiny())


LONG = torch.zeros(1, 600, dtype=torch.long)
BEYOND = torch.full((2, 8), 300)

QUANT = [
    ("scheme-bits-float", lambda: QuantScheme(4.0), TypeError, "bits=4.0 must be an int"),
    ("scheme-bits-bool", lambda: QuantScheme(True), TypeError, "bits=True"),
    ("scheme-bits-str", lambda: QuantScheme("4"), TypeError, "bits='4'"),
    ("scheme-bits-1", lambda: QuantScheme(1), ValueError, "bits=1"),
    ("scheme-bits-9", lambda: QuantScheme(9), ValueError, "bits=9"),
    ("scheme-bits-neg", lambda: QuantScheme(-4), ValueError, "bits=-4"),
    ("scheme-group-float", lambda: QuantScheme(4, 64.0), TypeError, "group_size=64.0"),
    ("scheme-group-bool", lambda: QuantScheme(4, False), TypeError, "group_size=False"),
    ("scheme-group-neg", lambda: QuantScheme(4, -2), ValueError, "group_size=-2"),
    ("scheme-sym-int", lambda: QuantScheme(4, 64, 1), TypeError, "sym=1"),
    ("scheme-intzero-str", lambda: QuantScheme(4, 64, False, "yes"), TypeError, "int_zero='yes'"),
    ("scheme-intzero-sym", lambda: QuantScheme(4, 64, True, True), ValueError, "int_zero=True"),
    ("group-not-dividing", lambda: quantize(W, QuantScheme(4, 3)), ValueError, "group_size=3"),
    ("quantize-nan", lambda: quantize(NAN_W, QuantScheme(4, -1)), ValueError, "non-finite"),
    ("fake-quant-inf", lambda: fake_quant(W / 0, QuantScheme(4, -1)), ValueError, "non-finite"),
    ("quantize-1d", lambda: quantize(W[0], QuantScheme(4, -1)), ValueError, "[8]"),
    ("quantize-int", lambda: quantize(W.long(), QuantScheme(4, -1)), ValueError, "torch.int64"),
    ("clip-ratio-zero", lambda: compute_qparams(W, QuantScheme(4, -1), clip_ratio=0.0), ValueError, "clip_ratio=0.0"),
    ("clip-ratio-big", lambda: compute_qparams(W, QuantScheme(4, -1), clip_ratio=1.5), ValueError, "clip_ratio=1.5"),
    ("gptq-zero-hessian", lambda: gptq_quantize(W, torch.zeros(8, 8), 4, -1), ValueError, "all-zero diagonal"),
    ("gptq-nan-hessian", lambda: gptq_quantize(W, H * float("nan"), 4, -1), ValueError, "non-finite"),
    ("gptq-asym-hessian", lambda: gptq_quantize(W, _asym_h(0.3), 4, -1), ValueError, "not symmetric"),
    ("gptq-nan-weight", lambda: gptq_quantize(NAN_W, H, 4, -1), ValueError, "non-finite"),
    ("gptq-hessian-shape", lambda: gptq_quantize(W, torch.eye(4), 4, -1), ValueError, "(4, 4)"),
    ("gptq-bits", lambda: gptq_quantize(W, H, 12, -1), ValueError, "bits=12"),
    ("gptq-percdamp", lambda: gptq_quantize(W, H, 4, -1, percdamp=-1.0), ValueError, "percdamp=-1.0"),
    ("obq-zero-hessian", lambda: obq_quantize(W, torch.zeros(8, 8)), ValueError, "all-zero diagonal"),
    ("obq-asym-hessian", lambda: obq_quantize(W, _asym_h(0.3)), ValueError, "not symmetric"),
    ("gptq-model-too-long", lambda: gptq_quantize_model(_model(), LONG, QuantScheme(4, 32)), ValueError,
     "600 tokens"),
    ("gptq-model-ids-beyond-vocab", lambda: gptq_quantize_model(_model(), BEYOND, QuantScheme(4, 32)), ValueError,
     "[300, 300]"),
    ("gptq-model-group-not-dividing", lambda: gptq_quantize_model(_model(), torch.zeros(2, 8, dtype=torch.long),
                                                                  QuantScheme(4, 48)), ValueError, "block 0"),
    ("rtn-model-group-not-dividing", lambda: rtn_quantize_model(_model(), QuantScheme(4, 48)), ValueError,
     "group_size=48"),
    ("w8a8-alpha", lambda: w8a8_quantize_model(_model(), torch.zeros(2, 8, dtype=torch.long), alpha=2.0),
     ValueError, "alpha=2.0"),
    ("w8a8-observer", lambda: w8a8_quantize_model(_model(), torch.zeros(2, 8, dtype=torch.long), observer="max"),
     ValueError, "observer='max'"),
]


@pytest.mark.parametrize("call, exc, needle", cases(QUANT))
def test_quant_bad_input(call, exc, needle):
    check_case(call, exc, needle)


def _failed_driver_leaves_model_whole() -> None:
    m = _model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(ValueError):
        gptq_quantize_model(m, torch.zeros(2, 8, dtype=torch.long), QuantScheme(4, 48))  # fails in block 0's FFN
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def _gptq_small_asymmetry_symmetrised() -> None:
    with pytest.warns(RuntimeWarning, match="slightly asymmetric"):
        r = gptq_quantize(W, _asym_h(1e-3), 4, -1)
    ref = gptq_quantize(W, (_asym_h(1e-3) + _asym_h(1e-3).T) / 2, 4, -1)
    assert torch.equal(r.codes, ref.codes)


def _gptq_dead_column_zeroed() -> None:
    Hd = H.clone()
    Hd[3, :] = 0
    Hd[:, 3] = 0
    r = gptq_quantize(W, Hd, 4, -1, sym=True)  # a dead input's weights go to 0, exactly on a symmetric grid
    assert (r.weight[:, 3] == 0).all() and torch.isfinite(r.weight).all()


ANSWERS = [
    ("gptq-failure-atomic", _failed_driver_leaves_model_whole),
    ("gptq-small-asymmetry", _gptq_small_asymmetry_symmetrised),
    ("gptq-dead-column", _gptq_dead_column_zeroed),
]


@pytest.mark.parametrize("check", answers(ANSWERS))
def test_quant_documented_answer(check):
    check()
