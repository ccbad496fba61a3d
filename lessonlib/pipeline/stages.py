"""One thin function per recipe stage: each parses its stage into a technique config
(``recipe.stage_config``), applies it with ``lessonlib.compress.compress_`` (or, for structural stages,
calls the technique's own function) and tags the
modules with their storage format (``size.WeightFormat`` / sparse flag) so ``size.storage_report`` can
count real bytes.

Invariants kept between stages: weights stay float tensors holding the compressed values (fake
quantization, exact zeros); a pruned layer keeps its zeros through later value stages (its keep-mask is
re-applied after GPTQ/AWQ/QAT, which would otherwise refill them); a quantized layer stays on its grid
through later pruning (it is re-rounded onto the grid, pruned entries stay exactly zero).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..arch.depth import block_influences, lowest_influence_blocks, remove_blocks
from ..arch.ffn import ffn_neuron_scores, keep_top_neurons, prune_ffn_neurons
from ..arch.heads import head_counts, head_importance, lowest_heads, prune_heads
from ..coding import huffman_encode, rans_encode
from ..config import Profile
from ..distill import DistillConfig, distill
from ..distill.lm_task import CachedTeacher, lm_student
from ..compress import compress_
from ..layout import require
from ..models import decoder_blocks, get_weight, linear_modules, set_weight
from ..quant import QuantScheme, compute_qparams, fake_quant
from ..quant.affine import dequantize_codes, expand_qparams, quantize_codes
from ..share import tie_blocks
from ..technique import CompressResult
from .recipe import Stage, stage_config
from .size import FORMAT_ATTR, SPARSE_ATTR, WeightFormat

__all__ = ["StageContext", "run_stage", "block_linear_modules"]


@dataclass
class StageContext:
    profile: Profile
    calib: Callable[[], torch.Tensor]  # (N, T) calibration token windows, built on first use
    seed: int = 0
    device: str = "cpu"

    def batches(self, n: int | None = None) -> torch.Tensor:
        c = self.calib()
        return c if n is None else c[: max(1, min(n, c.shape[0]))]


def block_linear_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Every linear layer inside the decoder blocks, by fully qualified name (the layers stages compress)."""
    return linear_modules(model)


def _scheme(p: dict) -> QuantScheme:
    return QuantScheme(p["bits"], p["group_size"], p["sym"])


def _apply(model: nn.Module, st: Stage, ctx: StageContext, n_calib: int | None = None) -> CompressResult:
    """``compress_`` with the stage's config, on the context's calibration batches when the config needs them."""
    cfg = stage_config(st, ctx.profile, ctx.seed)
    return compress_(model, cfg, ctx.batches(n_calib) if cfg.requires_calib() else None, device=ctx.device)


def _masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Keep-masks of the layers already pruned unstructured (their zeros must survive value stages)."""
    return {n: get_weight(m) != 0 for n, m in block_linear_modules(model).items() if getattr(m, SPARSE_ATTR, False)}


def _reapply(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    mods = block_linear_modules(model)
    for n, mask in masks.items():
        set_weight(mods[n], get_weight(mods[n]) * mask)


def _round(w: torch.Tensor, fmt: WeightFormat) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer codes (out, in) of a weight on its format's grid and the weight they decode to.

    The grid is the one the method chose (``fmt.qparams``: GPTQ, joint SparseGPT) or else the min-max grid
    of the weight itself (RTN, QAT; AWQ on ``W s``), so a weight already on its grid is reproduced exactly.
    """
    s_awq = None if fmt.awq_scale is None else fmt.awq_scale.to(w.dtype)  # (in,)
    x = w if s_awq is None else w * s_awq
    if fmt.qparams is None:
        scales, zeros = compute_qparams(x, fmt.scheme)  # (rows, G)
        g_idx = None
    else:
        scales, zeros, g_idx = fmt.qparams
    s = expand_qparams(scales, x.shape[1], g_idx)  # (rows, in)
    z = expand_qparams(zeros, x.shape[1], g_idx)
    codes = quantize_codes(x, s, z, fmt.scheme)  # (out, in)
    dec = dequantize_codes(codes, s, z).to(w.dtype)
    return codes, dec if s_awq is None else dec / s_awq


def _onto_grid(w: torch.Tensor, fmt: WeightFormat) -> torch.Tensor:
    """Round a weight back onto its format's grid (after pruning moved or zeroed some entries)."""
    return w if fmt.kind != "quant" else _round(w, fmt)[1]


def _tag(mods: dict[str, nn.Module], fmt: Callable[[str], WeightFormat]) -> None:
    for n, m in mods.items():
        setattr(m, FORMAT_ATTR, fmt(n))


