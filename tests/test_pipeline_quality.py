"""``pipeline.core.quality`` is one ``evaluate.perplexity`` pass (issue 15): same numbers, and its checks."""
import pytest
import torch

from lessonlib.evaluate import next_token_nll, perplexity
from lessonlib.models import tiny_causal_lm
from lessonlib.pipeline.core import quality


def _setup():
    torch.manual_seed(0)
    m = tiny_causal_lm("llama", layers=2).eval()
    toks = torch.randint(0, m.config.vocab_size, (400,), generator=torch.Generator().manual_seed(1))
    return m, toks


def test_quality_is_perplexity_with_top1_from_the_same_windows():
    m, toks = _setup()
    q = quality(m, toks, 32, 5)
    r = perplexity(m, tokens=toks, seqlen=32, max_windows=5, progress=False)
    assert q["ppl"] == r.ppl and r.top1 is None
    wins = toks[: 5 * 32].view(5, 32)  # (W, T): the first five disjoint windows
    with torch.no_grad():
        logits = m(wins).logits  # (W, T, V)
    hits = (logits[:, :-1].argmax(-1) == wins[:, 1:]).sum().item()
    assert q["accuracy"] == hits / (5 * 31)
    nll = torch.stack([next_token_nll(logits[i], wins[i]) for i in range(5)]).double().mean()
    assert q["ppl"] == pytest.approx(float(torch.exp(nll)), rel=1e-5)


def test_quality_refuses_what_perplexity_refuses():
    m, toks = _setup()
    with torch.no_grad():
        m.lm_head.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="not finite"):  # the old loop returned ppl=nan
        quality(m, toks, 32, 2)
    with pytest.raises(ValueError, match="seqlen=100000"):
        quality(_setup()[0], toks, 100_000, 1)
