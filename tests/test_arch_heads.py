"""Attention-head importance and physical head removal (lessonlib.arch.heads)."""
import math

import pytest
import torch

from lessonlib.arch.heads import (attention_entropy, head_channels, head_counts, head_importance, lowest_heads,
                                  plan_group_removal, plan_head_removal, prune_heads, prune_kv_groups)
from lessonlib.models import tiny_causal_lm


def _zero_heads(model, layer, heads):
    o = model.model.layers[layer].self_attn.o_proj
    o.weight.data[:, head_channels(torch.tensor(heads), 16)] = 0


def test_head_channels_literal():
    assert head_channels(torch.tensor([0, 2]), 2).tolist() == [0, 1, 4, 5]


def test_attention_entropy_literal():
    p = torch.zeros(1, 2, 1, 4)
    p[0, 0, 0] = 0.25  # uniform over 4 keys: log 4
    p[0, 1, 0, 2] = 1.0  # one-hot: 0
    torch.testing.assert_close(attention_entropy(p), torch.tensor([math.log(4), 0.0]))
    with pytest.raises(ValueError):
        attention_entropy(torch.ones(2, 3, 4))


def test_plans():
    kq, kkv = plan_head_removal(4, 4, [1])
    assert kq.tolist() == [0, 2, 3] and kkv.tolist() == [0, 2, 3]  # MHA: the KV head goes too
    kq, kkv = plan_head_removal(6, 3, [0, 2, 5])  # one from each group of 2
    assert kq.tolist() == [1, 3, 4] and kkv.tolist() == [0, 1, 2]
    kq, kkv = plan_group_removal(6, 3, [1])
    assert kq.tolist() == [0, 1, 4, 5] and kkv.tolist() == [0, 2]
    with pytest.raises(ValueError, match="same number"):
        plan_head_removal(6, 3, [0, 1])  # empties group 0 only
    with pytest.raises(ValueError, match="without attention"):
        plan_head_removal(4, 4, [0, 1, 2, 3])
    with pytest.raises(ValueError, match="without attention"):
        plan_group_removal(6, 3, [0, 1, 2])
    with pytest.raises(ValueError, match="out of range"):
        plan_head_removal(4, 4, [4])


def test_lowest_heads_modes():
    s = [torch.tensor([0.4, 0.1, 0.3, 0.25])]
    assert lowest_heads(s, 2) == {0: [1, 3]}
    assert lowest_heads(s, 1, n_kv=2, mode="within_groups") == {0: [1, 3]}
    assert lowest_heads(s, 1, n_kv=2, mode="groups") == {0: [0]}  # group sums 0.5 < 0.55
    assert lowest_heads([torch.ones(4)], 1, n_kv=2, mode="groups") == {0: [0]}  # ties: lower index
    with pytest.raises(ValueError):
        lowest_heads(s, 4)
    with pytest.raises(ValueError):
        lowest_heads(s, 1, mode="groups")


def test_gradient_saliency_matches_finite_differences():
    m = tiny_causal_lm(seed=1, kv_heads=2).double()
    x = torch.randint(0, 256, (1, 12))

    def loss64(model, batch):  # the library's LM loss upcasts to float32; finite differences need float64
        logits = model(batch, use_cache=False).logits
        return torch.nn.functional.cross_entropy(logits[0, :-1], batch[0, 1:])

    s = head_importance(m, x, "gradient", loss_fn=loss64, normalize=False)
    eps = 1e-2  # central differences; parts of the rotary path stay float32, so tiny steps drown in noise
    for layer, head in [(0, 0), (0, 3), (1, 2)]:
        o = m.model.layers[layer].self_attn.o_proj
        ch = head_channels(torch.tensor([head]), 16)
        losses = []
        for scale in (1 + eps, 1 - eps):
            scale_vec = torch.ones(64, dtype=torch.float64)
            scale_vec[ch] = scale
            h = o.register_forward_pre_hook(lambda _m, a, v=scale_vec: (a[0] * v,))
            with torch.no_grad():
                losses.append(loss64(m, x).item())
            h.remove()
        fd = abs(losses[0] - losses[1]) / (2 * eps)
        assert s[layer][head].item() == pytest.approx(fd, rel=2e-2)


def test_dead_head_has_zero_saliency_and_normalisation():
    m = tiny_causal_lm(seed=2)
    _zero_heads(m, 1, [2])
    x = torch.randint(0, 256, (3, 10))
    s = head_importance(m, x, "gradient")
    assert s[1][2] == 0 and (s[1][[0, 1, 3]] > 0).all()
    assert all(t.norm().item() == pytest.approx(1.0, rel=1e-5) for t in s)
    assert lowest_heads(s, 1)[1] == [2]


