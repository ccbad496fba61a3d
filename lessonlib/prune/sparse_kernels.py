"""Does unstructured sparsity make matmuls faster?  Dense vs CSR timing, storage, and 2:4 on CUDA.

``sparse_matmul_table`` times ``W @ X`` for a weight W (out, in) pruned to a given sparsity against a batch
of tokens X (in, tokens), once dense and once with W stored as ``torch.sparse_csr``, and records the bytes
of each format.  By default it measures robustly on a shared machine: the CPU time of the calling thread
(``time.thread_time``, so time spent preempted by other processes does not count), dense and CSR calls
interleaved (both see the same machine state), the minimum over the repeats (the least disturbed run);
``clock="wall"`` takes the median wall time instead (``lessonlib.evaluate.measure_latency``).  The
default shapes are SmolLM2-135M's linear layers (576x576 attention output, 1536x576 MLP up/gate,
576x1536 MLP down).  ``crossover_sparsity`` reads off where CSR starts to win (claim C02: unstructured
sparsity needs very high sparsity before generic sparse kernels beat dense ones).

``compress_2of4`` / ``decompress_2of4`` spell out the 2:4 layout itself (the kept half of the values plus a
2-bit position per kept value); ``to_2of4_semi_structured`` converts a 2:4-sparse weight to PyTorch's semi-structured format, which uses
the sparse tensor cores of NVIDIA Ampere and newer GPUs (Mishra et al. 2021); CUDA only.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from ..evaluate import measure_latency
from ..storage import bitmask_bytes, csr_bytes, tensor_bytes
from .magnitude import magnitude_mask
from .masks import _check_matrix, apply_mask, check_sparsity, is_nm_sparse

__all__ = ["SMOLLM2_SHAPES", "DEFAULT_SPARSITIES", "CLOCKS", "MatmulTiming", "storage_bytes", "interleaved_cpu_times",
           "sparse_matmul_table",
           "crossover_sparsity", "format_table", "compress_2of4", "decompress_2of4", "to_2of4_semi_structured"]

SMOLLM2_SHAPES: tuple[tuple[int, int], ...] = ((576, 576), (1536, 576), (576, 1536))  # (out, in)
DEFAULT_SPARSITIES: tuple[float, ...] = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)


@dataclass(frozen=True)
class MatmulTiming:
    shape: tuple[int, int]  # (out, in)
    sparsity: float
    tokens: int
    dense_ms: float  # time of W @ X (see ``clock``)
    csr_ms: float  # time of W_csr @ X
    dense_bytes: int
    csr_torch_bytes: int  # what the torch CSR tensor holds (int64 indices)
    csr_bytes: float  # CSR with int32 indices
    bitmask_bytes: float
    clock: str = "cpu"  # "cpu": min thread CPU time of interleaved repeats; "wall": median wall time

    @property
    def speedup(self) -> float:
        """dense time / CSR time (> 1: CSR is faster)."""
        return self.dense_ms / self.csr_ms

    def as_dict(self) -> dict:
        return {**asdict(self), "speedup": self.speedup}


def _to_csr(weight: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return weight.to_sparse_csr()


def storage_bytes(weight: torch.Tensor) -> dict[str, float]:
    """Bytes of a (out, in) weight stored dense, as a real torch CSR tensor, as CSR with int32 indices, and
    as a bitmask + values (value bytes = the weight's element size)."""
    _check_matrix(weight)
    csr = _to_csr(weight)
    nnz = int(csr.values().numel())
    vb = weight.element_size()
    return {"dense": tensor_bytes(weight),
            "csr_torch": tensor_bytes(csr.crow_indices()) + tensor_bytes(csr.col_indices()) + tensor_bytes(csr.values()),
            "csr": csr_bytes(nnz, weight.shape[0], value_bytes=vb, index_bytes=4),
            "bitmask": bitmask_bytes(weight.numel(), nnz, value_bytes=vb)}


CLOCKS = ("cpu", "wall")


def interleaved_cpu_times(fns: list[Callable[[], object]], repeats: int, warmup: int = 1) -> list[float]:
    """Seconds of thread CPU time per call of each of ``fns``, the minimum over ``repeats`` rounds; each round
    calls every function once, in turn (interleaved), after ``warmup`` untimed rounds.  CPU work only: for
    single-threaded kernels (``torch.set_num_threads(1)``) it ignores time lost to other processes."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats={repeats} must be >= 1 and warmup={warmup} >= 0")
    for _ in range(warmup):
        for f in fns:
            f()
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, f in enumerate(fns):
            t0 = time.thread_time()
            f()
            best[i] = min(best[i], time.thread_time() - t0)
    return best


@torch.no_grad()
def sparse_matmul_table(shapes=SMOLLM2_SHAPES, sparsities=DEFAULT_SPARSITIES, tokens: int = 256,
                        repeats: int = 5, warmup: int = 1, seed: int = 0,
                        dtype: torch.dtype = torch.float32, clock: str = "cpu") -> list[MatmulTiming]:
    """Measured dense vs CSR matmul time and storage on CPU, one row per (shape, sparsity).

    ``clock="cpu"``: minimum thread CPU time over ``repeats`` interleaved dense / CSR rounds
    (``interleaved_cpu_times``); ``"wall"``: median wall time of ``repeats`` runs of each.

    W is a seeded Gaussian (out, in) magnitude-pruned to exactly the sparsity; X is (in, tokens).  Both
    products give the same (out, tokens) result, which is checked.  Threads: whatever torch uses (set
    ``torch.set_num_threads`` / ``OMP_NUM_THREADS`` before calling for a fair single-core number).
    """
    if tokens < 1 or repeats < 1:
        raise ValueError(f"tokens={tokens} and repeats={repeats} must be >= 1")
    if clock not in CLOCKS:
        raise ValueError(f"clock={clock!r}; choose one of {CLOCKS}")
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for out, inp in shapes:
        w0 = torch.randn(out, inp, generator=gen).to(dtype)  # (out, in)
        x = torch.randn(inp, tokens, generator=gen).to(dtype)  # (in, tokens)
        for s in sparsities:
            w = apply_mask(w0, magnitude_mask(w0, check_sparsity(s)))
            csr = _to_csr(w)
            ref, got = w @ x, csr @ x  # (out, tokens)
            if not torch.allclose(ref, got, rtol=1e-3, atol=1e-3 * float(ref.abs().max().clamp_min(1))):
                raise RuntimeError(f"CSR matmul disagrees with dense at shape {(out, inp)}, sparsity {s}")
            if clock == "cpu":
                dense_t, csr_t = interleaved_cpu_times([lambda: w @ x, lambda: csr @ x], repeats, warmup)
            else:
                dense_t = measure_latency(lambda: w @ x, warmup=warmup, repeats=repeats).median_s
                csr_t = measure_latency(lambda: csr @ x, warmup=warmup, repeats=repeats).median_s
            b = storage_bytes(w)
            rows.append(MatmulTiming((out, inp), float(s), tokens, dense_t * 1e3, csr_t * 1e3, b["dense"],
                                     b["csr_torch"], b["csr"], b["bitmask"], clock))
    return rows


def crossover_sparsity(rows: list[MatmulTiming]) -> dict[tuple[int, int], float | None]:
    """Per shape, the lowest measured sparsity from which CSR is faster than dense at every higher measured
    sparsity too (``None``: CSR never wins, even at the highest)."""
    out: dict[tuple[int, int], float | None] = {}
    for shape in dict.fromkeys(r.shape for r in rows):
        pts = sorted((r.sparsity, r.speedup) for r in rows if r.shape == shape)
        cross = None
        for s, sp in reversed(pts):
            if sp <= 1.0:
                break
            cross = s
        out[shape] = cross
    return out


def format_table(rows: list[MatmulTiming]) -> str:
    """A plain-text table of ``sparse_matmul_table`` rows."""
    head = (f"{'shape':>12} {'sparsity':>8} {'dense ms':>9} {'csr ms':>9} {'speedup':>8} "
            f"{'dense KB':>9} {'csr KB':>8} {'csr32 KB':>9} {'bitmask KB':>10}")
    lines = [head]
    for r in rows:
        lines.append(f"{str(r.shape):>12} {r.sparsity:>8.2f} {r.dense_ms:>9.3f} {r.csr_ms:>9.3f} {r.speedup:>8.2f} "
                     f"{r.dense_bytes / 1024:>9.1f} {r.csr_torch_bytes / 1024:>8.1f} {r.csr_bytes / 1024:>9.1f} "
                     f"{r.bitmask_bytes / 1024:>10.1f}")
    return "\n".join(lines)


def compress_2of4(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 2:4 compressed layout of a 2:4-sparse (out, in) weight (Mishra et al. 2021, NVIDIA's sparse tensor
    cores): ``(values, positions)``, both (out, in // 2).

    Each group of 4 consecutive inputs of a row keeps 2 slots: ``positions`` (int64, 0..3, increasing inside
    the pair) says where in the group they sit and ``values`` (the weight's dtype) what they hold.  The slots
    hold the group's nonzeros; a group with fewer than 2 nonzeros fills the rest with its leftmost zeros.
    A weight with ``in % 4 != 0`` or a group with 3 or 4 nonzeros raises ValueError.
    """
    _check_matrix(weight)
    if weight.shape[1] % 4 or not is_nm_sparse(weight, 2, 4):
        raise ValueError(f"weight {tuple(weight.shape)} is not 2:4 sparse: need in % 4 == 0 and at most 2 "
                         "nonzeros in every group of 4 consecutive inputs")
    # BEGIN SOLUTION
    out, inp = weight.shape
    groups = weight.reshape(out, inp // 4, 4)  # (out, in/4, 4)
    order = torch.argsort((groups == 0).to(torch.int8), dim=-1, stable=True)  # nonzeros first, then zeros, by position
    pos = order[..., :2].sort(dim=-1).values  # (out, in/4, 2) increasing
    return groups.gather(-1, pos).reshape(out, inp // 2), pos.reshape(out, inp // 2)
    # END SOLUTION


def decompress_2of4(values: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Inverse of ``compress_2of4``: the dense (out, 2 * values.shape[1]) weight."""
    _check_matrix(values, "values")
    if positions.shape != values.shape or values.shape[1] % 2 or positions.dtype != torch.int64 \
            or positions.numel() and not (0 <= int(positions.min()) and int(positions.max()) <= 3):
        raise ValueError(f"values {tuple(values.shape)} and positions {tuple(positions.shape)} {positions.dtype} "
                         "must have the same (out, in / 2) shape with int64 positions in 0..3")
    out, half = values.shape
    dense = torch.zeros(out, half // 2, 4, dtype=values.dtype)  # (out, in/4, 4)
    dense.scatter_(-1, positions.reshape(out, half // 2, 2), values.reshape(out, half // 2, 2))
    return dense.reshape(out, 2 * half)


def to_2of4_semi_structured(weight: torch.Tensor):
    """A 2:4-sparse (out, in) CUDA weight as ``torch.sparse.SparseSemiStructuredTensor`` (sparse tensor cores).

    Needs a CUDA tensor in float16 / bfloat16 whose every group of 4 consecutive inputs has >= 2 zeros
    (``is_nm_sparse(weight, 2, 4)``); anything else raises ValueError.
    """
    _check_matrix(weight)
    if weight.device.type != "cuda":
        raise ValueError(f"2:4 semi-structured sparsity needs a CUDA tensor (NVIDIA sparse tensor cores); this "
                         f"weight is on {weight.device.type!r}. On CPU use dense or CSR storage instead")
    if weight.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"2:4 semi-structured needs float16 or bfloat16, got {weight.dtype}")
    if not is_nm_sparse(weight, 2, 4):
        raise ValueError("weight is not 2:4 sparse (some group of 4 consecutive inputs has > 2 nonzeros); "
                         "prune it with keep_n=2, group_m=4 first")
    return torch.sparse.to_sparse_semi_structured(weight)
