"""QAT: STE gradient (identity inside the range, zero outside), training helps, convert is exact."""
import pytest
import torch
from torch import nn

from lessonlib.models import tiny_causal_lm
from lessonlib.quant.affine import QuantScheme, fake_quant
from lessonlib.quant.qat import FakeQuantSTE, QATLinear, convert_qat, fake_quant_ste, prepare_qat
from lessonlib.quant.qlinear import QuantLinear


def test_ste_gradient_identity_inside_zero_outside():
    # 2-bit asym grid with s = 1, z = 1: codes 0..3 represent [-1, 2]
    x = torch.tensor([-3.0, -1.0, -0.4, 0.6, 1.2, 2.0, 2.3, 5.0], requires_grad=True)
    s, z = torch.tensor(1.0), torch.tensor(1.0)
    y = FakeQuantSTE.apply(x, s, z, 0, 3)
    assert torch.equal(y, torch.tensor([-1.0, -1.0, 0.0, 1.0, 1.0, 2.0, 2.0, 2.0]))
    g = torch.arange(1.0, 9.0)
    y.backward(g)
    assert torch.equal(x.grad, torch.tensor([0.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0, 0.0]))


def test_fake_quant_ste_matches_fake_quant_and_clip_blocks_gradient():
    w = torch.randn(8, 64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    sch = QuantScheme(4, 32, False)
    y = fake_quant_ste(w, sch)
    assert torch.equal(y, fake_quant(w.detach(), sch))
    y.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))  # unclipped: every weight is inside its group's range
    w.grad = None
    fake_quant_ste(w, sch, clip_ratio=0.5).sum().backward()
    absmax = w.detach().reshape(8, 2, 32).abs().amax(-1, keepdim=True)
    outside = (w.detach().reshape(8, 2, 32).abs() > 0.5 * absmax + 1e-6).reshape(8, 64)
    assert outside.any() and torch.equal(w.grad, (~outside).float())


def test_qat_training_beats_rtn_on_correlated_inputs():
    torch.manual_seed(0)
    teacher = nn.Linear(32, 8)
    x = torch.randn(512, 32) @ (torch.randn(32, 32) / 32 ** 0.5 + 0.3 * torch.eye(32))  # correlated inputs
    y = teacher(x).detach()
    student = QATLinear.from_linear(teacher, QuantScheme(3, 16, False))
    with torch.no_grad():
        loss_rtn = float(((student(x) - y) ** 2).mean())  # before training: plain RTN of the teacher
    opt = torch.optim.SGD(student.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1 - i / 400)
    for _ in range(400):
        opt.zero_grad()
        ((student(x) - y) ** 2).mean().backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        assert float(((student(x) - y) ** 2).mean()) < 0.85 * loss_rtn


def test_prepare_and_convert_model():
    model = tiny_causal_lm("llama")
    prepare_qat(model, QuantScheme(4, 32, True))
    qat = [m for m in model.modules() if isinstance(m, QATLinear)]
    assert len(qat) == 14 and not isinstance(model.lm_head, QATLinear)
    tokens = torch.randint(0, 256, (2, 8), generator=torch.Generator().manual_seed(0))
    out = model(tokens).logits
    out.float().pow(2).mean().backward()
    assert all(m.weight.grad is not None for m in qat)
    with torch.no_grad():
        before = model(tokens).logits
        convert_qat(model)
        assert sum(isinstance(m, QuantLinear) for m in model.modules()) == 14
        assert torch.equal(model(tokens).logits, before)
    with pytest.raises(ValueError, match="no QATLinear"):
        convert_qat(model)
