"""Early-exit heads on a frozen LLaMA-style decoder, and their training.

Schuster et al. (2022), "Confident Adaptive Language Modeling" (CALM), section 3 / 5: after every block i
an intermediate hidden state h_i can be decoded by the model's own output layer, W_out * norm(h_i); the
early-exit classifiers share the LM head, and the backbone is trained (here: kept frozen) so that these
intermediate predictions are good.  Each ``ExitHead`` here is a trainable copy of the final norm, an optional
small residual adapter ``h + A h`` (A zero-initialised, so an untrained head is the plain "logit lens"), and
the shared, frozen LM head.  The last block needs no head: its exit is the model's own output.

Training (backbone frozen): either distil each head towards the final layer's distribution
(KD, CALM's "oracle" of consistency with the full model; loss = T^2 KL, ``lessonlib.distill.losses.kd_kl``)
or cross-entropy on the next tokens (``objective="ce"``).
"""
from __future__ import annotations

import copy
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..config import get_profile, progress_disabled
from ..distill.losses import kd_kl
from ..training import batch_indices, check_loss
from ..models import decoder_blocks

__all__ = ["ExitHead", "ExitHeads", "check_llama_like", "block_outputs", "train_exit_heads"]


def check_llama_like(model: nn.Module) -> None:
    """Raise ValueError unless ``model`` has the LLaMA layout early exit relies on."""
    inner = getattr(model, "model", None)
    ok = all(hasattr(inner, a) for a in ("embed_tokens", "layers", "norm", "rotary_emb")) and hasattr(model, "lm_head")
    if ok:
        attn = inner.layers[0].self_attn
        ok = all(hasattr(attn, a) for a in ("k_proj", "v_proj", "head_dim")) and not hasattr(attn, "k_norm")
    if not ok:
        raise ValueError(f"early exit needs a LLaMA-style decoder (model.layers, model.norm, rotary_emb, lm_head, "
                         f"k_proj/v_proj); got {type(model).__name__} "
                         f"(model_type={getattr(getattr(model, 'config', None), 'model_type', None)!r})")


