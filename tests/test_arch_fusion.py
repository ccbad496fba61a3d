"""Eager attention vs SDPA vs torch.compile (lessonlib.arch.fusion): same outputs, measured latency."""
import pytest
import torch

from lessonlib.arch.fusion import attention_impl, compare_kernels, set_attention_impl
from lessonlib.models import tiny_causal_lm


def test_eager_sdpa_compile_agree():
    m = tiny_causal_lm(seed=1, kv_heads=2)
    x = torch.randint(0, 256, (2, 16))
    impl = m.config._attn_implementation
    r = compare_kernels(m, x, compile_backend="eager", repeats=2)
    assert r["reference"] == "eager" and r["max_abs_diff"]["eager"] == 0.0
    assert set(r["max_abs_diff"]) == {"eager", "sdpa", "sdpa+compile[eager]"}
    assert all(0 <= d < 1e-4 for d in r["max_abs_diff"].values())
    assert all(v["median_s"] > 0 and v["repeats"] == 2 for v in r["latency"].values())
    assert m.config._attn_implementation == impl


def test_switch_and_context_manager():
    m = tiny_causal_lm(seed=2)
    x = torch.randint(0, 256, (1, 8))
    with attention_impl(m, "eager"):
        assert m.config._attn_implementation == "eager"
        e = m(x).logits
    assert m.config._attn_implementation == "sdpa"
    torch.testing.assert_close(m(x).logits, e, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="not supported"):
        set_attention_impl(m, "flash_attention_9")
    with pytest.raises(ValueError):
        compare_kernels(m, x[0])
