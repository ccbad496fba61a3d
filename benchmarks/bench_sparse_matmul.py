"""Dense vs CSR matmul on CPU for SmolLM2-135M layer shapes: time, storage, crossover sparsity (claim C02).

    python benchmarks/bench_sparse_matmul.py                # sizes from the active profile
    LESSONLIB_PROFILE=ci python benchmarks/bench_sparse_matmul.py --threads 1

Prints one row per (shape, sparsity) with the time of W @ X (default: min thread CPU time of ``3 * bench_repeats``
interleaved dense / CSR rounds, as claim C02), X holding ``--tokens`` token vectors, then the lowest sparsity
from which CSR stays faster than dense.
"""
from __future__ import annotations

import argparse

import torch

from lessonlib.config import get_profile
from lessonlib.prune.sparse_kernels import (CLOCKS, DEFAULT_SPARSITIES, SMOLLM2_SHAPES, crossover_sparsity,
                                            format_table, sparse_matmul_table)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default=None, help="ci, laptop or gpu (default: $LESSONLIB_PROFILE or laptop)")
    p.add_argument("--tokens", type=int, default=None, help="tokens per matmul (default: profile calib_seqlen)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--sparsities", type=float, nargs="*", default=list(DEFAULT_SPARSITIES))
    p.add_argument("--clock", choices=CLOCKS, default="cpu",
                   help="cpu: min thread CPU time of interleaved repeats (robust under load); wall: median wall time")
    args = p.parse_args(argv)
    prof = get_profile(args.profile)
    torch.set_num_threads(args.threads)
    tokens = args.tokens or prof.calib_seqlen
    rows = sparse_matmul_table(SMOLLM2_SHAPES, args.sparsities, tokens=tokens, repeats=3 * prof.bench_repeats,
                               seed=0, clock=args.clock)
    print(f"profile={prof.name} tokens={tokens} threads={torch.get_num_threads()} repeats={3 * prof.bench_repeats} "
          f"clock={args.clock} torch={torch.__version__}")
    print(format_table(rows))
    for shape, s in crossover_sparsity(rows).items():
        print(f"crossover {shape}: " + (f"CSR faster from sparsity {s:.2f}" if s is not None
                                        else "CSR never faster at the measured sparsities"))


if __name__ == "__main__":
    main()
