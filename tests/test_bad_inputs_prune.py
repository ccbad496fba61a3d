"""Tried bad inputs, pruning, architecture, low-rank, sharing and distillation (issue 23)."""
from __future__ import annotations

import copy

import pytest
import torch

from bad_inputs import answers, cases, check_case, tiny
from lessonlib.arch.depth import block_influence, lowest_influence_blocks, remove_blocks
from lessonlib.arch.ffn import keep_top_neurons, prune_ffn_neurons
from lessonlib.arch.gqa import convert_to_gqa
from lessonlib.arch.heads import prune_heads
from lessonlib.arch.moe import top_k_route
from lessonlib.distill.losses import kd_kl
from lessonlib.lowrank.svd import lowrank_model, rank_from_energy
from lessonlib.prune.magnitude import magnitude_mask, magnitude_prune_model
from lessonlib.prune.obs import obs_prune
from lessonlib.prune.sparsegpt import sparsegpt_prune, sparsegpt_prune_model
from lessonlib.prune.wanda import wanda_mask, wanda_prune_model
from lessonlib.share.clustering import cluster_model, cluster_weight, kmeans_1d
from lessonlib.share.tying import sharing_groups, tie_blocks

G = torch.Generator().manual_seed(0)
W = torch.randn(4, 8, generator=G)
X = torch.randn(64, 8, generator=G)
H = X.T @ X / 64
NORMS = X.pow(2).mean(0)
NAN = float("nan")
S = torch.tensor([3.0, 2.0, NAN])
LOGITS = torch.randn(2, 5, generator=G)
NAN_LOGITS = LOGITS.clone()
NAN_LOGITS[0, 1] = NAN


def _m():
    return copy.deepcopy(tiny())


CAL = torch.zeros(2, 8, dtype=torch.long)

