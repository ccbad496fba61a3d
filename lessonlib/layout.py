"""Block layouts read off a model's module structure, and the one statement of what each operation supports.

No table keyed by ``model_type``: ``lessonlib.models.find_block_list`` finds the blocks (the longest outermost
``nn.ModuleList`` of identical blocks), and ``block_layout`` finds, inside one block,

* the attention container (the outermost submodule whose class name says ``Attention``) and its
  projections: the linear-like layers reading the block's width C are the input projections (three separate
  ones are Q, K, V, told apart by the usual name stems; a single one is a *fused* QKV), the remaining one
  writing C is the output projection;
* the MLP: the block's other linear-like layers; those reading C are the input projections (two are gate
  and up, one that is twice as wide as the output projection's input is a fused ``gate_up``), the one
  reading the intermediate width is the output projection;
* the experts of a mixture-of-experts block: its parameters with 3 or more dimensions.

Fused projections are split by rules that follow how the attention module reshapes them: contiguous
``[Q; K; V]`` (Phi-3 ``qkv_proj``, GPT-2 ``c_attn``, Falcon multi-query), interleaved per head ``(n, 3, d)``
(GPT-NeoX and classic Falcon ``query_key_value``), grouped ``(n_kv, r + 2, d)`` (Falcon's new decoder
architecture), and ``[gate; up]`` for a fused ``gate_up``.  Every operation sees per-projection weights
through ``Proj`` (row indices into the holding layer; ``weight()`` reads them, ``set()`` writes them back).

``supports(model, op)`` is the capability statement every module consults; ``require(model, op)`` raises
``UnsupportedError`` naming the architecture, the operation and what is missing.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import nn

from .models import LayoutError, UnsupportedError, find_block_list, get_weight, is_linear_like, model_family, set_weight

__all__ = ["UnsupportedError", "Proj", "BlockLayout", "block_layout", "model_layouts", "supports", "require",
           "OPERATIONS", "untouched_share", "support_matrix_row", "refuse_untouched", "check_coverage", "check_no_experts", "support_matrix_markdown"]

OPERATIONS = ("load", "calibrate", "gptq", "awq", "awq_fold", "rtn", "pack", "wanda", "sparsegpt", "magnitude", "svd",
              "heads", "ffn", "depth", "gqa", "pipeline")
_WEIGHT_OPS = ("calibrate", "gptq", "awq", "awq_fold", "rtn", "pack", "wanda", "sparsegpt", "magnitude", "svd", "pipeline")


@dataclass
class Proj:
    """One logical projection: rows ``rows`` of the linear-like layer ``name`` (None = all of its rows)."""
    name: str
    module: nn.Module
    rows: torch.Tensor | None = None

    @property
    def fused(self) -> bool:
        return self.rows is not None

    def out_features(self) -> int:
        return get_weight(self.module).shape[0] if self.rows is None else int(self.rows.numel())

    def weight(self) -> torch.Tensor:
        """(out, in) of this projection alone (a copy when fused)."""
        w = get_weight(self.module)
        return w if self.rows is None else w[self.rows.to(w.device)]

    def set(self, w: torch.Tensor) -> None:
        """Write this projection's (out, in) weight back into its holder."""
        if self.rows is None:
            set_weight(self.module, w)
            return
        full = get_weight(self.module).clone()
        full[self.rows.to(full.device)] = w.to(full.dtype)
        set_weight(self.module, full)


@dataclass
class BlockLayout:
    """What one block holds.  Names are qualified inside the block."""
    attn: str | None = None
    q: Proj | None = None
    k: Proj | None = None
    v: Proj | None = None
    o: Proj | None = None
    qkv_rule: str = "separate"  # separate | contiguous | per_head | grouped
    mlp_in: list[Proj] = field(default_factory=list)  # [gate, up] or [up]
    mlp_out: Proj | None = None
    experts: list[str] = field(default_factory=list)  # names of >= 3-D parameters (MoE experts)
    head_dim: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def n_heads(self) -> int:
        return self.q.out_features() // self.head_dim if self.q is not None and self.head_dim else 0

    @property
    def n_kv(self) -> int:
        return self.k.out_features() // self.head_dim if self.k is not None and self.head_dim else 0

    @property
    def gated(self) -> bool:
        return len(self.mlp_in) == 2


_Q, _K, _V = ("q_proj", "query", "wq", "q"), ("k_proj", "key", "wk", "k"), ("v_proj", "value", "wv", "v")
_OUT = ("o_proj", "out_proj", "dense", "c_proj", "wo", "output", "out")
_GATE = ("gate_proj", "w1", "gate")
_DOWN = ("down_proj", "fc2", "c_proj", "dense_4h_to_h", "w2", "output", "fc_out")


