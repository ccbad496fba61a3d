"""Tried bad inputs, core modules (issue 23): config, checks, models, data, evaluate, calib, hessian."""
from __future__ import annotations

import warnings

import pytest
import torch

from bad_inputs import answers, cases, check_case, tiny
from lessonlib import checks
from lessonlib.calib import HessianStats, InputNormStats, check_token_batches, run_sequential
from lessonlib.config import get_profile
from lessonlib.data import calibration_batches, windows
from lessonlib.evaluate import bigram_perplexity, perplexity, perplexity_from_window_nlls
from lessonlib.hessian import SYM_WARN, damped_inverse, prepare_layer, symmetrize
from lessonlib.models import load_encoder, resolve_device

P = get_profile("ci")
TOK = torch.arange(40) % 7
W4 = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))


def _asym(scale: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 4, generator=g)
    H = x.T @ x
    E = torch.zeros(4, 4)
    E[0, 3] = scale * float(H.norm())
    return H + E


CORE = [
    # Profile: every field validated in __post_init__
    ("profile-seqlen-neg", lambda: P.with_(seqlen=-5), ValueError, "seqlen=-5"),
    ("profile-seqlen-float", lambda: P.with_(seqlen=16.5), TypeError, "seqlen=16.5"),
    ("profile-seqlen-bool", lambda: P.with_(seqlen=True), TypeError, "seqlen=True"),
    ("profile-calib-zero", lambda: P.with_(calib_samples=0), ValueError, "calib_samples=0"),
    ("profile-calib-seqlen-str", lambda: P.with_(calib_seqlen="256"), TypeError, "calib_seqlen='256'"),
    ("profile-steps-neg", lambda: P.with_(train_steps=-1), ValueError, "train_steps=-1"),
    ("profile-batch-float", lambda: P.with_(batch_size=2.0), TypeError, "batch_size=2.0"),
    ("profile-lr-zero", lambda: P.with_(lr=0.0), ValueError, "lr=0.0"),
    ("profile-lr-nan", lambda: P.with_(lr=float("nan")), ValueError, "lr=nan"),
    ("profile-lr-str", lambda: P.with_(lr="1e-4"), TypeError, "lr='1e-4'"),
    ("profile-eval-windows-neg", lambda: P.with_(eval_windows=-1), ValueError, "eval_windows=-1"),
    ("profile-encoder-train-float", lambda: P.with_(encoder_train=0.5), TypeError, "encoder_train=0.5"),
    ("profile-sweep-zero", lambda: P.with_(sweep_points=0), ValueError, "sweep_points=0"),
    ("profile-repeats-neg", lambda: P.with_(bench_repeats=-3), ValueError, "bench_repeats=-3"),
    ("profile-device-bad", lambda: P.with_(device="gpu0"), ValueError, "device='gpu0'"),
    ("profile-device-int", lambda: P.with_(device=0), TypeError, "device=0"),
    ("profile-name-empty", lambda: P.with_(name=""), TypeError, "name=''"),
    ("profile-unknown-field", lambda: P.with_(seqln=5), TypeError, "seqln"),
    ("get-profile-unknown", lambda: get_profile("fast"), ValueError, "'fast'"),
    # the shared checks
    ("checks-int-float", lambda: checks.positive_int("n", 2.5), TypeError, "n=2.5"),
    ("checks-int-bool", lambda: checks.positive_int("n", True), TypeError, "n=True"),
    ("checks-int-zero", lambda: checks.positive_int("n", 0), ValueError, "n=0"),
    ("checks-int-str", lambda: checks.nonneg_int("k", "3"), TypeError, "k='3'"),
    ("checks-int-range", lambda: checks.integer("bits", 9, lo=2, hi=8), ValueError, "2..8"),
    ("checks-fraction-high", lambda: checks.fraction("sparsity", 1.5), ValueError, "sparsity=1.5"),
    ("checks-fraction-inf", lambda: checks.fraction("p", float("inf")), ValueError, "p=inf"),
    ("checks-fraction-none", lambda: checks.fraction("p", None), TypeError, "p=None"),
    ("checks-positive-float", lambda: checks.positive_float("lr", -1e-3), ValueError, "lr=-0.001"),
    ("checks-finite-tensor", lambda: checks.finite("h", torch.tensor([1.0, float("nan")]), where="layer.x"),
     ValueError, "layer.x"),
    ("checks-finite-list", lambda: checks.finite("scores", [1.0, float("inf")]), ValueError, "scores[1]"),
    ("checks-long-value-truncated", lambda: checks.positive_int("n", "x" * 10 ** 6), TypeError, "chars>"),
    # devices
    ("device-typo", lambda: resolve_device("cuda0"), ValueError, "device='cuda0'"),
    ("device-int", lambda: resolve_device(1), TypeError, "device=1"),
    ("device-empty", lambda: resolve_device(""), ValueError, "device=''"),
    ("device-upper", lambda: resolve_device("CPU"), ValueError, "'auto', 'cpu'"),
    # load_encoder refuses before loading anything
    ("encoder-num-labels-zero", lambda: load_encoder(task="classification", num_labels=0), ValueError,
     "num_labels=0"),
    ("encoder-num-labels-float", lambda: load_encoder(task="classification", num_labels=2.0), TypeError,
     "num_labels=2.0"),
    ("encoder-task", lambda: load_encoder(task="regression"), ValueError, "'regression'"),
    ("encoder-name", lambda: load_encoder(name="bert-huge"), ValueError, "'bert-huge'"),
    # data
    ("calib-n-float", lambda: calibration_batches(None, n=2.5, seqlen=16), TypeError, "n=2.5"),
    ("calib-seqlen-float", lambda: calibration_batches(None, n=2, seqlen=16.5), TypeError, "seqlen=16.5"),
    ("calib-n-zero", lambda: calibration_batches(None, n=0, seqlen=16), ValueError, "n=0"),
    ("calib-seqlen-one", lambda: calibration_batches(None, n=2, seqlen=1), ValueError, "seqlen=1"),
    ("calib-n-bool", lambda: calibration_batches(None, n=True, seqlen=16), TypeError, "n=True"),
    ("windows-seqlen-float", lambda: windows(TOK, 4.5), TypeError, "seqlen=4.5"),
    ("windows-max-neg", lambda: windows(TOK, 4, -1), ValueError, "max_windows=-1"),
    # evaluate
    ("bigram-id-beyond-vocab", lambda: bigram_perplexity(TOK, torch.tensor([1, 2, 9]), 7), ValueError, "[1, 9]"),
    ("bigram-negative-id", lambda: bigram_perplexity(torch.tensor([0, -1, 2]), TOK, 7), ValueError, "[-1, 2]"),
    ("bigram-float-ids", lambda: bigram_perplexity(TOK.float(), TOK, 7), TypeError, "torch.float32"),
    ("bigram-vocab-float", lambda: bigram_perplexity(TOK, TOK, 7.0), TypeError, "vocab_size=7.0"),
    ("bigram-lam", lambda: bigram_perplexity(TOK, TOK, 7, lam=1.0), ValueError, "lam=1.0"),
    ("nll-seqlen", lambda: perplexity_from_window_nlls(torch.ones(2), 0), ValueError, "seqlen=0"),
    ("ppl-seqlen-too-long", lambda: perplexity(tiny(), tokens=torch.arange(2000) % 256, seqlen=600),
     ValueError, "seqlen=600"),
    ("ppl-seqlen-float", lambda: perplexity(tiny(), tokens=torch.arange(200) % 256, seqlen=16.5), TypeError,
     "seqlen=16.5"),
    ("ppl-windows-float", lambda: perplexity(tiny(), tokens=torch.arange(200) % 256, seqlen=16, max_windows=1.5),
     TypeError, "max_windows=1.5"),
    ("ppl-batch-zero", lambda: perplexity(tiny(), tokens=torch.arange(200) % 256, seqlen=16, batch_size=0),
     ValueError, "batch_size=0"),
    # calibration batches against the model
    ("calib-longer-than-context", lambda: check_token_batches(tiny(), torch.zeros(1, 513, dtype=torch.long)),
     ValueError, "513 tokens"),
    ("calib-ids-beyond-vocab", lambda: check_token_batches(tiny(), torch.full((1, 4), 256)), ValueError,
     "[256, 256]"),
    ("calib-ids-negative", lambda: check_token_batches(tiny(), torch.full((1, 4), -1)), ValueError, "[-1, -1]"),
    ("calib-float-ids", lambda: check_token_batches(tiny(), torch.zeros(1, 4)), TypeError, "torch.float32"),
    ("calib-1d", lambda: check_token_batches(tiny(), torch.zeros(4, dtype=torch.long)), ValueError, "(4,)"),
    ("calib-empty", lambda: check_token_batches(tiny(), torch.zeros(0, 4, dtype=torch.long)), ValueError,
     "(0, 4)"),
    ("calib-list", lambda: check_token_batches(tiny(), [[1, 2]]), TypeError, "list"),
    ("run-sequential-too-long", lambda: run_sequential(tiny(), torch.zeros(1, 600, dtype=torch.long),
                                                       lambda i, b, s: None), ValueError, "600 tokens"),
    ("hessian-stats-width", lambda: HessianStats(4).add(torch.ones(2, 5)), ValueError, "5"),
    ("hessian-stats-sym-blocks", lambda: HessianStats(4, sym_blocks=2.0), ValueError, "sym_blocks=2.0"),
    ("norm-stats-empty", lambda: InputNormStats(4).sq_norms(), RuntimeError, "no calibration inputs"),
    # hessian.py: degenerate Hessians, decided once for GPTQ / OBQ / SparseGPT / OBS
    ("hessian-all-zero", lambda: prepare_layer(W4, torch.zeros(4, 4)), ValueError, "all-zero diagonal"),
    ("hessian-nan", lambda: prepare_layer(W4, torch.full((4, 4), float("nan"))), ValueError, "non-finite"),
    ("hessian-shape", lambda: prepare_layer(W4, torch.eye(3)), ValueError, "(3, 3)"),
    ("hessian-asymmetric-large", lambda: prepare_layer(W4, _asym(0.5)), ValueError, "not symmetric"),
    ("weight-1d", lambda: prepare_layer(torch.ones(4), torch.eye(4)), ValueError, "(4,)"),
    ("percdamp-negative", lambda: damped_inverse(torch.eye(3), percdamp=-0.1), ValueError, "percdamp=-0.1"),
]


