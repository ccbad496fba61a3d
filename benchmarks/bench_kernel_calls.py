"""Per-call cost of one batch-1 linear layer (1536 x 576, SmolLM2's MLP shape) on each path, with its weights
in cache (the same layer called again and again) and streamed from DRAM (a cycle through distinct layers
totalling ``--mib`` MiB, far above the last-level cache): if a path runs at the same weights per second in
both, its arithmetic, not the memory, limits it.  Also the raw kernel op without ``KernelLinear``'s dtype
conversions and reshapes, and one stacked 3072 x 576 call against two 1536 x 576 calls (gate/up fused).

    OMP_NUM_THREADS=1 python benchmarks/bench_kernel_calls.py [--mib 256] [--clock cpu] [--out FILE]
"""
from __future__ import annotations

import argparse
import os
import time

import torch
from torch import nn

from lessonlib.quant.affine import QuantScheme
from lessonlib.quant.kernels import KernelLinear
from lessonlib.quant.qlinear import QuantLinear

N, K = 1536, 576


def per_call(fns: list, clock, min_calls: int = 200) -> float:
    """Seconds per call, cycling through ``fns``: the best of 3 passes of at least ``min_calls`` calls."""
    reps = max(1, min_calls // len(fns))
    best = float("inf")
    for _ in range(4):  # the first pass is a warm-up
        t0 = clock()
        for _ in range(reps):
            for f in fns:
                f()
        best = min(best, (clock() - t0) / (reps * len(fns)))
    return best


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="cpu")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    if a.mib < 1:
        raise SystemExit(f"--mib={a.mib} must be at least 1")
    clock = time.thread_time if a.clock == "cpu" else time.perf_counter
    torch.manual_seed(0)
    x = torch.randn(1, 1, K)
    xb = x.reshape(1, K).bfloat16()
    paths = {"fp32 F.linear": (4.0, lambda lin: (lambda: lin(x))),
             "int8 KernelLinear": (1.0, lambda lin: _k(lin, 8, -1, x)),
             "int8 raw op": (1.0, lambda lin: _raw(lin, 8, -1, xb)),
             "int4 g64 KernelLinear": (0.5625, lambda lin: _k(lin, 4, 64, x)),
             "int4 g64 raw op": (0.5625, lambda lin: _raw(lin, 4, 64, xb))}
    lines = [f"Per call, batch 1, {N}x{K}, {torch.get_num_threads()} threads, {a.clock} clock, best of 3 passes; "
             f"load average {os.getloadavg()[0]:.1f} (shared machine: contended).", "",
             "| path | bytes/weight | in cache: us | G weights/s | from DRAM: us | G weights/s |", "|---|---:|---:|---:|---:|---:|"]
    for name, (b, make) in paths.items():
        n_layers = max(2, int(a.mib * 2**20 / (N * K * b)))
        fns = [make(nn.Linear(K, N, bias=False)) for _ in range(n_layers)]
        hot, cold = per_call(fns[:1], clock), per_call(fns, clock)
        lines.append(f"| {name} | {b:.2f} | {1e6 * hot:.1f} | {N * K / hot / 1e9:.1f} | {1e6 * cold:.1f} | "
                     f"{N * K / cold / 1e9:.1f} |")
        del fns
    lin2 = [nn.Linear(K, N, bias=False) for _ in range(2)]
    two = [KernelLinear(QuantLinear.from_linear(l, QuantScheme(4, 64, True))) for l in lin2]
    both = nn.Linear(K, 2 * N, bias=False)
    both.weight.data = torch.cat([l.weight.data for l in lin2])
    one = KernelLinear(QuantLinear.from_linear(both, QuantScheme(4, 64, True)))
    t2, t1 = per_call([lambda: [k(x) for k in two]], clock), per_call([lambda: one(x)], clock)
    lines += ["", f"int4 gate+up in cache: two {N}x{K} calls {1e6 * t2:.1f} us, one stacked {2 * N}x{K} call "
              f"{1e6 * t1:.1f} us ({t2 / t1:.2f}x)."]
    text = "\n".join(lines)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


def _k(lin: nn.Linear, bits: int, group: int, x: torch.Tensor):
    k = KernelLinear(QuantLinear.from_linear(lin, QuantScheme(bits, group, True)))
    return lambda: k(x)


def _raw(lin: nn.Linear, bits: int, group: int, xb: torch.Tensor):
    k = KernelLinear(QuantLinear.from_linear(lin, QuantScheme(bits, group, True)))
    w, s, g = k.weight, k.scales, k.group
    if bits == 8:
        return lambda: torch.ops.aten._weight_int8pack_mm(xb, w, s)
    return lambda: torch.ops.aten._weight_int4pack_mm_for_cpu(xb, w, g, s)


if __name__ == "__main__":
    main()
