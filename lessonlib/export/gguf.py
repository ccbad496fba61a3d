"""Out to other runtimes: write a course-quantized Llama-family model (SmolLM2) as a GGUF file.

GGUF (the llama.cpp file format) stores each weight in blocks of 32 values along the input dimension.
Two of its block types are exactly grids of the course (``lessonlib.quant.affine``), once their scales
are rounded to float16 as the file stores them:

* ``Q8_0``: per block a float16 scale d and 32 int8 codes, w = d q, with d = max|w| / 127 (llama.cpp's
  ``quantize_row_q8_0``): ``QuantScheme(8, 32, sym=True, restricted=True)``.
* ``Q4_1``: per block a float16 scale d and minimum m and 32 4-bit codes, w = d q + m, d = (max - min) / 15:
  ``QuantScheme(4, 32, sym=False)`` (float zero point z = -m / d).  (``Q4_0``'s scale is signed: the
  value of largest magnitude over -8, so its grid is none of the course's; it is not offered.)

``quantize_for_gguf`` puts a model on such a grid (float16 scales, held in float32 so the course's
dequantization (q - z) s reproduces the file's d q + m), ``write_gguf`` writes the file from the codes
themselves, and ``transformers`` reads it back with ``from_pretrained(folder, gguf_file=name)``.
The file carries the model configuration but no tokenizer.  Q and K rows are permuted as llama.cpp's
converter does (transformers undoes it on load).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..models import get_weight
from ..quant.affine import QuantScheme, compute_qparams, quantize_codes, expand_qparams
from ..models import is_linear_like
from ..quant.qlinear import QuantLinear, quant_linears, quantize_

__all__ = ["GGUF_SCHEMES", "gguf_grid", "quantize_for_gguf", "write_gguf"]

GGUF_SCHEMES = {"Q8_0": QuantScheme(8, 32, True, restricted=True), "Q4_1": QuantScheme(4, 32, False)}
_BLOCK = 32
_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
          "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
          "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


def _qtype(qtype: str) -> QuantScheme:
    if qtype not in GGUF_SCHEMES:
        raise ValueError(f"qtype={qtype!r} is not supported; choose one of {sorted(GGUF_SCHEMES)}")
    return GGUF_SCHEMES[qtype]


def gguf_grid(w: torch.Tensor, qtype: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Codes (out, in) and float16-representable scales and zeros (out, in/32), in float32, of ``w`` on the
    grid of ``qtype``."""
    sch = _qtype(qtype)
    if w.shape[1] % _BLOCK:
        raise ValueError(f"GGUF blocks hold 32 values; the row length {w.shape[1]} is not a multiple of 32")
    s, z = compute_qparams(w, sch)  # (out, G)
    if sch.sym:
        s = s.half().float()
        z = torch.zeros_like(s)
    else:
        wmin = -(z * s)  # the group minimum
        s, m = s.half().float(), wmin.half().float()
        z = -m / s  # so that (q - z) s = q s + m
    codes = quantize_codes(w, expand_qparams(s, w.shape[1]), expand_qparams(z, w.shape[1]), sch)
    return codes, s, z


def quantize_for_gguf(model: nn.Module, qtype: str = "Q8_0") -> nn.Module:
    """Replace the decoder's linear layers (not the LM head) by ``QuantLinear`` on the ``qtype`` grid, in
    place (scales float16-valued, held in float32).  Returns ``model``."""
    sch = _qtype(qtype)

    class _P:  # the qparams object quantize_ expects
        def __init__(self, c, s, z):
            self.codes, self.scales, self.zeros = c, s, z

    lins = {n: m for n, m in model.named_modules() if is_linear_like(m) and n.split(".")[-1] != "lm_head"}
    qp = {n: _P(*gguf_grid(get_weight(m).float(), qtype)) for n, m in lins.items()}
    return quantize_(model, sch, filter_fn=lambda m, n: n in qp, qparams=qp, ) if qp else model


