"""GPTQ: agreement with a one-column-at-a-time reference, exact loss bookkeeping, beats RTN, edge cases."""
import warnings

import pytest
import torch

from lessonlib.quant.affine import QuantScheme, compute_qparams, dequantize, fake_quant
from lessonlib.quant.gptq import gptq_quantize, hessian_error
from floatcheck import assert_objective_close, guided_round


def correlated_layer(out=16, n_in=192, n=512, seed=0, dead=()):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(n_in, n_in, generator=g) / n_in ** 0.5 + torch.eye(n_in)
    X = torch.randn(n, n_in, generator=g) @ mix * (torch.rand(n_in, generator=g) * 3 + 0.2)  # (n, in)
    X[:, list(dead)] = 0
    W = torch.randn(out, n_in, generator=g)  # (out, in)
    return W, 2 / n * X.T @ X


def slow_gptq(W, H, scheme, act_order=False, percdamp=0.01, hint=None):
    """Algorithm 1 without lazy batching, in float64: quantize column k, spread its error with row k of U.

    ``hint``: the implementation's quantized weight (out, in). Where a column's value sits within float32 noise
    of a rounding tie, the reference takes the implementation's side of the tie (``floatcheck.guided_round``)
    so that one legitimate tie does not make every later column diverge. Returns (Q, ties followed)."""
    W, H = W.double().clone(), H.double().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    n = W.shape[1]
    perm = torch.argsort(torch.diag(H), descending=True) if act_order else torch.arange(n)
    W, H = W[:, perm], H[perm][:, perm]
    hint = None if hint is None else hint.double()[:, perm]
    H += percdamp * torch.diag(H).mean() * torch.eye(n, dtype=H.dtype)
    U = torch.linalg.cholesky(torch.linalg.inv(H), upper=True)
    Q = torch.zeros_like(W)
    ties = 0
    gs, per_row = scheme.group_size, QuantScheme(scheme.bits, -1, scheme.sym, scheme.int_zero)
    if gs <= 0:
        s, z = (t.double() for t in compute_qparams(W.float(), scheme))
    for k in range(n):
        if gs > 0 and k % gs == 0:
            s, z = (t.double() for t in compute_qparams(W[:, k:k + gs].float(), per_row))
        v = W[:, k:k + 1] / s + z  # (out, 1) the value in grid steps, before rounding
        h = None if hint is None else torch.round(hint[:, k:k + 1] / s + z)
        code, t = guided_round(v, h, scale=(W[:, k:k + 1] / s).abs() + z.abs())
        ties += t
        q = ((code.clamp(scheme.qmin, scheme.qmax) - z) * s)[:, 0]
        Q[:, k] = q
        err = (W[:, k] - q) / U[k, k]
        W[:, k:] -= err[:, None] * U[k, k:][None, :]
    return Q[:, torch.argsort(perm)], ties


def assert_matches_slow(weight, W, H, scheme, act_order=False):
    """``weight`` is GPTQ's result: equal to the float64 reference up to float32 noise, except at rare rounding
    ties (where it may take the other side; the reference follows it there), and the layer objective agrees."""
    ref, ties = slow_gptq(W, H, scheme, act_order, hint=weight)
    torch.testing.assert_close(weight.double(), ref, atol=1e-5, rtol=0)
    assert ties <= max(1, 0.005 * W.numel()), f"{ties} ties of {W.numel()} codes: too many to be float noise"
    # the reference's own tie choices: one tie taken the other way sends the later columns down another
    # (equally valid) path, which moved the objective by 0.7% on one run (memory alignment changes the BLAS
    # reduction order); the strict check is the hinted comparison above, this one bounds the whole outcome
    free, _ = slow_gptq(W, H, scheme, act_order)
    assert_objective_close(hessian_error(W, weight, H), hessian_error(W, free.float(), H), rtol=2e-2)
    return ties


@pytest.mark.parametrize("scheme", [QuantScheme(4, -1, False), QuantScheme(3, 32, True), QuantScheme(4, 48, False),
                                    QuantScheme(4, 0, True)])
