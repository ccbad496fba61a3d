"""Wrong answers a student might hand in for notebook 09's exercise (each must score 0)."""
from __future__ import annotations

from lessonlib.prune.movement import topk_mask
from . import mutant


@mutant("q09_1", "masks the score gradient too (dL/dS = dL/dW' * W * M): pruned weights can never come back")
def masked_scores(weight, scores, x, grad_out, sparsity):
    mask = topk_mask(scores, sparsity)
    ge = grad_out.t() @ x
    return mask, ge * mask, ge * weight * mask


@mutant("q09_1", "forgets the mask in dL/dW (pruned weights keep training)")
def unmasked_weight_grad(weight, scores, x, grad_out, sparsity):
    ge = grad_out.t() @ x
    return topk_mask(scores, sparsity), ge, ge * weight


@mutant("q09_1", "dL/dS = dL/dW' (forgets the factor W of the chain rule)")
def no_weight_factor(weight, scores, x, grad_out, sparsity):
    mask = topk_mask(scores, sparsity)
    ge = grad_out.t() @ x
    return mask, ge * mask, ge


@mutant("q09_1", "dL/dS = dL/dW' * |W| (drops the sign that tells towards / away from zero)")
def abs_weight(weight, scores, x, grad_out, sparsity):
    mask = topk_mask(scores, sparsity)
    ge = grad_out.t() @ x
    return mask, ge * mask, ge * weight.abs()


@mutant("q09_1", "averages dL/dW' over the batch instead of summing")
def batch_mean(weight, scores, x, grad_out, sparsity):
    mask = topk_mask(scores, sparsity)
    ge = grad_out.t() @ x / x.shape[0]
    return mask, ge * mask, ge * weight


@mutant("q09_1", "keeps the largest |W| (magnitude) instead of the highest scores")
def magnitude_mask(weight, scores, x, grad_out, sparsity):
    mask = topk_mask(weight.abs(), sparsity)
    ge = grad_out.t() @ x
    return mask, ge * mask, ge * weight


@mutant("q09_1", "keeps the lowest scores (prunes the weights that move away from zero)")
def lowest_kept(weight, scores, x, grad_out, sparsity):
    mask = topk_mask(-scores, sparsity)
    ge = grad_out.t() @ x
    return mask, ge * mask, ge * weight


@mutant("q09_2", "concept answer: reads a collapse as learning")
def concept_q09_2_0():
    return "A"


@mutant("q09_2", "concept answer: blames the eval set")
def concept_q09_2_1():
    return "C"


@mutant("q09_2", "concept answer: calibration")
def concept_q09_2_2():
    return "D"
