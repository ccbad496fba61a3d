import pytest
import torch

from lessonlib.exit.decide import exit_statistics, threshold_sweep
from lessonlib.exit.heads import ExitHeads, block_outputs, train_exit_heads
from lessonlib.models import tiny_causal_lm


def test_heads_structure_and_logit_lens():
    m = tiny_causal_lm("llama", layers=3)
    heads = ExitHeads(m, adapter=True)
    assert len(heads.heads) == 2 and heads.n_blocks == 3
    n_own = sum(p.numel() for p in heads.parameters())
    assert n_own == 2 * (64 + 64 * 64)  # norm weight + adapter per head; the shared LM head is not owned
    x = torch.randint(0, 256, (2, 7), generator=torch.Generator().manual_seed(0))
    hs = block_outputs(m, x)
    assert len(hs) == 3 and all(h.shape == (2, 7, 64) for h in hs)
    with torch.no_grad():
        # zero-initialised adapter: an untrained head is the logit lens lm_head(norm(h))
        assert torch.allclose(heads.logits(0, hs[0]), m.lm_head(m.model.norm(hs[0])), atol=1e-6)
        assert torch.allclose(heads.logits(2, hs[2]), m(x).logits, atol=1e-5)
    with pytest.raises(ValueError, match="exit index"):
        heads.logits(3, hs[0])


@pytest.mark.parametrize("objective", ["kd", "ce"])
def test_training_heads_improves_early_exits_and_keeps_backbone(objective):
    m = tiny_causal_lm("llama", layers=3, seed=0)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "norm" not in name:
                p.mul_(3)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    heads = ExitHeads(m, adapter=True)
    data = torch.randint(0, 256, (8, 16), generator=torch.Generator().manual_seed(0))
    conf0, nll0 = exit_statistics(m, heads, data[:4])
    losses = train_exit_heads(m, heads, data, steps=15, batch_size=4, lr=1e-2, objective=objective)
    assert len(losses) == 15 and losses[-1] < losses[0]
    conf1, nll1 = exit_statistics(m, heads, data[:4])
    if objective == "ce":  # trained on these tokens: the early exits' NLL drops
        assert nll1[0].mean() < nll0[0].mean()
    else:  # the early exits move towards the final layer's distribution
        p0 = threshold_sweep(conf0, nll0, [0.0])[0].ppl
        p1 = threshold_sweep(conf1, nll1, [0.0])[0].ppl
        full = threshold_sweep(conf1, nll1, [2.0])[0].ppl
        assert abs(p1 - full) < abs(p0 - full)
    assert torch.equal(nll1[-1], nll0[-1])  # the final exit is the untouched model
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())
    with pytest.raises(ValueError, match="objective"):
        train_exit_heads(m, heads, data, steps=1, objective="mse")


def test_training_heads_freezes_the_shared_lm_head_and_restores_flags():
    m = tiny_causal_lm("llama", layers=3, seed=1)
    m.requires_grad_(True)
    m.model.layers[1].requires_grad_(False)  # a caller's own mix of flags must come back unchanged
    flags = {n: p.requires_grad for n, p in m.named_parameters()}
    head_w = m.lm_head.weight.detach().clone()
    heads = ExitHeads(m, adapter=True)
    data = torch.randint(0, 256, (4, 10), generator=torch.Generator().manual_seed(1))
    train_exit_heads(m, heads, data, steps=3, batch_size=2, lr=1e-2, objective="ce")
    # no gradient reached the LM head (or any backbone weight): it was frozen, not merely left out of AdamW
    assert m.lm_head.weight.grad is None and all(p.grad is None for p in m.parameters())
    assert torch.equal(m.lm_head.weight, head_w)
    assert {n: p.requires_grad for n, p in m.named_parameters()} == flags
    assert all(p.grad is not None for p in heads.parameters())  # the heads themselves did train


def test_vocab_columns_are_the_full_logits_restricted():
    m = tiny_causal_lm("llama", layers=3, seed=2)
    heads = ExitHeads(m, adapter=True)
    h = torch.randn(2, 5, 64, generator=torch.Generator().manual_seed(0))
    vocab = torch.tensor([3, 17, 200])
    with torch.no_grad():
        for i in (0, 2):
            assert torch.allclose(heads.logits(i, h, vocab), heads.logits(i, h)[..., vocab], atol=1e-6)


@pytest.mark.parametrize("objective", ["kd", "ce"])
def test_sampled_vocabulary_loss_equals_the_full_loss_when_it_covers_everything(objective):
    """vocab_topk = V keeps every token: the same losses and the same trained heads as the full softmax."""
    data = torch.randint(0, 256, (4, 12), generator=torch.Generator().manual_seed(3))
    out = []
    for k in (None, 256):
        m = tiny_causal_lm("llama", layers=3, seed=4)
        heads = ExitHeads(m, adapter=True)
        losses = train_exit_heads(m, heads, data, steps=3, batch_size=2, lr=1e-2, objective=objective, vocab_topk=k)
        out.append((losses, [p.detach().clone() for p in heads.parameters()]))
    assert out[0][0] == pytest.approx(out[1][0], rel=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(out[0][1], out[1][1]))


def test_sampled_vocabulary_trains_and_is_checked():
    m = tiny_causal_lm("llama", layers=3, seed=5)
    heads = ExitHeads(m, adapter=True)
    data = torch.randint(0, 256, (8, 16), generator=torch.Generator().manual_seed(5))
    losses = train_exit_heads(m, heads, data, steps=12, batch_size=4, lr=1e-2, vocab_topk=8)
    assert losses[-1] < losses[0]
    for bad in (0, 257, 2.5):
        with pytest.raises(ValueError, match="vocab_topk"):
            train_exit_heads(m, heads, data, steps=1, vocab_topk=bad)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_block_outputs_are_the_full_models_block_outputs(arch):
    """block_outputs runs only the decoder stack (no LM head); each block's output is exactly what a forward
    of the whole causal LM produces there."""
    from lessonlib.models import decoder_blocks
    m = tiny_causal_lm(arch)
    x = torch.randint(0, 200, (2, 16), generator=torch.Generator().manual_seed(0))
    seen = []
    hooks = [b.register_forward_hook(lambda _m, _i, o: seen.append(o[0] if isinstance(o, tuple) else o))
             for b in decoder_blocks(m)]
    with torch.no_grad():
        m(input_ids=x, use_cache=False)
    for h in hooks:
        h.remove()
    with torch.no_grad():
        hs = block_outputs(m, x)
    assert len(hs) == len(seen) == len(decoder_blocks(m))
    assert all(torch.equal(a, b) for a, b in zip(hs, seen))