@pytest.mark.parametrize("act_order", [False, True])
def test_lazy_batches_agree_with_slow_reference(scheme, act_order):
    W, H = correlated_layer(seed=1)
    for block_size in (128, 20):  # groups of 48 straddle both block boundaries
        r = gptq_quantize(W, H, scheme.bits, scheme.group_size, scheme.sym, act_order=act_order, block_size=block_size)
        assert_matches_slow(r.weight, W, H, scheme, act_order)


@pytest.mark.parametrize("act_order,static", [(False, False), (True, False), (True, True), (False, True)])
def test_codes_reproduce_weight_and_loss_is_exact(act_order, static):
    W, H = correlated_layer(seed=2)
    r = gptq_quantize(W, H, 4, 32, False, act_order=act_order, static_groups=static)
    assert torch.equal(dequantize(r.codes, r.scales, r.zeros, g_idx=r.g_idx), r.weight)  # bit-exact
    assert r.codes.min() >= 0 and r.codes.max() <= 15 and r.scales.shape == (16, 6)
    assert (r.g_idx is not None) == (act_order and not static)
    if act_order:
        assert torch.equal(r.perm, torch.argsort(torch.diag(H), descending=True))
    if static:  # groups fitted up front on the original weight
        s, z = compute_qparams(W, QuantScheme(4, 32, False))
        assert torch.equal(r.scales, s) and torch.equal(r.zeros, z)
    Hd = H + r.damp * torch.eye(H.shape[0])
    assert r.loss == pytest.approx(0.5 * hessian_error(W, r.weight, Hd), rel=1e-3)  # OBS errors add up exactly


@pytest.mark.parametrize("scheme", [QuantScheme(4, -1, False), QuantScheme(3, 64, True), QuantScheme(4, 32, False)])
def test_gptq_beats_rtn_on_the_layer_objective(scheme):
    for seed in range(3):
        W, H = correlated_layer(seed=seed)
        r = gptq_quantize(W, H, scheme.bits, scheme.group_size, scheme.sym)
        e_gptq, e_rtn = hessian_error(W, r.weight, H), hessian_error(W, fake_quant(W, scheme), H)
        assert e_gptq < 0.8 * e_rtn, (seed, e_gptq, e_rtn)


def test_act_order_helps_with_uneven_hessian():
    tot = {False: 0.0, True: 0.0}
    for seed in range(3):
        W, H = correlated_layer(seed=seed)
        for ao in tot:
            tot[ao] += hessian_error(W, gptq_quantize(W, H, 3, -1, act_order=ao).weight, H)
    assert tot[True] < tot[False]


def test_dead_inputs():
    W, H = correlated_layer(seed=3, dead=(0, 5, 100))
    assert torch.all(torch.diag(H)[[0, 5, 100]] == 0)
    r = gptq_quantize(W, H, 4, 32, True)
    assert torch.isfinite(r.weight).all()
    assert torch.all(r.weight[:, [0, 5, 100]] == 0)  # W_:,i = 0 before quantization; 0 is on the symmetric grid
    assert_matches_slow(r.weight, W, H, QuantScheme(4, 32, True))


def test_not_positive_definite_warns_and_retries():
    H = torch.kron(torch.eye(8), torch.tensor([[1.0, 3.0], [3.0, 1.0]]))  # eigenvalues -2 and 4, diag 1
    W = torch.randn(4, 16, generator=torch.Generator().manual_seed(0))
    with pytest.warns(RuntimeWarning, match="not positive definite"):
        r = gptq_quantize(W, H, 4, -1)
    assert torch.isfinite(r.weight).all() and r.damp > 2.0  # 0.01 -> 0.1 -> 1 -> 10


def test_bad_inputs():
    W, H = correlated_layer(out=4, n_in=64, n=128)
    with pytest.raises(ValueError, match=r"\(64, 64\)"):
        gptq_quantize(W, H[:32, :32])
    with pytest.raises(ValueError, match="block_size"):
        gptq_quantize(W, H, block_size=0)
    with pytest.raises(ValueError, match="bits"):
        gptq_quantize(W, H, bits=9)
    with pytest.raises(ValueError, match="does not divide"):
        gptq_quantize(W, H, group_size=48)
    Hn = H.clone()
    Hn[3, 3] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        gptq_quantize(W, Hn)


def test_keeps_dtype():
    W, H = correlated_layer(out=4, n_in=64, n=128)
    r = gptq_quantize(W.half(), H, 4, 32)
    assert r.weight.dtype == torch.float16 and r.codes.dtype == torch.int32
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gptq_quantize(W, H, 4, 32)  # a healthy Hessian needs no retry


