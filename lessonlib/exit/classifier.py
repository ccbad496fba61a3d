"""CALM's early-exit classifier: a confidence that costs a dot product instead of a vocabulary-sized head.

Schuster et al. (2022), "Confident Adaptive Language Modeling", section 3.5: besides the softmax response, a
token's confidence at block i can come from a small classifier on the hidden state h_i, trained to predict
*local consistency*: whether exit i's greedy token equals the full model's.  Here it is one logistic
regression per exit on the RMS-normalised state,

    c_i(h) = sigmoid(w_i . h / rms(h) + b_i),

so checking an exit costs C multiply-adds (576 for SmolLM2) instead of V x C (28M): the exit head's logits
are computed once, for the block a token actually leaves at.  Labels come from teacher-forced passes with the
trained exit heads (``consistency_data``); the classifier is fitted full-batch on those cached features.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..config import progress_disabled
from .heads import ExitHeads, block_outputs

__all__ = ["ExitClassifier", "consistency_data", "train_exit_classifier", "classifier_confidence"]


def _rms_normalise(h: torch.Tensor) -> torch.Tensor:
    h = h.float()
    return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)  # (..., C)


class ExitClassifier(nn.Module):
    """One logistic regression per early exit (blocks 0..L-2); ``forward(i, h)`` gives c_i in [0, 1]."""

    def __init__(self, n_exits: int, hidden: int):
        super().__init__()
        if n_exits < 1 or hidden < 1:
            raise ValueError(f"n_exits={n_exits} and hidden={hidden} must both be >= 1")
        self.w = nn.Parameter(torch.zeros(n_exits, hidden))
        self.b = nn.Parameter(torch.zeros(n_exits))

    def logit(self, i: int, h: torch.Tensor) -> torch.Tensor:
        if not 0 <= i < self.w.shape[0]:
            raise ValueError(f"exit index {i} is outside 0..{self.w.shape[0] - 1} (the last block needs no classifier)")
        return _rms_normalise(h) @ self.w[i] + self.b[i]  # (...,)

    def forward(self, i: int, h: torch.Tensor) -> torch.Tensor:
        """Confidence (...,) that exit ``i``'s greedy token equals the full model's, from h (..., C)."""
        return torch.sigmoid(self.logit(i, h))


@torch.no_grad()
def consistency_data(model: nn.Module, heads: ExitHeads, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and labels for the classifier: ``(feats (L-1, N, C), agree (L-1, N) bool)``.

    ``agree[i, n]``: exit i's argmax equals the last block's argmax for token n (all positions of all windows).
    """
    if windows.dim() != 2 or windows.shape[0] < 1:
        raise ValueError(f"windows must be (W, T) token ids, got shape {tuple(windows.shape)}")
    dev = next(model.parameters()).device
    model.eval()
    feats, agree = [], []
    for w in range(windows.shape[0]):
        hs = block_outputs(model, windows[w: w + 1].to(dev))  # L x (1, T, C)
        final = heads.logits(heads.n_blocks - 1, hs[-1])[0].argmax(-1)  # (T,)
        feats.append(torch.stack([_rms_normalise(h[0]) for h in hs[:-1]]).cpu())  # (L-1, T, C)
        agree.append(torch.stack([heads.logits(i, hs[i])[0].argmax(-1) == final
                                  for i in range(heads.n_blocks - 1)]).cpu())  # (L-1, T)
    return torch.cat(feats, 1), torch.cat(agree, 1)


def train_exit_classifier(feats: torch.Tensor, agree: torch.Tensor, steps: int = 200, lr: float = 0.05,
                          weight_decay: float = 1e-2) -> tuple[ExitClassifier, list[float]]:
    """Fit one logistic regression per exit (full-batch Adam on binary cross-entropy); returns the model and
    the mean loss of each step.  ``feats`` (L-1, N, C) already RMS-normalised, ``agree`` (L-1, N).

    With C = 576 features and a few thousand tokens the classes are nearly separable: without the L2 term
    (``weight_decay``) the weights grow until some early-block confidences saturate at 1.0 on tokens that
    disagree, and no threshold can keep the changed predictions within budget (seen on SmolLM2 with 1e-4).
    """
    if feats.dim() != 3 or agree.shape != feats.shape[:2]:
        raise ValueError(f"feats must be (L-1, N, C) and agree (L-1, N); got {tuple(feats.shape)} and "
                         f"{tuple(agree.shape)}")
    if steps < 1 or not lr > 0:
        raise ValueError(f"steps={steps} must be >= 1 and lr={lr} > 0")
    clf = ExitClassifier(feats.shape[0], feats.shape[2])
    opt = torch.optim.Adam(clf.parameters(), lr=lr, weight_decay=weight_decay)
    y = agree.float()
    losses = []
    for _ in tqdm(range(steps), desc="exit classifier", disable=progress_disabled()):
        z = torch.einsum("lnc,lc->ln", feats, clf.w) + clf.b[:, None]  # (L-1, N)
        loss = F.binary_cross_entropy_with_logits(z, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return clf, losses


@torch.no_grad()
def classifier_confidence(model: nn.Module, clf: ExitClassifier, windows: torch.Tensor) -> torch.Tensor:
    """Teacher-forced classifier confidence of every exit for every predicted token, (L, W, T-1), shaped like
    ``exit_statistics``' conf: exits 0..L-2 from ``clf``, the last exit 1.  Backbone passes only, no head."""
    if windows.dim() != 2 or windows.shape[1] < 2:
        raise ValueError(f"windows must be (W, T) token ids with T >= 2, got shape {tuple(windows.shape)}")
    dev = next(model.parameters()).device
    model.eval()
    out = []
    for w in range(windows.shape[0]):
        hs = block_outputs(model, windows[w: w + 1].to(dev))  # L x (1, T, C)
        c = [clf(i, h[0, :-1]) for i, h in enumerate(hs[:-1])]  # (L-1) x (T-1,)
        out.append(torch.stack(c + [torch.ones_like(c[0])]).cpu())  # (L, T-1)
    return torch.stack(out, 1)  # (L, W, T-1)
