"""The generality matrix: every model-level operation on tiny random models of 15 architectures.

Each (family, operation) either works (finite logits, the weights really changed, ``generate`` after a
structural change, exact save/reload) or raises ``UnsupportedError`` naming the architecture and the
operation, exactly as ``lessonlib.layout.supports`` states.  The README's matrix is generated from the
same statement (``tools/generality_matrix.py``) and checked here.
"""
from __future__ import annotations

import copy
import functools
import os
import re

import pytest
import torch

from lessonlib.experts import unrolled_model_experts
from lessonlib.layout import OPERATIONS, UnsupportedError, supports
from lessonlib.models import TINY_FAMILIES, block_linears, find_block_list, get_weight, load_model, tiny_causal_lm
from lessonlib.quant import QuantScheme

SCHEME = QuantScheme(4, 32)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def calib() -> torch.Tensor:
    return torch.randint(0, 256, (2, 20), generator=torch.Generator().manual_seed(0))  # T > sliding window 8


@functools.lru_cache(maxsize=None)
def _built(fam: str, seed: int = 0) -> torch.nn.Module:
    """One seeded tiny model per family, built once; every use works on its own deep copy (``_tiny``)."""
    return tiny_causal_lm(fam, seed=seed)


def _tiny(fam: str, seed: int = 0) -> torch.nn.Module:
    """A fresh ``tiny_causal_lm(fam, seed)``: a deep copy of the built one, so no test sees another's changes;
    the global RNG is reseeded, so what follows does not depend on whether the cache was warm."""
    m = copy.deepcopy(_built(fam, seed))
    torch.manual_seed(seed)
    return m


def _logits(m, x):
    with torch.no_grad():
        out = m(x) if not hasattr(m, "generate") or m.config.model_type == "bert" else m(x, use_cache=False)
    return out.logits


def _linears(m):
    return {f"{i}.{n}": l for i, b in enumerate(find_block_list(m)[1]) for n, l in block_linears(b).items()}


def _weights(m) -> dict[str, torch.Tensor]:
    """Every block weight a compressor must reach, MoE experts' 3-D slices included."""
    with unrolled_model_experts(m):
        return {n: get_weight(l).clone() for n, l in _linears(m).items()}


def _finite_and_generates(m, x, structural: bool):
    assert torch.isfinite(_logits(m, x)).all()
    if structural and m.config.model_type != "bert":
        out = m.generate(x[:1, :6], max_new_tokens=3, min_new_tokens=3, do_sample=False, pad_token_id=0)
        assert out.shape == (1, 9)


def _reload_exact(m, x, tmp_path, via_load_model: bool = False):
    m.save_pretrained(tmp_path / "saved")
    if m.config.model_type == "bert" and not via_load_model:
        from lessonlib.arch.reload import load_pruned
        r = load_pruned(str(tmp_path / "saved"))
    else:
        r, tok = load_model(str(tmp_path / "saved"), device="cpu", tokenizer=None)
        assert tok is None
    torch.testing.assert_close(_logits(r, x), _logits(m, x), rtol=0, atol=0)


def _changed(before: dict, m, min_zero: float | None = None):
    after = _weights(m)
    assert set(after) == set(before)
    for n, w in before.items():
        new = after[n]
        assert not torch.equal(new, w), f"layer {n} was not changed"
        if min_zero is not None:
            assert float((new == 0).float().mean()) >= min_zero, n


