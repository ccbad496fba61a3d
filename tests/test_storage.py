"""One byte-accounting module (``lessonlib.storage``), checked on literal tensors and literal shapes."""
import pytest
import torch
from torch import nn

from lessonlib import evaluate, storage
from lessonlib.pipeline.budget import recipe_bytes_estimate
from lessonlib.quant import QuantLinear, QuantScheme
from lessonlib.quant.mixed import layer_bytes
from lessonlib.quant.packing import pack_codes
from lessonlib.quant.qlinear import quant_layer_bytes


def test_tensor_and_storage_bytes_on_literal_tensors():
    a = torch.tensor([[1.0, 2.0, 3.0]])  # 3 x float32
    b = torch.tensor([1, 2], dtype=torch.int16)  # 2 x int16
    assert storage.tensor_bytes(a) == 12 and storage.tensor_bytes(b) == 4
    assert storage.storage_bytes(a, None, b) == 16
    assert evaluate.tensor_bytes is storage.tensor_bytes and evaluate.model_bytes is storage.model_bytes


def test_model_bytes_counts_a_tied_weight_once():
    emb = nn.Embedding(5, 3)
    head = nn.Linear(3, 5, bias=False)
    head.weight = emb.weight  # tied, as in SmolLM2
    m = nn.ModuleDict({"emb": emb, "head": head})
    m.register_buffer("step", torch.tensor([7], dtype=torch.int64))
    assert storage.model_bytes(m) == 5 * 3 * 4 + 8


def test_packed_row_bytes_match_pack_codes():
    codes = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 0, 1]], dtype=torch.int32)  # 10 codes
    for bits, want in [(3, 4), (4, 5), (8, 10)]:
        assert pack_codes(codes, bits).shape[1] == storage.packed_row_bytes(10, bits) == want
    with pytest.raises(ValueError, match="bits=9"):
        storage.packed_row_bytes(10, 9)


def test_packed_layer_bytes_are_the_real_quantlinear_even_when_rows_do_not_fill_bytes():
    # 3-bit codes, 10 per row: each row packs into ceil(30/8) = 4 bytes, not 30/8 = 3.75
    scheme = QuantScheme(3, -1, True)
    lin = nn.Linear(10, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.1 * i for i in range(10)], [-0.2 * i for i in range(10)]]))
    q = QuantLinear.from_linear(lin, scheme, scale_dtype=torch.float16)
    assert q.nbytes() == 2 * 4 + 2 * 2  # codes + one fp16 scale per row
    assert quant_layer_bytes(2, 10, scheme)["total"] == q.nbytes()
    assert layer_bytes(2, 10, scheme) == q.nbytes()  # mixed precision counts what is stored (was 8 + 4 = 12 - 1)


def test_sparse_and_average_bytes():
    assert storage.sparse_bytes(4, 8, 8, 16) == (4 + 16, "bitmask")  # 32 bits of mask + 8 fp16 values
    assert storage.sparse_bytes(100, 1000, 1, 16) == (2 + 2 + 101 * 4, "csr")
    assert storage.bytes_per_weight(4, 64) == pytest.approx(0.5 + 4 / 64)
    assert storage.bytes_per_weight(None, sparsity=0.5) == pytest.approx(1 / 8 + 1.0)
    assert recipe_bytes_estimate(1000, 10, bits=4, group_size=64) == pytest.approx(1000 * (0.5 + 4 / 64) + 20)