@pytest.mark.parametrize("call, exc, needle", cases(CORE))
def test_core_bad_input(call, exc, needle):
    check_case(call, exc, needle)


def _small_asym_warns() -> None:
    H = _asym(1e-3)
    with pytest.warns(RuntimeWarning, match="slightly asymmetric"):
        S = symmetrize(H)
    assert torch.equal(S, S.T) and torch.allclose(S, (H + H.T) / 2)


def _rounding_asym_quiet() -> None:
    H = _asym(1e-7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        S = symmetrize(H)
    assert torch.equal(S, S.T)


def _partly_dead_inputs() -> None:
    H = torch.diag(torch.tensor([2.0, 0.0, 1.0, 0.0]))
    W, Hp, dead = prepare_layer(W4, H)
    assert dead.tolist() == [False, True, False, True] and (W[:, dead] == 0).all() and Hp[1, 1] == 1


def _asym_threshold_documented() -> None:
    assert 0 < SYM_WARN < 0.5  # _asym(0.5) is refused, _asym(1e-3) warned about


def _profile_zero_means_all() -> None:
    assert P.with_(eval_windows=0, encoder_train=0, encoder_eval=0).eval_windows == 0


def _int_like_accepted() -> None:
    import numpy as np
    assert checks.positive_int("n", np.int64(3)) == 3 and checks.positive_int("n", torch.tensor(2)) == 2


ANSWERS = [
    ("hessian-asymmetric-small-warns", _small_asym_warns),
    ("hessian-asymmetric-rounding-quiet", _rounding_asym_quiet),
    ("hessian-partly-dead", _partly_dead_inputs),
    ("hessian-threshold", _asym_threshold_documented),
    ("profile-zero-means-all", _profile_zero_means_all),
    ("checks-int-like", _int_like_accepted),
]


@pytest.mark.parametrize("check", answers(ANSWERS))
def test_core_documented_answer(check):
    check()
