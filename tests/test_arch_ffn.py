"""FFN neuron importance and physical FFN shrinking (lessonlib.arch.ffn)."""
import pytest
import torch

from lessonlib.arch.ffn import (FFN_METHODS, ffn_neuron_scores, keep_top_neurons, prune_ffn_neurons,
                                shrink_ffn_tensors, shrink_linear, weight_norm_scores)
from lessonlib.models import tiny_causal_lm


def _tiny_bert():
    from transformers import BertConfig, BertModel
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64)
    return BertModel(cfg).eval()


def test_shrink_ffn_tensors_literal():
    gate = torch.tensor([[1., 2.], [3., 4.], [5., 6.]])  # (d_ff=3, d=2)
    up = -gate
    down = torch.tensor([[1., 2., 3.], [4., 5., 6.]])  # (d=2, d_ff=3)
    (g, u), (bg, bu), d = shrink_ffn_tensors([gate, up], [None, torch.tensor([7., 8., 9.])], down,
                                             torch.tensor([2, 0]))
    assert torch.equal(g, torch.tensor([[1., 2.], [5., 6.]]))  # kept in sorted order
    assert torch.equal(u, -g) and bg is None and torch.equal(bu, torch.tensor([7., 9.]))
    assert torch.equal(d, torch.tensor([[1., 3.], [4., 6.]]))


@pytest.mark.parametrize("keep", [[], [0, 0], [3], [-1]])
def test_shrink_ffn_tensors_rejects_bad_keep(keep):
    w = torch.ones(3, 2)
    with pytest.raises(ValueError):
        shrink_ffn_tensors([w], [None], torch.ones(2, 3), torch.tensor(keep, dtype=torch.long))


def test_shrink_linear_rows_and_columns():
    lin = torch.nn.Linear(3, 2)
    r = shrink_linear(lin, torch.tensor([1]), dim=0)
    c = shrink_linear(lin, torch.tensor([0, 2]), dim=1)
    assert torch.equal(r.weight, lin.weight[1:2]) and torch.equal(r.bias, lin.bias[1:2])
    assert torch.equal(c.weight, lin.weight[:, [0, 2]]) and torch.equal(c.bias, lin.bias)
    with pytest.raises(ValueError):
        shrink_linear(lin, torch.tensor([0]), dim=2)


def test_weight_norm_scores_literal():
    w_in = torch.tensor([[3., 4.], [0., 1.]])  # row norms 5, 1
    w_out = torch.tensor([[1., 0.], [0., 2.]])  # column norms 1, 2
    assert torch.allclose(weight_norm_scores([w_in], w_out), torch.tensor([5., 2.]))


def test_keep_top_neurons_ties_and_errors():
    s = torch.tensor([1., 3., 3., 0.5])
    assert keep_top_neurons(s, 2).tolist() == [1, 2]
    assert keep_top_neurons(s, 0.75).tolist() == [0, 1, 2]
    assert keep_top_neurons(torch.ones(4), 2).tolist() == [0, 1]  # ties: lower index wins
    for bad in (0, 5, 1.5, 0.0):
        with pytest.raises(ValueError):
            keep_top_neurons(s, bad)


def test_keep_all_neurons_is_identical():
    m = tiny_causal_lm(seed=1)
    x = torch.randint(0, 256, (2, 12))
    ref = m(x).logits
    prune_ffn_neurons(m, [torch.arange(128)] * 2)
    assert torch.equal(m(x).logits, ref)


def test_removing_zero_down_columns_keeps_outputs():
    m = tiny_causal_lm(seed=2).double()
    x = torch.randint(0, 256, (2, 12))
    dead = torch.tensor([3, 10, 50, 127])
    for b in m.model.layers:
        b.mlp.down_proj.weight.data[:, dead] = 0
    ref = m(x).logits
    keep = torch.tensor([i for i in range(128) if i not in dead.tolist()])
    prune_ffn_neurons(m, {0: keep, 1: keep})
    assert m.model.layers[0].mlp.gate_proj.weight.shape == (124, 64)
    assert m.model.layers[1].mlp.down_proj.weight.shape == (64, 124)
    assert m.config.intermediate_size == 124
    torch.testing.assert_close(m(x).logits, ref, rtol=0, atol=1e-12)


