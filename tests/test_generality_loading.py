"""load_model for any folder: optional tokenizer, encoders refused, accelerate offload, evaluation when
dispatched; compression refuses a dispatched model instead of writing into weights its hooks own."""
from __future__ import annotations

import pytest
import torch

from lessonlib.evaluate import perplexity
from lessonlib.models import UnsupportedError, is_dispatched, load_model, tiny_causal_lm


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    m = tiny_causal_lm("llama", layers=4)
    path = tmp_path_factory.mktemp("tiny") / "llama"
    m.save_pretrained(path)
    return m, str(path)


def test_tokenizer_files_are_optional_when_asked(saved):
    m, path = saved
    for tok in (False, None):
        r, t = load_model(path, device="cpu", tokenizer=tok)
        assert t is None
    with pytest.raises(OSError, match="tokenizer=None"):
        load_model(path, device="cpu")
    with pytest.raises(ValueError, match="tokenizer="):
        load_model(path, device="cpu", tokenizer="yes")


def test_encoder_folder_is_a_clear_error(tmp_path):
    tiny_causal_lm("bert").save_pretrained(tmp_path / "bert")
    with pytest.raises(UnsupportedError, match="load_encoder"):
        load_model(str(tmp_path / "bert"), device="cpu", tokenizer=False)


def test_max_memory_offloads_and_perplexity_runs_on_the_dispatched_model(saved, tmp_path):
    m, path = saved
    x = torch.randint(0, 256, (1, 16), generator=torch.Generator().manual_seed(0))
    r, _ = load_model(path, device="cpu", tokenizer=False, max_memory={"cpu": 120_000},
                      offload_folder=str(tmp_path / "offload"))
    assert is_dispatched(r) and "disk" in set(r.hf_device_map.values())  # weights really left memory
    assert any(p.device.type == "meta" for p in r.parameters())
    with torch.no_grad():
        torch.testing.assert_close(r(x, use_cache=False).logits, m(x, use_cache=False).logits, rtol=0, atol=1e-6)
    toks = torch.randint(0, 256, (160,), generator=torch.Generator().manual_seed(1))
    kw = dict(tokens=toks, seqlen=32, progress=False)
    assert perplexity(r, **kw).ppl == pytest.approx(perplexity(m, **kw).ppl, rel=1e-5)
    from lessonlib.quant.gptq import gptq_quantize_model
    with pytest.raises(UnsupportedError, match="device='cpu'"):
        gptq_quantize_model(r, toks[:64].view(2, 32), device="cpu")
