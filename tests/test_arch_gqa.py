"""MHA -> GQA by mean-pooling K/V heads (lessonlib.arch.gqa)."""
import pytest
import torch

from lessonlib.arch.gqa import convert_to_gqa, gqa_quality, kv_cache_report, mean_pool_heads
from lessonlib.models import tiny_causal_lm


def test_mean_pool_heads_literal():
    W = torch.tensor([[1., 0.], [3., 0.], [0., 2.], [0., 4.]])  # 4 heads of dim 1
    b = torch.tensor([1., 2., 3., 4.])
    Wp, bp = mean_pool_heads(W, b, n_heads=4, n_groups=2)
    assert torch.equal(Wp, torch.tensor([[2., 0.], [0., 3.]])) and torch.equal(bp, torch.tensor([1.5, 3.5]))
    W1, b1 = mean_pool_heads(W, None, 4, 4)  # one head per group: unchanged
    assert torch.equal(W1, W) and b1 is None
    with pytest.raises(ValueError):
        mean_pool_heads(W, None, 4, 3)


def test_identical_heads_in_group_convert_exactly(tmp_path):
    from transformers import AutoModelForCausalLM
    m = tiny_causal_lm(seed=1, kv_heads=None)  # MHA, 4 heads of 16
    for b in m.model.layers:  # make heads 2g and 2g+1 share K and V: pooling is then lossless
        for lin in (b.self_attn.k_proj, b.self_attn.v_proj):
            w = lin.weight.data.view(2, 2, 16, 64)
            w[:, 1] = w[:, 0]
    x = torch.randint(0, 256, (2, 12))
    ref = m(x).logits
    before = kv_cache_report(m)["bytes_per_token"]
    convert_to_gqa(m, 2)
    assert m.config.num_key_value_heads == 2 and m.model.layers[0].self_attn.num_key_value_groups == 2
    assert m.model.layers[1].self_attn.v_proj.weight.shape == (32, 64)
    assert kv_cache_report(m)["bytes_per_token"] == before / 2 == 2 * 2 * 2 * 16 * 2
    torch.testing.assert_close(m(x).logits, ref, rtol=0, atol=1e-5)
    assert torch.equal(m.generate(x[:1, :4], max_new_tokens=5, do_sample=False),
                       m.generate(x[:1, :4], max_new_tokens=5, do_sample=False, use_cache=False))
    m.save_pretrained(tmp_path)
    assert torch.equal(AutoModelForCausalLM.from_pretrained(tmp_path).eval()(x).logits, m(x).logits)


def test_gqa_three_to_one_and_quality_report():
    m = tiny_causal_lm(seed=2, hidden=48, heads=6, kv_heads=3)  # SmolLM2's 9/3 layout in miniature
    tokens = torch.randint(0, 256, (200,))
    q = gqa_quality(m, tokens, [1], seqlen=32, max_windows=3)
    assert m.config.num_key_value_heads == 3  # gqa_quality works on copies
    assert q["kv1"]["kv_reduction"] == 3.0 and q["kv1"]["kv_heads"] == 1
    assert q["kv1"]["ppl"] != q["original"]["ppl"] and q["original"]["ppl"] > 1
    convert_to_gqa(m, 1)
    assert m.model.layers[0].self_attn.num_key_value_groups == 6
    assert m(tokens[None, :16]).logits.shape == (1, 16, 256)


def test_errors():
    m = tiny_causal_lm(kv_heads=2)
    with pytest.raises(ValueError, match="divisor"):
        convert_to_gqa(m, 3)
    with pytest.raises(ValueError, match="divisor"):
        convert_to_gqa(m, 4)  # cannot go back up
    with pytest.raises(ValueError, match="not supported"):
        convert_to_gqa(tiny_causal_lm("gpt2"), 1)


@pytest.mark.model
def test_smollm2_three_kv_heads_to_one(smollm2):
    import copy
    model, tok = smollm2
    m = copy.deepcopy(model)
    before = kv_cache_report(m)
    convert_to_gqa(m, 1)
    after = kv_cache_report(m)
    assert before["kv_heads"] == 3 and after["kv_heads"] == 1
    assert before["bytes_per_token"] == 3 * after["bytes_per_token"]
    ids = tok("The convention opened with", return_tensors="pt").input_ids
    logits = m(ids).logits
    assert torch.isfinite(logits).all()
