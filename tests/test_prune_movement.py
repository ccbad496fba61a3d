"""Movement pruning primitives (lessonlib.prune.movement)."""
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from lessonlib.prune.magnitude import cubic_sparsity
from lessonlib.prune.masks import n_to_prune
from lessonlib.prune.movement import (movement_score_update, movement_train_step, soft_movement_mask,
                                      soft_movement_penalty, topk_mask, topk_ste)


def test_score_update_literal():
    s = torch.zeros(1, 3)
    w = torch.tensor([[1.0, -2.0, 0.5]])
    g = torch.tensor([[-0.5, -1.0, 0.0]])
    # -lr * W * G: weight 0 moves away from zero (+), weight 1 towards zero (-), weight 2 does not move
    assert torch.allclose(movement_score_update(s, w, g, lr=0.1), torch.tensor([[0.05, -0.2, 0.0]]))
    with pytest.raises(ValueError, match="shapes differ"):
        movement_score_update(s, w, torch.zeros(1, 4))


def test_masks_and_penalty():
    s = torch.tensor([[0.3, -1.0, 2.0, 0.0]])
    assert topk_mask(s, 0.5).tolist() == [[True, False, True, False]]
    assert soft_movement_mask(s, 0.1).tolist() == [[True, False, True, False]]
    assert soft_movement_mask(s, -0.5).tolist() == [[True, False, True, True]]
    assert soft_movement_penalty(torch.zeros(2, 3)).item() == pytest.approx(3.0)
    g = torch.Generator().manual_seed(0)
    big = torch.randn(9, 11, generator=g)
    assert int((~topk_mask(big, 0.7)).sum()) == n_to_prune(99, 0.7)
    with pytest.raises(ValueError, match="threshold"):
        soft_movement_mask(s, float("nan"))


def test_topk_ste_forward_and_straight_through_gradient():
    s = torch.tensor([[0.3, -1.0, 2.0, 0.0]], requires_grad=True)
    m = topk_ste(s, 0.5)
    assert m.tolist() == [[1.0, 0.0, 1.0, 0.0]]
    c = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    (m * c).sum().backward()
    assert torch.equal(s.grad, c)  # identity, also for the pruned entries


def test_train_step_equals_score_accumulation():
    torch.manual_seed(0)
    lin = nn.Linear(6, 3)
    scores = nn.Parameter(torch.randn(3, 6))
    x, y = torch.randn(10, 6), torch.randn(10, 3)
    w0, s0 = lin.weight.detach().clone(), scores.detach().clone()
    mask = topk_mask(s0, 0.5)
    w_eff = (w0 * mask).requires_grad_(True)  # gradient of the loss with respect to W' = W * M
    F.mse_loss(F.linear(x, w_eff, lin.bias.detach()), y).backward()
    lr = 0.3
    loss = movement_train_step(lin, scores, x, y, torch.optim.SGD([scores, *lin.parameters()], lr=lr), 0.5)
    assert loss > 0
    torch.testing.assert_close(scores.detach(), movement_score_update(s0, w0, w_eff.grad, lr))
    torch.testing.assert_close(lin.weight.detach(), w0 - lr * w_eff.grad * mask)  # pruned weights get no gradient
    with pytest.raises(ValueError, match="scores"):
        movement_train_step(lin, nn.Parameter(torch.zeros(2, 6)), x, y, torch.optim.SGD([scores], lr=lr), 0.5)


@pytest.mark.parametrize("seed", [1, 2])
def test_movement_recovers_sparse_teacher_support(seed):
    """Dense warm-up, then the cubic sparsity ramp (as Sanh et al. do), then hard top-k at 75%."""
    g = torch.Generator().manual_seed(seed)
    support = torch.zeros(4, 16, dtype=torch.bool)
    for r in range(4):
        support[r, torch.randperm(16, generator=g)[:4]] = True  # 75% sparse teacher
    teacher = torch.randn(4, 16, generator=g).sign() * (1 + torch.rand(4, 16, generator=g)) * support
    x = torch.randn(512, 16, generator=g)
    y = x @ teacher.t()
    torch.manual_seed(0)
    lin = nn.Linear(16, 4)
    scores = nn.Parameter(torch.zeros(4, 16))
    opt = torch.optim.Adam([{"params": lin.parameters(), "lr": 0.05}, {"params": [scores], "lr": 0.01}])
    losses = [movement_train_step(lin, scores, x, y, opt, cubic_sparsity(t, 0.75, 0.0, 50, 150))
              for t in range(300)]
    assert torch.equal(topk_mask(scores.detach(), 0.75), support)
    assert losses[-1] < 1e-6 * losses[0]


