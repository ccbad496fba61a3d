import math

import pytest
import torch
from transformers import DynamicCache

from lessonlib.exit.decide import (confidence, early_exit_generate, exit_decision, exit_statistics,
                                   threshold_sweep)
from lessonlib.exit.heads import ExitHeads, block_outputs
from lessonlib.models import tiny_causal_lm


@pytest.fixture(scope="module")
def sharp_lm():
    m = tiny_causal_lm("llama", layers=4, seed=0)
    with torch.no_grad():  # larger weights give less uniform, more varied predictions than the random init
        for name, p in m.named_parameters():
            if "norm" not in name:
                p.mul_(4)
    return m


def test_confidence_values():
    z = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])  # p = [0.75, 0.25] and uniform
    assert torch.allclose(confidence(z, "maxprob"), torch.tensor([0.75, 0.5]))
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert torch.allclose(confidence(z, "entropy"), torch.tensor([1 - h / math.log(2), 0.0]), atol=1e-6)
    with pytest.raises(ValueError, match="metric"):
        confidence(z, "margin")


def test_exit_decision_literal():
    conf = torch.tensor([[0.2, 0.95, 0.5, 0.1],
                         [0.9, 0.99, 0.4, 0.2],
                         [0.1, 0.1, 0.1, 0.3]])  # (L=3, N=4)
    assert exit_decision(conf, 0.9).tolist() == [1, 0, 2, 2]
    assert exit_decision(conf, 0.45).tolist() == [1, 0, 0, 2]
    assert exit_decision(conf, 0.0).tolist() == [0, 0, 0, 0]
    assert exit_decision(conf, 1.5).tolist() == [2, 2, 2, 2]  # never early: the last block
    assert conf[-1, 0] == 0.1  # the input is not modified
    with pytest.raises(ValueError, match="threshold"):
        exit_decision(conf, float("nan"))
    with pytest.raises(ValueError, match="conf"):
        exit_decision(conf[0], 0.5)


def test_threshold_sweep_endpoints(sharp_lm):
    heads = ExitHeads(sharp_lm)
    w = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(0))
    conf, nll = exit_statistics(sharp_lm, heads, w)
    assert conf.shape == nll.shape == (4, 2, 11)
    # the last exit's NLL is the model's own next-token NLL
    logits = sharp_lm(w).logits[:, :-1]
    ref = -torch.log_softmax(logits, -1).gather(-1, w[:, 1:, None]).squeeze(-1)
    assert torch.allclose(nll[-1], ref, atol=1e-4)
    pts = threshold_sweep(conf, nll, [2.0, 0.0])
    full, first = pts
    # one softmax serves both outputs: each exit's (conf, nll) equal confidence() and token_nlls() of its logits
    from lessonlib.evaluate import token_nlls
    for metric in ("maxprob", "entropy"):
        c_m, n_m, top = exit_statistics(sharp_lm, heads, w, metric=metric, with_top1=True)
        for i, h in enumerate(block_outputs(sharp_lm, w[1:2])):
            z = heads.logits(i, h)[0]  # (T, V)
            assert torch.equal(n_m[i, 1], token_nlls(z, w[1]))
            assert torch.equal(c_m[i, 1], confidence(z[:-1], metric))
            assert torch.equal(top[i, 1], z[:-1].argmax(-1))
    assert full.mean_blocks == 4 and full.exit_histogram == [0, 0, 0, 22]
    assert full.ppl == pytest.approx(math.exp(ref.mean().item()), rel=1e-4)
    assert first.mean_blocks == 1 and first.speedup_bound == 4 and first.exit_histogram == [22, 0, 0, 0]
    assert first.ppl == pytest.approx(math.exp(nll[0].mean().item()), rel=1e-4)
    mid = threshold_sweep(conf, nll, [float(conf[:-1].median())])[0]
    assert 1 < mid.mean_blocks < 4


def test_generation_never_exit_equals_full_greedy(sharp_lm):
    heads = ExitHeads(sharp_lm)
    x = torch.randint(0, 256, (1, 6), generator=torch.Generator().manual_seed(0))
    ref = sharp_lm.generate(x, max_new_tokens=12, min_new_tokens=12, do_sample=False)
    for metric in ("maxprob", "entropy"):
        g = early_exit_generate(sharp_lm, heads, x, max_new_tokens=12, threshold=1.01, metric=metric)
        assert torch.equal(g.tokens, ref)
        assert g.blocks_used == [4] * 12
    # its cache equals the full model's cache of the same sequence (all but the last token)
    full = DynamicCache(config=sharp_lm.config)
    sharp_lm(ref[:, :-1], past_key_values=full, use_cache=True)
    for j in range(4):
        assert torch.allclose(g.cache.layers[j].keys, full.layers[j].keys, atol=1e-4)
        assert torch.allclose(g.cache.layers[j].values, full.layers[j].values, atol=1e-4)


