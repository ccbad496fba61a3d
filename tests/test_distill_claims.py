"""Helpers behind the distillation / early-exit ledger and notebooks 13-15, on tiny models."""
from __future__ import annotations

import math

import pytest
import torch

from lessonlib.distill.encoder_task import encoder_schedule, encoder_student, train_encoder, EncoderSchedule
from lessonlib.distill.lm_task import CachedTeacher, lm_student, spaced_layers, temperature_grid
from lessonlib.distill.train import DistillConfig, distill
from lessonlib.exit.budget import (blocks_by_difficulty, default_thresholds, difficulty_masks,
                                   threshold_at_agreement, threshold_at_cost)
from lessonlib.models import decoder_blocks, tiny_causal_lm


# ------------------------------------------------------------------ LM task
def test_temperature_grid_is_geometric_and_contains_powers_of_two():
    assert temperature_grid("ci") == [1.0, 2.0, 4.0, 8.0]
    lap = temperature_grid("laptop")
    assert len(lap) == 7 and lap[0] == 1.0 and lap[-1] == 8.0
    assert {1.0, 2.0, 4.0, 8.0} <= set(lap)
    ratios = [b / a for a, b in zip(lap, lap[1:])]
    assert max(ratios) - min(ratios) < 1e-2


def test_spaced_layers_keeps_first_and_last():
    assert spaced_layers(30, 6) == [0, 6, 12, 17, 23, 29]  # round(i * 29 / 5)
    assert spaced_layers(6, 3) == [0, 2, 5]  # 0, 2.5 -> 2 (round half to even), 5
    assert spaced_layers(4, 4) == [0, 1, 2, 3]
    assert spaced_layers(30, 1) == [29]
    with pytest.raises(ValueError, match="n_student"):
        spaced_layers(4, 5)


def test_lm_student_freezes_the_tied_head_and_keeps_blocks():
    teacher = tiny_causal_lm(layers=4)
    s = lm_student(teacher, 2)
    assert len(decoder_blocks(s)) == 2
    assert not s.get_input_embeddings().weight.requires_grad
    assert all(p.requires_grad for p in decoder_blocks(s).parameters())
    assert torch.equal(decoder_blocks(s)[1].mlp.up_proj.weight, decoder_blocks(teacher)[3].mlp.up_proj.weight)


def test_cached_teacher_returns_the_teachers_logits_row_by_row():
    teacher = tiny_causal_lm(layers=2)
    wins = torch.randint(0, 256, (5, 12), generator=torch.Generator().manual_seed(0))
    cached = CachedTeacher.from_model(teacher, wins, batch_size=2)
    with torch.no_grad():
        want = teacher(input_ids=wins[[3, 0]], use_cache=False).logits
    got = cached(input_ids=wins[[3, 0]]).logits
    torch.testing.assert_close(got, want, rtol=2e-3, atol=2e-3)  # stored in float16
    with pytest.raises(ValueError, match="not cached"):
        cached(input_ids=wins[[0]] + 1)


def test_distilling_from_the_cache_equals_distilling_from_the_teacher():
    teacher = tiny_causal_lm(layers=2, seed=1)
    wins = torch.randint(0, 256, (6, 10), generator=torch.Generator().manual_seed(2))
    cached = CachedTeacher(wins, teacher(input_ids=wins, use_cache=False).logits.detach().half().float())
    cfg = DistillConfig(steps=3, batch_size=2, lr=1e-3, T=2.0, alpha=0.3, seed=0)
    a = distill(tiny_causal_lm(layers=1, seed=3), cached, wins, cfg).losses
    # the real teacher with float16-rounded logits is what the cache holds; compare to the teacher itself
    b = distill(tiny_causal_lm(layers=1, seed=3), teacher, wins, cfg).losses
    assert len(a) == 3
    assert a == pytest.approx(b, rel=1e-3)


# ------------------------------------------------------------------ early exit at a budget
def _toy_stats():
    # L = 3 exits, 1 window, 4 tokens.  Exit 0 is confident and right on tokens 0, 1; wrong on 2, 3.
    conf = torch.tensor([[[0.9, 0.8, 0.3, 0.2]],
                         [[0.95, 0.9, 0.6, 0.4]],
                         [[0.99, 0.99, 0.99, 0.99]]])
    nll = torch.tensor([[[0.1, 0.2, 3.0, 4.0]],
                        [[0.1, 0.2, 2.0, 3.0]],
                        [[0.1, 0.2, 1.0, 2.0]]])
    return conf, nll


