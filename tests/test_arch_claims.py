"""Helpers of the structured-pruning track's notebooks and ledger: MoE routing, recovery fine-tune,
encoder head pruning, the structured-vs-masked comparison (all on tiny models)."""
import math

import pytest
import torch
import torch.nn.functional as F

from lessonlib.arch.encoder_task import (global_lowest_heads, head_pruning_curve, pack_labelled,
                                         packed_classification_loss)
from lessonlib.arch.ffn import ffn_neuron_scores, keep_top_neurons, prune_ffn_neurons
from lessonlib.arch.heads import head_counts
from lessonlib.arch.moe import (MoEFFN, expert_load, load_balance_loss, load_imbalance, moe_param_counts,
                                top_k_route, train_toy_moe)
from lessonlib.arch.recover import recovery_finetune, trainable_names
from lessonlib.claims.exp_arch import ffn_weights, interleaved_latency, mask_ffn_unstructured
from lessonlib.models import tiny_causal_lm


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: a second thread only adds spin-waiting on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------- MoE
def test_top_k_route_literal():
    logits = torch.tensor([[0.0, math.log(3.0), -5.0], [2.0, 2.0, 1.0]])
    w, e = top_k_route(logits, 2)
    assert e.tolist() == [[1, 0], [0, 1]]  # largest first; the tie goes to the lower index
    torch.testing.assert_close(w, torch.tensor([[0.75, 0.25], [0.5, 0.5]]))
    w1, e1 = top_k_route(logits, 1)
    assert e1.tolist() == [[1], [0]] and torch.equal(w1, torch.ones(2, 1))
    for bad in (0, 4, 1.5):
        with pytest.raises(ValueError, match="k="):
            top_k_route(logits, bad)


def test_expert_load_and_balance_loss():
    e = torch.tensor([[0, 1], [0, 2], [0, 1], [3, 1]])  # 8 assignments: expert 0 x3, 1 x3, 2 x1, 3 x1
    torch.testing.assert_close(expert_load(e, 4), torch.tensor([3, 3, 1, 1]) / 8.0)
    assert load_imbalance(torch.tensor([3, 3, 1, 1]) / 8.0) == pytest.approx(1.5)  # 3/8 over 1/4
    # uniform probabilities and uniform load: alpha * E * sum (1/E)(1/E) = alpha
    even = torch.tensor([[0], [1], [2], [3]])
    assert float(load_balance_loss(torch.zeros(4, 4), even, alpha=0.3)) == pytest.approx(0.3)
    # everything on expert 0 with p_0 -> 1 gives the maximum, E
    assert float(load_balance_loss(torch.tensor([[50.0, 0, 0, 0]] * 4), torch.zeros(4, 1, dtype=torch.long))) \
        == pytest.approx(4.0, rel=1e-6)
    with pytest.raises(ValueError, match="0..3"):
        expert_load(torch.tensor([[4]]), 4)


def test_moe_with_all_experts_equals_the_dense_gated_mixture():
    layer = MoEFFN(d=6, d_ff=5, n_experts=3, k=3, seed=1)
    x = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = layer(x)
        h = x.reshape(-1, 6)
        p = torch.softmax(layer.router(h), -1)  # (T, E): with k = E the gate is the full softmax
        ref = sum(p[:, e:e + 1] * (F.gelu(h @ layer.w_in[e].T) @ layer.w_out[e].T) for e in range(3))
    torch.testing.assert_close(y, ref.reshape(2, 4, 6), rtol=1e-5, atol=1e-6)


def test_moe_top1_routes_each_token_through_one_expert():
    layer = MoEFFN(d=4, d_ff=3, n_experts=4, k=1, seed=0)
    x = torch.randn(7, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = layer(x)
        for t in range(7):
            e = int(layer.last_experts[t, 0])
            want = F.gelu(x[t] @ layer.w_in[e].T) @ layer.w_out[e].T  # gate weight is 1 for k = 1
            torch.testing.assert_close(y[t], want, rtol=1e-5, atol=1e-6)


def test_moe_param_counts_literal():
    c = moe_param_counts(MoEFFN(d=8, d_ff=16, n_experts=4, k=2))
    assert c == {"per_expert": 256, "router": 32, "total": 32 + 4 * 256, "active": 32 + 2 * 256}
    with pytest.raises(ValueError):
        MoEFFN(8, 16, 4, k=5)


def test_balance_loss_evens_out_the_toy_router():
    free = train_toy_moe(steps=30, tokens=128, balance_coef=0.0, seed=0)
    balanced = train_toy_moe(steps=30, tokens=128, balance_coef=0.1, seed=0)
    assert sum(free.load) == pytest.approx(1.0) and len(free.load) == 8
    assert free.imbalance > 2 and balanced.imbalance < 1.5  # measured: 2.95 and 1.22
    assert free.loss[-1] < free.loss[0]  # the experts do learn the teacher
    again = train_toy_moe(steps=30, tokens=128, balance_coef=0.0, seed=0)
    assert again.loss == free.loss  # seeded


# ----------------------------------------------------------------------------- recovery fine-tune
def test_trainable_names():
    m = tiny_causal_lm("llama", seed=0)
    blocks = trainable_names(m, "blocks")
    assert "model.embed_tokens.weight" not in blocks and "model.norm.weight" in blocks
    assert any(".mlp.down_proj." in n for n in blocks)
    norms = trainable_names(m, "norms")
    assert norms and all("norm" in n for n in norms)
    assert set(trainable_names(m, "all")) == {n for n, _ in m.named_parameters()}
    with pytest.raises(ValueError, match="trainable set"):
        trainable_names(m, "lora")


def test_recovery_finetune_lowers_the_loss_and_is_reproducible():
    batches = torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(0))
    runs = []
    for _ in range(2):
        m = tiny_causal_lm("llama", seed=0)
        emb = m.model.embed_tokens.weight.detach().clone()
        r = recovery_finetune(m, batches, steps=15, batch_size=4, lr=1e-2)
        assert r.losses[-1] < 0.8 * r.losses[0] and r.steps == 15 and r.batch_size == 4
        assert torch.equal(m.model.embed_tokens.weight, emb)  # "blocks" leaves the embedding alone
        assert all(p.requires_grad for p in m.parameters()) and not m.training
        runs.append(m.model.layers[0].mlp.up_proj.weight.detach().clone())
    assert torch.equal(runs[0], runs[1])
    with pytest.raises(ValueError, match="steps"):
        recovery_finetune(tiny_causal_lm(), batches, steps=0)
    with pytest.raises(ValueError, match="batches"):
        recovery_finetune(tiny_causal_lm(), torch.zeros(5, dtype=torch.long), steps=1)


