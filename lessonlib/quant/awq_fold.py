"""AWQ with its scales folded into the previous operation, so that the quantized weights can be packed.

Lin et al. 2023, "AWQ: Activation-aware Weight Quantization for LLM Compression and Acceleration",
section 3.2: Q(W diag(s)) (diag(s)^-1 X) needs X / s, and "the scaling is fused into the previous
operator".  In a Llama block (the pairs of the reference code, ``auto_scale.py``):

    input_layernorm           -> q_proj, k_proj, v_proj   (RMSNorm weight g_j -> g_j / s_j)
    self_attn.v_proj          -> o_proj                   (v_proj row j -> row j / s_j; only without GQA)
    post_attention_layernorm  -> gate_proj, up_proj
    mlp.up_proj               -> down_proj                (down's input is silu(gate) * up: channel j of up)

Every layer reading one input shares one s, searched jointly on their row-stacked weights (the sum of
their output errors), as the reference searches on the enclosing module.  With grouped-query attention
v_proj has fewer outputs than o_proj has inputs and the reference leaves o_proj unscaled; so do we.
Then each layer is quantized on its scaled weight with the clip search of ``awq.awq_search_clip``.  The
block computes exactly the same function before quantization (``fold_scales``), and the stored codes
are the ones the model runs, so ``quantize_(model, scheme, qparams=results)`` packs them losslessly.
"""
from __future__ import annotations

import torch
from torch import nn

from ..calib import InputSampleStats, ModuleNames, run_sequential
from ..models import UnsupportedError, block_linears, decoder_blocks, get_weight, is_linear_like, set_weight
from .affine import QuantizedWeight, QuantScheme, quantize
from .awq import awq_quantize, awq_search_clip
from ..atomic import atomic

__all__ = ["LLAMA_FOLDS", "fold_scales", "find_folds", "awq_fold_model"]

LLAMA_FOLDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
    ("self_attn.v_proj", ("self_attn.o_proj",)),
    ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj")),
    ("mlp.up_proj", ("mlp.down_proj",)),
)  # what find_folds finds in a LLaMA block, kept as documentation and for callers that pass folds=


def _out_channels(prev: nn.Module) -> int:
    w = prev.weight
    return get_weight(prev).shape[0] if w.dim() == 2 else w.shape[0]


def _is_norm(m: nn.Module) -> bool:
    w = getattr(m, "weight", None)
    return (isinstance(w, torch.Tensor) and w.dim() == 1 and not is_linear_like(m)
            and not any(True for _ in m.children()))


@torch.no_grad()
def _fold_norm(norm: nn.Module, s: torch.Tensor) -> None:
    """Divide the norm's output channel j by s_j exactly, or raise: y = w * xhat (+ b) (RMSNorm, LayerNorm)
    and y = (1 + w) * xhat (Gemma) are recognised by probing the module itself; anything else is refused."""
    C = norm.weight.numel()
    x = torch.randn(4, C, generator=torch.Generator().manual_seed(0)).to(norm.weight.device, norm.weight.dtype)
    try:
        want = norm(x) / s.to(x.dtype)
    except NotImplementedError:  # a bare parameter holder (no forward): y = w * x by definition
        if getattr(norm, "bias", None) is not None:
            norm.bias.data = norm.bias.data / s.to(norm.bias.dtype)
        norm.weight.data = norm.weight.data / s.to(norm.weight.dtype)
        return
    w0 = norm.weight.data.clone()
    b0 = None if getattr(norm, "bias", None) is None else norm.bias.data.clone()
    if b0 is not None:
        norm.bias.data = b0 / s.to(b0.dtype)
    for variant in ("mul", "one_plus"):
        norm.weight.data = w0 / s.to(w0.dtype) if variant == "mul" else (1 + w0) / s.to(w0.dtype) - 1
        if torch.allclose(norm(x), want, rtol=1e-4, atol=1e-5):
            return
    norm.weight.data = w0
    if b0 is not None:
        norm.bias.data = b0
    raise UnsupportedError(f"awq_fold is not supported on {type(norm).__name__}: its output is neither w * xhat "
                           "nor (1 + w) * xhat, so scales cannot be folded into it exactly")


@torch.no_grad()
def fold_scales(prev: nn.Module, layers: list[nn.Module], s: torch.Tensor) -> None:
    """Divide output channel j of ``prev`` (a norm with a (C,) weight, or a linear) by s_j and multiply
    input column j of every layer in ``layers`` by s_j, in place: the composition is unchanged,
    (x diag(g / s)) (W diag(s))^T = (x diag(g)) W^T.  Gemma's ``(1 + w)`` norms fold as
    ``w' = (1 + w) / s - 1``; a norm of another form raises ``UnsupportedError``."""
    if s.dim() != 1 or not bool((s > 0).all()) or not bool(torch.isfinite(s).all()):
        raise ValueError(f"scales must be a 1-D tensor of positive finite values, got shape {tuple(s.shape)}")
    c = _out_channels(prev)
    bad = [get_weight(m).shape[1] for m in layers if get_weight(m).shape[1] != s.numel()]
    if c != s.numel() or bad:
        raise ValueError(f"{s.numel()} scales do not fit: the previous op has {c} output channels, "
                         f"the layers {[get_weight(m).shape[1] for m in layers]} inputs")
    if prev.weight.dim() == 2:
        w = get_weight(prev)  # (C, in)
        set_weight(prev, w / s.to(w.dtype)[:, None])
        if getattr(prev, "bias", None) is not None:
            prev.bias.div_(s.to(prev.bias.dtype))
    else:
        _fold_norm(prev, s)
    for m in layers:
        w = get_weight(m)  # (out, C)
        set_weight(m, w * s.to(w.dtype))


