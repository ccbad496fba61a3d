"""Helpers of the quantization claims (C17, C20, C23) and of QAT fine-tuning, on tiny models and seeded layers."""
import math

import pytest
import torch

from lessonlib.claims.exp_quant import obq_vs_gptq, qat_copy, layer_slice, sparsegpt_vs_obs
from lessonlib.compress import first_blocks, quantized_copy
from lessonlib.config import get_profile
from lessonlib.models import block_linears, decoder_blocks, get_weight, tiny_causal_lm
from lessonlib.quant.affine import QuantScheme, fake_quant
from lessonlib.quant.qat import QATLinear
from lessonlib.quant.qat_train import cosine_lr, qat_finetune


def _tokens(n=8, t=16, seed=0, vocab=256):
    return torch.randint(0, vocab, (n, t), generator=torch.Generator().manual_seed(seed))


def _layer(seed=0, out=8, n_in=64):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(4 * n_in, n_in, generator=gen, dtype=torch.float64) @ \
        (torch.randn(n_in, n_in, generator=gen, dtype=torch.float64) / n_in ** 0.5
         + 0.5 * torch.eye(n_in, dtype=torch.float64))  # correlated inputs
    H = 2 * x.T @ x / x.shape[0]  # (in, in)
    return torch.randn(out, n_in, generator=gen, dtype=torch.float64), H


# ------------------------------------------------------------------ cosine_lr
def test_cosine_lr_hand_values():
    assert [cosine_lr(1.0, s, 3) for s in range(3)] == pytest.approx([1.0, 0.5, 0.0])
    assert cosine_lr(2.0, 2, 3, final_frac=0.1) == pytest.approx(0.2)
    assert cosine_lr(0.3, 0, 1) == pytest.approx(0.3)  # one step: the base rate
    assert cosine_lr(1.0, 1, 5) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


@pytest.mark.parametrize("kw", [dict(step=3, steps=3), dict(step=-1, steps=3), dict(step=0, steps=0),
                                dict(step=0, steps=2, final_frac=1.5)])
def test_cosine_lr_rejects_bad_steps(kw):
    with pytest.raises(ValueError):
        cosine_lr(1.0, **kw)


# ------------------------------------------------------------------ qat_finetune
def test_qat_finetune_trains_only_block_linears_and_repeats():
    data = _tokens()
    runs = []
    for _ in range(2):
        m = tiny_causal_lm(seed=1)
        emb = m.get_input_embeddings().weight.detach().clone()
        norm = m.model.norm.weight.detach().clone()
        w0 = get_weight(block_linears(decoder_blocks(m)[0])["mlp.up_proj"]).detach().clone()
        rep = qat_finetune(m, data, QuantScheme(4, 32), steps=4, lr=0.5, batch_size=2, optimizer="sgd")
        assert torch.equal(m.get_input_embeddings().weight, emb) and torch.equal(m.model.norm.weight, norm)
        lin = block_linears(decoder_blocks(m)[0])["mlp.up_proj"]
        assert isinstance(lin, QATLinear) and not torch.equal(lin.weight, w0)
        assert not m.training and not any(p.requires_grad for p in m.parameters())
        assert len(rep.losses) == 4 and rep.lrs[0] == pytest.approx(0.5) and rep.lrs[-1] == pytest.approx(0.0)
        n_lin = sum(get_weight(x).numel() for b in decoder_blocks(m) for x in block_linears(b).values())
        assert rep.n_trained == n_lin
        runs.append(torch.cat([p.flatten() for p in m.parameters()]))
    assert torch.equal(runs[0], runs[1])  # seeded batches: the same run twice gives the same weights


def test_qat_finetune_lowers_the_training_loss_on_a_repeated_batch():
    m = tiny_causal_lm(seed=2)
    data = _tokens(n=2, t=32, seed=3)
    rep = qat_finetune(m, data, QuantScheme(4, 32), steps=12, lr=3e-3, batch_size=2, optimizer="adam")
    assert rep.losses[-1] < rep.losses[0] - 0.05