def _quant_embeddings(model: nn.Module, scheme: QuantScheme) -> None:
    """RTN the input embedding (vocab, hidden) -- and the LM head when it is a separate matrix."""
    targets = [model.get_input_embeddings()]
    head = model.get_output_embeddings()
    if head is not None and head.weight.data_ptr() != targets[0].weight.data_ptr():
        targets.append(head)
    with torch.no_grad():
        for m in targets:
            m.weight.copy_(fake_quant(m.weight.data, scheme))
            setattr(m, FORMAT_ATTR, WeightFormat("quant", scheme))


# ----------------------------------------------------------------------------- the stages
def _distill(model: nn.Module, st: Stage, ctx: StageContext) -> tuple[nn.Module, dict]:
    p, prof = st.params, ctx.profile
    n = len(decoder_blocks(model))
    nb = p["n_blocks"] or math.ceil(n / (p["every"] or 2))
    if nb > n:
        raise ValueError(f"distill: n_blocks={nb} is more than the teacher's {n} blocks")
    calib = ctx.batches()
    wins = calib[:, : max(16, calib.shape[1] // 4)]  # (N, T/4) short windows, as lessonlib.distill.lm_task
    student = lm_student(model, nb)
    steps = prof.train_steps if p["steps"] is None else p["steps"]
    info = {"blocks_before": n, "blocks_after": nb, "steps": steps}
    if steps > 0:
        cached = CachedTeacher.from_model(model, wins)
        cfg = DistillConfig(steps=steps, batch_size=prof.batch_size, lr=p["lr"] or 10 * prof.lr, T=p["T"],
                            alpha=p["alpha"], seed=ctx.seed, profile=prof.name)
        res = distill(student, cached, wins, cfg)
        info["final_loss"] = res.losses[-1]
    for q in student.parameters():
        q.requires_grad_(True)
    return student.eval(), info


def _quantize(model: nn.Module, st: Stage, ctx: StageContext) -> tuple[nn.Module, dict]:
    p, scheme = st.params, _scheme(st.params)
    masks = _masks(model)
    res = _apply(model, st, ctx)
    fmt = {n: WeightFormat("quant", scheme) for n in block_linear_modules(model)}
    for n, r in res.packed().items():
        if st.method == "gptq":  # the grid GPTQ chose, so packing and entropy coding reproduce it exactly
            fmt[n] = WeightFormat("quant", scheme, qparams=(r.scales.cpu(), r.zeros.cpu(),
                                                            None if r.g_idx is None else r.g_idx.cpu()))
        elif st.method == "awq":
            fmt[n] = WeightFormat("quant", scheme, awq_scale=r.scales.detach().float().cpu())
    mods = block_linear_modules(model)
    for n, m in mods.items():  # QAT built new modules: restore the sparse flag
        if n in masks:
            setattr(m, SPARSE_ATTR, True)
    _reapply(model, masks)
    _tag(mods, lambda n: fmt[n])
    if p["embeddings"]:
        _quant_embeddings(model, scheme)
    return model, {"scheme": str(scheme), "layers": len(mods)}


def _unstructured(model: nn.Module, st: Stage, ctx: StageContext) -> tuple[nn.Module, dict]:
    res = _apply(model, st, ctx)
    for mod in block_linear_modules(model).values():
        fmt = getattr(mod, FORMAT_ATTR, None)
        if fmt is not None:  # pruned after quantization: stay on the grid, zeros stay zeros
            w = get_weight(mod)
            set_weight(mod, _onto_grid(w, fmt) * (w != 0))
        setattr(mod, SPARSE_ATTR, True)
    return model, {"sparsity": res.config.pattern.sparsity, "nm": st.params["nm"]}


def _structured(model: nn.Module, st: Stage, ctx: StageContext) -> tuple[nn.Module, dict]:
    frac = st.params["fraction"]
    batches = ctx.batches(4)  # scoring heads / neurons / blocks needs far fewer windows than calibration
    if st.method == "depth":
        n = len(decoder_blocks(model))
        k = round(frac * n)
        if not 1 <= k < n:
            raise ValueError(f"prune/depth: fraction={frac} removes {k} of {n} blocks; allowed 1..{n - 1}")
        drop = lowest_influence_blocks(block_influences(model, batches, device=ctx.device), k)
        remove_blocks(model, drop)
        return model, {"removed_blocks": drop}
    if st.method == "ffn":
        scores = ffn_neuron_scores(model, st.params["score"], batches)
        d_ff, mult = scores[0].numel(), st.params["multiple_of"]
        # keep a multiple of `multiple_of` neurons (quantization groups and kernels want aligned widths)
        keep = int((1.0 - frac) * d_ff) // mult * mult if d_ff >= mult else round((1.0 - frac) * d_ff)
        if not 1 <= keep < d_ff:
            raise ValueError(f"prune/ffn: fraction={frac} with multiple_of={mult} keeps {keep} of {d_ff} neurons; "
                             f"allowed 1..{d_ff - 1}")
        prune_ffn_neurons(model, [keep_top_neurons(s, keep) for s in scores])
        return model, {"ffn_kept": keep, "ffn_before": d_ff}
    n_q, n_kv = head_counts(model)[0]
    grouped = n_kv < n_q
    unit = n_q // n_kv if grouped else n_q
    k = round(frac * unit)
    if not 1 <= k < unit:
        raise ValueError(f"prune/heads: fraction={frac} removes {k} of {unit} heads "
                         f"{'per KV group' if grouped else 'per layer'}; allowed 1..{unit - 1}")
    scores = head_importance(model, batches, st.params["score"])
    plan = lowest_heads(scores, k, n_kv, mode="within_groups" if grouped else "heads")
    prune_heads(model, plan)
    return model, {"heads_removed_per_layer": k * (n_kv if grouped else 1), "heads_per_layer": n_q}


def _factorise(model: nn.Module, st: Stage, ctx: StageContext) -> tuple[nn.Module, dict]:
    ranks = _apply(model, st, ctx, n_calib=4).stats("rank")
    return model, {"factorised_layers": sum(1 for r in ranks.values() if r > 0), "of": len(ranks)}


def _share(model: nn.Module, st: Stage, ctx: StageContext) -> tuple[nn.Module, dict]:
    if st.method == "tie":
        groups = tie_blocks(model, st.params["group_size"], init="mean")
        return model, {"groups": len(groups)}
    k = st.params["k"]
    masks = _masks(model)
    _apply(model, st, ctx)
    _reapply(model, masks)
    _tag(block_linear_modules(model), lambda n: WeightFormat("cluster", k=k))
    return model, {"k": k}


def _codes_of(w: torch.Tensor, fmt: WeightFormat) -> tuple[np.ndarray, torch.Tensor]:
    """Integer symbols of a weight in its format and the weight they decode to (what is stored)."""
    if fmt.kind == "cluster":
        vals, idx = torch.unique(w, return_inverse=True)
        return idx.numpy().astype(np.int64), vals[idx]
    codes, dec = _round(w, fmt)
    return codes.numpy().astype(np.int64), dec


def _entropy_code(model: nn.Module, st: Stage, ctx: StageContext) -> tuple[nn.Module, dict]:
    encode = huffman_encode if st.method == "huffman" else rans_encode
    symbols, coded, worst = 0, 0, 0.0
    for mod in block_linear_modules(model).values():
        fmt = getattr(mod, FORMAT_ATTR, None)
        if fmt is None:
            continue
        w = get_weight(mod).detach()
        codes, dec = _codes_of(w, fmt)
        if getattr(mod, SPARSE_ATTR, False):  # one stream: 0 = pruned, code + 1 = kept
            keep = (w != 0).numpy()
            codes = np.where(keep, codes + 1, 0)
            dec = dec * torch.from_numpy(keep)
        fmt.coded_bytes = len(encode(codes))
        worst = max(worst, float((dec - w).norm() / w.norm().clamp_min(1e-30)))
        set_weight(mod, dec)  # the model now holds exactly what the stream decodes to
        symbols += codes.size
        coded += fmt.coded_bytes
    return model, {"coded_bytes": coded, "bits_per_weight": 8 * coded / max(symbols, 1),
                   "max_rel_recode_error": worst}


def _joint(model: nn.Module, st: Stage, ctx: StageContext) -> tuple[nn.Module, dict]:
    scheme = _scheme(st.params)
    res = _apply(model, st, ctx)
    for name, (sc, ze) in res.packed().items():  # the grid of each layer, fitted on the weight SparseGPT started from
        mod = model.get_submodule(name)
        setattr(mod, FORMAT_ATTR, WeightFormat("quant", scheme, qparams=(sc.cpu(), ze.cpu(), None)))
        setattr(mod, SPARSE_ATTR, True)
    return model, {"sparsity": res.config.pattern.sparsity, "scheme": str(scheme)}


_RUNNERS = {"distill": _distill, "quantize": _quantize, "factorise": _factorise, "share": _share,
            "entropy-code": _entropy_code, "joint": _joint}


def run_stage(model: nn.Module, st: Stage, ctx: StageContext) -> tuple[nn.Module, dict]:
    """Apply one validated stage; returns the (possibly new) model and a dict of what the stage did."""
    require(model, "pipeline")  # e.g. MoE experts that no stage would compress are refused, not skipped
    if st.stage == "prune":
        fn = _structured if st.method in ("heads", "ffn", "depth") else _unstructured
    else:
        fn = _RUNNERS[st.stage]
    torch.manual_seed(ctx.seed)
    with torch.enable_grad() if st.stage in ("distill",) or st.method in ("qat", "heads") \
            or st.params.get("score") == "taylor" else torch.no_grad():
        return fn(model, st, ctx)