def test_taylor_score_is_zero_for_dead_neuron_and_activation_is_not():
    m = tiny_causal_lm(seed=3)
    m.model.layers[0].mlp.down_proj.weight.data[:, 5] = 0
    x = torch.randint(0, 256, (3, 10))
    tay = ffn_neuron_scores(m, "taylor", x)
    act = ffn_neuron_scores(m, "activation", x)
    assert tay[0][5] == 0 and (tay[0] > 0).sum() == 127
    assert act[0][5] > 0 and all(s.shape == (128,) for s in act + tay)


def test_scores_scale_with_up_row():
    """a_i = silu(g_i) * u_i is linear in up_proj's row i: doubling it doubles activation and weight scores."""
    x = torch.randint(0, 256, (2, 10))
    m1, m2 = tiny_causal_lm(seed=4).double(), tiny_causal_lm(seed=4).double()
    m2.model.layers[1].mlp.up_proj.weight.data[7] *= 2  # layer 1 is last: nothing downstream of it in layer 1's FFN
    for method in ("activation", "weight"):
        a, b = ffn_neuron_scores(m1, method, x)[1], ffn_neuron_scores(m2, method, x)[1]
        torch.testing.assert_close(b[7], 2 * a[7])
        torch.testing.assert_close(b[:7], a[:7])


def test_activation_score_matches_manual_reference():
    m = tiny_causal_lm(seed=5)
    x = torch.randint(0, 256, (2, 10))
    hs = m(x, output_hidden_states=True).hidden_states
    blk = m.model.layers[0]
    seen = []
    h = blk.mlp.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    m(x)
    h.remove()
    mlp_in = seen[0]  # (2, 10, 64) post-attention-norm input of layer 0's MLP
    a = blk.mlp.act_fn(blk.mlp.gate_proj(mlp_in)) * blk.mlp.up_proj(mlp_in)  # (2, 10, 128)
    assert hs[0].shape == (2, 10, 64)
    torch.testing.assert_close(ffn_neuron_scores(m, "activation", x)[0], a.abs().mean((0, 1)))


def test_pruned_model_generates_saves_and_reloads(tmp_path):
    from transformers import AutoModelForCausalLM
    m = tiny_causal_lm(seed=6)
    x = torch.randint(0, 256, (2, 16))
    s = ffn_neuron_scores(m, "activation", x)
    prune_ffn_neurons(m, [keep_top_neurons(t, 0.5) for t in s])
    out = m.generate(x[:1, :4], max_new_tokens=6, do_sample=False)
    assert out.shape == (1, 10)
    m.save_pretrained(tmp_path)
    r = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert r.model.layers[0].mlp.up_proj.weight.shape == (64, 64)
    assert torch.equal(r(x).logits, m(x).logits)


def test_uneven_widths_warn():
    m = tiny_causal_lm(seed=7)
    with pytest.warns(UserWarning, match="differ across blocks"):
        prune_ffn_neurons(m, {0: torch.arange(100)})
    assert m.config.intermediate_size == 128


def test_bert_ffn_shrink():
    m = _tiny_bert()
    x = torch.randint(0, 100, (2, 9))
    for layer in m.encoder.layer:
        layer.output.dense.weight.data[:, :16] = 0
    ref = m(x).last_hidden_state
    s = ffn_neuron_scores(m, "weight")
    assert (s[0][:16] == 0).all() and (s[0][16:] > 0).all()
    prune_ffn_neurons(m, [keep_top_neurons(t, 48) for t in s])
    assert m.encoder.layer[0].intermediate.dense.weight.shape == (48, 32)
    assert m.encoder.layer[1].output.dense.weight.shape == (32, 48)
    torch.testing.assert_close(m(x).last_hidden_state, ref, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="loss_fn"):
        ffn_neuron_scores(m, "taylor", x)


def test_errors():
    m = tiny_causal_lm()
    x = torch.randint(0, 256, (1, 8))
    with pytest.raises(ValueError, match="unknown method"):
        ffn_neuron_scores(m, "random", x)
    with pytest.raises(ValueError, match="batches"):
        ffn_neuron_scores(m, "activation", None)
    with pytest.raises(ValueError, match="out of range"):
        prune_ffn_neurons(m, {2: torch.arange(4)})
    with pytest.raises(ValueError, match="not supported"):
        ffn_neuron_scores(tiny_causal_lm("mixtral"), "weight")
    assert set(FFN_METHODS) == {"activation", "weight", "taylor"}
