"""GGUF export round trip: transformers loads the file (gguf_file=) and gives the course model's logits."""
import pytest
import torch

from lessonlib.export import GGUF_SCHEMES, gguf_grid, quantize_for_gguf, write_gguf
from lessonlib.models import tiny_causal_lm
from lessonlib.quant.affine import fake_quant
from lessonlib.quant.qlinear import quant_linears


def test_q8_0_grid_literal():
    # one block: max|w| = 1.27 -> d = 0.01 (float16: 0.01000213623046875); codes round(w / d)
    w = torch.zeros(1, 32)
    w[0, :4] = torch.tensor([1.27, -0.5, 0.004, -1.27])
    codes, s, z = gguf_grid(w, "Q8_0")
    assert float(s[0, 0]) == float(torch.tensor(0.01).half()) and float(z.abs().max()) == 0.0
    assert codes[0, :4].tolist() == [127, -50, 0, -127]


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_1"])
def test_gguf_round_trip_through_transformers(tmp_path, qtype):
    from transformers import AutoModelForCausalLM

    m = tiny_causal_lm("llama", hidden=64, intermediate=128, kv_heads=2)
    ref_w = m.model.layers[0].mlp.up_proj.weight.detach().clone()
    quantize_for_gguf(m, qtype)
    q = quant_linears(m)["model.layers.0.mlp.up_proj"]
    # the course's grid up to float16 scales: at most half a step plus the scale's rounding from fake_quant
    step = float(q.scales.max())
    assert float((q.dequantize_weight() - fake_quant(ref_w, GGUF_SCHEMES[qtype])).abs().max()) <= step
    write_gguf(m, str(tmp_path / "m.gguf"), qtype)
    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="m.gguf", dtype=torch.float32)
    x = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = m(x).logits, hf(x).logits
    if qtype == "Q8_0":
        assert torch.equal(a, b)  # d q with the same float16 d: the same weights, bit for bit
    else:  # d q + m in the file, (q - z) d here with z = -m / d: equal up to float32 rounding
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_gguf_refuses_what_it_cannot_write(tmp_path):
    with pytest.raises(ValueError, match="Q4_0"):
        quantize_for_gguf(tiny_causal_lm("llama"), "Q4_0")
    with pytest.raises(ValueError, match="quantize_for_gguf"):
        write_gguf(tiny_causal_lm("llama"), str(tmp_path / "x.gguf"), "Q8_0")
    with pytest.raises(ValueError, match="llama"):
        write_gguf(tiny_causal_lm("gpt2"), str(tmp_path / "x.gguf"), "Q8_0")
