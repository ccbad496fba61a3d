"""The roofline helpers: literal intensities and bounds, bytes per decoding step on tiny models."""
import pytest
import torch

from lessonlib.quant.affine import QuantScheme
from lessonlib.quant.kernels import to_kernels
from lessonlib.quant.qlinear import quantize_
from lessonlib.roofline import (attainable, decode_bytes_per_token, linear_intensity, matmul_rate,
                                predict_decode_seconds, stream_bandwidth, threads)
from lessonlib.tiny import tiny_causal_lm


def test_attainable_is_the_lower_of_the_two_roofs():
    assert attainable(0.5, 100.0, 10.0) == 5.0  # bandwidth-bound
    assert attainable(50.0, 100.0, 10.0) == 100.0  # compute-bound
    t = attainable(torch.tensor([1.0, 10.0, 20.0]), 100.0, 10.0)
    assert torch.equal(t, torch.tensor([10.0, 100.0, 100.0]))
    with pytest.raises(ValueError, match="peak_gflops"):
        attainable(1.0, 0.0, 10.0)


def test_linear_intensity_literal():
    # 2 x 3 layer, 1 token, fp32 weights and acts: 12 FLOPs over 6*4 + (3+2)*4 = 44 bytes
    assert linear_intensity(1, 2, 3, 4.0) == pytest.approx(12 / 44)
    # large layer: intensity ~ 2 T / b_w (activations negligible)
    assert linear_intensity(1, 4096, 4096, 0.5) == pytest.approx(4.0, rel=1e-2)
    assert linear_intensity(512, 4096, 4096, 4.0) > 100 * linear_intensity(1, 4096, 4096, 4.0)
    with pytest.raises(TypeError):
        linear_intensity(1.5, 2, 3, 4.0)


def test_decode_bytes_tied_and_untied():
    m = tiny_causal_lm("llama", hidden=64, layers=2, heads=4, intermediate=128, vocab=256)  # tied head
    every = sum(p.numel() * 4 for p in m.parameters()) + sum(b.numel() * b.element_size() for b in m.buffers())
    assert decode_bytes_per_token(m) == every  # the tied table is read whole by the head, counted once
    u = tiny_causal_lm("qwen2", hidden=64, layers=2, heads=4, intermediate=128, vocab=256)  # untied
    every_u = sum(p.numel() * 4 for p in u.parameters()) + sum(b.numel() * b.element_size() for b in u.buffers())
    assert decode_bytes_per_token(u) == every_u - 256 * 64 * 4 + 64 * 4  # one embedding row gathered
    # the KV cache of 10 tokens: 2 (k, v) x layers x kv_heads x head_dim x 4 bytes x 10
    assert decode_bytes_per_token(m, context=10) - decode_bytes_per_token(m) == 2 * 2 * 4 * 16 * 4 * 10
    with pytest.raises(ValueError, match="context"):
        decode_bytes_per_token(m, context=-1)


def test_decode_bytes_fall_with_packed_kernels():
    m = tiny_causal_lm("llama", hidden=64, layers=2, heads=4, intermediate=128, vocab=256)
    before = decode_bytes_per_token(m)
    quantize_(m, QuantScheme(4, 32, True))
    to_kernels(m)
    after = decode_bytes_per_token(m)
    assert after < before  # int4 codes + bf16 scales replace fp32 block weights


def test_predict_and_measure_are_positive():
    assert predict_decode_seconds(2e9, 4.0) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        predict_decode_seconds(0, 4.0)
    assert stream_bandwidth("copy", mib=4, repeats=1, n_threads=1) > 0
    assert matmul_rate(64, torch.bfloat16, repeats=1, n_threads=1) > 0
    with pytest.raises(ValueError, match="kind"):
        stream_bandwidth("scale", mib=1)
    old = torch.get_num_threads()
    with threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == old


def test_packed_model_copies_and_decodes():
    from lessonlib.quant.kernels import KernelLinear
    from lessonlib.roofline import decode_seconds, packed_model, prefill_seconds

    m = tiny_causal_lm("llama", hidden=64, layers=2, heads=4, intermediate=128, vocab=256)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    p = packed_model(m, QuantScheme(4, 32, True), QuantScheme(8, -1, True))
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())  # the original is untouched
    assert isinstance(p.lm_head, KernelLinear) and p.lm_head.kind == "int8"
    assert isinstance(p.model.layers[0].mlp.up_proj, KernelLinear) and p.model.layers[0].mlp.up_proj.kind == "int4"
    prompt = torch.tensor([[1, 2, 3]])
    assert decode_seconds(p, prompt, 2) > 0 and prefill_seconds(p, prompt) > 0
    with pytest.raises(ValueError, match="prompt"):
        decode_seconds(p, torch.tensor([1, 2, 3]), 2)