def run_op(fam: str, op: str, x: torch.Tensor, tmp_path) -> None:
    m = _tiny(fam)
    before = _weights(m)
    if op == "load":
        _reload_exact(m, x, tmp_path, via_load_model=True)
    elif op == "calibrate":
        from lessonlib.calib import capture_calibration, run_block
        outs = []
        hooks = [b.register_forward_hook(lambda _m, _a, y: outs.append(y[0] if isinstance(y, tuple) else y))
                 for b in find_block_list(m)[1]]
        with torch.no_grad():
            m(x[:1], use_cache=False)
        for h in hooks:
            h.remove()
        hid, kws = capture_calibration(m, x, "cpu")
        for i, b in enumerate(find_block_list(m)[1]):
            with torch.no_grad():
                hid = run_block(b, hid, kws[i])
            torch.testing.assert_close(hid[0], outs[i], rtol=0, atol=1e-5)  # every block, its own mask/rotary
    elif op == "gptq":
        from lessonlib.quant.gptq import gptq_quantize_model
        gptq_quantize_model(m, x, SCHEME, device="cpu")
        _changed(before, m)
    elif op == "awq":
        from lessonlib.quant.awq import awq_quantize_model
        awq_quantize_model(m, x, SCHEME, n_grid=4, device="cpu")
        _changed(before, m)
    elif op == "awq_fold":
        from lessonlib.quant.awq_fold import awq_fold_model
        res = awq_fold_model(m, x, SCHEME, n_grid=4, device="cpu")
        assert len(res) == len(before)
    elif op == "rtn":
        from lessonlib.quant.rtn import rtn_quantize_model
        rtn_quantize_model(m, SCHEME)
        _changed(before, m)
    elif op == "pack":
        from lessonlib.quant import load_quantized, quantize_, save_quantized
        from lessonlib.quant.rtn import rtn_quantize_model
        inside = {id(l) for l in _linears(m).values()}  # the blocks' layers (BERT ties its MLM decoder)
        keep = lambda mod, n: id(mod) in inside  # noqa: E731
        rtn_quantize_model(m, SCHEME, pack=True, filter_fn=keep)
        ref = _logits(m, x)
        m = _tiny(fam)
        inside = {id(l) for l in _linears(m).values()}
        rtn_quantize_model(m, SCHEME, filter_fn=keep)
        quantize_(m, SCHEME, filter_fn=keep)
        torch.testing.assert_close(_logits(m, x), ref, rtol=1e-4, atol=1e-4)  # on-grid weights pack exactly
        save_quantized(m, str(tmp_path / "q.safetensors"))
        r = load_quantized(str(tmp_path / "q.safetensors"), _tiny(fam, seed=1))
        torch.testing.assert_close(_logits(r, x), _logits(m, x), rtol=0, atol=0)
    elif op in ("wanda", "sparsegpt"):
        from lessonlib.prune.sparsegpt import sparsegpt_prune_model
        from lessonlib.prune.wanda import wanda_prune_model
        (wanda_prune_model if op == "wanda" else sparsegpt_prune_model)(m, x, 0.5, device="cpu")
        _changed(before, m, min_zero=0.49)
    elif op == "magnitude":
        from lessonlib.prune.magnitude import magnitude_prune_model
        magnitude_prune_model(m, 0.5)
        _changed(before, m, min_zero=0.49)
    elif op == "svd":
        from lessonlib.lowrank.svd import lowrank_model
        rep = lowrank_model(m, energy=0.5)
        assert any(r["rank"] > 0 for r in rep.values())
        _finite_and_generates(m, x, True)
        _reload_exact(m, x, tmp_path)
        return
    elif op == "heads":
        from lessonlib.arch.heads import head_counts, prune_heads
        n_q, n_kv = head_counts(m)[0]
        r = n_q // n_kv
        prune_heads(m, {0: [g * r for g in range(n_kv)] if r > 1 else [0]})
        assert head_counts(m)[0][0] == n_q - (n_kv if r > 1 else 1)
        _finite_and_generates(m, x, True)
        _reload_exact(m, x, tmp_path)
        return
    elif op == "ffn":
        from lessonlib.arch.ffn import ffn_neuron_scores, keep_top_neurons, prune_ffn_neurons
        scores = ffn_neuron_scores(m, "weight")
        prune_ffn_neurons(m, [keep_top_neurons(s, 0.5) for s in scores])
        _finite_and_generates(m, x, True)
        _reload_exact(m, x, tmp_path)
        return
    elif op == "depth":
        from lessonlib.arch.depth import remove_blocks
        from lessonlib.layout import require
        require(m, "depth")
        remove_blocks(m, [0])
        assert len(find_block_list(m)[1]) == 1
        _finite_and_generates(m, x, True)
        _reload_exact(m, x, tmp_path)
        return
    elif op == "gqa":
        from lessonlib.arch.gqa import convert_to_gqa
        convert_to_gqa(m, 1)
        _finite_and_generates(m, x, True)
        _reload_exact(m, x, tmp_path)
        return
    elif op == "pipeline":
        from lessonlib.pipeline import compress, storage_report
        dense = storage_report(m, 2).total
        out, _ = compress(m, [{"stage": "prune", "method": "wanda", "sparsity": 0.5},
                              {"stage": "quantize", "method": "gptq", "bits": 4, "group_size": 32}],
                          calib=x, evaluate=False, inplace=True)
        assert storage_report(out, 2).total < dense  # the bytes really change
        for n, w in _weights(out).items():
            assert float((w == 0).float().mean()) >= 0.49, f"{n}: GPTQ refilled Wanda's zeros"
    else:  # pragma: no cover
        raise AssertionError(op)
    assert torch.isfinite(_logits(m, x)).all()


@pytest.mark.parametrize("op", OPERATIONS)
@pytest.mark.parametrize("fam", TINY_FAMILIES)
def test_operation_works_or_is_refused_clearly(fam, op, calib, tmp_path):
    torch.manual_seed(0)
    if supports(_tiny(fam), op):
        run_op(fam, op, calib, tmp_path)
    else:
        with pytest.raises(UnsupportedError) as e:
            run_op(fam, op, calib, tmp_path)
        msg = str(e.value)
        assert op in msg or "pruning" in msg or "calibrat" in msg, msg
        assert type(_built(fam)).__name__ in msg, msg


def test_readme_states_the_generated_matrix():
    from lessonlib.layout import support_matrix_markdown
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    m = re.search(r"<!-- generality-matrix:start -->\n(.*?)<!-- generality-matrix:end -->", readme, re.S)
    assert m, "README.md has no generality matrix section; run python tools/generality_matrix.py --write"
    assert m.group(1) == support_matrix_markdown(), "README matrix is stale; run python tools/generality_matrix.py --write"