def _stem(name: str, stems: tuple[str, ...]) -> bool:
    parts = name.split(".")
    return any(p in stems for p in parts)


def _cfg_int(cfg, *names) -> int | None:
    for n in names:
        v = getattr(cfg, n, None)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return None


def _head_dim(cfg, attn: nn.Module) -> int:
    for a in ("head_dim", "head_size", "attention_head_size"):
        v = getattr(attn, a, None)
        if isinstance(v, int) and v > 0:
            return v
    for m in attn.modules():
        v = getattr(m, "attention_head_size", None) or getattr(m, "head_dim", None)
        if isinstance(v, int) and v > 0:
            return v
    hd = _cfg_int(cfg, "head_dim")
    return hd or cfg.hidden_size // cfg.num_attention_heads


def _split_fused_qkv(attn: nn.Module, name: str, mod: nn.Module, cfg, d: int) -> tuple[str, list[torch.Tensor]]:
    n_out = get_weight(mod).shape[0]
    if getattr(attn, "new_decoder_architecture", False):
        n_kv = _cfg_int(attn, "num_kv_heads") or _cfg_int(cfg, "num_kv_heads", "num_key_value_heads") or 1
        r = n_out // d // n_kv - 2  # query heads per KV head
        idx = torch.arange(n_out).view(n_kv, r + 2, d)
        return "grouped", [idx[:, :r].reshape(-1), idx[:, r].reshape(-1), idx[:, r + 1].reshape(-1)]
    if name.split(".")[-1] == "query_key_value" and not getattr(attn, "multi_query", False):
        idx = torch.arange(n_out).view(n_out // (3 * d), 3, d)  # GPT-NeoX / classic Falcon: per head q, k, v
        return "per_head", [idx[:, 0].reshape(-1), idx[:, 1].reshape(-1), idx[:, 2].reshape(-1)]
    if getattr(attn, "multi_query", False):
        n_kv = 1
    else:  # grouped KV heads when the attention or its config says so; multi-head otherwise
        n_kv = _cfg_int(attn, "num_key_value_heads") or _cfg_int(cfg, "num_key_value_heads") or 0
    n_q = n_out // d - 2 * n_kv if n_kv else n_out // (3 * d)
    n_kv = n_kv or n_q
    a, b = n_q * d, n_kv * d
    return "contiguous", [torch.arange(a), torch.arange(a, a + b), torch.arange(a + b, a + 2 * b)]


def _attention_container(block: nn.Module) -> tuple[str, nn.Module] | None:
    for n, m in block.named_modules():
        if n and "attention" in type(m).__name__.lower() and any(is_linear_like(x) for x in m.modules()):
            return n, m
    return None


def block_layout(model: nn.Module, block: nn.Module) -> BlockLayout:
    """The layout of one block of ``model`` (see the module docstring)."""
    cfg = model.config
    C = cfg.hidden_size
    lay = BlockLayout()
    lay.experts = [n for n, p in block.named_parameters() if p.dim() >= 3]
    found = _attention_container(block)
    lins = {n: m for n, m in block.named_modules() if is_linear_like(m)}
    attn_names: set[str] = set()
    if found is None:
        lay.problems.append("no attention submodule")
    else:
        an, attn = found
        lay.attn = an
        lay.head_dim = _head_dim(cfg, attn)
        inner = {n: m for n, m in lins.items() if n.startswith(an + ".")}
        attn_names = set(inner)
        outs = [n for n, m in inner.items() if get_weight(m).shape[0] == C and _stem(n, _OUT)]
        o_name = outs[-1] if outs else None
        ins = [n for n, m in inner.items() if n != o_name and get_weight(m).shape[1] == C]
        if o_name is not None:
            lay.o = Proj(o_name, inner[o_name])
        if len(ins) == 3:
            pick = {}
            for role, stems in (("q", _Q), ("k", _K), ("v", _V)):
                hit = [n for n in ins if _stem(n, stems)]
                if len(hit) == 1:
                    pick[role] = hit[0]
            if len(pick) == 3:
                lay.q, lay.k, lay.v = (Proj(pick[r], inner[pick[r]]) for r in ("q", "k", "v"))
            else:
                lay.problems.append(f"cannot tell Q, K, V apart among {ins}")
        elif len(ins) == 1:
            rule, rows = _split_fused_qkv(attn, ins[0], inner[ins[0]], cfg, lay.head_dim)
            lay.qkv_rule = rule
            lay.q, lay.k, lay.v = (Proj(ins[0], inner[ins[0]], r) for r in rows)
        else:
            lay.problems.append(f"attention input projections {ins} are neither Q/K/V nor one fused QKV")
        if lay.o is None:
            lay.problems.append("no attention output projection")
    mlp = {n: m for n, m in lins.items() if n not in attn_names}
    if lay.experts:
        return lay  # the MLP lives in the experts (plus, maybe, a shared expert and routers)
    outs = [n for n, m in mlp.items() if get_weight(m).shape[0] == C and get_weight(m).shape[1] != C]
    outs = outs or [n for n, m in mlp.items() if get_weight(m).shape[0] == C and _stem(n, _DOWN)]
    if len(outs) != 1:
        lay.problems.append(f"no single MLP output projection among {list(mlp)}")
        return lay
    lay.mlp_out = Proj(outs[0], mlp[outs[0]])
    d_ff = get_weight(mlp[outs[0]]).shape[1]
    ins = [n for n, m in mlp.items() if n != outs[0] and get_weight(m).shape[1] == C]
    if len(ins) == 1 and get_weight(mlp[ins[0]]).shape[0] == 2 * d_ff:
        lay.mlp_in = [Proj(ins[0], mlp[ins[0]], torch.arange(d_ff)), Proj(ins[0], mlp[ins[0]], torch.arange(d_ff, 2 * d_ff))]
    elif len(ins) == 1 and get_weight(mlp[ins[0]]).shape[0] == d_ff:
        lay.mlp_in = [Proj(ins[0], mlp[ins[0]])]
    elif len(ins) == 2 and all(get_weight(mlp[n]).shape[0] == d_ff for n in ins):
        gate = [n for n in ins if _stem(n, _GATE)]
        if len(gate) == 1:
            up = [n for n in ins if n != gate[0]][0]
            lay.mlp_in = [Proj(gate[0], mlp[gate[0]]), Proj(up, mlp[up])]
        else:
            lay.problems.append(f"cannot tell gate from up among {ins}")
    else:
        lay.problems.append(f"MLP input projections {ins} do not match the output projection's width {d_ff}")
    return lay


def model_layouts(model: nn.Module) -> list[BlockLayout]:
    """``block_layout`` of every block."""
    _, blocks = find_block_list(model)
    return [block_layout(model, b) for b in blocks]


def untouched_share(model: nn.Module) -> float:
    """Share of the blocks' weight elements (2-D and larger) that no compressor reaches: tensors of 3 or more
    dimensions outside linear layers and outside the expert layouts ``lessonlib.experts`` unrolls."""
    from .experts import expert_modules
    _, blocks = find_block_list(model)
    lin = {id(m.weight) for m in blocks.modules() if is_linear_like(m)}
    lin |= {id(p) for b in blocks for e in expert_modules(b).values() for p in (e.gate_up_proj, e.down_proj)}
    total = other = 0
    for p in blocks.parameters():
        if p.dim() >= 2:
            total += p.numel()
            other += 0 if id(p) in lin else (p.numel() if p.dim() >= 3 else 0)
    return other / max(total, 1)


def refuse_untouched(model: nn.Module, what: str) -> None:
    """Raise ``UnsupportedError`` when ``what`` (an operation on linear layers) would leave expert tensors alone."""
    share = untouched_share(model)
    if share > 0:
        experts = block_layout(model, find_block_list(model)[1][0]).experts
        raise UnsupportedError(f"{what} is not supported on {type(model).__name__}: {share:.0%} of its block "
                               f"weights are mixture-of-experts tensors {experts} that are not linear layers and "
                               "would be left untouched")


def check_coverage(model: nn.Module, what: str) -> None:
    """``refuse_untouched`` for transformer models; a module without a block list has nothing to miss."""
    try:
        find_block_list(model)
    except LayoutError:
        return
    refuse_untouched(model, what)


def check_no_experts(model: nn.Module, what: str) -> None:
    """Raise ``UnsupportedError`` for ``what`` (an operation that replaces layers) on a model with 3-D experts."""
    from .experts import expert_modules
    try:
        blocks = find_block_list(model)[1]
    except LayoutError:
        return
    names = [n for n in expert_modules(blocks[0])]
    if names:
        raise UnsupportedError(f"{what} is not supported on {type(model).__name__}: its experts {names} are 3-D "
                               "tensors, and replacing per-expert layers cannot be stored in them")


def _reason(model: nn.Module, op: str) -> str | None:
    """Why ``op`` cannot run on ``model`` (None: it can)."""
    if op not in OPERATIONS:
        raise ValueError(f"unknown operation {op!r}; allowed {OPERATIONS}")
    try:
        _, blocks = find_block_list(model)
    except LayoutError as e:
        return str(e)
    lays = [block_layout(model, b) for b in blocks]
    lay = lays[0]
    from .models import _is_encoder
    encoder = _is_encoder(model, blocks)
    share = untouched_share(model)
    if share > 0 and op in _WEIGHT_OPS + ("ffn", "pack") and op != "calibrate":
        return (f"its blocks keep {share:.0%} of their weights in tensors {lay.experts} that are neither linear "
                "layers nor experts lessonlib knows how to unroll; the operation would leave them untouched")
    if lay.experts and op in ("svd", "ffn", "pack", "pipeline"):
        return (f"its mixture-of-experts weights are 3-D tensors {lay.experts}: the operation replaces "
                "layers, which these tensors cannot hold (quantization and pruning in place work)")
    if lay.experts and op == "awq_fold":
        return "its router reads the MLP norm's output too, so scales cannot be folded into that norm"
    if op == "load" and encoder:
        return "it is an encoder; load it with lessonlib.models.load_encoder"
    if op in ("calibrate", "gptq", "awq", "wanda", "sparsegpt", "svd", "depth", "pipeline", "awq_fold") and encoder:
        return "it is an encoder (no causal LM to calibrate or evaluate); use the encoder chapters' tools"
    if op == "awq_fold" and lay.attn is None:
        return "its blocks have no attention submodule"
    if op in ("heads", "gqa"):
        bad = [p for L in lays for p in L.problems if "attention" in p or "Q, K, V" in p or "QKV" in p]
        if bad or lay.q is None:
            return f"its attention layout is not understood ({bad[0] if bad else 'no Q/K/V'})"
        if op == "gqa" and (encoder or lay.qkv_rule != "separate"):
            return ("converting to grouped-query attention needs separate K and V projections in a decoder "
                    f"(this one: {'an encoder' if encoder else 'a fused QKV projection'})")
        if op == "gqa" and not any(hasattr(m, "num_key_value_groups") for m in blocks[0].modules()):
            return "its attention has no key/value groups (it repeats no KV head), so it cannot run GQA"
        if op == "heads" and lay.qkv_rule != "separate" and any(
                hasattr(m, "config") and "qkv_proj" in dict(m.named_children()) for m in blocks[0].modules()):
            return "its fused QKV projection is split at widths read from the shared config, not per block"
    if op == "ffn":
        bad = [p for L in lays for p in L.problems if "MLP" in p or "gate" in p]
        if bad or lay.mlp_out is None:
            return f"its MLP layout is not understood ({bad[0] if bad else 'no output projection'})"
    return None


def supports(model: nn.Module, op: str) -> bool:
    """Whether lessonlib's ``op`` (one of ``OPERATIONS``) runs correctly on ``model``."""
    return _reason(model, op) is None


def require(model: nn.Module, op: str) -> None:
    """Raise ``UnsupportedError`` naming the architecture, the operation and what is missing, unless supported."""
    why = _reason(model, op)
    if why is not None:
        arch = type(model).__name__
        try:
            arch = f"{arch} (model_type {model_family(model)!r})"
        except LayoutError:
            pass
        raise UnsupportedError(f"{op} is not supported on {arch}: {why}")


def support_matrix_row(model: nn.Module) -> dict[str, str]:
    """``{op: "yes" | reason}`` for every operation: the row the README's generality matrix shows."""
    return {op: (_reason(model, op) or "yes") for op in OPERATIONS}


def support_matrix_markdown() -> str:
    """The README's generality matrix: ``tiny_causal_lm`` of every family against every operation."""
    from .models import TINY_FAMILIES, tiny_causal_lm

    rows = ["| family | " + " | ".join(OPERATIONS) + " |", "|---" * (len(OPERATIONS) + 1) + "|"]
    notes: dict[str, int] = {}
    for fam in TINY_FAMILIES:
        m = tiny_causal_lm(fam)
        cells = []
        for op in OPERATIONS:
            why = _reason(m, op)
            if why is None:
                cells.append("yes")
            else:
                generic = re.sub(r"\d+%", "N%", why)
                notes.setdefault(generic, len(notes) + 1)
                cells.append(f"no ({notes[generic]})")
        rows.append(f"| {type(m).__name__} | " + " | ".join(cells) + " |")
    rows.append("")
    rows += [f"{k}. {why}" for why, k in notes.items()]
    return "\n".join(rows) + "\n"