# ----------------------------------------------------------------------------- encoder head pruning
def test_global_lowest_heads_literal():
    scores = [torch.tensor([0.9, 0.1, 0.5]), torch.tensor([0.2, 0.3, 0.05])]
    assert global_lowest_heads(scores, 0.0) == {}
    assert global_lowest_heads(scores, 2 / 6) == {0: [1], 1: [2]}  # 0.05 and 0.1
    # 4 of 6: 0.05, 0.1, 0.2 (layer 1), then 0.3 would empty layer 1, so 0.5 goes next
    assert global_lowest_heads(scores, 4 / 6) == {0: [1, 2], 1: [0, 2]}
    with pytest.raises(ValueError, match="fraction"):
        global_lowest_heads(scores, 5 / 6)  # would leave a layer without heads


class _CharTokenizer:
    """A stand-in tokenizer: [CLS]=1, one id per character, pad=0."""
    pad_token_id = 0

    def __call__(self, texts, padding=True, truncation=True, max_length=16, return_tensors="pt"):
        from transformers import BatchEncoding
        rows = [[1] + [2 + ord(c) % 40 for c in t][: max_length - 1] for t in texts]
        n = max(map(len, rows))
        ids = torch.tensor([r + [0] * (n - len(r)) for r in rows])
        return BatchEncoding({"input_ids": ids, "attention_mask": (ids != 0).long()})


def _tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, num_labels=2, max_position_embeddings=64)
    return BertForSequenceClassification(cfg).eval()


def test_packed_loss_matches_the_plain_loss_and_pruning_curve():
    model, tok = _tiny_bert(), _CharTokenizer()
    texts, labels = ["good film", "bad", "a dull long movie", "fine"], torch.tensor([1, 0, 0, 1])
    packed = pack_labelled(tok, texts, labels, max_length=16)
    assert packed.shape == (4, 17) and packed[:, -1].tolist() == [1, 0, 0, 1]
    enc = tok(texts, max_length=16)
    with torch.no_grad():
        want = model(**enc, labels=labels).loss
        torch.testing.assert_close(packed_classification_loss(model, packed), want)
    scores = [torch.tensor([0.4, 0.3, 0.2, 0.1]), torch.tensor([0.1, 0.2, 0.3, 0.4])]
    curve = head_pruning_curve(model, tok, scores, [0.0, 0.25, 0.5], texts, labels, max_length=16)
    assert [c["removed"] for c in curve] == [0, 2, 4] and all(c["total"] == 8 for c in curve)
    assert curve[0]["params"] > curve[1]["params"] > curve[2]["params"]
    assert head_counts(model) == [(4, 4), (4, 4)]  # the original is untouched
    with pytest.raises(ValueError, match="same, non-zero"):
        pack_labelled(tok, texts, labels[:2])


# ----------------------------------------------------------------------------- structured vs masked (C01)
def test_mask_has_as_many_nonzeros_as_the_shrunk_ffn():
    dense = tiny_causal_lm("llama", seed=0)
    shrunk = tiny_causal_lm("llama", seed=0)
    prune_ffn_neurons(shrunk, [keep_top_neurons(s, 0.5) for s in ffn_neuron_scores(shrunk, "weight")])
    masked = tiny_causal_lm("llama", seed=0)
    nnz = mask_ffn_unstructured(masked, 0.5)
    assert ffn_weights(dense) == 2 * 3 * 64 * 128 and nnz == ffn_weights(shrunk) == ffn_weights(dense) // 2
    w = masked.model.layers[0].mlp.gate_proj.weight
    assert w.shape == (128, 64) and int((w == 0).sum()) == 64 * 64  # same shape, half zeros


def test_interleaved_latency():
    calls = []
    out = interleaved_latency({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1)
    assert set(out) == {"a", "b"} and all(v >= 0 for v in out.values())
    assert calls == ["a", "b"] + ["a", "b"] * 3  # warm-up first, then alternating rounds
    with pytest.raises(ValueError):
        interleaved_latency({}, repeats=1)
    busy = interleaved_latency({"spin": lambda: sum(i * i for i in range(200_000)), "idle": lambda: None},
                               repeats=2, clock="cpu")
    assert busy["spin"] > busy["idle"] >= 0  # CPU seconds of real work against none
    with pytest.raises(ValueError, match="clock"):
        interleaved_latency({"a": lambda: None}, repeats=1, clock="gpu")