@torch.no_grad()
def find_folds(model: nn.Module, sample: torch.Tensor) -> list[list[tuple[str, tuple[str, ...]]]]:
    """Per block, the ``(previous op, layers)`` pairs whose scales can be folded, found from the model itself.

    A norm feeds the linear layers that read its very output tensor (one probe forward of ``sample``
    (1, T) with hooks: Gemma-2's ``pre_feedforward_layernorm``, not its ``post_attention_layernorm``, feeds
    the MLP; Falcon's one norm feeds attention and MLP together).  From the structural layout
    (``lessonlib.layout``): V -> O when V and O are separate layers of equal width (no grouped KV, no
    fused QKV), and up -> down when the MLP is gated (down reads gate(x) * up(x)) with a separate up.
    """
    from ..calib import _clean
    from ..layout import block_layout

    blocks = decoder_blocks(model)
    out: list[list[tuple[str, tuple[str, ...]]]] = [[] for _ in blocks]
    last: dict[int, tuple[int, str, torch.Tensor]] = {}
    feeds: dict[tuple[int, str], list[str]] = {}
    handles = []
    for i, b in enumerate(blocks):
        for n, m in b.named_modules():
            if _is_norm(m):
                handles.append(m.register_forward_hook(
                    lambda _m, _a, y, i=i, n=n: last.__setitem__(id(_m), (i, n, y))))
            elif is_linear_like(m):
                def pre(_m, args, i=i, n=n):
                    for j, nn_, y in list(last.values()):
                        if j == i and args[0] is y:
                            feeds.setdefault((i, nn_), []).append(n)
                handles.append(m.register_forward_pre_hook(pre))
    try:
        model(sample[:1].to(next(model.parameters()).device), **_clean({}))
    finally:
        for h in handles:
            h.remove()
        last.clear()
    for (i, norm), lins in feeds.items():
        out[i].append((norm, tuple(dict.fromkeys(lins))))
    for i, b in enumerate(blocks):
        lay = block_layout(model, b)
        if lay.v is not None and lay.o is not None and not lay.v.fused and \
                lay.v.out_features() == get_weight(lay.o.module).shape[1]:
            out[i].append((lay.v.name, (lay.o.name,)))
        if lay.gated and not lay.mlp_in[1].fused:
            out[i].append((lay.mlp_in[1].name, (lay.mlp_out.name,)))
    return out


@atomic
def awq_fold_model(model: nn.Module, calib_batches: torch.Tensor, scheme: QuantScheme = QuantScheme(4, 64),
                   n_grid: int = 20, clip: bool = True, max_tokens: int = 4096, clip_tokens: int = 512,
                   device: torch.device | str = "auto",
                   folds: tuple[tuple[str, tuple[str, ...]], ...] | None = None) -> dict[str, QuantizedWeight]:
    """AWQ on every decoder block with the scales folded into the previous ops.

    ``folds`` (the same pairs for every block) defaults to what ``find_folds`` finds in each block; a
    layer no fold reaches (a post-norm encoder's Q/K/V, an MLP input after a GELU) is quantized with the
    clip search only (s = 1).

    Changes the model in place: norm weights and linear weights are rescaled, and every block linear
    holds its fake-quantized weight Q(W diag(s)) (the grid values of the returned codes).  Returns each
    layer's ``QuantizedWeight`` (codes, scales, zeros) by fully qualified name, ready for
    ``quantize_(model, scheme, qparams=...)``.
    """
    fqn = ModuleNames(model)  # also names MoE experts' per-expert views
    results: dict[str, QuantizedWeight] = {}
    from ..layout import require
    require(model, "awq_fold")
    per_block = find_folds(model, calib_batches) if folds is None else None

    def compress(i: int, block: nn.Module, stats: dict[str, InputSampleStats]) -> None:
        linears = block_linears(block)
        block_folds = folds if per_block is None else per_block[i]
        missing = [n for _, names in block_folds for n in names if n not in linears]
        if missing:
            raise ValueError(f"awq_fold_model: layers {missing} of the folds are not in {list(linears)}")
        x = {n: st.sample() for n, st in stats.items()}  # (tokens, in) each, shared ones are the same tensor
        s_in = {n: torch.ones(get_weight(m).shape[1], device=get_weight(m).device) for n, m in linears.items()}
        for prev_name, names in block_folds:
            prev, lins = block.get_submodule(prev_name), [linears[n] for n in names]
            if _out_channels(prev) != get_weight(lins[0]).shape[1]:
                continue  # grouped-query attention: v_proj's outputs are repeated, o_proj stays unscaled
            w = torch.cat([get_weight(m) for m in lins])  # (sum out, C): the joint output error
            r = awq_quantize(w, x[names[0]], scheme, n_grid=n_grid, clip=False, max_tokens=max_tokens)
            fold_scales(prev, lins, r.scales)
            for n in names:
                s_in[n] = r.scales
        for n, m in linears.items():
            w, xs = get_weight(m).float(), x[n] / s_in[n]  # the scaled weight and its (scaled) inputs
            ratios: float | torch.Tensor = 1.0
            if clip and scheme.group_size > 0:
                xc = xs if xs.shape[0] <= clip_tokens else xs[torch.linspace(0, xs.shape[0] - 1, clip_tokens).long()]
                ratios = awq_search_clip(w, xc, scheme, n_grid)  # (out, G)
            qw = quantize(w, scheme, clip_ratio=ratios)
            set_weight(m, qw.dequantize(torch.float32).to(get_weight(m).dtype))
            results[fqn[id(m)]] = qw

    def sampler(n_in: int, dev: torch.device | str) -> InputSampleStats:
        return InputSampleStats(n_in, dev, max_rows=max_tokens)

    run_sequential(model, calib_batches, compress, stats=sampler, device=device, share_inputs=True)
    return results
