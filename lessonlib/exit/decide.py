"""Early-exit decisions, the quality / compute trade-off, and generation that really skips blocks.

CALM (Schuster et al. 2022), section 3.1 eq. (2): at block i the token exits when the confidence c_i
passes the threshold lambda; measures here are the softmax maximum and the (normalised) entropy.

- ``confidence``: 'maxprob' = max_v p(v); 'entropy' = 1 - H(p) / log V.  Both lie in [0, 1], higher is more
  confident, so one threshold scale serves both; a threshold above 1 never exits (the full model).
- ``exit_decision``: the first block whose confidence passes the threshold; the last block always exits.
- ``exit_statistics`` + ``threshold_sweep``: teacher-forced evaluation of every exit on held-out windows
  (every block is computed, as in CALM's calibration), then for each threshold the perplexity of the
  early-exit predictions against the mean number of blocks used per token.
- ``early_exit_generate``: greedy decoding (batch 1) that stops computing a token's blocks once it exits.

KV cache for skipped blocks (CALM section 3.2 / "state propagation"): later tokens attend to every block's
keys and values, so a token that exits after block i still needs K/V for blocks i+1..L-1.  We copy the
exited hidden state h_i forward and compute only those blocks' K/V projections from it:
K_j = RoPE(W_k norm_j(h_i)), V_j = W_v norm_j(h_i) — a matrix-vector product per skipped block instead of
the whole attention + MLP.  The prompt (prefill) always runs every block.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..evaluate import perplexity_from_window_nlls
from .heads import ExitHeads, block_outputs, check_llama_like

__all__ = ["confidence", "exit_decision", "exit_statistics", "SweepPoint", "threshold_sweep",
           "EarlyExitGeneration", "early_exit_generate"]

_METRICS = ("maxprob", "entropy")


def confidence(logits: torch.Tensor, metric: str = "maxprob") -> torch.Tensor:
    """Confidence in [0, 1] of each row of ``logits`` (..., V): max probability or 1 - H / log V."""
    if metric not in _METRICS:
        raise ValueError(f"metric={metric!r}; choose one of {_METRICS}")
    return _confidence_of_logp(torch.log_softmax(logits.float(), dim=-1), metric)


def _confidence_of_logp(logp: torch.Tensor, metric: str) -> torch.Tensor:
    """``confidence`` from log-probabilities (..., V) already computed (exit_statistics reuses its NLLs' ones)."""
    if metric == "maxprob":
        return logp.max(-1).values.exp()
    ent = -(logp.exp() * logp).sum(-1)  # (...,) nats
    return (1 - ent / math.log(logp.shape[-1])).clamp(0, 1)


def exit_decision(conf: torch.Tensor, threshold: float) -> torch.Tensor:
    """Exit block per token: the first block i with conf[i] >= threshold, else the last block.

    ``conf`` (L, N): confidence of each of the L exits for N tokens.  Returns (N,) long block indices
    in 0..L-1 (blocks used = index + 1).  A threshold > 1 never exits early.
    """
    if conf.dim() != 2 or conf.shape[0] < 1:
        raise ValueError(f"conf must be (L, N) with L >= 1 exits, got shape {tuple(conf.shape)}")
    if not isinstance(threshold, (int, float)) or math.isnan(threshold):
        raise ValueError(f"threshold={threshold!r} must be a number (> 1 means never exit early)")
    # BEGIN SOLUTION
    passes = conf >= threshold  # (L, N)
    passes[-1] = True  # the last block always exits
    return passes.int().argmax(0)  # (N,) argmax returns the first maximal index
    # END SOLUTION


@torch.no_grad()
def exit_statistics(model: nn.Module, heads: ExitHeads, windows: torch.Tensor, metric: str = "maxprob",
                    with_top1: bool = False) -> tuple[torch.Tensor, ...]:
    """Teacher-forced (conf, nll) of every exit for every predicted token: two (L, W, T-1) tensors.

    ``nll[i, w, t]`` is the negative log-likelihood of token t+1 of window w under exit i.  With
    ``with_top1`` a third (L, W, T-1) tensor holds each exit's greedy (argmax) prediction.  The
    early-exit classifier's confidences need no head: ``lessonlib.exit.classifier.classifier_confidence``.
    """
    if windows.dim() != 2 or windows.shape[1] < 2:
        raise ValueError(f"windows must be (W, T) token ids with T >= 2, got shape {tuple(windows.shape)}")
    dev = next(model.parameters()).device
    model.eval()
    confs, nlls, tops = [], [], []
    for w in range(windows.shape[0]):
        x = windows[w: w + 1].to(dev)  # (1, T)
        hs = block_outputs(model, x)
        c_w, n_w, t_w = [], [], []
        for i, h in enumerate(hs):
            full = heads.logits(i, h)[0]  # (T, V)
            logp = torch.log_softmax(full[:-1].float(), dim=-1)  # (T-1, V): position t predicts t+1
            c_w.append(_confidence_of_logp(logp, metric))
            n_w.append(-logp.gather(-1, x[0, 1:, None]).squeeze(-1))  # (T-1,) = token_nlls(full, x[0]), one softmax
            t_w.append(full[:-1].float().argmax(-1))
        confs.append(torch.stack(c_w))
        nlls.append(torch.stack(n_w))
        tops.append(torch.stack(t_w))
    out = (torch.stack(confs, 1).cpu(), torch.stack(nlls, 1).cpu())  # (L, W, T-1) each
    return out + (torch.stack(tops, 1).cpu(),) if with_top1 else out


@dataclass
class SweepPoint:
    threshold: float
    ppl: float  # perplexity of the early-exit predictions (GPTQ window protocol)
    mean_blocks: float  # mean blocks computed per token (L = no saving)
    speedup_bound: float  # L / mean_blocks: the block-compute saving, ignoring head and K/V costs
    exit_histogram: list[int]  # tokens exiting after each block
    first_exit: int  # the earliest block (0-based) any token exits after; L-1 when none exits early


def threshold_sweep(conf: torch.Tensor, nll: torch.Tensor, thresholds: list[float]) -> list[SweepPoint]:
    """Quality against compute for each threshold, from ``exit_statistics`` output (L, W, T-1)."""
    if conf.shape != nll.shape or conf.dim() != 3:
        raise ValueError(f"conf {tuple(conf.shape)} and nll {tuple(nll.shape)} must both be (L, W, T-1)")
    if not thresholds:
        raise ValueError("thresholds is empty; give at least one")
    L, W, Tm1 = conf.shape
    out = []
    for thr in thresholds:
        idx = exit_decision(conf.reshape(L, -1), float(thr))  # (W*(T-1),)
        chosen = nll.reshape(L, -1).gather(0, idx[None]).view(W, Tm1)  # (W, T-1)
        mean_blocks = float((idx + 1).double().mean())
        out.append(SweepPoint(threshold=float(thr), ppl=perplexity_from_window_nlls(chosen.mean(1), Tm1 + 1),
                              mean_blocks=mean_blocks, speedup_bound=L / mean_blocks,
                              exit_histogram=torch.bincount(idx, minlength=L).tolist(),
                              first_exit=int(idx.min())))
    return out


@dataclass
class EarlyExitGeneration:
    tokens: torch.Tensor  # (1, prompt + new) like model.generate
    blocks_used: list[int]  # per generated token (the first comes from the full prefill)
    cache: object = None  # the DynamicCache: K/V of every block for all but the last token

    @property
    def mean_blocks(self) -> float:
        return sum(self.blocks_used) / max(len(self.blocks_used), 1)


def _propagate_kv(block: nn.Module, h: torch.Tensor, position_embeddings, cache, layer_idx: int) -> None:
    """Write block ``layer_idx``'s K/V for a token that exited earlier, computed from its exited state h (1, 1, C)."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    attn = block.self_attn
    hn = block.input_layernorm(h)  # (1, 1, C)
    shape = (*hn.shape[:-1], -1, attn.head_dim)
    k = attn.k_proj(hn).view(shape).transpose(1, 2)  # (1, kv_heads, 1, head_dim)
    v = attn.v_proj(hn).view(shape).transpose(1, 2)
    cos, sin = position_embeddings
    _, k = apply_rotary_pos_emb(k, k, cos, sin)
    cache.update(k, v, layer_idx)


@torch.no_grad()
def early_exit_generate(model: nn.Module, heads: ExitHeads, input_ids: torch.Tensor, max_new_tokens: int = 16,
                        threshold: float = 0.9, metric: str = "maxprob", eos_token_id: int | None = None,
                        first_exit: int = 0, classifier=None) -> EarlyExitGeneration:
    """Greedy decoding with per-token early exit and state propagation for skipped blocks' K/V (batch 1).

    With ``threshold`` > 1 no token exits early and the output equals ``model.generate(do_sample=False)``.
    An exit check runs a full-vocabulary head (V x C: for SmolLM2 about 8 times a block's weights), so
    checks start at block ``first_exit`` (0-based; e.g. ``SweepPoint.first_exit`` found on held-out text,
    where no token exited earlier) and are skipped entirely when ``threshold`` > 1.  With an
    ``ExitClassifier`` (``lessonlib.exit.classifier``) a check is a dot product instead, and the exit head runs
    once, at the block the token leaves.
    """
    from transformers import DynamicCache

    check_llama_like(model)
    if input_ids.dim() != 2 or input_ids.shape[0] != 1 or input_ids.shape[1] < 1:
        raise ValueError(f"input_ids must be (1, T) with T >= 1 (batch 1), got {tuple(input_ids.shape)}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1")
    if metric not in _METRICS:
        raise ValueError(f"metric={metric!r}; choose one of {_METRICS}")
    model.eval()
    dev = next(model.parameters()).device
    inner, blocks = model.model, model.model.layers
    L = len(blocks)
    if not (isinstance(first_exit, int) and 0 <= first_exit <= L - 1):
        raise ValueError(f"first_exit={first_exit!r} must be a block index in 0..{L - 1}")
    if threshold > 1:  # confidences lie in [0, 1]: nothing can exit, so no check is worth its LM head
        first_exit = L - 1
    cache = DynamicCache(config=model.config)
    ids = input_ids.to(dev)
    logits = model(input_ids=ids, past_key_values=cache, use_cache=True).logits[:, -1]  # (1, V) full prefill
    tok = logits.argmax(-1, keepdim=True)  # (1, 1)
    out, used = [tok], [L]
    for _ in range(max_new_tokens - 1):
        if eos_token_id is not None and int(tok) == eos_token_id:
            break
        pos = torch.tensor([[cache.get_seq_length()]], device=dev)  # (1, 1)
        h = inner.embed_tokens(tok)  # (1, 1, C)
        pe = inner.rotary_emb(h, position_ids=pos)
        for i, block in enumerate(blocks):
            h = block(h, attention_mask=None, position_ids=pos, past_key_values=cache, use_cache=True,
                      position_embeddings=pe)
            h = h[0] if isinstance(h, tuple) else h
            if i < first_exit:
                continue
            if classifier is not None and i < L - 1 and float(classifier(i, h[:, -1])) < threshold:
                continue  # the cheap check failed: this exit's head never runs
            logits = heads.logits(i, h)[:, -1]  # (1, V)
            if i < L - 1 and (classifier is not None or float(confidence(logits, metric)) >= threshold):
                for j in range(i + 1, L):  # state propagation: K/V of skipped blocks from the exited h
                    _propagate_kv(blocks[j], h, pe, cache, j)
                break
        used.append(i + 1)
        tok = logits.argmax(-1, keepdim=True)
        out.append(tok)
    return EarlyExitGeneration(tokens=torch.cat([ids] + out, dim=1).cpu(), blocks_used=used, cache=cache)
