"""Dense vs CSR matmul table, storage bytes, crossover, 2:4 guard (lessonlib.prune.sparse_kernels)."""
import pytest
import torch

from lessonlib.prune.magnitude import magnitude_mask
from lessonlib.prune.masks import apply_mask
from lessonlib.prune.sparse_kernels import (MatmulTiming, crossover_sparsity, format_table, sparse_matmul_table,
                                            storage_bytes, to_2of4_semi_structured)


def test_storage_bytes_literal():
    w = torch.zeros(4, 8)
    w[0, 1], w[1, 2], w[3, 0], w[3, 7] = 1.0, 2.0, 3.0, 4.0  # 4 nonzeros, float32
    b = storage_bytes(w)
    assert b["dense"] == 4 * 8 * 4 == 128
    assert b["csr_torch"] == 5 * 8 + 4 * 8 + 4 * 4 == 88  # int64 row pointers and column indices
    assert b["csr"] == 4 * (4 + 4) + 5 * 4 == 52  # int32 indices
    assert b["bitmask"] == 32 / 8 + 4 * 4 == 20


def test_table_small_measured():
    rows = sparse_matmul_table(shapes=((32, 16),), sparsities=(0.0, 0.5, 0.9), tokens=8, repeats=2, warmup=0)
    assert [r.sparsity for r in rows] == [0.0, 0.5, 0.9] and all(r.shape == (32, 16) for r in rows)
    assert all(r.dense_ms > 0 and r.csr_ms > 0 and r.speedup > 0 for r in rows)
    assert len({r.dense_bytes for r in rows}) == 1
    assert rows[0].csr_bytes > rows[1].csr_bytes > rows[2].csr_bytes
    assert rows[2].csr_torch_bytes == (33 + 51) * 8 + 51 * 4  # nnz = 512 - round(0.9 * 512) = 51
    assert "speedup" in format_table(rows) and rows[0].as_dict()["speedup"] == rows[0].speedup
    with pytest.raises(ValueError, match="sparsity"):
        sparse_matmul_table(shapes=((8, 8),), sparsities=(1.0,), tokens=2, repeats=1)


def _row(s, dense, csr, shape=(4, 4)):
    return MatmulTiming(shape, s, 1, dense, csr, 0, 0, 0.0, 0.0)


def test_crossover_rule():
    rows = [_row(s, 1.0, 1.0 / sp) for s, sp in [(0.0, 0.1), (0.5, 0.5), (0.7, 1.2), (0.8, 0.9), (0.9, 1.5), (0.95, 2.0)]]
    rows += [_row(s, 1.0, 3.0, shape=(8, 8)) for s in (0.0, 0.9)]
    assert crossover_sparsity(rows) == {(4, 4): 0.9, (8, 8): None}  # 0.7 wins once but 0.8 loses again


def test_2of4_guard():
    w = torch.randn(8, 16, dtype=torch.float16)
    w = apply_mask(w, magnitude_mask(w.float(), 0.5, 2, 4))
    with pytest.raises(ValueError, match="CUDA"):
        to_2of4_semi_structured(w)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_2of4_on_cuda():
    w = torch.randn(128, 128, dtype=torch.float16, device="cuda")
    with pytest.raises(ValueError, match="not 2:4"):
        to_2of4_semi_structured(w)
    w = apply_mask(w, magnitude_mask(w.float(), 0.5, 2, 4))
    sw = to_2of4_semi_structured(w)
    x = torch.randn(128, 64, dtype=torch.float16, device="cuda")
    torch.testing.assert_close(sw @ x, w @ x, rtol=1e-2, atol=1e-2)


def test_compress_2of4_literal_and_round_trip():
    from lessonlib.prune.sparse_kernels import compress_2of4, decompress_2of4
    w = torch.tensor([[0.0, 3.0, 0.0, -1.0, 0.0, 0.0, 0.0, 7.0], [0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0]])
    v, p = compress_2of4(w)
    # row 0: {1, 3} and {3} padded with the leftmost zero 0; row 1: all zeros -> slots 0, 1, then {0, 1}
    assert v.tolist() == [[3.0, -1.0, 0.0, 7.0], [0.0, 0.0, 1.0, 2.0]]
    assert p.tolist() == [[1, 3, 0, 3], [0, 1, 0, 1]] and p.dtype == torch.int64
    assert torch.equal(decompress_2of4(v, p), w)
    g = torch.Generator().manual_seed(0)
    r = torch.randn(16, 64, generator=g).half()
    r = apply_mask(r.float(), magnitude_mask(r.float(), 0.5, 2, 4)).half()
    v, p = compress_2of4(r)
    assert v.dtype == torch.float16 and v.shape == (16, 32) and torch.equal(decompress_2of4(v, p), r)
    # 2:4 storage: half the values plus 2 bits per kept value = 9 bits per weight for fp16
    assert v.numel() * 16 + p.numel() * 2 == r.numel() * 9
    with pytest.raises(ValueError, match="not 2:4"):
        compress_2of4(torch.tensor([[1.0, 2.0, 3.0, 0.0]]))
    with pytest.raises(ValueError, match="not 2:4"):
        compress_2of4(torch.zeros(2, 6))
    with pytest.raises(ValueError, match="positions"):
        decompress_2of4(v, p.int())


def test_interleaved_cpu_times_and_clocks():
    from lessonlib.prune.sparse_kernels import interleaved_cpu_times
    calls = []
    a = torch.randn(64, 64)
    t = interleaved_cpu_times([lambda: calls.append("d") or a @ a, lambda: calls.append("s")], repeats=3, warmup=1)
    assert calls == ["d", "s"] * 4  # one warm-up round, then interleaved rounds
    assert len(t) == 2 and t[0] > 0 and t[1] >= 0
    big = torch.randn(256, 256)
    small, large = interleaved_cpu_times([lambda: big[:32, :32] @ big[:32, :32], lambda: big @ big @ big], 3)
    assert large > small  # CPU work is what it measures
    with pytest.raises(ValueError, match="repeats"):
        interleaved_cpu_times([lambda: None], repeats=0)
    rows = sparse_matmul_table(shapes=((16, 8),), sparsities=(0.5,), tokens=4, repeats=2, clock="wall")
    assert rows[0].clock == "wall" and rows[0].csr_ms > 0
    assert sparse_matmul_table(shapes=((16, 8),), sparsities=(0.5,), tokens=4, repeats=2)[0].clock == "cpu"
    with pytest.raises(ValueError, match="clock"):
        sparse_matmul_table(shapes=((16, 8),), sparsities=(0.5,), tokens=4, repeats=1, clock="gpu")
