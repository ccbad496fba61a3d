"""Byte accounting: how many bytes a tensor, a model, a packed low-bit row or a sparse matrix takes.

The one place lessonlib counts storage (``evaluate``, ``quant.packing``, ``pipeline.size`` and
``pipeline.budget`` import from here).  Three layers of detail, all consistent with each other:

- real tensors: ``tensor_bytes`` / ``storage_bytes`` (numel x element size), ``model_bytes`` (each storage
  once, so tied embeddings are not counted twice);
- formats before anything is allocated: ``packed_row_bytes`` (``ceil(n * b / 8)``: a row of b-bit codes),
  ``csr_bytes`` / ``bitmask_bytes`` / ``sparse_bytes`` (the cheaper sparse layout);
- a back-of-envelope average: ``bytes_per_weight`` (codes + per-group scales, optionally sparse).

``quant.qlinear.quant_layer_bytes`` counts a whole packed layer from these, on the real ``QuantLinear``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["tensor_bytes", "storage_bytes", "model_bytes", "check_code_bits", "packed_row_bytes", "csr_bytes", "bitmask_bytes",
           "sparse_bytes", "bytes_per_weight"]


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a tensor's elements occupy (numel x element size)."""
    return t.numel() * t.element_size()


def storage_bytes(*tensors: torch.Tensor | None) -> int:
    """Bytes actually held by the given tensors (packed codes, scales, zeros, ...); ``None`` counts 0."""
    return sum(tensor_bytes(t) for t in tensors if t is not None)


def model_bytes(model: nn.Module) -> int:
    """Real bytes of a model's parameters and buffers, each storage counted once (ties, shared blocks)."""
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), t.numel(), t.dtype)
        if key in seen or t.numel() == 0:
            continue
        seen.add(key)
        total += tensor_bytes(t)
    return total


def check_code_bits(bits: int) -> None:
    """ValueError unless ``bits`` is an integer code width in 2..8 (what ``quant.packing`` stores)."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"bits={bits!r} is outside 2..8")


def packed_row_bytes(n: int, bits: int) -> int:
    """Bytes that one row of ``n`` codes of ``bits`` bits takes once packed: ``ceil(n * bits / 8)``."""
    check_code_bits(bits)
    return math.ceil(n * bits / 8)


def csr_bytes(nnz: int, rows: int, value_bytes: float = 2, index_bytes: int = 4,
              pointer_bytes: int | None = None) -> float:
    """Bytes of a CSR matrix: values and column indices per nonzero, plus rows+1 row pointers
    (``pointer_bytes`` each, default ``index_bytes``)."""
    if nnz < 0 or rows <= 0:
        raise ValueError(f"nnz={nnz} must be >= 0 and rows={rows} > 0")
    ptr = index_bytes if pointer_bytes is None else pointer_bytes
    return nnz * (value_bytes + index_bytes) + (rows + 1) * ptr


def bitmask_bytes(numel: int, nnz: int, value_bytes: float = 2) -> float:
    """Bytes of a bitmask sparse format: one bit per position plus the nonzero values."""
    if not 0 <= nnz <= numel:
        raise ValueError(f"nnz={nnz} must be in [0, numel={numel}]")
    return math.ceil(numel / 8) + nnz * value_bytes


def sparse_bytes(rows: int, cols: int, nnz: int, value_bits: float) -> tuple[int, str]:
    """Cheapest sparse layout of a (rows, cols) matrix with ``nnz`` nonzeros stored at ``value_bits`` each:
    ``(bytes, "bitmask"|"csr")``.  Values are packed (ceil of the total bits)."""
    if not 0 <= nnz <= rows * cols:
        raise ValueError(f"nnz={nnz} must lie in [0, {rows * cols}]")
    values = math.ceil(nnz * value_bits / 8)
    bm = math.ceil(bitmask_bytes(rows * cols, nnz, value_bytes=0)) + values
    idx = 2 if cols < 65536 else 4  # column index per nonzero; row pointers (rows + 1) stay 4 bytes
    csr = int(csr_bytes(nnz, rows, value_bytes=0, index_bytes=idx, pointer_bytes=4)) + values
    return (bm, "bitmask") if bm <= csr else (csr, "csr")


def bytes_per_weight(bits: int | None, group_size: int = 64, sym: bool = False, float_bytes: int = 2,
                     sparsity: float = 0.0) -> float:
    """Average bytes per compressible weight, the accounting of ``pipeline.size`` without the rounding:
    ``float_bytes`` (``bits=None``) or ``bits/8`` plus one scale (and one zero when asymmetric) of
    ``float_bytes`` per ``group_size`` weights; with ``sparsity`` s > 0 a bitmask bit per position and only
    (1 - s) values (a float layer keeps the dense layout when that is cheaper)."""
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity={sparsity} must lie in [0, 1)")
    if float_bytes not in (2, 4):
        raise ValueError(f"float_bytes={float_bytes} must be 2 or 4")
    if bits is None:
        value, side = float(float_bytes), 0.0
    else:
        if not 2 <= bits <= 8 or group_size < 1:
            raise ValueError(f"bits={bits} must lie in 2..8 and group_size={group_size} be >= 1")
        value, side = bits / 8, (1 if sym else 2) * float_bytes / group_size
    per = value + side
    if sparsity > 0:
        sparse = 1 / 8 + (1 - sparsity) * value + side
        per = min(per, sparse) if bits is None else sparse
    return per