def test_entropy_importance_range_and_restores_sdpa():
    m = tiny_causal_lm(seed=3)
    impl = m.config._attn_implementation
    s = head_importance(m, torch.randint(0, 256, (2, 8)), "entropy")
    assert m.config._attn_implementation == impl
    for t in s:
        assert t.shape == (4,) and (t <= 0).all() and (t >= -math.log(8)).all()


@pytest.mark.parametrize("kv", [4, 2])
def test_removing_dead_query_heads_keeps_logits(kv):
    m = tiny_causal_lm(seed=4, kv_heads=kv)
    remove = {0: [0, 2], 1: [1, 3]}  # one query head from each KV group when kv == 2
    for layer, heads in remove.items():  # MHA: the heads' K/V go too; GQA: the KV heads stay
        _zero_heads(m, layer, heads)
    x = torch.randint(0, 256, (2, 12))
    ref = m(x).logits
    prune_heads(m, remove)
    assert head_counts(m) == [(2, 2)] * 2  # MHA 4/4 -> 2/2; GQA 4/2 -> 2/2 (one query head per group)
    assert m.model.layers[0].self_attn.q_proj.weight.shape == (32, 64)
    assert m.model.layers[0].self_attn.o_proj.weight.shape == (64, 32)
    assert m.config.num_attention_heads == 2 and m.config.head_dim == 16
    torch.testing.assert_close(m(x).logits, ref, rtol=0, atol=1e-5)


def test_removing_dead_kv_group_keeps_logits_and_cache_works(tmp_path):
    from transformers import AutoModelForCausalLM
    m = tiny_causal_lm(seed=5, kv_heads=2)
    for layer in (0, 1):
        _zero_heads(m, layer, [2, 3])  # all query heads of group 1
    x = torch.randint(0, 256, (2, 12))
    ref = m(x).logits
    prune_kv_groups(m, {0: [1], 1: [1]})
    assert head_counts(m) == [(2, 1), (2, 1)] and m.config.num_key_value_heads == 1
    assert m.model.layers[0].self_attn.k_proj.weight.shape == (16, 64)
    torch.testing.assert_close(m(x).logits, ref, rtol=0, atol=1e-5)
    cached = m.generate(x[:1, :5], max_new_tokens=6, do_sample=False)
    nocache = m.generate(x[:1, :5], max_new_tokens=6, do_sample=False, use_cache=False)
    assert torch.equal(cached, nocache)
    m.save_pretrained(tmp_path)
    r = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert torch.equal(r(x).logits, m(x).logits)


def test_uneven_head_counts_warn():
    m = tiny_causal_lm(seed=6)
    with pytest.warns(UserWarning, match="differ across blocks"):
        prune_heads(m, {0: [1]})
    assert head_counts(m) == [(3, 3), (4, 4)]
    assert m(torch.randint(0, 256, (1, 6))).logits.shape == (1, 6, 256)


def test_bert_head_removal():
    from transformers import BertConfig, BertModel
    torch.manual_seed(0)
    m = BertModel(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=64, max_position_embeddings=64)).eval()
    d = 8
    m.encoder.layer[0].attention.output.dense.weight.data[:, head_channels(torch.tensor([1]), d)] = 0
    x = torch.randint(0, 100, (2, 7))
    ref = m(x).last_hidden_state
    prune_heads(m, {0: [1]})
    att = m.encoder.layer[0].attention.self
    assert att.num_attention_heads == 3 and att.all_head_size == 24 and att.query.weight.shape == (24, 32)
    assert m.config.pruned_heads == {0: [1]}
    torch.testing.assert_close(m(x).last_hidden_state, ref, rtol=0, atol=1e-5)
    s = head_importance(m, x, "entropy")
    assert [t.numel() for t in s] == [3, 4]
    with pytest.raises(ValueError, match="loss_fn"):
        head_importance(m, x, "gradient")
    with pytest.raises(ValueError, match="LLaMA"):
        prune_kv_groups(m, {0: [0]})


def test_errors():
    m = tiny_causal_lm()
    with pytest.raises(ValueError, match="without attention"):
        prune_heads(m, {0: [0, 1, 2, 3]})
    with pytest.raises(ValueError, match="out of range"):
        prune_heads(m, {0: [7]})
    with pytest.raises(ValueError, match="out of range"):
        prune_heads(m, {5: [0]})
    with pytest.raises(ValueError, match="not supported"):
        prune_heads(tiny_causal_lm("phi3"), {0: [0]})
    with pytest.raises(ValueError, match="unknown method"):
        head_importance(m, torch.randint(0, 256, (1, 4)), "taylor")