@pytest.mark.parametrize("kw,msg", [(dict(steps=0), "steps"), (dict(lr=-1.0), "lr"), (dict(lr=float("nan")), "lr"),
                                    (dict(optimizer="lion"), "optimizer"), (dict(batch_size=0), "batch_size")])
def test_qat_finetune_rejects_bad_arguments(kw, msg):
    args = dict(steps=2, lr=0.1, batch_size=2, optimizer="sgd")
    args.update(kw)
    with pytest.raises(ValueError, match=msg):
        qat_finetune(tiny_causal_lm(), _tokens(), QuantScheme(4, 32), **args)


def test_qat_finetune_rejects_float_tokens():
    with pytest.raises(ValueError, match="LongTensor"):
        qat_finetune(tiny_causal_lm(), torch.zeros(4, 8), QuantScheme(4, 32), steps=1, lr=0.1)


def test_qat_copy_uses_profile_sizes_and_leaves_the_original():
    m = tiny_causal_lm(seed=4)
    before = torch.cat([p.flatten() for p in m.parameters()]).clone()
    prof = get_profile("ci").with_(train_steps=3, batch_size=2)
    q, rep = qat_copy(m, _tokens(), QuantScheme(3, 32), prof)
    assert len(rep.losses) == 3 and rep.scheme == "asym3-g32"
    assert torch.equal(torch.cat([p.flatten() for p in m.parameters()]), before)
    assert isinstance(block_linears(decoder_blocks(q)[1])["self_attn.o_proj"], QATLinear)


# ------------------------------------------------------------------ first_blocks, quantized_copy
def test_first_blocks_hides_and_restores_the_same_modules():
    m = tiny_causal_lm(layers=3)
    ids = [id(b) for b in decoder_blocks(m)]
    with first_blocks(m, 1):
        assert len(decoder_blocks(m)) == 1
    assert [id(b) for b in decoder_blocks(m)] == ids
    with pytest.raises(ValueError, match="outside"):
        with first_blocks(m, 4):
            pass
    assert len(decoder_blocks(m)) == 3


def _block_weights(m, i):
    return {n: get_weight(x).detach().clone() for n, x in block_linears(decoder_blocks(m)[i]).items()}


def test_rtn_copy_quantizes_only_the_chosen_blocks():
    m = tiny_causal_lm(seed=5)
    sch = QuantScheme(3, 32)
    q, _ = quantized_copy(m, "rtn", sch, n_blocks=1)
    for n, w in _block_weights(m, 0).items():
        assert torch.equal(_block_weights(q, 0)[n], fake_quant(w, sch))
    for n, w in _block_weights(m, 1).items():
        assert torch.equal(_block_weights(q, 1)[n], w)
    assert torch.equal(q.lm_head.weight, m.lm_head.weight)


def test_gptq_on_first_block_equals_block_zero_of_the_full_run():
    m = tiny_causal_lm(seed=6)
    calib = _tokens(n=4, t=32, seed=7)
    sch = QuantScheme(4, 32)
    one, _ = quantized_copy(m, "gptq", sch, calib, n_blocks=1)
    full, _ = quantized_copy(m, "gptq", sch, calib)
    assert len(decoder_blocks(one)) == 2
    b0_one, b0_full = _block_weights(one, 0), _block_weights(full, 0)
    for n in b0_one:
        assert torch.equal(b0_one[n], b0_full[n])  # block 0 sees the same inputs in both runs
    assert all(torch.equal(w, _block_weights(m, 1)[n]) for n, w in _block_weights(one, 1).items())
    assert any(not torch.equal(w, _block_weights(m, 1)[n]) for n, w in _block_weights(full, 1).items())


def test_quantized_copy_rejects_bad_method_and_missing_calibration():
    with pytest.raises(ValueError, match="method"):
        quantized_copy(tiny_causal_lm(), "hqq", QuantScheme(4, 32))
    with pytest.raises(ValueError, match="calibration"):
        quantized_copy(tiny_causal_lm(), "gptq", QuantScheme(4, 32))


