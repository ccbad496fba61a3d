"""ShortGPT Block Influence, block removal and leave-one-out layer dropping (lessonlib.arch.depth)."""
import pytest
import torch

from lessonlib.arch.depth import (block_influence, block_influences, layer_drop_schedule, lowest_influence_blocks,
                                  remove_blocks, skip_one_scan, without_blocks)
from lessonlib.models import tiny_causal_lm


def _make_identity(block):
    block.self_attn.o_proj.weight.data.zero_()
    block.mlp.down_proj.weight.data.zero_()


def test_block_influence_literal():
    a = torch.tensor([[1., 0.], [1., 1.]])
    assert block_influence(a, a) == pytest.approx(0.0, abs=1e-12)
    assert block_influence(a[:1], torch.tensor([[0., 2.]])) == pytest.approx(1.0)
    assert block_influence(a[:1], -a[:1]) == pytest.approx(2.0)
    # token 0 orthogonal (cos 0), token 1 unchanged (cos 1): BI = 1 - 0.5
    assert block_influence(a, torch.tensor([[0., 3.], [2., 2.]])) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        block_influence(a, a[:1])


def test_block_influences_match_hidden_states_reference():
    m = tiny_causal_lm(seed=1, layers=3)
    _make_identity(m.model.layers[1])
    x = torch.randint(0, 256, (2, 10))
    bi = block_influences(m, x, device="cpu")
    hs = m(x, output_hidden_states=True).hidden_states  # the last one is after the final norm
    for i in range(2):
        ref = torch.nn.functional.cosine_similarity(hs[i], hs[i + 1], dim=-1).mean()
        assert bi[i] == pytest.approx(1 - ref.item(), abs=1e-5)
    assert bi[1] == pytest.approx(0.0, abs=1e-7) and bi[0] > 1e-3
    assert lowest_influence_blocks(bi, 1) == [1]


def test_remove_identity_block_keeps_logits_cache_and_reload(tmp_path):
    from transformers import AutoModelForCausalLM
    m = tiny_causal_lm(seed=2, layers=4)
    _make_identity(m.model.layers[2])
    x = torch.randint(0, 256, (2, 10))
    ref = m(x).logits
    remove_blocks(m, [2])
    assert len(m.model.layers) == 3 and m.config.num_hidden_layers == 3
    assert [b.self_attn.layer_idx for b in m.model.layers] == [0, 1, 2]
    torch.testing.assert_close(m(x).logits, ref, rtol=0, atol=1e-5)
    assert torch.equal(m.generate(x[:1, :4], max_new_tokens=6, do_sample=False),
                       m.generate(x[:1, :4], max_new_tokens=6, do_sample=False, use_cache=False))
    m.save_pretrained(tmp_path)
    r = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert len(r.model.layers) == 3 and torch.equal(r(x).logits, m(x).logits)


def test_without_blocks_restores_exactly():
    m = tiny_causal_lm(seed=3, layers=3)
    x = torch.randint(0, 256, (1, 8))
    ref = m(x).logits
    with without_blocks(m, [0, 2]):
        assert len(m.model.layers) == 1 and m.model.layers[0].self_attn.layer_idx == 0
        assert not torch.equal(m(x).logits, ref)
    assert m.config.num_hidden_layers == 3 and [b.self_attn.layer_idx for b in m.model.layers] == [0, 1, 2]
    assert torch.equal(m(x).logits, ref)


def test_skip_one_scan_and_schedule():
    m = tiny_causal_lm(seed=4, layers=3)
    _make_identity(m.model.layers[0])
    tokens = torch.randint(0, 256, (200,))
    scan = skip_one_scan(m, tokens, seqlen=32, max_windows=3)
    assert len(scan["skip"]) == 3
    assert scan["skip"][0] == pytest.approx(scan["dense"], rel=1e-5)  # skipping an identity block is free
    assert scan["skip"][1] != pytest.approx(scan["dense"], rel=1e-5)
    sched = layer_drop_schedule([3.0, 1.0, 2.0, 1.0])
    assert sched == [[], [1], [1, 3], [1, 2, 3]]
    assert layer_drop_schedule([3.0, 1.0], n_max=0) == [[]]


def test_errors():
    m = tiny_causal_lm(layers=2)
    with pytest.raises(ValueError, match="no block"):
        remove_blocks(m, [0, 1])
    with pytest.raises(ValueError, match="out of range"):
        remove_blocks(m, [2])
    with pytest.raises(ValueError):
        lowest_influence_blocks([0.1, 0.2], 2)
    with pytest.raises(ValueError):
        layer_drop_schedule([1.0, float("nan")])
    with pytest.raises(ValueError):
        layer_drop_schedule([1.0, 2.0], n_max=2)
    assert len(m.model.layers) == 2


@pytest.mark.model
def test_smollm2_block_influence_and_removal(smollm2):
    import copy
    from lessonlib.data import calibration_batches
    model, tok = smollm2
    m = copy.deepcopy(model)
    calib = calibration_batches(tok, n=2, seqlen=64, seed=0)
    bi = block_influences(m, calib, device="cpu")
    assert len(bi) == 30 and all(0 <= b <= 2 for b in bi)
    low = lowest_influence_blocks(bi, 3)
    remove_blocks(m, low)
    assert m.config.num_hidden_layers == 27
    ids = tok("The convention opened with", return_tensors="pt").input_ids
    out = m.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] == ids.shape[1] + 4
