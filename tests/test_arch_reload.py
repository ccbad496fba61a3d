"""Reloading unevenly pruned models (lessonlib.arch.reload.load_pruned)."""
import warnings

import pytest
import torch

from lessonlib.arch.ffn import prune_ffn_neurons
from lessonlib.arch.heads import head_counts, prune_heads, prune_kv_groups
from lessonlib.arch.reload import load_pruned
from lessonlib.models import tiny_causal_lm


def test_uneven_decoder_round_trip(tmp_path):
    m = tiny_causal_lm(seed=3, layers=3, kv_heads=2)  # 4 query heads in 2 KV groups, d_ff = 128
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the "differ across blocks" warnings are the point here
        prune_heads(m, {0: [0, 2]})  # one query head from each group: (4, 2) -> (2, 2) in block 0 only
        prune_kv_groups(m, {2: [1]})  # the whole group 1 of block 2: (4, 2) -> (2, 1)
        prune_ffn_neurons(m, {1: torch.arange(0, 128, 2)})  # block 1 keeps 64 of 128 neurons
    assert head_counts(m) == [(2, 2), (4, 2), (2, 1)]
    x = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(0))
    m.save_pretrained(tmp_path)
    r = load_pruned(str(tmp_path))
    assert head_counts(r) == [(2, 2), (4, 2), (2, 1)]
    assert r.model.layers[1].mlp.down_proj.weight.shape == (64, 64)
    assert r.model.layers[2].self_attn.num_key_value_groups == 2
    assert r.lm_head.weight.data_ptr() == r.model.embed_tokens.weight.data_ptr()  # still tied
    with torch.no_grad():
        assert torch.equal(r(x).logits, m(x).logits)
    a = m.generate(x[:1, :4], max_new_tokens=5, do_sample=False)
    assert torch.equal(r.generate(x[:1, :4], max_new_tokens=5, do_sample=False), a)


def test_uniform_model_loads_too_and_bad_paths_raise(tmp_path):
    m = tiny_causal_lm(seed=4)
    x = torch.randint(0, 256, (1, 6))
    m.save_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(load_pruned(str(tmp_path))(x).logits, m(x).logits)
    with pytest.raises(ValueError, match="not a folder"):
        load_pruned(str(tmp_path / "nowhere"))
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="safetensors"):
        load_pruned(str(tmp_path))


def test_uneven_bert_heads_round_trip(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(0)
    m = BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                                 num_attention_heads=4, intermediate_size=64, num_labels=2)).eval()
    prune_heads(m, {0: [1, 3]})  # block 0 keeps 2 of 4 heads, block 1 all 4
    assert head_counts(m) == [(2, 2), (4, 4)]
    x = torch.randint(0, 100, (2, 7), generator=torch.Generator().manual_seed(1))
    m.save_pretrained(tmp_path)
    r = load_pruned(str(tmp_path))
    assert head_counts(r) == [(2, 2), (4, 4)]
    with torch.no_grad():
        torch.testing.assert_close(r(x).logits, m(x).logits, rtol=0, atol=1e-6)
