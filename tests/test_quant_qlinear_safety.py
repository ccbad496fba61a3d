"""quantize_ / load_quantized are all or nothing and refuse files that do not match what they claim;
packing a GPTQ model keeps GPTQ's own grid (logits bit for bit)."""
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lessonlib.models import tiny_causal_lm
from lessonlib.pipeline import compress, pack_quantized
from lessonlib.quant.affine import QuantScheme, quantize
from lessonlib.quant.qlinear import QuantLinear, load_quantized, quant_linears, quantize_, save_quantized


def _snapshot(m):
    return {k: v.clone() for k, v in m.state_dict().items()}, [type(x).__name__ for x in m.modules()]


def _same(m, snap):
    sd, types = snap
    now = m.state_dict()
    return types == [type(x).__name__ for x in m.modules()] and sd.keys() == now.keys() and all(
        torch.equal(sd[k], now[k]) for k in sd)


def test_quantize_failure_in_the_last_layer_leaves_the_model_unchanged():
    m = tiny_causal_lm("llama", layers=2)
    names = [n for n, mod in m.named_modules() if type(mod).__name__ == "Linear" and n != "lm_head"]
    snap = _snapshot(m)
    bad = quantize(torch.randn(3, 8), QuantScheme(4, 8))  # codes of the wrong shape for the last layer
    with pytest.raises(ValueError, match=names[-1].replace(".", r"\.") + ".*unchanged"):
        quantize_(m, QuantScheme(4, 32), qparams={names[-1]: bad})
    assert _same(m, snap) and not quant_linears(m)
    # a group size that divides the attention width (64) but not the FFN width (128 / 48 no): ffn fails
    m2 = tiny_causal_lm("llama", layers=2, intermediate=96)
    snap2 = _snapshot(m2)
    with pytest.raises(ValueError, match="does not divide"):
        quantize_(m2, QuantScheme(4, 64))  # 64 divides 64 (q/k/v/o, gate/up inputs) but not 96 (down_proj)
    assert _same(m2, snap2)


def _saved(tmp_path, scheme=QuantScheme(3, 32, False, int_zero=True), **kw):
    m = tiny_causal_lm("llama", seed=1, **kw)
    quantize_(m, scheme)
    path = str(tmp_path / "q.safetensors")
    save_quantized(m, path)
    return m, path


def _rewrite(path, out, meta_fn=None, tensor_fn=None):
    with safe_open(path, framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if meta_fn:
        layout = json.loads(meta["lessonlib.quant"])
        meta_fn(layout)
        meta["lessonlib.quant"] = json.dumps(layout)
    if tensor_fn:
        tensor_fn(tensors)
    save_file(tensors, out, metadata=meta)
    return out


L = "model.layers.1.mlp.down_proj"  # the last quantized layer


@pytest.mark.parametrize("what, meta_fn, tensor_fn, words", [
    ("scale dtype int8", lambda d: d[L].update(scale_dtype="int8"), None, "scale_dtype='int8'"),
    ("bits as a string", lambda d: d[L].update(bits="3"), None, "bits='3'"),
    ("bits that do not match the codes", lambda d: d[L].update(bits=4), None, "qweight"),
    ("scales stored in float16", None, lambda t: t.update({L + ".scales": t[L + ".scales"].half()}), "F16"),
    ("NaN scale", None, lambda t: t[L + ".scales"].view(-1).__setitem__(0, float("nan")), "non-finite"),
    ("zero point out of range", None, lambda t: t[L + ".zeros"].view(-1).__setitem__(0, 9.0), "0..7"),
    ("metadata not JSON", "raw", None, "JSON"),
])
def test_tampered_checkpoints_are_refused_with_the_path(tmp_path, what, meta_fn, tensor_fn, words):
    _, path = _saved(tmp_path)
    bad = str(tmp_path / "bad.safetensors")
    if meta_fn == "raw":
        with safe_open(path, framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        save_file(tensors, bad, metadata={"lessonlib.quant": "{not json"})
    else:
        _rewrite(path, bad, meta_fn, tensor_fn)
    skel = tiny_causal_lm("llama", seed=7)
    snap = _snapshot(skel)
    with pytest.raises(ValueError, match=words) as e:
        load_quantized(bad, skel)
    assert bad in str(e.value), what
    assert _same(skel, snap), what  # nothing was swapped or loaded


def test_codes_out_of_range_are_refused(tmp_path):
    # 100 3-bit codes take 37.5 bytes: the last byte's high nibble must be 0
    _, path = _saved(tmp_path, QuantScheme(3, -1, True), intermediate=100)
    bad = _rewrite(path, str(tmp_path / "bad.safetensors"),
                   tensor_fn=lambda t: t[L + ".qweight"].__setitem__((0, -1), 255))
    skel = tiny_causal_lm("llama", seed=7, intermediate=100)
    snap = _snapshot(skel)
    with pytest.raises(ValueError, match="out of range") as e:
        load_quantized(bad, skel)
    assert bad in str(e.value) and _same(skel, snap)


def test_untampered_checkpoint_still_round_trips(tmp_path):
    m, path = _saved(tmp_path, QuantScheme(4, 32, True, restricted=True))
    loaded = load_quantized(path, tiny_causal_lm("llama", seed=7))
    x = torch.randint(0, 256, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, m(x).logits)
    assert all(q.scheme.restricted for q in quant_linears(loaded).values())


@pytest.mark.parametrize("sym", [False, True])
def test_packing_after_gptq_stores_gptqs_codes(sym):
    g = torch.Generator().manual_seed(0)
    calib, x = torch.randint(0, 256, (8, 32), generator=g), torch.randint(0, 256, (2, 16), generator=g)
    m = tiny_causal_lm(layers=2, hidden=64, heads=4, kv_heads=2, intermediate=128, vocab=256)
    out, _ = compress(m, [{"stage": "quantize", "method": "gptq", "bits": 4, "group_size": 32, "sym": sym}],
                      calib=calib, evaluate=False)
    with torch.no_grad():
        before = out(x).logits
        assert pack_quantized(out, scale_dtype=torch.float32) == 14
        assert torch.equal(out(x).logits, before)  # the packed model is the GPTQ model, bit for bit
    q = quant_linears(out)["model.layers.0.mlp.up_proj"]
    assert isinstance(q, QuantLinear) and int(q.codes().min()) >= q.scheme.qmin


def test_given_grid_must_fit_the_weight():
    lin = torch.nn.Linear(32, 4)
    qw = quantize(lin.weight.data, QuantScheme(4, 16))
    with pytest.raises(ValueError, match="not on the given grid"):  # the float weight is not on its own grid
        QuantLinear.from_linear(lin, QuantScheme(4, 16), scales=qw.scales, zeros=qw.zeros)
    lin.weight.data = qw.dequantize()
    q = QuantLinear.from_linear(lin, QuantScheme(4, 16), scales=qw.scales, zeros=qw.zeros)
    assert torch.equal(q.codes(), qw.codes)
