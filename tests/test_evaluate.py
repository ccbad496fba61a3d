import math
import types

import pytest
import torch
from torch import nn

from lessonlib import evaluate as ev
from lessonlib.models import tiny_causal_lm


def test_bytes_at_precision_literals():
    assert ev.bytes_at_precision(70_000_000_000, 16) == 140e9
    assert ev.bytes_at_precision(70_000_000_000, 4) == 35e9
    # 100 weights at 4 bits in groups of 64: 2 groups (ceil), each a 16-bit scale and a 4-bit zero
    assert ev.bytes_at_precision(100, 4, group_size=64, scale_bits=16, zero_bits=4) == (400 + 2 * 20) / 8
    with pytest.raises(ValueError, match="bits=0"):
        ev.bytes_at_precision(10, 0)


def test_kv_cache_bytes():
    assert ev.kv_cache_bytes_per_token(80, 8, 128, 2) == 2 * 80 * 8 * 128 * 2
    with pytest.raises(ValueError, match="n_kv_heads=0"):
        ev.kv_cache_bytes_per_token(2, 0, 64)


def test_next_token_nll_shifts_by_one():
    V = 5
    tokens = torch.tensor([1, 3, 2])
    logits = torch.full((3, V), -1e4)
    logits[0, 3] = 0.0  # position 0 predicts token 3 with certainty
    logits[1, 2] = 0.0  # position 1 predicts token 2
    assert float(ev.next_token_nll(logits, tokens)) == pytest.approx(0.0, abs=1e-6)
    uniform = torch.zeros(3, V)
    assert float(ev.next_token_nll(uniform, tokens)) == pytest.approx(math.log(V))


def test_perplexity_from_window_nlls():
    assert ev.perplexity_from_window_nlls(torch.tensor([1.0, 3.0]), 8) == pytest.approx(math.exp(2.0))
    with pytest.raises(ValueError, match="non-empty"):
        ev.perplexity_from_window_nlls(torch.tensor([]), 8)


def test_perplexity_matches_a_direct_computation():
    m = tiny_causal_lm("llama", vocab=64)
    toks = torch.randint(0, 64, (100,), generator=torch.Generator().manual_seed(0))
    r = ev.perplexity(m, tokens=toks, seqlen=16, max_windows=0, progress=False)
    assert r.windows == 6 and r.tokens == 96
    with torch.no_grad():
        nll = [torch.nn.functional.cross_entropy(m(toks[i * 16:(i + 1) * 16][None]).logits[0, :-1], toks[i * 16 + 1:(i + 1) * 16])
               for i in range(6)]
    assert r.ppl == pytest.approx(math.exp(sum(float(x) for x in nll) / 6), rel=1e-5)
    assert 40 < r.ppl < 90  # a random model is close to uniform over 64 tokens


def test_perplexity_rejects_seqlen_above_model_max():
    m = tiny_causal_lm("llama")  # max 512 positions
    with pytest.raises(ValueError, match="seqlen=1024 exceeds.*512"):
        ev.perplexity(m, tokens=torch.zeros(4096, dtype=torch.long), seqlen=1024)


def test_param_counts_components_and_ties():
    m = tiny_causal_lm("llama", hidden=64, intermediate=128, layers=2, vocab=256)
    c = ev.param_counts(m)
    assert c["embeddings"] == 256 * 64 and c["lm_head"] == 0  # tied: counted once
    assert c["attention"] == 2 * 4 * 64 * 64
    assert c["ffn"] == 2 * 3 * 64 * 128
    assert c["norms"] == 2 * 2 * 64 + 64
    assert c["total"] == sum(p.numel() for p in m.parameters())


def test_model_bytes_counts_shared_storage_once():
    lin = nn.Linear(10, 10, bias=False)
    seq = nn.Sequential(lin, lin)
    assert ev.model_bytes(seq) == 10 * 10 * 4
    assert ev.model_bytes(nn.Linear(10, 10).half()) == (100 + 10) * 2


def test_sparse_format_bytes():
    assert ev.csr_bytes(nnz=10, rows=4, value_bytes=2, index_bytes=4) == 10 * 6 + 5 * 4
    # 16-bit column indices with 32-bit row pointers: 10 * (0 + 2) + 5 * 4
    assert ev.csr_bytes(nnz=10, rows=4, value_bytes=0, index_bytes=2, pointer_bytes=4) == 20 + 20
    assert ev.bitmask_bytes(numel=16, nnz=4, value_bytes=2) == 2 + 8
    with pytest.raises(ValueError):
        ev.bitmask_bytes(4, 5)


def test_measure_latency_times_only_the_repeats_and_takes_their_median(monkeypatch):
    """On a fake clock (no wall-time threshold, so it holds on a busy machine): each call of ``fn`` advances it
    by the next duration; the two warm-up calls (100 s each) must not be timed."""
    clock, durations, calls = [0.0], iter([100.0, 100.0, 3.0, 1.0, 4.0, 1.0, 5.0]), []

    def fn():
        calls.append(1)
        clock[0] += next(durations)

    monkeypatch.setattr(ev, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    r = ev.measure_latency(fn, warmup=2, repeats=5)
    assert len(calls) == 7 and r.repeats == 5
    # sorted timed calls 1, 1, 3, 4, 5: median 3; inclusive deciles at positions 0.4 and 3.6 -> 1 and 4.6
    assert (r.median_s, r.p10_s) == (3.0, 1.0) and r.p90_s == pytest.approx(4.6)
    monkeypatch.undo()
    assert ev.measure_latency(lambda: sum(range(1000)), repeats=3).median_s > 0  # the real clock


def test_accuracy():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    assert ev.accuracy(logits, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)


def test_bigram_baseline_beats_uniform_on_repetitive_text():
    train = torch.tensor([1, 2, 3] * 50)
    test = torch.tensor([1, 2, 3] * 5)
    ppl = ev.bigram_perplexity(train, test, vocab_size=10, lam=0.9)
    assert 1.0 < ppl < 2.0
    with pytest.raises(ValueError, match="lam=1"):
        ev.bigram_perplexity(train, test, 10, lam=1)


@pytest.mark.model
def test_dense_perplexity_of_smollm2_on_speeches(smollm2):
    model, tok = smollm2
    r = ev.perplexity(model, tok, seqlen=256, max_windows=4, progress=False)
    assert 15 < r.ppl < 40  # about 24 in 512-token windows
    assert r.tokens == 1024