class ExitHead(nn.Module):
    """logits = lm_head(norm(h + adapter(h))) with a trainable norm copy; ``lm_head`` is shared, not owned."""

    def __init__(self, final_norm: nn.Module, lm_head: nn.Module, hidden: int, adapter: bool = False):
        super().__init__()
        self.norm = copy.deepcopy(final_norm)
        self.norm.requires_grad_(True)  # trainable even when the backbone (and so final_norm) is frozen
        self.adapter = nn.Linear(hidden, hidden, bias=False) if adapter else None
        if self.adapter is not None:
            nn.init.zeros_(self.adapter.weight)  # starts as the plain logit lens
        self._lm_head = (lm_head,)  # a tuple hides it from .parameters(): the head is shared and frozen

    def features(self, h: torch.Tensor) -> torch.Tensor:
        """norm(h + A h): what the shared LM head reads, (..., C)."""
        if self.adapter is not None:
            h = h + self.adapter(h)  # (..., C)
        return self.norm(h)

    def forward(self, h: torch.Tensor, vocab: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (..., V), or only the columns ``vocab`` (S,) of them (..., S)."""
        return _lm_columns(self._lm_head[0], self.features(h), vocab)


def _lm_columns(lm_head: nn.Module, x: torch.Tensor, vocab: torch.Tensor | None) -> torch.Tensor:
    if vocab is None:
        return lm_head(x)
    bias = None if lm_head.bias is None else lm_head.bias[vocab]
    return F.linear(x, lm_head.weight[vocab], bias)  # (..., S): only these rows of the (V, C) head


class ExitHeads(nn.Module):
    """One ``ExitHead`` after each of the first L-1 blocks of ``model``; exit L-1 is the model's own output."""

    def __init__(self, model: nn.Module, adapter: bool = False):
        super().__init__()
        check_llama_like(model)
        self.n_blocks = len(decoder_blocks(model))
        hidden = model.config.hidden_size
        self.heads = nn.ModuleList(ExitHead(model.model.norm, model.lm_head, hidden, adapter)
                                   for _ in range(self.n_blocks - 1))
        self._model = (model,)

    def logits(self, i: int, h: torch.Tensor, vocab: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of exit ``i`` (0-based block index) from that block's output h (..., C); only the
        vocabulary entries ``vocab`` (S,) when given."""
        if not 0 <= i < self.n_blocks:
            raise ValueError(f"exit index {i} is outside 0..{self.n_blocks - 1}")
        if i == self.n_blocks - 1:
            m = self._model[0]
            return _lm_columns(m.lm_head, m.model.norm(h), vocab)
        return self.heads[i](h, vocab)


def block_outputs(model: nn.Module, input_ids: torch.Tensor) -> list[torch.Tensor]:
    """The output hidden state of every decoder block, each (B, T, C), from one forward pass of the decoder
    stack.  The causal LM's base model runs (``model.base_model``, when it holds the blocks): the LM head's
    (B, T, V) logits, the costliest single product of a short window, would be discarded anyway."""
    outs: list[torch.Tensor] = []
    base = getattr(model, "base_model", model)
    blocks = decoder_blocks(model)
    if base is not model and not any(m is blocks[0] for m in base.modules()):
        base = model  # an unusual wrapper: run the whole model

    def hook(_m, _inp, out):
        outs.append(out[0] if isinstance(out, tuple) else out)

    handles = [b.register_forward_hook(hook) for b in blocks]
    try:
        base(input_ids=input_ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return outs


def train_exit_heads(model: nn.Module, heads: ExitHeads, windows: torch.Tensor, steps: int | None = None,
                     batch_size: int | None = None, lr: float = 1e-3, objective: str = "kd", T: float = 1.0,
                     seed: int = 0, profile=None, vocab_topk: int | None = None) -> list[float]:
    """Train the exit heads on a frozen backbone; returns the summed head loss of each step.

    ``objective="kd"``: T^2 KL(final layer's distribution || exit distribution) at temperature T;
    ``objective="ce"``: next-token cross-entropy.  ``windows`` (N, T) token ids.  Steps / batch size default
    to the profile.  Heads are backpropagated one at a time, so memory holds one head's logits.  Every
    parameter of ``model`` (the shared LM head included) is frozen while the heads train and gets its
    ``requires_grad`` flag back afterwards; the heads' own norm copies and adapters are the only trainables.

    ``vocab_topk=k`` computes every loss over a sampled vocabulary only: the union, over the batch's
    positions, of the final layer's k most likely tokens (and, for "ce", the targets), renormalised there.
    Most of a step's cost is the L-1 heads' (tokens x C x V) products; restricting V to a few thousand
    entries makes training many times cheaper, and equals the full loss when the final distribution puts
    (almost) no mass outside that set (the top-k "sparse KD" approximation).
    """
    if objective not in ("kd", "ce"):
        raise ValueError(f"objective={objective!r}; choose 'kd' or 'ce'")
    if windows.dim() != 2 or windows.shape[1] < 2:
        raise ValueError(f"windows must be (N, T) token ids with T >= 2, got shape {tuple(windows.shape)}")
    prof = get_profile(profile)
    steps = prof.train_steps if steps is None else steps
    batch_size = prof.batch_size if batch_size is None else batch_size
    if steps < 1 or not lr > 0:
        raise ValueError(f"steps={steps} must be >= 1 and lr={lr} > 0")
    V = model.lm_head.weight.shape[0]
    if vocab_topk is not None and not (isinstance(vocab_topk, int) and 1 <= vocab_topk <= V):
        raise ValueError(f"vocab_topk={vocab_topk!r} must be None (full vocabulary) or an int in 1..{V}")
    params = [p for p in heads.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    dev = next(model.parameters()).device
    was_training = model.training
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    model.requires_grad_(False)  # backbone and the shared LM head stay frozen: no gradient is even computed
    model.eval()
    try:
        return _train_heads(model, heads, windows, opt, steps, batch_size, objective, T, seed, dev, vocab_topk)
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(flags[n])
        model.train(was_training)


def _train_heads(model: nn.Module, heads: ExitHeads, windows: torch.Tensor, opt: torch.optim.Optimizer, steps: int,
                 batch_size: int, objective: str, T: float, seed: int, dev: torch.device,
                 vocab_topk: int | None) -> list[float]:
    losses = []
    for step in tqdm(range(steps), desc=f"exit heads ({objective})", disable=progress_disabled()):
        x = windows[batch_indices(windows.shape[0], batch_size, step, seed)].to(dev)  # (B, T)
        y = x[:, 1:]  # (B, T-1) next tokens
        with torch.no_grad():
            hs = block_outputs(model, x)  # L x (B, T, C)
            final = heads.logits(heads.n_blocks - 1, hs[-1][:, :-1])  # (B, T-1, V)
            vocab = None
            if vocab_topk is not None:  # sampled vocabulary: the final layer's top-k (+ targets), sorted
                vocab = final.topk(vocab_topk, -1).indices.unique()  # (S,)
                if objective == "ce":
                    vocab = torch.cat([vocab, y.reshape(-1)]).unique()
                    y = torch.searchsorted(vocab, y.contiguous())  # targets as positions in the sampled vocabulary
                final = final[..., vocab]  # (B, T-1, S)
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for i in range(heads.n_blocks - 1):
            z = heads.logits(i, hs[i][:, :-1], vocab)  # (B, T-1, V or S)
            if objective == "kd":
                loss = kd_kl(z, final, T)
            else:
                loss = F.cross_entropy(z.reshape(-1, z.shape[-1]).float(), y.reshape(-1))
            check_loss(loss, step, f"exit head {i} ({objective}) loss")  # before any gradient of this step
            loss.backward()
            total += float(loss.detach())
        opt.step()
        losses.append(total)
    return losses
