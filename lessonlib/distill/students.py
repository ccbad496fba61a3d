"""Building a student from a teacher: fewer blocks (DistilBERT-style init) or a narrower fresh configuration.

Sanh et al. (2019), "DistilBERT", section 3 "Student initialization": the student has the teacher's
architecture with half the layers and is initialised "from the teacher by taking one layer out of two".
``student_by_layers`` generalises this to every k-th block (or any explicit list): the embeddings, the kept
blocks, the final norm and the head are copied; the block list physically shrinks, the config's layer count
is updated and each attention module's ``layer_idx`` (the KV-cache slot) is renumbered.  Works for
LLaMA-style decoders (``model.layers``), OPT, GPT-2 and BERT encoders (``encoder.layer``).

``student_from_config`` builds a fresh, seeded student of the same family with a smaller configuration
(fewer layers, narrower hidden / FFN, fewer heads), as in TinyBERT's general distillation.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..models import find_block_list, replace_submodule

__all__ = ["select_layers", "student_by_layers", "student_from_config"]

# per family: config attribute names of (layers, hidden, intermediate, heads)
_SIZE_ATTRS = {
    "gpt2": ("n_layer", "n_embd", "n_inner", "n_head"),
    "opt": ("num_hidden_layers", "hidden_size", "ffn_dim", "num_attention_heads"),
}
_DEFAULT_ATTRS = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads")


def select_layers(n_teacher: int, every: int = 2, offset: int = 0) -> list[int]:
    """Block indices ``offset, offset + every, ...`` below ``n_teacher`` (DistilBERT: every=2)."""
    if isinstance(every, bool) or not isinstance(every, int) or every <= 0:
        raise ValueError(f"every={every!r} must be a positive int (keep every k-th block)")
    if not 0 <= offset < n_teacher:
        raise ValueError(f"offset={offset} must be in [0, {n_teacher}) for a teacher with {n_teacher} blocks")
    return list(range(offset, n_teacher, every))


def _layer_attr(cfg) -> str:
    return _SIZE_ATTRS.get(getattr(cfg, "model_type", ""), _DEFAULT_ATTRS)[0]


def student_by_layers(teacher: nn.Module, every: int = 2, layers: list[int] | None = None,
                      offset: int = 0) -> nn.Module:
    """A copy of ``teacher`` keeping only blocks ``layers`` (default: every ``every``-th from ``offset``).

    The teacher is not modified.  Tied embeddings stay tied (the whole model is deep-copied, then the
    block list is cut).  Raises ValueError for an empty, unsorted, duplicated or out-of-range selection.
    """
    _, blocks = find_block_list(teacher)
    n = len(blocks)
    if layers is None:
        layers = select_layers(n, every, offset)
    layers = [int(i) for i in layers]
    if not layers:
        raise ValueError("layers=[] keeps no block; a student needs at least one")
    if any(not 0 <= i < n for i in layers):
        raise ValueError(f"layers={layers} has indices outside 0..{n - 1} (the teacher has {n} blocks)")
    if sorted(set(layers)) != layers:
        raise ValueError(f"layers={layers} must be strictly increasing (no repeats: a student is not deeper)")
    student = copy.deepcopy(teacher)
    blocks_name, sblocks = find_block_list(student)
    kept = nn.ModuleList([sblocks[i] for i in layers])
    for new_idx, block in enumerate(kept):
        for mod in block.modules():
            if hasattr(mod, "layer_idx"):
                mod.layer_idx = new_idx  # the KV-cache slot of this attention
    replace_submodule(student, blocks_name, kept)
    cfg = student.config
    setattr(cfg, _layer_attr(cfg), len(layers))
    if getattr(cfg, "layer_types", None) is not None and len(cfg.layer_types) == n:
        cfg.layer_types = [cfg.layer_types[i] for i in layers]
    return student.eval()


def student_from_config(teacher: nn.Module, layers: int | None = None, hidden: int | None = None,
                        intermediate: int | None = None, heads: int | None = None, kv_heads: int | None = None,
                        seed: int = 0) -> nn.Module:
    """A freshly initialised (seeded) student of the teacher's class with a smaller configuration.

    Unset sizes are the teacher's.  The vocabulary is always the teacher's (distillation compares outputs).
    A student deeper, wider or with more heads than the teacher raises ValueError.
    """
    cfg = copy.deepcopy(teacher.config)
    names = _SIZE_ATTRS.get(getattr(cfg, "model_type", ""), _DEFAULT_ATTRS)
    req = dict(zip(names, (layers, hidden, intermediate, heads)))
    for name, value in req.items():
        if value is None:
            continue
        t_val = getattr(cfg, name, None)
        if t_val is None:  # e.g. GPT-2's n_inner=None means 4 * n_embd
            t_val = 4 * getattr(cfg, names[1])
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name}={value!r} must be a positive int")
        if value > t_val:
            raise ValueError(f"{name}={value} is larger than the teacher's {t_val}: a student must not be "
                             "deeper or wider than its teacher")
        setattr(cfg, name, value)
    h, nh = getattr(cfg, names[1]), getattr(cfg, names[3])
    if h % nh:
        raise ValueError(f"hidden size {h} is not divisible by {nh} attention heads")
    if kv_heads is not None or hasattr(cfg, "num_key_value_heads"):
        kvh = kv_heads if kv_heads is not None else min(getattr(cfg, "num_key_value_heads", nh) or nh, nh)
        if kvh <= 0 or nh % kvh:
            raise ValueError(f"kv_heads={kvh} must divide the {nh} attention heads")
        cfg.num_key_value_heads = kvh
    if hasattr(cfg, "head_dim") and getattr(teacher.config, "head_dim", None) == \
            getattr(teacher.config, names[1]) // getattr(teacher.config, names[3]):
        cfg.head_dim = h // nh  # keep head_dim consistent with the new width
    if getattr(cfg, "layer_types", None) is not None:
        cfg.layer_types = cfg.layer_types[: getattr(cfg, names[0])]
    torch.manual_seed(seed)
    return type(teacher)(cfg).eval()
