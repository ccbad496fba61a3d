"""KV-cache quantization: literal codes/scales, byte counts, and the cache really quantizes attention's inputs."""
import pytest
import torch

from lessonlib.models import tiny_causal_lm
from lessonlib.quant.kvcache import kv_bytes_per_token, kv_perplexity, quantize_kv


def test_literal_per_token_and_per_head_scales():
    x = torch.tensor([[[[7.5, -1.0], [0.75, 0.3]]]])  # (B=1, H=1, T=2, D=2)
    q, s = quantize_kv(x, 4, "token")  # 4-bit full grid: s = amax / 7.5
    torch.testing.assert_close(s.flatten(), torch.tensor([1.0, 0.1])) and q.dtype == torch.int8
    assert q.flatten().tolist() == [7, -1, 7, 3]  # the max sits at 7.5 steps: clamped to 7 (half a step off)
    qh, sh = quantize_kv(x, 8, "head")  # one scale for the head: 7.5 / 127.5
    assert sh.shape == (1, 1, 1, 1) and abs(float(sh) - 7.5 / 127.5) < 1e-7
    assert torch.allclose(qh.float() * sh, x, atol=float(sh) / 2 + 1e-7)


def test_bytes_per_token_smollm2_literal():
    # SmolLM2-135M: 30 layers, 3 KV heads of 64: fp16 2*30*3*64*2 = 23040 bytes; int4 per token: 32 B + 2 B scale
    assert kv_bytes_per_token(30, 3, 64) == 23040
    assert kv_bytes_per_token(30, 3, 64, bits=4) == 2 * 30 * 3 * (32 + 2)
    assert kv_bytes_per_token(30, 3, 64, bits=8, granularity="head") == 2 * 30 * 3 * 64
    with pytest.raises(ValueError, match="granularity"):
        kv_bytes_per_token(30, 3, 64, bits=4, granularity="channel")
    with pytest.raises(ValueError, match="bits"):
        quantize_kv(torch.zeros(1, 1, 1, 4), 5)


def test_quantized_cache_changes_attention_and_more_bits_hurt_less():
    m = tiny_causal_lm("llama", hidden=64, intermediate=128, kv_heads=2)
    wins = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(0))
    base = kv_perplexity(m, wins)
    p8, p4, p2 = (kv_perplexity(m, wins, b) for b in (8, 4, 2))
    assert p8 != base  # the cache really is quantized
    assert abs(p8 - base) < abs(p2 - base) and abs(p8 - base) / base < 1e-3
    assert abs(p4 - base) / base < 5e-2


def test_float_cache_is_the_float_models_perplexity():
    """Notebook 24 reads the float cache's row from evaluate.perplexity on the same windows instead of running it
    again: the two must be the same number."""
    from lessonlib.data import windows
    from lessonlib.evaluate import perplexity
    m = tiny_causal_lm("llama", hidden=64, intermediate=128, kv_heads=2)
    stream = torch.randint(0, 256, (100,), generator=torch.Generator().manual_seed(1))
    ref = perplexity(m, tokens=stream, seqlen=24, max_windows=3, progress=False)
    assert ref.windows == 3
    assert kv_perplexity(m, windows(stream, 24, 3)) == ref.ppl
