"""Movement pruning primitives (Sanh, Wolf & Rush 2020, "Movement Pruning: Adaptive Sparsity by Fine-Tuning").

Magnitude pruning keeps weights that are *large*; movement pruning keeps weights that *move away from
zero* during fine-tuning.  Each weight gets a score S; the layer computes with ``W' = W * M(S)``:

* hard movement (their section 4, Eq. 3): ``M = Top_v(S)`` keeps the fraction v with the highest scores;
  the straight-through estimator passes ``dL/dM`` to S unchanged, so ``dL/dS_ij = dL/dW'_ij * W_ij`` and
  a plain SGD step on S is the score accumulation ``S <- S - lr * W * grad``: scores grow when W and its
  gradient have opposite signs (the weight moves away from zero).
* soft movement (Eq. 4 and section 4): ``M = 1(S > tau)`` with a fixed threshold, plus the regulariser
  ``lambda * sum sigmoid(S)`` that pushes scores down, so the sparsity is learned.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .masks import _check_matrix, prune_lowest

__all__ = ["movement_score_update", "topk_mask", "soft_movement_mask", "soft_movement_penalty", "TopKSTE",
           "topk_ste", "movement_backward", "movement_train_step"]


def movement_score_update(scores: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor,
                          lr: float = 1.0) -> torch.Tensor:
    """Accumulate movement scores: ``S - lr * W * dL/dW'`` (Sanh et al. 2020, Eq. 3's gradient), a new tensor.

    scores, weight, grad: (out, in).  ``grad`` is the gradient of the loss with respect to the weight the
    layer actually used.
    """
    for name, t in (("scores", scores), ("weight", weight), ("grad", grad)):
        _check_matrix(t, name)
    if not (scores.shape == weight.shape == grad.shape):
        raise ValueError(f"shapes differ: scores {tuple(scores.shape)}, weight {tuple(weight.shape)}, "
                         f"grad {tuple(grad.shape)}")
    return scores - lr * weight * grad  # (out, in)


def topk_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Hard movement mask ``Top_v(S)`` for one matrix: prune exactly ``n_to_prune(numel, sparsity)`` lowest
    scores (ties: lower index pruned first); bool keep-mask (out, in)."""
    return prune_lowest(scores, sparsity)


def soft_movement_mask(scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Soft movement mask ``1(S > tau)`` (Sanh et al. 2020, section 4): a bool keep-mask (out, in)."""
    _check_matrix(scores, "scores")
    if not isinstance(threshold, (int, float)) or threshold != threshold:
        raise ValueError(f"threshold={threshold!r} must be a real number")
    return scores > threshold


def soft_movement_penalty(scores: torch.Tensor) -> torch.Tensor:
    """The soft-movement regulariser ``sum sigmoid(S)`` (multiply by lambda and add to the loss)."""
    return torch.sigmoid(scores).sum()


class TopKSTE(torch.autograd.Function):
    """``M = Top_v(S)`` in the forward pass, identity (straight-through) gradient to S in the backward."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, sparsity: float) -> torch.Tensor:
        return topk_mask(scores.detach(), sparsity).to(scores.dtype)  # (out, in) of 0.0 / 1.0

    @staticmethod
    def backward(ctx, grad_mask: torch.Tensor):
        return grad_mask, None


def topk_ste(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Float 0/1 top-k mask of ``scores`` with a straight-through gradient (see ``TopKSTE``)."""
    return TopKSTE.apply(scores, sparsity)


def movement_backward(weight: torch.Tensor, scores: torch.Tensor, x: torch.Tensor, grad_out: torch.Tensor,
                      sparsity: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The backward pass of a hard-movement layer ``y = x (W * M)^T`` with ``M = Top_v(S)``, by hand.

    weight, scores: (out, in); x: (batch, in), the layer's input; grad_out: (batch, out) = dL/dy.
    Returns ``(mask, grad_weight, grad_scores)``: the bool keep-mask ``Top_v(S)`` (``topk_mask``),
    ``dL/dW = dL/dW' * M`` (a pruned weight gets no gradient) and ``dL/dS = dL/dW' * W`` (Sanh et al. 2020,
    Eq. 3's straight-through gradient: every score moves, also those of pruned weights), where
    ``dL/dW' = grad_out^T x`` sums over the batch.  ``movement_score_update(S, W, dL/dW')`` is one SGD step.
    """
    for name, t in (("weight", weight), ("scores", scores), ("x", x), ("grad_out", grad_out)):
        _check_matrix(t, name)
    if scores.shape != weight.shape or x.shape[1] != weight.shape[1] or grad_out.shape != (x.shape[0], weight.shape[0]):
        raise ValueError(f"shapes do not fit y = x (W * M)^T: weight {tuple(weight.shape)}, scores "
                         f"{tuple(scores.shape)}, x {tuple(x.shape)}, grad_out {tuple(grad_out.shape)}")
    # BEGIN SOLUTION
    mask = topk_mask(scores, sparsity)  # (out, in) bool, True = keep
    grad_eff = grad_out.t() @ x  # (out, in): dL/dW' summed over the batch
    return mask, grad_eff * mask, grad_eff * weight
    # END SOLUTION


def movement_train_step(layer: nn.Linear, scores: nn.Parameter, x: torch.Tensor, y: torch.Tensor,
                        optimizer: torch.optim.Optimizer, sparsity: float) -> float:
    """One hard-movement training step on a regression problem; returns the MSE loss before the step.

    The layer computes ``x @ (W * Top_v(S))^T + b``; the loss is backpropagated to W, b and (straight
    through) to S, then ``optimizer`` (which must hold ``scores`` and the layer's parameters) steps.
    x: (batch, in); y: (batch, out).
    """
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"movement_train_step needs an nn.Linear, got {type(layer).__name__}")
    if scores.shape != layer.weight.shape:
        raise ValueError(f"scores {tuple(scores.shape)} must match the weight {tuple(layer.weight.shape)}")
    optimizer.zero_grad(set_to_none=True)
    w_eff = layer.weight * topk_ste(scores, sparsity)  # (out, in)
    loss = F.mse_loss(F.linear(x, w_eff, layer.bias), y)
    loss.backward()
    optimizer.step()
    return float(loss.detach())