PRUNE = [
    # layer-level
    ("wanda-sparsity-1", lambda: wanda_mask(W, NORMS, 1.0), ValueError, "sparsity=1.0"),
    ("wanda-sparsity-neg", lambda: wanda_mask(W, NORMS, -0.1), ValueError, "sparsity=-0.1"),
    ("wanda-sparsity-str", lambda: wanda_mask(W, NORMS, "0.5"), ValueError, "sparsity='0.5'"),
    ("wanda-norms-shape", lambda: wanda_mask(W, NORMS[:5], 0.5), ValueError, "5"),
    ("wanda-norms-nan", lambda: wanda_mask(W, NORMS * NAN, 0.5), ValueError, "input_sq_norms must be finite"),
    ("magnitude-nm-bad", lambda: magnitude_mask(W, 0.5, 3, 2), ValueError, "3"),
    ("sparsegpt-zero-hessian", lambda: sparsegpt_prune(W, torch.zeros(8, 8), 0.5), ValueError, "all-zero diagonal"),
    ("sparsegpt-asym-hessian", lambda: sparsegpt_prune(W, H + torch.triu(torch.ones(8, 8)), 0.5), ValueError,
     "not symmetric"),
    ("sparsegpt-nan-hessian", lambda: sparsegpt_prune(W, H * NAN, 0.5), ValueError, "non-finite"),
    ("obs-zero-hessian", lambda: obs_prune(W, torch.zeros(8, 8), 0.5), ValueError, "all-zero diagonal"),
    ("obs-asym-hessian", lambda: obs_prune(W, H + torch.triu(torch.ones(8, 8)), 0.5), ValueError, "not symmetric"),
    # NaN in statistics
    ("keep-top-nan", lambda: keep_top_neurons(S, 2), ValueError, "scores has 1 non-finite"),
    ("keep-top-inf", lambda: keep_top_neurons(torch.tensor([1.0, float("inf")]), 1), ValueError, "non-finite"),
    ("keep-top-bool", lambda: keep_top_neurons(torch.ones(3), True), TypeError, "keep=True"),
    ("keep-top-str", lambda: keep_top_neurons(torch.ones(3), "2"), TypeError, "keep='2'"),
    ("keep-top-too-many", lambda: keep_top_neurons(torch.ones(3), 4), ValueError, "keep=4"),
    ("keep-top-fraction", lambda: keep_top_neurons(torch.ones(3), 1.5), ValueError, "keep=1.5"),
    ("keep-top-empty", lambda: keep_top_neurons(torch.ones(0), 1), ValueError, "non-empty"),
    ("block-influence-nan", lambda: block_influence(torch.ones(2, 3), torch.full((2, 3), NAN)), ValueError, "h_out"),
    ("block-influence-shape", lambda: block_influence(torch.ones(2, 3), torch.ones(2, 4)), ValueError, "(2, 4)"),
    ("lowest-n-float", lambda: lowest_influence_blocks([0.1, 0.2, 0.3], 2.5), TypeError, "n=2.5"),
    ("lowest-n-all", lambda: lowest_influence_blocks([0.1, 0.2], 2), ValueError, "n=2"),
    ("lowest-nan", lambda: lowest_influence_blocks([0.1, NAN, 0.3], 1), ValueError, "scores[1]"),
    ("rank-energy-nan", lambda: rank_from_energy(S, 0.9), ValueError, "singular values has 1 non-finite"),
    ("rank-energy-zero", lambda: rank_from_energy(torch.ones(3), 0.0), ValueError, "energy=0.0"),
    ("rank-energy-big", lambda: rank_from_energy(torch.ones(3), 1.5), ValueError, "energy=1.5"),
    ("rank-energy-list", lambda: rank_from_energy([3.0, 1.0], 0.9), TypeError, "[3.0, 1.0]"),
    ("kd-kl-nan-student", lambda: kd_kl(NAN_LOGITS, LOGITS), ValueError, "student logits"),
    ("kd-kl-nan-teacher", lambda: kd_kl(LOGITS, NAN_LOGITS), ValueError, "teacher logits"),
    ("kd-kl-shape", lambda: kd_kl(LOGITS, LOGITS[:, :4]), ValueError, "4"),
    ("kd-kl-temperature", lambda: kd_kl(LOGITS, LOGITS, T=0.0), ValueError, "T=0"),
    # counts as types
    ("kmeans-k-float", lambda: kmeans_1d(torch.randn(10), 2.5), TypeError, "k=2.5"),
    ("kmeans-k-zero", lambda: kmeans_1d(torch.randn(10), 0), ValueError, "k=0"),
    ("kmeans-iters-neg", lambda: kmeans_1d(torch.randn(10), 2, iters=-1), ValueError, "iters=-1"),
    ("kmeans-nan", lambda: kmeans_1d(torch.tensor([1.0, NAN]), 1), ValueError, "non-finite"),
    ("cluster-k-float", lambda: cluster_weight(W, 2.5), TypeError, "k=2.5"),
    ("cluster-k-bool", lambda: cluster_weight(W, True), TypeError, "k=True"),
    ("cluster-keep-zero-k1", lambda: cluster_weight(W, 1), ValueError, "k=1"),
    ("moe-k-float", lambda: top_k_route(LOGITS, 2.5), ValueError, "k=2.5"),
    ("sharing-groups-float", lambda: sharing_groups(4, 2.0), ValueError, "group_size=2.0"),
    ("sharing-groups-not-dividing", lambda: sharing_groups(4, 3), ValueError, "group_size=3"),
    # model drivers (each atomic: see tests/test_atomic.py)
    ("wanda-model-too-long", lambda: wanda_prune_model(_m(), torch.zeros(1, 600, dtype=torch.long), 0.5),
     ValueError, "600 tokens"),
    ("wanda-model-ids-beyond-vocab", lambda: wanda_prune_model(_m(), torch.full((1, 8), 999), 0.5), ValueError,
     "[999, 999]"),
    ("wanda-model-float-batches", lambda: wanda_prune_model(_m(), torch.zeros(1, 8), 0.5), TypeError,
     "torch.float32"),
    ("wanda-model-sparsity", lambda: wanda_prune_model(_m(), CAL, 1.2), ValueError, "sparsity=1.2"),
    ("sparsegpt-model-too-long", lambda: sparsegpt_prune_model(_m(), torch.zeros(1, 513, dtype=torch.long), 0.5),
     ValueError, "513 tokens"),
    ("magnitude-model-scope", lambda: magnitude_prune_model(_m(), 0.5, scope="block"), ValueError, "'block'"),
    ("tie-group-not-dividing", lambda: tie_blocks(_m(), 3), ValueError, "group_size=3"),
    ("tie-init", lambda: tie_blocks(_m(), 2, init="avg"), ValueError, "'avg'"),
    ("cluster-model-k-float", lambda: cluster_model(_m(), 2.5), TypeError, "k=2.5"),
    ("lowrank-energy-none", lambda: lowrank_model(_m(), energy=None), ValueError, "energy="),
    ("lowrank-energy-big", lambda: lowrank_model(_m(), energy=2.0), ValueError, "energy=2.0"),
    ("ffn-block-index", lambda: prune_ffn_neurons(_m(), {5: torch.arange(4)}), ValueError, "5"),
    ("heads-layer-index", lambda: prune_heads(_m(), {7: [0]}), ValueError, "7"),
    ("gqa-kv-heads-float", lambda: convert_to_gqa(_m(), 2.0), ValueError, "num_kv_heads=2.0"),
    ("gqa-kv-heads-not-dividing", lambda: convert_to_gqa(_m(), 3), ValueError, "num_kv_heads=3"),
    ("remove-all-blocks", lambda: remove_blocks(_m(), [0, 1]), ValueError, "2 of 2"),
]


@pytest.mark.parametrize("call, exc, needle", cases(PRUNE))
def test_prune_bad_input(call, exc, needle):
    check_case(call, exc, needle)


def _rank_all_zero_spectrum() -> None:
    assert rank_from_energy(torch.zeros(4), 0.9) == 1  # documented: nothing to keep, rank 1


def _keep_top_ties_lower_index() -> None:
    assert keep_top_neurons(torch.ones(4), 2).tolist() == [0, 1]


def _failed_ffn_prune_leaves_model() -> None:
    m = _m()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(ValueError, match="500"):  # block 1's index is out of range: found after block 0 shrank
        prune_ffn_neurons(m, [torch.arange(64), torch.tensor([0, 500])])
    after = m.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


ANSWERS = [
    ("rank-zero-spectrum", _rank_all_zero_spectrum),
    ("keep-top-ties", _keep_top_ties_lower_index),
    ("ffn-prune-atomic", _failed_ffn_prune_leaves_model),
]


@pytest.mark.parametrize("check", answers(ANSWERS))
def test_prune_documented_answer(check):
    check()
