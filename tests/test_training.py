"""The shared training loop (``lessonlib.training``): batching, and the non-finite policy checked before the
step (issue 15: ``arch/recover.py`` used to check after ``opt.step()``, so a NaN step was already applied)."""
import pytest
import torch

from lessonlib.arch.recover import recovery_finetune
from lessonlib.models import tiny_causal_lm
from lessonlib.training import batch_indices, causal_lm_finetune, check_loss, train_loop


def _setup():
    torch.manual_seed(0)
    m = tiny_causal_lm("llama", layers=1)
    batches = torch.randint(0, m.config.vocab_size, (6, 16), generator=torch.Generator().manual_seed(3))
    return m, batches


def _state(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def test_batch_indices_are_stateless_epochs():
    idx = torch.cat([batch_indices(10, 4, s, seed=1) for s in range(5)])  # 20 = two epochs
    assert sorted(idx[:10].tolist()) == list(range(10)) and sorted(idx[10:].tolist()) == list(range(10))
    assert torch.equal(batch_indices(10, 4, 3, seed=1), idx[12:16])


def test_check_loss_names_the_step():
    assert check_loss(torch.tensor(2.5), 0) == 2.5
    with pytest.raises(FloatingPointError, match="at step 7; that step was not applied"):
        check_loss(torch.tensor(float("inf")), 7)


@pytest.mark.parametrize("k", [1, 3])
def test_a_nan_at_step_k_leaves_the_weights_of_step_k_minus_1(k):
    # reference: k clean steps
    m, b = _setup()
    ref_losses = causal_lm_finetune(m, b, list(m.parameters()), k, 2, 1e-3, seed=0)
    after_k_minus_1 = _state(m)
    # the same run, whose loss turns NaN at step k
    m2, b2 = _setup()
    params = list(m2.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)

    def loss_at(s):
        x = b2[batch_indices(b2.shape[0], 2, s, 0)]
        loss = m2(x, labels=x, use_cache=False).loss
        return loss * float("nan") if s == k else loss

    m2.train()
    with pytest.raises(FloatingPointError, match=f"at step {k};"):
        train_loop(params, loss_at, k + 3, opt, clip=1.0)
    got = _state(m2)
    assert all(torch.equal(got[n], after_k_minus_1[n]) for n in got)
    assert len(ref_losses) == k


def test_recovery_finetune_never_applies_a_nan_step(monkeypatch):
    # the old loop stepped first and checked afterwards; now the NaN is caught before opt.step()
    m, b = _setup()
    calls = {"n": 0}
    real_forward = m.forward

    def forward(*a, **kw):
        out = real_forward(*a, **kw)
        calls["n"] += 1
        if calls["n"] == 2:  # step 1's loss
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(m, "forward", forward)
    before = _state(m)
    with pytest.raises(FloatingPointError, match="recovery loss became nan at step 1"):
        recovery_finetune(m, b, steps=3, batch_size=2, lr=1e-3)
    assert all(torch.equal(v, before[n]) for n, v in _state(m).items())  # @atomic: all or nothing
    assert all(p.grad is None for p in m.parameters())