def _reference_generate(model, heads, x, n, threshold, first_exit=0):
    """Slow reference: a token exiting at block i writes the K/V of each later block by running that whole
    block on the exited hidden state (the block's own code computes K/V from its input; output discarded)."""
    cache = DynamicCache(config=model.config)
    logits = model(x, past_key_values=cache, use_cache=True).logits[:, -1]
    toks, used = [logits.argmax(-1, keepdim=True)], [4]
    for _ in range(n - 1):
        pos = torch.tensor([[cache.get_seq_length()]])
        h = model.model.embed_tokens(toks[-1])
        pe = model.model.rotary_emb(h, position_ids=pos)
        exited = None
        for i, block in enumerate(model.model.layers):
            if exited is not None:
                block(exited, position_ids=pos, past_key_values=cache, use_cache=True, position_embeddings=pe)
                continue
            h = block(h, position_ids=pos, past_key_values=cache, use_cache=True, position_embeddings=pe)
            logits = heads.logits(i, h)[:, -1]
            if i == 3 or (i >= first_exit and torch.softmax(logits, -1).max() >= threshold):
                exited, nxt = h, logits.argmax(-1, keepdim=True)
                used.append(i + 1)
        toks.append(nxt)
    return torch.cat([x] + toks, 1), used, cache


@pytest.mark.parametrize("thr", [0.02, 0.05])
@torch.no_grad()
def test_early_exit_generation_matches_state_propagation_reference(sharp_lm, thr):
    heads = ExitHeads(sharp_lm)
    x = torch.randint(0, 256, (1, 5), generator=torch.Generator().manual_seed(2))
    g = early_exit_generate(sharp_lm, heads, x, max_new_tokens=10, threshold=thr)
    assert len(set(g.blocks_used[1:])) > 1  # a mix: tokens exit at different depths (full ones read propagated K/V)
    ref_tokens, ref_used, ref_cache = _reference_generate(sharp_lm, heads, x, 10, thr)
    assert g.blocks_used == ref_used
    assert torch.equal(g.tokens, ref_tokens)
    for j in range(4):
        assert torch.allclose(g.cache.layers[j].keys, ref_cache.layers[j].keys, atol=1e-5)
        assert torch.allclose(g.cache.layers[j].values, ref_cache.layers[j].values, atol=1e-5)

@torch.no_grad()
def test_first_exit_checks_only_later_blocks(sharp_lm):
    heads = ExitHeads(sharp_lm)
    x = torch.randint(0, 256, (1, 5), generator=torch.Generator().manual_seed(2))
    g = early_exit_generate(sharp_lm, heads, x, max_new_tokens=10, threshold=0.0, first_exit=2)
    assert g.blocks_used == [4] + [3] * 9  # every token would exit at block 0; checks start at block 2
    ref_tokens, ref_used, _ = _reference_generate(sharp_lm, heads, x, 10, 0.05, first_exit=1)
    g = early_exit_generate(sharp_lm, heads, x, max_new_tokens=10, threshold=0.05, first_exit=1)
    assert g.blocks_used == ref_used and torch.equal(g.tokens, ref_tokens) and min(ref_used[1:]) >= 2
    calls = []
    hook = heads.heads[0].register_forward_hook(lambda *a: calls.append(1))
    try:  # a threshold above 1 can never be met: no head runs at all
        early_exit_generate(sharp_lm, heads, x, max_new_tokens=4, threshold=1.01)
    finally:
        hook.remove()
    assert calls == []
    for bad in (-1, 4, 1.5):
        with pytest.raises(ValueError, match="first_exit"):
            early_exit_generate(sharp_lm, heads, x, max_new_tokens=2, first_exit=bad)


def test_sweep_reports_the_first_exit_block():
    conf = torch.tensor([[0.2, 0.95, 0.5], [0.9, 0.99, 0.4], [0.1, 0.1, 0.1]])[:, None, :]  # (L=3, W=1, 3)
    nll = torch.ones(3, 1, 3)
    assert [p.first_exit for p in threshold_sweep(conf, nll, [0.9, 0.45, 2.0])] == [0, 0, 2]
    assert threshold_sweep(conf[1:], nll[1:], [0.95])[0].first_exit == 0  # block 0 of that 2-exit stack
    assert threshold_sweep(conf, nll, [0.97])[0].first_exit == 1


def test_low_threshold_uses_fewer_blocks(sharp_lm):
    heads = ExitHeads(sharp_lm)
    x = torch.randint(0, 256, (1, 5), generator=torch.Generator().manual_seed(2))
    low = early_exit_generate(sharp_lm, heads, x, max_new_tokens=10, threshold=0.0)
    assert low.blocks_used == [4] + [1] * 9 and low.mean_blocks < 4
    assert low.cache.get_seq_length() == 5 + 9  # skipped blocks still have K/V for every token


def test_generation_errors(sharp_lm):
    heads = ExitHeads(sharp_lm)
    with pytest.raises(ValueError, match="batch 1"):
        early_exit_generate(sharp_lm, heads, torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="max_new_tokens"):
        early_exit_generate(sharp_lm, heads, torch.zeros(1, 3, dtype=torch.long), max_new_tokens=0)
    with pytest.raises(ValueError, match="LLaMA-style"):
        ExitHeads(tiny_causal_lm("gpt2"))