@pytest.mark.parametrize("act_order,static", [(False, True), (True, True), (True, False)])
def test_model_driver_then_pack_and_reload(tmp_path, act_order, static):
    from lessonlib.models import block_linears, decoder_blocks, get_weight, tiny_causal_lm
    from lessonlib.quant.gptq import gptq_quantize_model
    from lessonlib.quant.qlinear import load_quantized, quant_linears, quantize_, save_quantized

    model = tiny_causal_lm("llama", seed=0)
    calib = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(0))
    scheme = QuantScheme(4, 32, False)
    results = gptq_quantize_model(model, calib, scheme, act_order=act_order, static_groups=static, device="cpu")
    blocks = decoder_blocks(model)
    expected = {f"model.layers.{i}.{n}" for i in range(len(blocks)) for n in block_linears(blocks[i])}
    assert set(results) == expected
    for i, b in enumerate(blocks):
        for n, lin in block_linears(b).items():
            assert torch.equal(get_weight(lin), results[f"model.layers.{i}.{n}"].weight)  # written back in place
    x = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fake_logits = model(x).logits
        quantize_(model, scheme, qparams=results)
        assert len(quant_linears(model)) == len(expected)
        torch.testing.assert_close(model(x).logits, fake_logits, atol=1e-5, rtol=1e-5)
        path = str(tmp_path / "gptq.safetensors")
        save_quantized(model, path)
        loaded = load_quantized(path, tiny_causal_lm("llama", seed=5))
        assert torch.equal(loaded(x).logits, model(x).logits)
        assert all((q.g_idx is not None) == (act_order and not static) for q in quant_linears(loaded).values())


@pytest.mark.parametrize("static", [False, True])
def test_row_stacked_layers_split_back_to_their_own_results(static):
    from lessonlib.quant.gptq import split_rows
    W, H = correlated_layer(out=24, seed=4)
    parts = split_rows(gptq_quantize(W, H, 4, 32, static_groups=static), [16, 8])
    for part, Wp in zip(parts, (W[:16], W[16:])):
        alone = gptq_quantize(Wp, H, 4, 32, static_groups=static)
        torch.testing.assert_close(part.weight, alone.weight, atol=1e-5, rtol=0)
        assert part.loss == pytest.approx(alone.loss, rel=1e-4)
        assert torch.equal(dequantize(part.codes, part.scales, part.zeros), part.weight)
    if not static:
        assert_matches_slow(parts[0].weight, W[:16], H, QuantScheme(4, 32))  # rows are independent given H
    with pytest.raises(ValueError, match="add up"):
        split_rows(gptq_quantize(W, H, 4, 32), [16, 4])
    with pytest.raises(ValueError, match="per-tensor"):
        split_rows(gptq_quantize(W, H, 4, 0), [16, 8])


def test_integer_zero_point_gptq_codes_reproduce_weight():
    W, H = correlated_layer(seed=5)
    r = gptq_quantize(W, H, 4, 32, int_zero=True, static_groups=True)
    assert torch.equal(r.zeros, r.zeros.round()) and r.scheme.int_zero
    assert torch.equal(dequantize(r.codes, r.scales, r.zeros), r.weight)
    # dynamic groups on the int-zero grid
    assert_matches_slow(gptq_quantize(W, H, 4, 32, int_zero=True).weight, W, H, QuantScheme(4, 32, False, int_zero=True))


@pytest.mark.parametrize("act_order,static", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("scheme", [QuantScheme(4, 48, False), QuantScheme(3, -1, True), QuantScheme(4, 32, False, True)])
def test_fast_kernel_equals_algorithm_1_built_on_the_column_update(scheme, act_order, static):
    from lessonlib.quant.gptq import gptq_reference
    W, H = correlated_layer(seed=6)
    fast = gptq_quantize(W, H, scheme.bits, scheme.group_size, scheme.sym, act_order=act_order, static_groups=static,
                         block_size=20, int_zero=scheme.int_zero)
    ref = gptq_reference(W, H, scheme, act_order=act_order, static_groups=static, block_size=20)
    torch.testing.assert_close(fast.weight, ref, atol=1e-5, rtol=0)
