import pytest
import torch
from transformers import DynamicCache

from lessonlib.exit.classifier import ExitClassifier, classifier_confidence, consistency_data, train_exit_classifier
from lessonlib.exit.decide import early_exit_generate, exit_statistics
from lessonlib.exit.heads import ExitHeads, block_outputs
from lessonlib.models import tiny_causal_lm


@pytest.fixture(scope="module")
def sharp_lm():
    m = tiny_causal_lm("llama", layers=4, seed=0)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "norm" not in name:
                p.mul_(4)
    return m


def test_classifier_literal_values():
    clf = ExitClassifier(2, 4)
    with torch.no_grad():
        clf.w[1] = torch.tensor([1.0, 0.0, 0.0, 0.0])
        clf.b[1] = -0.5
    h = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 3.0, 0.0, 0.0]])  # rms = 1 and 1.5
    # normalised: [2, 0, 0, 0] and [0, 2, 0, 0] -> logits 2 - 0.5 and -0.5
    assert torch.allclose(clf(1, h), torch.sigmoid(torch.tensor([1.5, -0.5])), atol=1e-6)
    assert torch.allclose(clf(0, h), torch.full((2,), 0.5))  # zero-initialised: undecided
    with pytest.raises(ValueError, match="exit index"):
        clf(2, h)
    with pytest.raises(ValueError, match="n_exits"):
        ExitClassifier(0, 4)


def test_consistency_labels_match_a_direct_argmax(sharp_lm):
    heads = ExitHeads(sharp_lm)
    x = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(1))
    feats, agree = consistency_data(sharp_lm, heads, x)
    assert feats.shape == (3, 18, 64) and agree.shape == (3, 18) and agree.dtype == torch.bool
    with torch.no_grad():
        hs = block_outputs(sharp_lm, x[1:2])
        final = sharp_lm(x[1:2]).logits[0].argmax(-1)
        for i in range(3):
            assert torch.equal(agree[i, 9:], heads.logits(i, hs[i])[0].argmax(-1) == final)
    assert torch.allclose(feats.pow(2).mean(-1), torch.ones(3, 18), atol=1e-4)  # RMS-normalised


def test_training_separates_a_learnable_rule():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 400, 8, generator=g)
    feats = feats * torch.rsqrt(feats.pow(2).mean(-1, keepdim=True))
    agree = torch.stack([feats[0, :, 0] > 0.2, feats[1, :, 3] < 0])  # exit 1 follows another direction
    clf, losses = train_exit_classifier(feats, agree, steps=150, lr=0.1)
    assert losses[-1] < 0.5 * losses[0]
    with torch.no_grad():
        acc = [((clf(i, feats[i]) >= 0.5) == agree[i]).float().mean() for i in range(2)]
    assert min(acc) > 0.95
    with pytest.raises(ValueError, match="feats"):
        train_exit_classifier(feats, agree[:, :10])


def _reference(model, heads, clf, x, n, thr):
    """Slow reference: every block runs in full; a token exits at the first early block whose classifier
    confidence passes ``thr`` and takes that exit head's argmax; skipped blocks get K/V from the exited state."""
    cache = DynamicCache(config=model.config)
    toks = [model(x, past_key_values=cache, use_cache=True).logits[:, -1].argmax(-1, keepdim=True)]
    used = [4]
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
            if i == 3 or clf(i, h[:, -1]) >= thr:
                exited, nxt = h, heads.logits(i, h)[:, -1].argmax(-1, keepdim=True)
                used.append(i + 1)
        toks.append(nxt)
    return torch.cat([x] + toks, 1), used


@torch.no_grad()
def test_generation_with_the_classifier_matches_the_reference_and_skips_heads(sharp_lm):
    heads = ExitHeads(sharp_lm)
    clf = ExitClassifier(3, 64)
    with torch.no_grad():
        clf.w.copy_(torch.randn(3, 64, generator=torch.Generator().manual_seed(3)))
    x = torch.randint(0, 256, (1, 5), generator=torch.Generator().manual_seed(2))
    calls = []
    hooks = [hd.register_forward_hook(lambda *a: calls.append(1)) for hd in heads.heads]
    try:
        g = early_exit_generate(sharp_lm, heads, x, max_new_tokens=10, threshold=0.6, classifier=clf)
    finally:
        for hk in hooks:
            hk.remove()
    ref_tokens, ref_used = _reference(sharp_lm, heads, clf, x, 10, 0.6)
    assert g.blocks_used == ref_used and torch.equal(g.tokens, ref_tokens)
    assert len(set(g.blocks_used[1:])) > 1  # a mix of depths
    assert len(calls) == sum(1 for u in g.blocks_used[1:] if u < 4)  # one early head per exiting token, no more


def test_classifier_confidence_is_shaped_like_exit_statistics(sharp_lm):
    heads = ExitHeads(sharp_lm)
    clf = ExitClassifier(3, 64)
    with torch.no_grad():
        clf.w.copy_(torch.randn(3, 64, generator=torch.Generator().manual_seed(5)))
    x = torch.randint(0, 256, (2, 7), generator=torch.Generator().manual_seed(4))
    conf = classifier_confidence(sharp_lm, clf, x)
    conf_mp, _ = exit_statistics(sharp_lm, heads, x)
    assert conf.shape == conf_mp.shape == (4, 2, 6) and torch.equal(conf[3], torch.ones(2, 6))
    with torch.no_grad():
        hs = block_outputs(sharp_lm, x[1:2])
        assert torch.allclose(conf[1, 1], clf(1, hs[1][0, :-1]), atol=1e-6)
    with pytest.raises(ValueError, match="windows"):
        classifier_confidence(sharp_lm, clf, x[:, :1])
