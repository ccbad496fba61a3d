"""Module plumbing lives once in ``lessonlib.models`` (issue 15): replace a submodule by dotted name, detect a
linear-like layer (GPT-2 ``Conv1D`` included), list linears by full name.  The last test guards the "once"."""
import ast
import pathlib

import pytest
import torch
from torch import nn

from lessonlib.lowrank.lora import LoRALinear, apply_lora
from lessonlib.models import (decoder_blocks, get_weight, is_conv1d, is_linear_like, linear_modules,
                              replace_submodule, tiny_causal_lm)
from lessonlib.prune.movement_task import MaskedLinear

ROOT = pathlib.Path(__file__).resolve().parents[1] / "lessonlib"


def test_replace_submodule_through_a_module_list_returns_the_old_module():
    m = tiny_causal_lm("llama", layers=2)
    name = "model.layers.1.mlp.up_proj"
    old = m.get_submodule(name)
    new = nn.Linear(old.in_features, old.out_features, bias=False)
    assert replace_submodule(m, name, new) is old
    assert m.get_submodule(name) is new and decoder_blocks(m)[1].mlp.up_proj is new


@pytest.mark.parametrize("name", ["model.layers.0.mlp.up_projj", "model.layerz.0.mlp", "model.layers.9.mlp", ""])
def test_replace_submodule_refuses_a_path_that_is_not_there(name):
    # the old copies (setattr on the parent) silently added a new, unused attribute for a typo in the leaf
    m = tiny_causal_lm("llama", layers=2)
    before = dict(m.named_modules())
    with pytest.raises(ValueError, match="submodule" if name else "non-empty"):
        replace_submodule(m, name, nn.Identity())
    assert dict(m.named_modules()).keys() == before.keys()


def test_linear_like_includes_gpt2_conv1d_and_nothing_else():
    m = tiny_causal_lm("gpt2", layers=1)
    lins = linear_modules(m)
    assert lins and all(is_conv1d(x) for x in lins.values())  # GPT-2's block linears are all Conv1D
    assert all(name.startswith("transformer.h.0.") for name in lins)  # fully qualified names
    assert is_linear_like(nn.Linear(2, 3)) and not is_linear_like(nn.Embedding(4, 2))
    assert not is_linear_like(nn.LayerNorm(3)) and not is_conv1d(nn.Linear(2, 3))


def test_lora_wraps_a_conv1d_and_starts_as_the_identity_change():
    m = tiny_causal_lm("gpt2", layers=1).eval()
    x = torch.randint(0, m.config.vocab_size, (1, 8))
    with torch.no_grad():
        ref = m(x).logits
    names = apply_lora(m, targets=("c_fc",), r=2)
    assert names == ["transformer.h.0.mlp.c_fc"]
    lora = m.get_submodule(names[0])
    assert isinstance(lora, LoRALinear) and is_conv1d(lora.base)
    assert (lora.in_features, lora.out_features) == tuple(get_weight(lora.base).shape)[::-1]
    with torch.no_grad():
        assert torch.allclose(m(x).logits, ref, atol=1e-6)  # B starts at zero


def test_masked_linear_wrapping_is_reversible_by_full_name():
    from lessonlib.prune.movement_task import mask_encoder_linears
    from transformers import BertConfig, BertForSequenceClassification
    cfg = BertConfig(vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
    model = BertForSequenceClassification(cfg)
    wrapped = mask_encoder_linears(model, "magnitude")
    enc = model.bert.encoder
    assert set(wrapped) == {n for n, x in enc.named_modules() if isinstance(x, MaskedLinear)}
    assert all(enc.get_submodule(n) is w for n, w in wrapped.items())


def _rpartition_setattr(tree: ast.AST) -> list[int]:
    """Lines of functions that split a dotted name with ``rpartition(".")`` and then ``setattr`` on the parent."""
    hits = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        calls = [c for c in ast.walk(fn) if isinstance(c, ast.Call)]
        split = any(isinstance(c.func, ast.Attribute) and c.func.attr == "rpartition" for c in calls)
        sets = any(isinstance(c.func, ast.Name) and c.func.id == "setattr" for c in calls)
        if split and sets:
            hits.append(fn.lineno)
    return hits


def test_no_module_but_models_replaces_submodules_by_hand():
    offenders = []
    for path in ROOT.rglob("*.py"):
        if path.name == "models.py" and path.parent == ROOT:
            continue
        for line in _rpartition_setattr(ast.parse(path.read_text())):
            offenders.append(f"{path.relative_to(ROOT.parent)}:{line}")
    assert offenders == [], "use lessonlib.models.replace_submodule: " + ", ".join(offenders)


def test_conv1d_detection_is_defined_once():
    defs = []
    for path in ROOT.rglob("*.py"):
        src = path.read_text()
        if '== "Conv1D"' in src:
            defs.append(str(path.relative_to(ROOT.parent)))
    assert defs == ["lessonlib/models.py"]