def test_movement_backward_literal_and_autograd():
    from lessonlib.prune.movement import movement_backward
    w, s = torch.tensor([[1.0, -2.0, 3.0, 0.5]]), torch.tensor([[0.3, -1.0, 2.0, 0.0]])
    x, g = torch.tensor([[1.0, 2.0, 0.0, -1.0]]), torch.tensor([[2.0]])
    mask, gw, gs = movement_backward(w, s, x, g, 0.5)
    assert mask.tolist() == [[True, False, True, False]]
    assert gw.tolist() == [[2.0, 0.0, 0.0, 0.0]]  # dL/dW' = 2 * x, masked
    assert gs.tolist() == [[2.0, -8.0, 0.0, -1.0]]  # dL/dW' * W, pruned scores move too
    gen = torch.Generator().manual_seed(3)
    w, s = torch.randn(5, 7, generator=gen), torch.randn(5, 7, generator=gen)
    x, g = torch.randn(4, 7, generator=gen), torch.randn(4, 5, generator=gen)
    wa, sa = w.clone().requires_grad_(True), s.clone().requires_grad_(True)
    (x @ (wa * topk_ste(sa, 0.6)).t()).backward(g)
    mask, gw, gs = movement_backward(w, s, x, g, 0.6)
    torch.testing.assert_close(gw, wa.grad)
    torch.testing.assert_close(gs, sa.grad)
    with pytest.raises(ValueError, match="shapes"):
        movement_backward(w, s, x, g.t(), 0.6)


def _tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=32, num_labels=2)
    return BertForSequenceClassification(cfg).eval()


