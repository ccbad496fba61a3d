"""Wrong answers a student might hand in for notebook 00's exercises (each must score 0)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import mutant


# ------------------------------------------------------------------ q00_1 bytes_at_precision
@mutant("q00_1", "returns bits, not bytes (forgets the division by 8)")
def bits_not_bytes(n_params, bits, group_size=0, scale_bits=16, zero_bits=0):
    total = n_params * bits
    if group_size > 0:
        total += math.ceil(n_params / group_size) * (scale_bits + zero_bits)
    return float(total)


@mutant("q00_1", "forgets the zero-point storage")
def no_zero_point(n_params, bits, group_size=0, scale_bits=16, zero_bits=0):
    total = n_params * bits
    if group_size > 0:
        total += math.ceil(n_params / group_size) * scale_bits
    return total / 8


@mutant("q00_1", "floor instead of ceil for the number of groups (drops the partial last group)")
def floor_groups(n_params, bits, group_size=0, scale_bits=16, zero_bits=0):
    total = n_params * bits
    if group_size > 0:
        total += (n_params // group_size) * (scale_bits + zero_bits)
    return total / 8


@mutant("q00_1", "spreads the scale over the weights (scale_bits / group_size per weight, no ceil)")
def fractional_groups(n_params, bits, group_size=0, scale_bits=16, zero_bits=0):
    per_weight = bits + ((scale_bits + zero_bits) / group_size if group_size > 0 else 0)
    return n_params * per_weight / 8


@mutant("q00_1", "adds the scale bits as bytes (divides only the weight bits by 8)")
def scale_bits_as_bytes(n_params, bits, group_size=0, scale_bits=16, zero_bits=0):
    total = n_params * bits / 8
    if group_size > 0:
        total += math.ceil(n_params / group_size) * (scale_bits + zero_bits)
    return total


@mutant("q00_1", "n // group_size + 1 groups (one group too many when group_size divides n_params)")
def plus_one_groups(n_params, bits, group_size=0, scale_bits=16, zero_bits=0):
    total = n_params * bits
    if group_size > 0:
        total += (n_params // group_size + 1) * (scale_bits + zero_bits)
    return total / 8


@mutant("q00_1", "always adds group storage, dividing by group_size=0")
def always_groups(n_params, bits, group_size=0, scale_bits=16, zero_bits=0):
    return (n_params * bits + math.ceil(n_params / group_size) * (scale_bits + zero_bits)) / 8


# ------------------------------------------------------------------ q00_2 kv_cache_bytes_per_token
@mutant("q00_2", "forgets the factor 2 (caches K only)")
def kv_only_k(n_layers, n_kv_heads, head_dim, bytes_per_elem=2):
    return n_layers * n_kv_heads * head_dim * bytes_per_elem


@mutant("q00_2", "ignores bytes_per_elem (always assumes fp16)")
def kv_assumes_fp16(n_layers, n_kv_heads, head_dim, bytes_per_elem=2):
    return 2 * n_layers * n_kv_heads * head_dim * 2


@mutant("q00_2", "counts bits instead of bytes")
def kv_bits(n_layers, n_kv_heads, head_dim, bytes_per_elem=2):
    return 2 * n_layers * n_kv_heads * head_dim * bytes_per_elem * 8


@mutant("q00_2", "forgets the layers (one layer's cache)")
def kv_one_layer(n_layers, n_kv_heads, head_dim, bytes_per_elem=2):
    return 2 * n_kv_heads * head_dim * bytes_per_elem


@mutant("q00_2", "truncates bytes_per_elem to an integer (a 4-bit cache becomes 0 bytes)")
def kv_int_bytes(n_layers, n_kv_heads, head_dim, bytes_per_elem=2):
    return float(2 * n_layers * n_kv_heads * head_dim * int(bytes_per_elem))


# ------------------------------------------------------------------ q00_3 next_token_nll
def _batched(logits, tokens):
    if logits.dim() == 2:
        logits, tokens = logits.unsqueeze(0), tokens.unsqueeze(0)
    return logits, tokens


@mutant("q00_3", "no shift: scores token t with the logits of position t")
def nll_no_shift(logits, tokens):
    logits, tokens = _batched(logits, tokens)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), tokens.reshape(-1))


@mutant("q00_3", "shifts the wrong way: logits[t+1] scored against tokens[t]")
def nll_wrong_shift(logits, tokens):
    logits, tokens = _batched(logits, tokens)
    pred, target = logits[:, 1:], tokens[:, :-1]
    return F.cross_entropy(pred.reshape(-1, pred.shape[-1]).float(), target.reshape(-1))


@mutant("q00_3", "log base 2 (bits) instead of the natural log (nats)")
def nll_log2(logits, tokens):
    logits, tokens = _batched(logits, tokens)
    pred, target = logits[:, :-1], tokens[:, 1:]
    return F.cross_entropy(pred.reshape(-1, pred.shape[-1]).float(), target.reshape(-1)) / math.log(2)


@mutant("q00_3", "sums the NLLs instead of averaging them")
def nll_sum(logits, tokens):
    logits, tokens = _batched(logits, tokens)
    pred, target = logits[:, :-1], tokens[:, 1:]
    return F.cross_entropy(pred.reshape(-1, pred.shape[-1]).float(), target.reshape(-1), reduction="sum")


@mutant("q00_3", "log(softmax(x)): underflows to -inf for confident predictions")
def nll_log_softmax_naive(logits, tokens):
    logits, tokens = _batched(logits, tokens)
    probs = torch.softmax(logits[:, :-1].float(), dim=-1)
    picked = probs.gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1)
    return -torch.log(picked).mean()


@mutant("q00_3", "flattens the batch before shifting (predicts across sequence boundaries)")
def nll_flatten_first(logits, tokens):
    logits, tokens = _batched(logits, tokens)
    flat_logits, flat_tokens = logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1)
    return F.cross_entropy(flat_logits[:-1].float(), flat_tokens[1:])


@mutant("q00_3", "averages the probabilities, then takes the log")
def nll_mean_prob(logits, tokens):
    logits, tokens = _batched(logits, tokens)
    probs = torch.softmax(logits[:, :-1].float(), dim=-1).gather(-1, tokens[:, 1:].unsqueeze(-1))
    return -torch.log(probs.mean())


# ------------------------------------------------------------------ q00_4 perplexity_from_window_nlls
@mutant("q00_4", "averages the per-window perplexities instead of the NLLs")
def ppl_mean_of_ppls(nlls, seqlen):
    nlls = torch.as_tensor(nlls, dtype=torch.float64)
    return float(torch.exp(nlls).mean())


@mutant("q00_4", "exp of the total NLL of the windows (forgets to divide by the number of windows)")
def ppl_exp_sum(nlls, seqlen):
    nlls = torch.as_tensor(nlls, dtype=torch.float64)
    return float(torch.exp((nlls * seqlen).sum() / seqlen))


@mutant("q00_4", "treats the window means as totals (divides by W * seqlen without multiplying by seqlen)")
def ppl_double_divide(nlls, seqlen):
    nlls = torch.as_tensor(nlls, dtype=torch.float64)
    return float(torch.exp(nlls.sum() / (nlls.numel() * seqlen)))


@mutant("q00_4", "base 2: 2 ** mean NLL although the NLLs are in nats")
def ppl_base2(nlls, seqlen):
    nlls = torch.as_tensor(nlls, dtype=torch.float64)
    return float(2 ** nlls.mean())


@mutant("q00_4", "returns a tensor instead of a Python float")
def ppl_tensor(nlls, seqlen):
    nlls = torch.as_tensor(nlls, dtype=torch.float64)
    return torch.exp(nlls.mean())


@mutant("q00_4", "multiplies by seqlen but forgets to divide by it")
def ppl_forgets_seqlen(nlls, seqlen):
    nlls = torch.as_tensor(nlls, dtype=torch.float64)
    return float(torch.exp((nlls * seqlen).sum() / nlls.numel()))


@mutant("q00_4", "median window NLL instead of the mean")
def ppl_median(nlls, seqlen):
    nlls = torch.as_tensor(nlls, dtype=torch.float64)
    return float(torch.exp(nlls.median()))