def test_threshold_at_cost_picks_the_cheapest_threshold_within_the_cost():
    conf, nll = _toy_stats()
    full = math.exp((0.1 + 0.2 + 1.0 + 2.0) / 4)
    zero, big = threshold_at_cost(conf, nll, [0.0, 10.0], thresholds=[0.0, 0.5, 0.7])
    # cost 0: tokens 2, 3 must reach the last exit; t = 0.7 exits 0, 1 at block 0 (same loss) -> blocks 1,1,3,3
    assert zero.point.threshold == 0.7 and zero.point.mean_blocks == 2.0
    assert zero.point.ppl == pytest.approx(full)
    # a huge budget: threshold 0 exits everything at block 0
    assert big.point.threshold == 0.0 and big.point.mean_blocks == 1.0
    with pytest.raises(ValueError, match="costs"):
        threshold_at_cost(conf, nll, [-0.1])


def test_threshold_at_agreement_counts_changed_greedy_predictions():
    conf, _ = _toy_stats()
    top1 = torch.tensor([[[5, 6, 9, 9]],
                         [[5, 6, 7, 9]],
                         [[5, 6, 7, 8]]])  # exit 0 right on tokens 0, 1; exit 1 also on token 2
    # t = 0.0: all exit at block 0 -> tokens 2, 3 change (0.5); t = 0.5: blocks 1, 1, 2, 3 -> nothing changes
    # t = 0.7: blocks 1, 1, 3, 3 -> nothing changes, but more blocks than t = 0.5
    zero, quarter, half = threshold_at_agreement(conf, top1, [0.0, 0.25, 0.5], thresholds=[0.0, 0.5, 0.7])
    assert (zero.threshold, zero.mean_blocks, zero.changed) == (0.5, 1.75, 0.0)
    assert quarter.threshold == 0.5  # one changed token of four would be 0.25, but no threshold gives that
    assert (half.threshold, half.mean_blocks, half.changed) == (0.0, 1.0, 0.5)
    assert zero.first_exit == 0 and threshold_at_agreement(conf, top1, [0.0], thresholds=[0.92])[0].first_exit == 1
    with pytest.raises(ValueError, match="costs"):
        threshold_at_agreement(conf, top1, [1.5])
    with pytest.raises(ValueError, match="top1"):
        threshold_at_agreement(conf, top1[:2], [0.1])


def test_difficulty_split_and_blocks_by_difficulty():
    conf, nll = _toy_stats()
    easy, hard = difficulty_masks(nll[-1], q=0.25)
    assert easy.tolist() == [[True, False, False, False]] and hard.tolist() == [[False, False, False, True]]
    r = blocks_by_difficulty(conf, nll, 0.7, q=0.25)
    assert r["easy"] == {"tokens": 1, "mean_blocks": 1.0, "saved": pytest.approx(2 / 3)}
    assert r["hard"]["mean_blocks"] == 3.0 and r["hard"]["saved"] == 0.0
    assert r["all"]["mean_blocks"] == 2.0
    with pytest.raises(ValueError, match="q="):
        difficulty_masks(nll[-1], q=0.7)
    assert default_thresholds(3) == [0.0, 0.5, 1.0, 1.01]


# ------------------------------------------------------------------ encoder task
def test_encoder_schedule_follows_the_profile():
    ci = encoder_schedule("ci")
    assert ci.batch_size == 16 and ci.steps == 24 and ci.lr == pytest.approx(3e-4)
    lap = encoder_schedule("laptop")
    assert lap.steps == 64  # min(2 * 32, ceil(3 * 2000 / 16))
    from lessonlib.distill.encoder_task import teacher_schedule
    t = teacher_schedule("ci")  # three passes over 512 sentences in batches of 16: ceil(1536 / 16) = 96
    assert (t.steps, t.batch_size, t.lr) == (96, ci.batch_size, ci.lr)
    assert teacher_schedule("laptop").steps == 375  # the teacher makes its three passes: ceil(6000 / 16)


def _tiny_bert(layers: int = 4, seed: int = 0):
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(vocab_size=200, hidden_size=32, num_hidden_layers=layers,
                                                    num_attention_heads=2, intermediate_size=64,
                                                    max_position_embeddings=64, num_labels=2)).eval()


class _CharTok:
    """A tokenizer of characters (ids < 200) with the HF call signature used by train_encoder."""

    def __call__(self, texts, padding=True, truncation=True, max_length=64, return_tensors="pt"):
        ids = [[1] + [3 + (ord(c) % 190) for c in t[: max_length - 1]] for t in texts]
        n = max(map(len, ids))
        return {"input_ids": torch.tensor([r + [0] * (n - len(r)) for r in ids]),
                "attention_mask": torch.tensor([[1] * len(r) + [0] * (n - len(r)) for r in ids])}


def test_encoder_student_keeps_the_top_block():
    s, layers = encoder_student(_tiny_bert(layers=6))
    assert layers == [1, 3, 5] and s.config.num_hidden_layers == 3
    s4, l4 = encoder_student(_tiny_bert(layers=4))
    assert l4 == [1, 3]


