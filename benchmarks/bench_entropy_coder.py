"""Huffman and rANS against the entropy bound and against zstd / gzip / lzma, with encode/decode MB/s.

    python benchmarks/bench_entropy_coder.py                      # sizes from the active profile
    LESSONLIB_PROFILE=ci python benchmarks/bench_entropy_coder.py --symbols 1000000

Inputs (all int8 symbols, so 1 symbol = 1 raw byte and MB/s is per MB of raw symbols):
  sparse4   4-bit codes with 80% zeros (claim C37's setting), synthetic, seeded
  gauss4    4-bit symmetric round-to-nearest codes of a Gaussian weight (no pruning)
  uniform4  uniform 4-bit codes (entropy 4: nothing to gain)
  deep      Deep Compression cluster indices (k=16) of a Gaussian weight pruned to 90%, relative-index entries
Each row: bytes (headers included), bits/symbol, excess over the entropy, MB/s (best of ``bench_repeats``).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from lessonlib.coding import compare_coders, deep_compress, format_results, shannon_entropy
from lessonlib.coding.compare import relative_index_decode, relative_index_encode
from lessonlib.config import get_profile
from lessonlib.quant.affine import QuantScheme, quantize
from lessonlib.share.clustering import cluster_weight

_SYMBOLS = {"ci": 1 << 20, "laptop": 1 << 22, "gpu": 1 << 24}


def inputs(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    side = int(np.sqrt(n))
    w = torch.randn(side, side, generator=torch.Generator().manual_seed(seed))
    out = {"sparse4": (rng.integers(-8, 8, n) * (rng.random(n) >= 0.8)).astype(np.int8),
           "gauss4": quantize(w, QuantScheme(bits=4, group_size=-1, sym=True)).codes.numpy().astype(np.int8),
           "uniform4": rng.integers(-8, 8, n).astype(np.int8)}
    pruned = w * (w.abs() > w.abs().flatten().kthvalue(int(0.9 * w.numel())).values)
    cw = cluster_weight(pruned, 16, iters=10)
    gaps, real = relative_index_encode(cw.indices.reshape(-1).numpy() != 0, 5)
    pos = relative_index_decode(gaps)
    out["deep"] = np.where(real, cw.indices.reshape(-1).numpy()[pos], 0).astype(np.int8)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default=None, help="ci, laptop or gpu (default: $LESSONLIB_PROFILE or laptop)")
    p.add_argument("--symbols", type=int, default=None, help="symbols per input (default: from the profile)")
    p.add_argument("--zstd-level", type=int, default=19)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = p.parse_args(argv)
    prof = get_profile(args.profile)
    torch.set_num_threads(args.threads)
    n = args.symbols or _SYMBOLS.get(prof.name, 1 << 22)
    print(f"profile={prof.name} symbols={n} repeats={prof.bench_repeats} numpy={np.__version__}")
    for name, x in inputs(n).items():
        t0 = time.perf_counter()
        rows = compare_coders(x, zstd_level=args.zstd_level, repeats=prof.bench_repeats)
        print(f"\n== {name}: {x.size} symbols, entropy {shannon_entropy(x):.4f} bits/symbol "
              f"({time.perf_counter() - t0:.1f} s)")
        print(format_results(rows))
    side = int(np.sqrt(n))
    w = torch.randn(side, side, generator=torch.Generator().manual_seed(1))
    for coder in ("huffman", "rans"):
        r = deep_compress(w, sparsity=0.9, k=16, gap_bits=5, coder=coder)
        bpw = ", ".join(f"{k} {v:.3f}" for k, v in r.bits_per_weight().items())
        print(f"\nDeep Compression ({coder}) of a {side}x{side} Gaussian weight, 90% pruned, k=16: bits/weight: "
              f"{bpw}; ratio {r.ratios()['coded']:.1f}x; per nonzero: values {r.value_bits_per_nonzero:.2f} bits, "
              f"positions {r.position_bits_per_nonzero:.2f} bits")


if __name__ == "__main__":
    main()
