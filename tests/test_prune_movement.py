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
