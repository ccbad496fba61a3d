"""The encoder task of the structured-pruning track: MiniLM + a classification head on movie reviews.

``finetune_reviews`` fine-tunes the embedded MiniLM-L6 with a fresh two-class head on
``lessonlib.data.load_reviews`` (fresh / rotten), sized by the profile's ``encoder_train`` /
``encoder_eval``.  ``review_head_importance`` scores every attention head with the gradient saliency of
Michel, Levy & Neubig 2019 (Eq. 2, via ``lessonlib.arch.heads.head_importance``) on the classification
loss, and ``global_lowest_heads`` picks the globally least important heads as in their section 4.2
(scores l2-normalised per layer, one ranking over all layers, at least one head left in every layer).

``head_importance`` feeds its loss one (1, T) token row at a time, so labelled sentences travel packed:
``pack_labelled`` pads the token ids to one length and appends the label as the last column;
``packed_classification_loss`` splits it again and masks the padding.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import get_profile, progress_disabled
from ..data import load_reviews
from ..training import classifier_finetune
from ..evaluate import classification_accuracy
from ..models import load_encoder
from .heads import head_counts, head_importance, prune_heads

__all__ = ["EncoderTaskResult", "finetune_reviews", "pack_labelled", "packed_classification_loss",
           "review_head_importance", "global_lowest_heads", "head_pruning_curve"]


@dataclass
class EncoderTaskResult:
    model: nn.Module = field(repr=False)
    tokenizer: object = field(repr=False)
    accuracy: float  # on the held-out reviews (movies never seen in training)
    train_size: int
    eval_size: int
    losses: list[float]
    seconds: float


def finetune_reviews(profile=None, epochs: int = 2, batch_size: int = 32, lr: float = 1e-4, max_length: int = 64,
                     seed: int = 0, encoder: str = "minilm-l6") -> EncoderTaskResult:
    """Fine-tune ``encoder`` + a two-class head on review sentences with AdamW; seeded and reproducible.

    The training set is ``load_reviews("train", profile.encoder_train, seed)``; accuracy is measured on
    ``load_reviews("test", profile.encoder_eval, seed)`` (reviews of other movies).
    """
    if epochs < 1 or batch_size < 1 or not lr > 0 or max_length < 8:
        raise ValueError(f"need epochs >= 1, batch_size >= 1, lr > 0, max_length >= 8; got {epochs}, "
                         f"{batch_size}, {lr}, {max_length}")
    prof = get_profile(profile)
    texts, labels = load_reviews("train", prof.encoder_train, seed)
    ev_texts, ev_labels = load_reviews("test", prof.encoder_eval, seed)
    torch.manual_seed(seed)  # the classification head's initialisation
    model, tok = load_encoder(encoder, task="classification", num_labels=2, device=prof.device)
    steps = epochs * -(-len(texts) // batch_size)
    t0 = time.perf_counter()
    losses = classifier_finetune(model, tok, texts, labels, steps, batch_size, lr, seed, max_length,
                                 weight_decay=0.01, what="fine-tune MiniLM on reviews")
    acc = classification_accuracy(model, tok, ev_texts, ev_labels, max_length=max_length)
    return EncoderTaskResult(model, tok, acc, len(texts), len(ev_texts), losses, time.perf_counter() - t0)


def pack_labelled(tokenizer, texts: list[str], labels: torch.Tensor, max_length: int = 64) -> torch.Tensor:
    """Token ids padded to one length with the label appended: (N, T + 1) LongTensor."""
    if len(texts) != len(labels) or not texts:
        raise ValueError(f"{len(texts)} texts and {len(labels)} labels: need the same, non-zero count")
    ids = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")["input_ids"]
    return torch.cat([ids, labels.long().view(-1, 1)], dim=1)  # (N, T + 1)


def packed_classification_loss(model: nn.Module, batch: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
    """Cross entropy of a sequence classifier on a packed (B, T + 1) batch (``pack_labelled``)."""
    ids, y = batch[:, :-1], batch[:, -1]  # (B, T), (B,)
    return model(input_ids=ids, attention_mask=(ids != pad_id).long(), labels=y).loss


def review_head_importance(model: nn.Module, tokenizer, texts: list[str], labels: torch.Tensor,
                           max_length: int = 64) -> list[torch.Tensor]:
    """Michel et al. gradient saliency of every head on the classification loss, l2-normalised per layer."""
    packed = pack_labelled(tokenizer, texts, labels, max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return head_importance(model, packed, "gradient",
                           loss_fn=lambda m, b: packed_classification_loss(m, b, pad), normalize=True)


def global_lowest_heads(scores: list[torch.Tensor], fraction: float) -> dict[int, list[int]]:
    """The ``round(fraction * total)`` lowest-scoring heads over all layers (ties: earlier layer, lower head).

    Every layer keeps at least its best head, so ``fraction`` must leave one head per layer.
    Returns ``{layer: [heads]}`` for ``prune_heads`` (layers that lose nothing are omitted).
    """
    sizes = [s.numel() for s in scores]
    total = sum(sizes)
    if not 0 <= fraction < 1 or round(fraction * total) > total - len(scores):
        raise ValueError(f"fraction={fraction} must lie in [0, 1) and leave one of each layer's heads "
                         f"(at most {(total - len(scores)) / total:.3f} here)")
    n = round(fraction * total)
    flat = torch.cat([s.float() for s in scores])  # (total,)
    layer = torch.cat([torch.full((k,), i) for i, k in enumerate(sizes)])
    head = torch.cat([torch.arange(k) for k in sizes])
    best = {i: int(torch.argmax(s)) for i, s in enumerate(scores)}
    out: dict[int, list[int]] = {}
    for j in torch.argsort(flat, stable=True).tolist():
        if n == 0:
            break
        i, h = int(layer[j]), int(head[j])
        if h == best[i]:
            continue
        out.setdefault(i, []).append(h)
        n -= 1
    return {i: sorted(h) for i, h in sorted(out.items())}


def head_pruning_curve(model: nn.Module, tokenizer, scores: list[torch.Tensor], fractions: list[float],
                       texts: list[str], labels: torch.Tensor, max_length: int = 64) -> list[dict]:
    """Accuracy after physically removing the globally least important heads, for each fraction.

    ``model`` is not modified (each point prunes a deep copy).  Returns one dict per fraction with
    ``fraction`` (asked), ``removed`` / ``total`` heads, ``accuracy`` and ``params``.
    """
    total = sum(n for n, _ in head_counts(model))
    out = []
    for f in tqdm(fractions, desc="head pruning sweep", disable=progress_disabled(), leave=False):
        m = prune_heads(copy.deepcopy(model), global_lowest_heads(scores, f))
        kept = sum(n for n, _ in head_counts(m))
        acc = classification_accuracy(m, tokenizer, texts, labels, max_length=max_length)
        out.append({"fraction": f, "removed": total - kept, "total": total, "accuracy": acc,
                    "params": sum(p.numel() for p in m.parameters())})
        del m
    return out