def test_train_encoder_is_seeded_and_the_feature_loss_matters():
    texts = ["good film", "bad film", "great fun", "awful mess", "fine work", "dull plot"] * 2
    labels = torch.tensor([1, 0, 1, 0, 1, 0] * 2)
    sched = EncoderSchedule(steps=3, batch_size=4, lr=1e-3)
    teacher = _tiny_bert(seed=1)
    runs = []
    for beta in (0.0, 0.0, 1.0):
        s, lm = encoder_student(teacher)
        runs.append(train_encoder(s, _CharTok(), (texts, labels), teachers=[teacher], layer_map=lm,
                                  feature_weight=beta, schedule=sched, seed=0))
    assert runs[0] == runs[1]  # same seed, same losses
    assert runs[2][0] > runs[0][0]  # the hidden-state term adds to the loss
    with pytest.raises(ValueError, match="layer_map"):
        train_encoder(_tiny_bert(), _CharTok(), (texts, labels), teachers=[teacher], feature_weight=1.0,
                      schedule=sched)
    plain = train_encoder(_tiny_bert(), _CharTok(), (texts, labels), schedule=sched)  # fine-tuning: CE only
    assert len(plain) == 3 and all(math.isfinite(x) for x in plain)


def test_exit_heads_train_on_a_frozen_backbone():
    from lessonlib.exit.heads import ExitHeads, train_exit_heads
    model = tiny_causal_lm(layers=3)
    for p in model.parameters():
        p.requires_grad_(False)
    heads = ExitHeads(model)
    assert all(p.requires_grad for p in heads.parameters()) and len(list(heads.parameters())) == 2
    before = heads.heads[0].norm.weight.clone()
    wins = torch.randint(0, 256, (4, 8), generator=torch.Generator().manual_seed(0))
    train_exit_heads(model, heads, wins, steps=2, batch_size=2, lr=1e-2)
    assert not torch.equal(before, heads.heads[0].norm.weight)
    assert model.model.embed_tokens.weight.grad is None  # the shared LM head stays untouched


# ------------------------------------------------------------------ verdicts gated by seed noise
def test_comparisons_inside_the_seed_spread_are_inconclusive():
    from lessonlib.claims import rules
    from lessonlib.claims.exp_distill import _beyond_noise, _best_margin, _enc_beyond_noise
    s = {"soft_ppl": {1.0: 100.0, 2.0: 104.0, 4.0: 130.0}, "seed_spread": 5.0}
    assert _best_margin(s) == pytest.approx(4.0)  # 104 - 100
    inner = rules.within(1.0, 2, 4, "best T")
    assert _beyond_noise(_best_margin(s), s, "best T", inner).status == rules.INCONCLUSIVE
    assert _beyond_noise(6.0, s, "best T", inner) == inner  # a margin beyond the spread keeps the rule's verdict
    r = {"seed_spread": 0.02, "acc": {"student_kd": 0.8}, "test_majority": 0.55}
    held = rules.at_least(0.03, 0.004, "gain")
    assert _enc_beyond_noise(0.03, r, "gain", held) == held
    assert _enc_beyond_noise(-0.01, r, "gain", held).status == rules.INCONCLUSIVE
    assert _enc_beyond_noise(-0.05, r, "gain", rules.at_least(-0.05, 0.004, "gain")).status == rules.FAILS
    r["acc"]["student_kd"] = 0.56  # at the majority share: the run is broken, whatever the gain
    assert _enc_beyond_noise(0.03, r, "gain", held).status == rules.INVALID


def test_band_verdict_compares_the_best_inside_the_band_with_the_best_outside():
    """The C07/C24 guard: the issue's case, best T in [4, 8] 467 PPL worse than the best overall with a seed
    spread of 179, is a clear 'does not hold'; a gap inside the spread is inconclusive."""
    from lessonlib.claims import rules
    from lessonlib.claims.exp_distill import band_gap, band_verdict
    s = {"temps": [1.0, 2.0, 4.0, 8.0], "soft_ppl": {1.0: 1000.0, 2.0: 1100.0, 4.0: 1467.0, 8.0: 1600.0},
         "seed_spread": 179.0}
    assert band_gap(s, 4, 8) == pytest.approx(-467.0)
    assert band_verdict(s, 4, 8).status == rules.FAILS
    assert band_verdict(s, 1, 2).status == rules.HOLDS  # 1000 inside vs 1467 outside: 467 > 179
    s["seed_spread"] = 500.0
    assert band_verdict(s, 4, 8).status == rules.INCONCLUSIVE
    assert band_verdict(s, 0.5, 16).status == rules.NOT_MEASURABLE  # nothing outside the band to compare with