def _blocks(q: QuantLinear, qtype: str) -> np.ndarray:
    """The layer's codes as GGUF blocks: uint8 (out, in/32 * bytes per block)."""
    codes = q.codes()  # (out, in)
    out_f, in_f = codes.shape
    c = codes.reshape(out_f, in_f // _BLOCK, _BLOCK)  # (out, G, 32)
    d = q.scales.float().expand(out_f, -1).half()  # (out, G)
    if qtype == "Q8_0":
        qs = c.to(torch.int8).numpy().view(np.uint8)  # (out, G, 32)
        blk = np.concatenate([d.numpy()[..., None].view(np.uint8), qs], axis=-1)  # 2 + 32 bytes
    else:
        m = (-(q.zeros.float().expand(out_f, -1) * q.scales.float().expand(out_f, -1))).half()  # (out, G)
        u = c.to(torch.uint8)
        qs = (u[..., :16] | (u[..., 16:] << 4)).numpy()  # element j low nibble, j + 16 high nibble
        blk = np.concatenate([d.numpy()[..., None].view(np.uint8), m.numpy()[..., None].view(np.uint8), qs],
                             axis=-1)  # 2 + 2 + 16 bytes
    return np.ascontiguousarray(blk.reshape(out_f, -1))


def _permute_rows(t: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp's Q/K row order (rotary halves interleaved per head); transformers inverts it on load."""
    return t.reshape(n_head, 2, t.shape[0] // n_head // 2, *t.shape[1:]).swapaxes(1, 2).reshape(t.shape)


def write_gguf(model: nn.Module, path: str, qtype: str = "Q8_0") -> None:
    """Write a Llama-family model whose decoder linears are ``QuantLinear`` on the ``qtype`` grid (see
    ``quantize_for_gguf``) to ``path``; every other tensor (embeddings, norms, an untied LM head) as F32."""
    import gguf

    sch = _qtype(qtype)
    cfg = model.config
    if getattr(cfg, "model_type", None) != "llama":
        raise ValueError(f"write_gguf supports the llama architecture, got {getattr(cfg, 'model_type', None)!r}")
    qls = quant_linears(model)
    bad = [n for n, q in qls.items() if q.scheme != sch or q.g_idx is not None]
    if not qls or bad:
        raise ValueError(f"every decoder linear must be a QuantLinear with scheme {sch} (run quantize_for_gguf("
                         f"model, {qtype!r})); offending: {bad[:3] or 'none quantized'}")
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("lessonlib-export")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_dimension_count(cfg.hidden_size // n_head)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(float(getattr(cfg, "rope_theta", None) or cfg.rope_parameters["rope_theta"]))
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type({"Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "Q4_1": gguf.LlamaFileType.MOSTLY_Q4_1}[qtype])
    raw = gguf.GGMLQuantizationType.Q8_0 if qtype == "Q8_0" else gguf.GGMLQuantizationType.Q4_1
    f32 = lambda t: np.ascontiguousarray(t.detach().float().numpy())  # noqa: E731
    w.add_tensor("token_embd.weight", f32(model.model.embed_tokens.weight))
    w.add_tensor("output_norm.weight", f32(model.model.norm.weight))
    if not getattr(cfg, "tie_word_embeddings", False):
        w.add_tensor("output.weight", f32(get_weight(model.lm_head) if is_linear_like(model.lm_head)
                                          else model.lm_head.dequantize_weight(torch.float32)))
    for i, layer in enumerate(model.model.layers):
        for hf, gg in _NAMES.items():
            mod = layer.get_submodule(hf)
            name = f"blk.{i}.{gg}.weight"
            if isinstance(mod, QuantLinear):
                blk = torch.from_numpy(_blocks(mod, qtype))
                if gg in ("attn_q", "attn_k"):  # permuting whole rows keeps every block intact
                    blk = _permute_rows(blk, n_head if gg == "attn_q" else n_kv)
                w.add_tensor(name, blk.numpy(), raw_dtype=raw)  # shape given in bytes
            else:
                w.add_tensor(name, f32(mod.weight))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