# ------------------------------------------------------------------ C17 layer comparisons
def test_obq_fixed_order_and_gptq_agree_on_a_seeded_layer():
    W, H = _layer(0)
    r = obq_vs_gptq(W, H, QuantScheme(4, 32))
    assert r["code_agreement"] == 1.0 and r["max_diff_in_steps"] < 1e-3
    assert r["error_gptq"] == pytest.approx(r["error_obq_fixed"], rel=1e-4)
    assert r["error_gptq"] < r["error_rtn"]  # correlated inputs: error compensation pays


def test_sparsegpt_equals_obs_with_pruned_columns_first_but_not_for_row_masks():
    W, H = _layer(1, out=6, n_in=32)
    r = sparsegpt_vs_obs(W, H, 0.5)
    assert r["max_abs_diff_same_order"] < 1e-9
    assert r["max_abs_diff_row_mask"] > 1e-4  # freezing passed columns is an approximation
    assert r["error_obs_row_mask"] <= r["error_sparsegpt_row_mask"] * 1.001  # OBS is optimal for its mask
    with pytest.raises(ValueError, match="sparsity"):
        sparsegpt_vs_obs(W, H, 0.0)


def test_layer_slice_of_a_tiny_model():
    m = tiny_causal_lm(seed=8)
    W, H = layer_slice(m, _tokens(n=2, t=16), 1, "mlp.down_proj", rows=5, cols=40)
    assert W.shape == (5, 40) and H.shape == (40, 40) and W.dtype == H.dtype == torch.float64
    assert torch.allclose(H, H.T) and bool((torch.diag(H) >= 0).all())
    full = get_weight(block_linears(decoder_blocks(m)[1])["mlp.down_proj"])
    assert torch.equal(W, full[:5, :40].double())
    with pytest.raises(ValueError, match="not in block"):
        layer_slice(m, _tokens(n=2, t=16), 0, "mlp.nope")


# ------------------------------------------------------------------ q03_1 mutants are real mistakes
def _gptq_with(monkeypatch, update):
    import lessonlib.quant.gptq as gptq_mod
    W, H = _layer(3, out=6, n_in=64)
    monkeypatch.setattr(gptq_mod, "gptq_column_update", update)
    return gptq_mod.gptq_reference(W, H, QuantScheme(3, 32), block_size=16)  # Algorithm 1 built on the exercise


def test_every_q03_mutant_changes_gptq_and_the_harmless_variants_do_not(monkeypatch):
    from lessonlib_grader.mutants import all_mutants
    from lessonlib.quant.gptq import gptq_column_update
    ref = _gptq_with(monkeypatch, gptq_column_update)
    mutants = all_mutants()["q03_1"]
    assert len(mutants) >= 3
    for mu in mutants:
        assert not torch.allclose(_gptq_with(monkeypatch, mu.fn), ref), mu.description

    def later_only(W1, U1, i, q):  # leaves column i alone: GPTQ has stored q already
        err = (W1[:, i] - q) / U1[i, i]
        W1[:, i + 1:] -= err.unsqueeze(1) * U1[i, i + 1:].unsqueeze(0)
        return err

    def whole_row(W1, U1, i, q):  # U1[i, :i] is zero in an upper factor
        err = (W1[:, i] - q) / U1[i, i]
        W1 -= err.unsqueeze(1) * U1[i].unsqueeze(0)
        return err

    for fn in (later_only, whole_row):
        assert torch.equal(_gptq_with(monkeypatch, fn), ref)


def test_awq_alpha_curve_starts_at_rtn_and_its_minimum_is_awqs_choice():
    from lessonlib.claims.exp_quant import awq_alpha_curve
    from lessonlib.quant.awq import awq_quantize
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(256, 64, generator=gen) * (torch.rand(64, generator=gen) ** 4 * 20 + 0.1)  # outlier channels
    W = torch.randn(16, 64, generator=gen)
    sch = QuantScheme(3, 32)
    alphas, errs = awq_alpha_curve(W, x, sch)
    assert len(alphas) == 20 and alphas[0] == 0.0
    assert errs[0] == pytest.approx(float(((x @ (fake_quant(W, sch) - W).T) ** 2).mean()), rel=1e-6)
    r = awq_quantize(W, x, sch, clip=False)
    assert r.alpha == alphas[min(range(20), key=errs.__getitem__)] and min(errs) < errs[0]
