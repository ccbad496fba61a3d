import math

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

from lessonlib.distill.losses import kd_kl
from lessonlib.distill.students import student_by_layers, student_from_config
from lessonlib.distill.train import DistillConfig, batch_indices, distill, ensemble_logits
from lessonlib.models import tiny_causal_lm


def _windows(n=12, t=16, seed=0):
    return torch.randint(0, 256, (n, t), generator=torch.Generator().manual_seed(seed))


def test_batch_indices_cover_each_epoch_and_are_stateless():
    idx = torch.cat([batch_indices(10, 4, s, seed=1) for s in range(5)])  # 20 = two epochs
    assert sorted(idx[:10].tolist()) == list(range(10)) and sorted(idx[10:].tolist()) == list(range(10))
    assert torch.equal(batch_indices(10, 4, 3, seed=1), idx[12:16])
    assert not torch.equal(batch_indices(10, 4, 0, seed=1), batch_indices(10, 4, 0, seed=2))


def test_ensemble_logits_modes():
    a = torch.tensor([[math.log(3.0), 0.0]])  # p = [0.75, 0.25]
    b = torch.tensor([[0.0, 0.0]])  # p = [0.5, 0.5]
    probs = torch.softmax(ensemble_logits([a, b], T=1.0, mode="probs"), -1)
    assert torch.allclose(probs, torch.tensor([[0.625, 0.375]]), atol=1e-6)
    z = ensemble_logits([a, b], T=2.0, mode="probs")
    avg = (torch.softmax(a / 2, -1) + torch.softmax(b / 2, -1)) / 2
    assert torch.allclose(torch.softmax(z / 2, -1), avg, atol=1e-6)
    assert torch.allclose(ensemble_logits([a, b], mode="logits"), (a + b) / 2)
    with pytest.raises(ValueError, match="mode="):
        ensemble_logits([a, b], mode="max")
    with pytest.raises(ValueError, match="different shapes"):
        ensemble_logits([a, torch.zeros(1, 3)])


def test_distill_lowers_kl_and_calls_eval():
    teacher = tiny_causal_lm("llama", layers=4, seed=0)
    with torch.no_grad():  # a sharper teacher than the near-uniform random init, so there is something to learn
        for name, p in teacher.named_parameters():
            if "norm" not in name:
                p.mul_(3)
    student = student_from_config(teacher, layers=1, seed=1)
    data = _windows(16)
    x = data[:4]

    def kl(m):
        with torch.no_grad():
            return kd_kl(m(x).logits, teacher(x).logits, T=1.0).item()

    before = kl(student)
    seen = []
    res = distill(student, teacher, data, DistillConfig(steps=12, batch_size=4, lr=3e-3, alpha=0.0, T=1.0, eval_every=4),
                  eval_fn=lambda m, step: seen.append(step) or kl(m))
    assert len(res.losses) == 12 and res.steps_done == 12
    assert [s for s, _ in res.evals] == [4, 8, 12] == seen
    assert res.evals[-1][1] < 0.7 * before
    assert not student.training and not teacher.training
    assert all(p.grad is None for p in teacher.parameters())  # the teacher is never trained


def test_checkpoint_resume_equals_uninterrupted(tmp_path):
    teacher = tiny_causal_lm("llama", layers=2, seed=0, hidden=32, intermediate=64)
    data = _windows(10, 12)
    cfg = DistillConfig(steps=6, batch_size=3, lr=1e-2, T=2.0, alpha=0.5, seed=5, ckpt_every=2)
    full = tiny_causal_lm("llama", layers=1, seed=1, hidden=32, intermediate=64)
    r_full = distill(full, teacher, data, cfg)
    part = tiny_causal_lm("llama", layers=1, seed=1, hidden=32, intermediate=64)
    r1 = distill(part, teacher, data, cfg, ckpt_dir=str(tmp_path), stop_after=3)
    assert r1.steps_done == 3 and len(r1.losses) == 3
    fresh = tiny_causal_lm("llama", layers=1, seed=1, hidden=32, intermediate=64)  # a new process would start here
    r2 = distill(fresh, teacher, data, cfg, ckpt_dir=str(tmp_path))
    assert r2.resumed_from == 3 and r2.losses == r_full.losses
    for (k, a), b in zip(full.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="seed"):
        distill(fresh, teacher, data, DistillConfig(steps=6, batch_size=3, seed=6), ckpt_dir=str(tmp_path))


def test_reproducible_and_ensemble_runs():
    t1 = tiny_causal_lm("llama", layers=2, seed=0, hidden=32, intermediate=64)
    t2 = tiny_causal_lm("llama", layers=2, seed=1, hidden=32, intermediate=64)
    data = _windows(8, 10)
    runs = []
    for _ in range(2):
        s = tiny_causal_lm("llama", layers=1, seed=2, hidden=32, intermediate=64)
        runs.append(distill(s, [t1, t2], data, DistillConfig(steps=3, batch_size=2, lr=1e-3, ensemble="logits")).losses)
    assert runs[0] == runs[1]
    s = tiny_causal_lm("llama", layers=1, seed=2, hidden=32, intermediate=64)
    other = distill(s, [t1, t2], data, DistillConfig(steps=3, batch_size=2, lr=1e-3, ensemble="probs")).losses
    assert other != runs[0]


def test_profile_defaults_and_bad_config():
    c = DistillConfig(profile="ci").resolved()
    assert (c.steps, c.batch_size, c.lr) == (12, 4, 1e-4)
    for bad, match in ((DistillConfig(steps=0), "steps=0"), (DistillConfig(alpha=2.0), "alpha=2.0"),
                       (DistillConfig(T=0.0), "T=0"), (DistillConfig(ensemble="x"), "ensemble")):
        with pytest.raises(ValueError, match=match):
            bad.resolved()
    with pytest.raises(ValueError, match="LongTensor"):
        distill(tiny_causal_lm(), tiny_causal_lm(), torch.zeros(3, 5), DistillConfig(steps=1))


def test_encoder_text_label_distillation_with_dropout_resume(tmp_path):
    words = ["good", "bad", "great", "awful", "fine", "movie", "plot", "the", "was"]
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words) + "\n")
    tok = BertTokenizerFast(vocab_file=str(vocab))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(words) + 5, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=32, num_labels=2)
    teacher = BertForSequenceClassification(cfg).eval()
    texts = ["the movie was good", "the plot was awful", "great movie", "bad plot", "fine", "awful movie"]
    labels = torch.tensor([1, 0, 1, 0, 1, 0])
    dc = DistillConfig(steps=4, batch_size=2, lr=1e-2, alpha=0.5, T=2.0)
    a = student_by_layers(teacher, every=2)
    ra = distill(a, teacher, (texts, labels), dc, tokenizer=tok)
    b = student_by_layers(teacher, every=2)
    distill(b, teacher, (texts, labels), dc, tokenizer=tok, ckpt_dir=str(tmp_path / "ck"), stop_after=2)
    c = student_by_layers(teacher, every=2)
    rc = distill(c, teacher, (texts, labels), dc, tokenizer=tok, ckpt_dir=str(tmp_path / "ck"))
    assert rc.losses == ra.losses  # dropout (p=0.1) is seeded per step, so resume is exact
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))
    with pytest.raises(ValueError, match="tokenizer"):
        distill(a, teacher, (texts, labels), dc)
