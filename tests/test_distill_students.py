import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from lessonlib.distill.students import select_layers, student_by_layers, student_from_config
from lessonlib.models import decoder_blocks, encoder_blocks, tiny_causal_lm


def tiny_bert(layers: int = 4, seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, num_labels=2)
    return BertForSequenceClassification(cfg).eval()


def test_select_layers():
    assert select_layers(6, 2) == [0, 2, 4]
    assert select_layers(6, 2, offset=1) == [1, 3, 5]
    assert select_layers(5, 3) == [0, 3]
    with pytest.raises(ValueError, match="every=0"):
        select_layers(6, 0)
    with pytest.raises(ValueError, match="every=-2"):
        select_layers(6, -2)


def test_llama_student_copies_blocks_and_runs():
    teacher = tiny_causal_lm("llama", layers=4, seed=0)
    student = student_by_layers(teacher, every=2)
    blocks = decoder_blocks(student)
    assert len(blocks) == 2 and student.config.num_hidden_layers == 2
    assert len(decoder_blocks(teacher)) == 4 and teacher.config.num_hidden_layers == 4  # teacher untouched
    assert [b.self_attn.layer_idx for b in blocks] == [0, 1]
    t_sd, s_sd = teacher.state_dict(), student.state_dict()
    for k in ("model.layers.0.mlp.up_proj.weight", "model.layers.1.self_attn.q_proj.weight"):
        src = k.replace("layers.1.", "layers.2.")
        assert torch.equal(s_sd[k], t_sd[src])
    assert torch.equal(s_sd["model.embed_tokens.weight"], t_sd["model.embed_tokens.weight"])
    assert torch.equal(s_sd["model.norm.weight"], t_sd["model.norm.weight"])
    assert student.lm_head.weight is student.model.embed_tokens.weight  # tying kept
    assert "model.layers.2.mlp.up_proj.weight" not in s_sd
    # keeping every block reproduces the teacher exactly; the cache works with renumbered layer_idx
    x = torch.randint(0, 256, (2, 7), generator=torch.Generator().manual_seed(0))
    same = student_by_layers(teacher, every=1)
    assert torch.allclose(same(x).logits, teacher(x).logits, atol=1e-6)
    out = student.generate(x[:1], max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 10)


def test_bert_student_by_layers_forward_matches_manual():
    teacher = tiny_bert(layers=4)
    student = student_by_layers(teacher, layers=[1, 3])
    assert len(encoder_blocks(student)) == 2 and student.config.num_hidden_layers == 2
    assert torch.equal(encoder_blocks(student)[0].output.dense.weight, encoder_blocks(teacher)[1].output.dense.weight)
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    ids = torch.randint(0, 64, (3, 9), generator=torch.Generator().manual_seed(1))
    assert student(input_ids=ids).logits.shape == (3, 2)


def test_student_by_layers_errors():
    teacher = tiny_causal_lm("llama", layers=4)
    with pytest.raises(ValueError, match="every=0"):
        student_by_layers(teacher, every=0)
    with pytest.raises(ValueError, match="outside"):
        student_by_layers(teacher, layers=[0, 4])
    with pytest.raises(ValueError, match="strictly increasing"):
        student_by_layers(teacher, layers=[0, 0, 1, 2, 3])
    with pytest.raises(ValueError, match="keeps no block"):
        student_by_layers(teacher, layers=[])


def test_student_from_config_narrow_fresh_and_seeded():
    teacher = tiny_causal_lm("llama", layers=4, hidden=64, heads=4)
    s1 = student_from_config(teacher, layers=2, hidden=32, intermediate=64, heads=2, seed=3)
    s2 = student_from_config(teacher, layers=2, hidden=32, intermediate=64, heads=2, seed=3)
    assert s1.config.hidden_size == 32 and s1.config.num_hidden_layers == 2 and len(decoder_blocks(s1)) == 2
    assert s1.config.vocab_size == teacher.config.vocab_size
    assert all(torch.equal(a, b) for a, b in zip(s1.state_dict().values(), s2.state_dict().values()))
    x = torch.randint(0, 256, (1, 5))
    assert s1(x).logits.shape == (1, 5, 256)
    with pytest.raises(ValueError, match="deeper or wider"):
        student_from_config(teacher, layers=5)
    with pytest.raises(ValueError, match="deeper or wider"):
        student_from_config(teacher, hidden=128)
    with pytest.raises(ValueError, match="not divisible"):
        student_from_config(teacher, hidden=30, heads=4)
    b = student_from_config(tiny_bert(4), layers=2, hidden=16, intermediate=32, heads=2)
    assert b.config.num_hidden_layers == 2 and b(input_ids=torch.ones(1, 4, dtype=torch.long)).logits.shape == (1, 2)
