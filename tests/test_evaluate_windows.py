"""``evaluate.window_nlls``: the one per-window NLL loop (perplexity, mixed-precision sensitivities and the
quantized KV cache all score windows through it), checked against a direct per-window computation and
against the numbers the callers' own loops gave before they used it (#15: perplexity only in evaluate)."""
import math

import pytest
import torch

from lessonlib import evaluate as ev
from lessonlib.models import tiny_causal_lm
from lessonlib.quant.kvcache import kv_perplexity
from lessonlib.quant.mixed import layer_groups, measured_sensitivities


def _wins(n: int, t: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, t), generator=torch.Generator().manual_seed(seed))


def test_window_nlls_equals_a_direct_loop_and_perplexity():
    m = tiny_causal_lm("llama", seed=0)
    wins = _wins(3, 12, 1)
    with torch.no_grad():  # the slow reference: one forward per window, the mean NLL of its next tokens
        ref = torch.stack([ev.next_token_nll(m(w[None], use_cache=False).logits[0], w) for w in wins])
    got = ev.window_nlls(m, wins)
    assert got.shape == (3,) and got.dtype == torch.float32 and torch.equal(got, ref)
    torch.testing.assert_close(ev.window_nlls(m, wins, batch_size=2), got, rtol=1e-5, atol=1e-6)  # batched
    res = ev.perplexity(m, tokens=wins.reshape(-1), seqlen=12, max_windows=0, progress=False)
    assert res.window_nlls == [float(x) for x in got]
    assert res.ppl == ev.perplexity_from_window_nlls(got.double(), 12)


def test_window_nlls_checks_its_input():
    m = tiny_causal_lm("llama", seed=0)
    with pytest.raises(ValueError, match="T >= 2"):
        ev.window_nlls(m, _wins(2, 1, 0))
    with pytest.raises(ValueError, match="T >= 2"):
        ev.window_nlls(m, _wins(2, 4, 0).float())
    with pytest.raises(ValueError, match="exceed"):
        ev.window_nlls(m, _wins(1, 10_000, 0))
    with pytest.raises(TypeError, match="batch_size"):
        ev.window_nlls(m, _wins(2, 4, 0), batch_size=1.5)
    with pytest.raises(TypeError, match="forward_kwargs"):
        ev.window_nlls(m, _wins(2, 4, 0), forward_kwargs={"use_cache": False})
    with torch.no_grad():
        m.lm_head.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="window 0"):
        ev.window_nlls(m, _wins(2, 4, 0))


def test_callers_numbers_did_not_move():
    # literal values of the tiny model, computed with mixed.py's and kvcache.py's own loops before #15 moved
    # them onto window_nlls (bit-identical on the machine that recorded them; the tolerance is for other CPUs)
    m = tiny_causal_lm("llama", seed=0)
    wins = _wins(2, 12, 1)
    assert float(ev.window_nlls(m, wins).mean()) == pytest.approx(5.5294389724731445, rel=1e-5)
    sens = measured_sensitivities(m, wins, layer_groups(m, "block"), bits_options=(2, 4), group_size=32)
    assert sens["block.0"][2] == pytest.approx(-0.006716728210449219, abs=2e-4)
    assert sens["block.1"][2] == pytest.approx(-0.011971473693847656, abs=2e-4)
    assert sens["block.0"][4] == pytest.approx(0.0050296783447265625, abs=2e-4)
    k = tiny_causal_lm("llama", hidden=64, intermediate=128, kv_heads=2)
    kw = _wins(2, 24, 0)
    for bits, gran, want in ((None, "token", 257.8615983122585), (8, "token", 257.84887247414196),
                             (4, "token", 257.82465208280576), (2, "token", 257.8778292779728),
                             (4, "head", 257.1808194509362)):
        assert kv_perplexity(k, kw, bits, gran) == pytest.approx(want, rel=2e-5), (bits, gran)
    with pytest.raises(ValueError, match="bits"):
        kv_perplexity(k, kw, 5)


def test_token_nlls_literal_and_mean_is_next_token_nll():
    # logits favour token 1 then token 0 (log 3 vs 0): p = 3/4 and 1/4 for the two next tokens
    logits = torch.tensor([[math.log(3.0), 0.0], [0.0, math.log(3.0)], [0.0, 0.0]])  # (T=3, V=2)
    tokens = torch.tensor([1, 0, 1])  # next tokens 0 (p 3/4) and 1 (p 3/4)
    got = ev.token_nlls(logits, tokens)
    torch.testing.assert_close(got, torch.full((2,), -math.log(0.75)))
    torch.testing.assert_close(ev.token_nlls(logits[None], tokens[None]), got[None])
    g = torch.Generator().manual_seed(3)
    z, t = torch.randn(2, 7, 11, generator=g), torch.randint(0, 11, (2, 7), generator=g)
    torch.testing.assert_close(ev.token_nlls(z, t).mean(), ev.next_token_nll(z, t))
    with pytest.raises(ValueError, match="must agree"):
        ev.token_nlls(logits, tokens[:2])