@pytest.mark.parametrize("method", ["movement", "magnitude"])
def test_masked_encoder_linears(method):
    from lessonlib.prune.movement_task import MaskedLinear, mask_encoder_linears
    model = _tiny_bert()
    ids = torch.randint(0, 50, (3, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(input_ids=ids).logits
    wrapped = mask_encoder_linears(model, method)
    assert len(wrapped) == 2 * 6  # q, k, v, attention output, FFN in, FFN out per block; not pooler / head
    assert not isinstance(model.classifier, MaskedLinear) and not isinstance(model.bert.pooler.dense, MaskedLinear)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, ref)  # sparsity 0: the same model
    gen = torch.Generator().manual_seed(2)
    for m in wrapped.values():
        m.sparsity = 0.75
        if m.scores is not None:
            m.scores.data = torch.randn(m.scores.shape, generator=gen)
    loss = model(input_ids=ids).logits.square().sum()
    loss.backward()
    for name, m in wrapped.items():
        keep = m.mask()
        assert int((~keep).sum()) == n_to_prune(keep.numel(), 0.75), name
        assert (m.linear.weight.grad[~keep] == 0).all(), name  # pruned weights get no gradient
        if method == "movement":  # straight through: dL/dS = dL/dW' * W, also for the pruned entries
            assert torch.equal(keep, topk_mask(m.scores.detach(), 0.75))
            assert m.scores.grad is not None and m.scores.grad.shape == keep.shape
        else:
            assert m.scores is None and torch.equal(keep, topk_mask(m.linear.weight.detach().abs(), 0.75))
    if method == "movement":
        ffn = wrapped["layer.1.output.dense"]
        assert (ffn.scores.grad[~ffn.mask()] != 0).any()
    with pytest.raises(ValueError, match="method"):
        MaskedLinear(nn.Linear(2, 2), "wanda")


def test_continuing_a_movement_wrapped_dense_model():
    """``finetune_dense`` leaves movement wrappers at sparsity 0; each method continues from a copy."""
    import copy

    from lessonlib.prune.movement_task import MaskedLinear, _continue_as, mask_encoder_linears
    model = _tiny_bert()
    wrapped = mask_encoder_linears(model, "movement")
    gen = torch.Generator().manual_seed(4)
    for m in wrapped.values():
        m.scores.data = torch.randn(m.scores.shape, generator=gen)
    ids = torch.randint(0, 50, (2, 7), generator=gen)
    with torch.no_grad():
        ref = model(input_ids=ids).logits
    dense = copy.deepcopy(model)
    assert _continue_as(dense, "dense") == {} and not any(isinstance(m, MaskedLinear) for m in dense.modules())
    with torch.no_grad():
        torch.testing.assert_close(dense(input_ids=ids).logits, ref)  # the same function, unwrapped
    mag = copy.deepcopy(model)
    got = _continue_as(mag, "magnitude")
    assert len(got) == 12 and all(m.method == "magnitude" and m.scores is None for m in got.values())
    assert not any(n.endswith(".scores") for n, _ in mag.named_parameters())
    mov = copy.deepcopy(model)
    got = _continue_as(mov, "movement")  # the accumulated scores are kept
    assert all(torch.equal(got[n].scores, wrapped[n].scores) for n in wrapped)


def test_prune_schedule_sizes():
    from lessonlib.prune.movement_task import prune_schedule
    s = prune_schedule("ci")  # 8 * 12 // 3 = 32 steps of 4 * 4 sentences; 10% warm-up (3), 60% ramp (19)
    assert (s.steps, s.batch_size, s.warmup, s.ramp) == (32, 16, 3, 19)
    assert s.sparsity_at(3, 0.7) == 0.0 and s.sparsity_at(22, 0.7) == pytest.approx(0.7)
    assert 0 < s.sparsity_at(12, 0.7) < 0.7
    assert prune_schedule("ci", steps=20).steps == 20
    with pytest.raises(ValueError, match="steps"):
        prune_schedule("ci", steps=5)


def test_dense_is_trained_gate():
    import math

    from lessonlib.prune.movement_task import PrunedRun, dense_is_trained
    chance = math.log(2)
    good = PrunedRun("dense", 0.0, 0.75, 0.0, [chance] * 5 + [0.3] * 10, 1.0)
    assert dense_is_trained(good, majority=0.55)[0]  # 0.75 >= 0.65 and mean(last 10) = 0.3 < 0.52
    assert not dense_is_trained(good, majority=0.66)[0]  # 0.75 < 0.76
    stuck = PrunedRun("dense", 0.0, 0.80, 0.0, [0.3] * 5 + [chance] * 10, 1.0)
    ok, why = dense_is_trained(stuck, majority=0.55)
    assert not ok and "0.693" in why  # loss at chance over the last 10 steps
    assert dense_is_trained(stuck, majority=0.55, tail=20)[0] is False  # all 15: (5 * 0.3 + 10 * 0.693) / 15 = 0.56
    assert dense_is_trained(stuck, majority=0.55, tail=5)[0] is False  # the last 5 are still at chance
    with pytest.raises(ValueError, match="majority"):
        dense_is_trained(good, majority=1.0)
    with pytest.raises(ValueError, match="losses"):
        dense_is_trained(PrunedRun("dense", 0.0, 0.8, 0.0, [], 1.0), majority=0.5)


@pytest.mark.model
def test_finetune_pruned_reaches_the_target_on_minilm():
    from lessonlib.data import load_reviews
    from lessonlib.prune.movement_task import PrunedRun, PruneSchedule, finetune_pruned
    data = (load_reviews("train", 32, 0), load_reviews("test", 16, 0))
    sched = PruneSchedule(steps=4, batch_size=4, lr=3e-4, warmup=1, ramp=2)
    r = finetune_pruned("movement", 0.6, "ci", schedule=sched, data=data)
    assert r.sparsity == pytest.approx(0.6, abs=1e-4) and len(r.losses) == 4 and 0 <= r.accuracy <= 1
    lin = r.model.bert.encoder.layer[0].intermediate.dense.linear
    assert int((lin.weight == 0).sum()) == n_to_prune(lin.weight.numel(), 0.6)  # zeroed for real
    with pytest.raises(ValueError, match="dense"):
        finetune_pruned("dense", 0.5, "ci", schedule=sched, data=data)
    # continuing from a dense run: a pruned copy, the start left dense and untouched
    start = finetune_pruned("dense", 0.0, "ci", schedule=sched, data=data)
    before = start.model.bert.encoder.layer[0].intermediate.dense.weight.detach().clone()
    r = finetune_pruned("magnitude", 0.5, "ci", schedule=sched, data=data, start=start)
    assert r.sparsity == pytest.approx(0.5, abs=1e-4) and r.model is not start.model
    assert torch.equal(start.model.bert.encoder.layer[0].intermediate.dense.weight, before)
    kept = r.model.bert.encoder.layer[0].intermediate.dense.linear.weight
    assert int((kept == 0).sum()) == n_to_prune(kept.numel(), 0.5)
    with pytest.raises(ValueError, match="start"):
        finetune_pruned("dense", 0.0, "ci", schedule=sched, data=data, start=PrunedRun("dense", 0.0, 0.5, 0.0, [0.7], 1.0))
