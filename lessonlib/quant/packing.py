"""Real low-bit storage: pack b-bit integer codes (b = 2..8) into bytes and back, and count the bytes.

Each row of codes is written as one little-endian bit stream: code ``i`` of a row occupies bits
``[i*b, (i+1)*b)`` of the row's bytes, least significant bit first.  For b = 4 this is the usual "two INT4
per byte, low nibble first" layout (as in GPTQ/AWQ kernels, which use 32-bit words instead of bytes);
for b = 3 eight codes fill three bytes.  A row of ``n`` codes takes ``ceil(n * b / 8)`` bytes.

Symmetric (signed) codes are stored with an offset of ``2^(b-1)`` so that every stored value is unsigned.
"""
from __future__ import annotations

import torch

from ..storage import check_code_bits as _check_bits, packed_row_bytes, storage_bytes  # re-exported: byte accounting lives in storage

__all__ = ["packed_row_bytes", "pack_codes", "unpack_codes", "storage_bytes"]


def pack_codes(codes: torch.Tensor, bits: int, signed: bool = False) -> torch.Tensor:
    """Integer codes (rows, n) -> uint8 (rows, ceil(n*bits/8)).

    Unsigned codes must lie in [0, 2^b - 1]; with ``signed=True`` in [-2^(b-1), 2^(b-1) - 1].
    """
    _check_bits(bits)
    if codes.dim() != 2:
        raise ValueError(f"codes must be 2-D (rows, n), got shape {tuple(codes.shape)}")
    if codes.is_floating_point() or codes.dtype == torch.bool:
        raise ValueError(f"codes must be an integer tensor, got {codes.dtype}")
    c = codes.to(torch.int32) + (2 ** (bits - 1) if signed else 0)
    if c.numel() and (int(c.min()) < 0 or int(c.max()) > 2 ** bits - 1):
        lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
        raise ValueError(f"codes range [{int(codes.min())}, {int(codes.max())}] does not fit "
                         f"{'signed' if signed else 'unsigned'} {bits}-bit codes [{lo}, {hi}]")
    rows, n = c.shape
    nbytes = packed_row_bytes(n, bits)
    if 8 % bits == 0:  # 2, 4, 8 bits: whole codes per byte, the same stream without the per-bit tensor
        per = 8 // bits
        c = torch.nn.functional.pad(c, (0, nbytes * per - n)).reshape(rows, nbytes, per)  # (rows, nbytes, per)
        shifts = torch.arange(0, 8, bits, device=c.device, dtype=torch.int32)
        return (c << shifts).sum(-1).to(torch.uint8)
    shifts = torch.arange(bits, device=c.device, dtype=torch.int32)
    stream = ((c.unsqueeze(-1) >> shifts) & 1).to(torch.uint8).reshape(rows, n * bits)  # (rows, n*b) bits
    stream = torch.nn.functional.pad(stream, (0, nbytes * 8 - n * bits))  # (rows, nbytes*8)
    weights = (2 ** torch.arange(8, device=c.device, dtype=torch.int32))
    return (stream.reshape(rows, nbytes, 8).to(torch.int32) * weights).sum(-1).to(torch.uint8)


def unpack_codes(packed: torch.Tensor, bits: int, n: int, signed: bool = False) -> torch.Tensor:
    """uint8 (rows, ceil(n*bits/8)) -> int32 codes (rows, n); the exact inverse of ``pack_codes``."""
    _check_bits(bits)
    if packed.dtype != torch.uint8 or packed.dim() != 2:
        raise ValueError(f"packed must be a 2-D uint8 tensor, got {packed.dtype} {tuple(packed.shape)}")
    if packed.shape[1] != packed_row_bytes(n, bits):
        raise ValueError(f"packed rows have {packed.shape[1]} bytes, but {n} codes of {bits} bits need "
                         f"{packed_row_bytes(n, bits)}")
    rows = packed.shape[0]
    if 8 % bits == 0:  # whole codes per byte
        shifts = torch.arange(0, 8, bits, device=packed.device, dtype=torch.int32)
        codes = ((packed.to(torch.int32).unsqueeze(-1) >> shifts) & (2 ** bits - 1)).reshape(rows, -1)[:, :n]
        return codes - 2 ** (bits - 1) if signed else codes
    shifts = torch.arange(8, device=packed.device, dtype=torch.int32)
    stream = ((packed.to(torch.int32).unsqueeze(-1) >> shifts) & 1).reshape(rows, -1)[:, : n * bits]
    weights = 2 ** torch.arange(bits, device=packed.device, dtype=torch.int32)
    codes = (stream.reshape(rows, n, bits) * weights).sum(-1, dtype=torch.int32)  # (rows, n)
    return codes - 2 ** (bits - 1) if signed else codes
