"""SmoothQuant in its deployable form: smoothing factors folded into the model, no division of X at run time.

Xiao et al. 2023 (arXiv:2211.10438), section 4 and figure 6: the activation side of
Y = (X diag(s)^-1)(diag(s) W^T) must cost nothing at inference, so X / s is produced by the operation that
*writes* X.  In a LLaMA-style decoder block every linear layer's input has such a writer:

==============================  =============================================  ============================
consumers (share one s)         writer of their input                          fold (exact)
==============================  =============================================  ============================
q_proj, k_proj, v_proj          input_layernorm (RMSNorm, weight g)            g / s
gate_proj, up_proj              post_attention_layernorm (RMSNorm)             g / s
o_proj                          v_proj, through attention (linear in V)        rows of W_v / s_kv
down_proj                       up_proj, through SiLU(gate) * up (linear in up) rows of W_up / s
==============================  =============================================  ============================

* A norm feeds several linears, so they share one s (eq. 4 with max|W_:,j| over all their rows).
* Attention output = softmax(Q K^T) V per head is linear in V (the probabilities do not depend on V), so
  scaling V's channel c by 1/s_c scales the attention output's channel c by 1/s_c.  With grouped-query
  attention a key/value head serves ``n_rep`` query heads: o_proj's input channel (h, d) carries V channel
  (h // n_rep, d), so one s per V channel is shared by those ``n_rep`` o_proj columns.
* SiLU(gate) * up is linear in up, so dividing up_proj's output rows by s divides down_proj's input by s.
* Dividing a linear's *output rows* (v_proj, up_proj) by s leaves its per-output-channel INT8 grid error
  unchanged (each row gets its own scale), so the writers pay nothing for it.

Blocks without these modules (e.g. GPT-2's GELU MLP, which has no exact fold for its output projection)
keep their linears unsmoothed; ``FoldReport.unsmoothed`` names them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..models import block_linears, decoder_blocks, get_weight, set_weight
from ..models import replace_submodule
from .smoothquant import W8A8Linear

__all__ = ["FoldReport", "fold_smoothing", "apply_w8a8_folded"]


@dataclass
class FoldReport:
    input_scale: dict[str, torch.Tensor] = field(default_factory=dict)  # linear -> s its input was divided by (in,)
    groups: list[tuple[str, list[str]]] = field(default_factory=list)  # (writer, consumers sharing one s)
    unsmoothed: list[str] = field(default_factory=list)  # linears with no exact fold (left as they are)


def _group_scale(absmax: list[torch.Tensor], weights: list[torch.Tensor], alpha: float) -> torch.Tensor:
    """Eq. 4 for a group of consumers of one input: s_j = max|X_j|^a / max_rows|W_:,j|^(1-a), (in,)."""
    a = torch.stack([x.float() for x in absmax]).amax(0).clamp(min=1e-5)  # (in,)
    w = torch.cat([x.detach().abs().float() for x in weights]).amax(0).clamp(min=1e-5)  # (in,)
    return (a.pow(alpha) / w.pow(1 - alpha)).clamp(min=1e-5)


def _scale_cols(lin: nn.Module, s: torch.Tensor) -> None:
    w = get_weight(lin)  # (out, in)
    set_weight(lin, w * s.to(w.dtype))


def _scale_rows(lin: nn.Module, inv: torch.Tensor) -> None:
    w = get_weight(lin)  # (out, in)
    set_weight(lin, w * inv.to(w.dtype)[:, None])
    if getattr(lin, "bias", None) is not None:
        lin.bias.data.mul_(inv.to(lin.bias.dtype))


def _has(mod: nn.Module, path: str) -> bool:
    try:
        mod.get_submodule(path)
        return True
    except AttributeError:
        return False


@torch.no_grad()
def fold_smoothing(model: nn.Module, act_absmax: dict[str, torch.Tensor], alpha: float = 0.5) -> FoldReport:
    """Fold SmoothQuant's factors into the float model, in place (the model's function is unchanged).

    ``act_absmax``: per-channel input range (in,) of every block linear, by full module name, measured on the
    *unsmoothed* model (``lessonlib.quant.w8a8.calibrate_activations``).  Afterwards linear ``n``'s input is
    X / ``report.input_scale[n]`` and its weight is W diag(s).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} is outside [0, 1]")
    fqn = {id(m): n for n, m in model.named_modules()}
    rep = FoldReport()
    cfg = getattr(model, "config", None)
    for block in decoder_blocks(model):
        bname = fqn[id(block)]
        lins = block_linears(block)
        done: set[str] = set()
        # 1-2: a norm feeds a group of linears: one s, folded into the norm's weight (and bias)
        for norm_path, group in (("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
                                 ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj"))):
            if not (_has(block, norm_path) and all(g in lins for g in group)):
                continue
            names = [f"{bname}.{g}" for g in group]
            s = _group_scale([act_absmax[n] for n in names], [get_weight(lins[g]) for g in group], alpha)
            norm = block.get_submodule(norm_path)
            norm.weight.data.div_(s.to(norm.weight.dtype))
            if getattr(norm, "bias", None) is not None:
                norm.bias.data.div_(s.to(norm.bias.dtype))
            for g, n in zip(group, names):
                _scale_cols(lins[g], s)
                rep.input_scale[n] = s.clone()
            rep.groups.append((f"{bname}.{norm_path}", names))
            done.update(group)
        # 3: v_proj -> attention -> o_proj, one s per V channel shared by the query heads of its group
        if {"self_attn.v_proj", "self_attn.o_proj"} <= lins.keys() and cfg is not None:
            v, o = lins["self_attn.v_proj"], lins["self_attn.o_proj"]
            h = cfg.num_attention_heads
            hkv = getattr(cfg, "num_key_value_heads", None) or h
            hd = get_weight(o).shape[1] // h
            n_rep = h // hkv
            on = f"{bname}.self_attn.o_proj"
            a = act_absmax[on].float().reshape(hkv, n_rep, hd).amax(1).reshape(-1)  # (hkv*hd,)
            wo = get_weight(o).abs().float().reshape(-1, hkv, n_rep, hd).amax(2).reshape(get_weight(o).shape[0], -1)
            s_kv = _group_scale([a], [wo], alpha)  # (hkv*hd,)
            s_o = s_kv.reshape(hkv, 1, hd).expand(hkv, n_rep, hd).reshape(-1)  # (h*hd,)
            _scale_rows(v, 1.0 / s_kv)
            _scale_cols(o, s_o)
            rep.input_scale[on] = s_o.clone()
            rep.groups.append((f"{bname}.self_attn.v_proj", [on]))
            done.add("self_attn.o_proj")
        # 4: up_proj -> SiLU(gate) * up -> down_proj
        if {"mlp.up_proj", "mlp.gate_proj", "mlp.down_proj"} <= lins.keys():
            dn = f"{bname}.mlp.down_proj"
            s = _group_scale([act_absmax[dn]], [get_weight(lins["mlp.down_proj"])], alpha)
            _scale_rows(lins["mlp.up_proj"], 1.0 / s)
            _scale_cols(lins["mlp.down_proj"], s)
            rep.input_scale[dn] = s.clone()
            rep.groups.append((f"{bname}.mlp.up_proj", [dn]))
            done.add("mlp.down_proj")
        rep.unsmoothed += [f"{bname}.{k}" for k in lins if k not in done]
    if not rep.input_scale and not rep.unsmoothed:
        raise ValueError("the model has no linear layer inside its decoder blocks")
    return rep


@torch.no_grad()
def apply_w8a8_folded(model: nn.Module, act_absmax: dict[str, torch.Tensor], alpha: float | None = 0.5,
                      per_token: bool = False, static: bool = True) -> FoldReport:
    """W8A8 with SmoothQuant folded into the model (``fold_smoothing``), in place.

    Every block linear becomes a ``W8A8Linear`` without a run-time smoothing vector: its weight (already
    W diag(s)) on the per-channel INT8 grid, its input quantized statically with max(absmax / s) (or
    dynamically when ``static=False``).  ``alpha=None`` folds nothing (plain W8A8).
    """
    rep = FoldReport() if alpha is None else fold_smoothing(model, act_absmax, alpha)
    for name, a in act_absmax.items():
        lin = model.get_submodule(name)
        s = rep.input_scale.get(name)
        if alpha is None:
            rep.unsmoothed.append(name)
        rng = a.float() if s is None else a.float() / s
        q = W8A8Linear(get_weight(lin), getattr(lin, "bias", None), None,
                       float(rng.max()) if static else None, per_token).to(get_weight(lin).device)
        replace_submodule(model, name, q)
    return rep
