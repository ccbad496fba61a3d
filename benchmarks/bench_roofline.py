"""This machine's roofline: memory bandwidth (STREAM-like copy / triad) and matmul rate (fp32 / bf16), at 1
and 2 threads, plus where real linear layers land on it (fp32 F.linear and the INT8 / INT4 CPU kernels at
1 and 512 tokens).  Writes ``reports/roofline.json`` and ``reports/roofline.md``; the roofline chapter
(``notebooks/23_roofline.ipynb``) reads them.

    OMP_NUM_THREADS=2 python benchmarks/bench_roofline.py [--mib 256] [--n 1024] [--repeats 5]
        [--json reports/roofline.json] [--md reports/roofline.md]
"""
from __future__ import annotations

import argparse
import json
import os

import torch
import torch.nn.functional as F

from lessonlib.quant.affine import QuantScheme
from lessonlib.quant.kernels import KernelLinear
from lessonlib.quant.qlinear import QuantLinear
from lessonlib.roofline import best_seconds, linear_intensity, matmul_rate, stream_bandwidth, threads


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


@torch.no_grad()
def linear_points(out_f: int, in_f: int, tokens: tuple[int, ...], repeats: int) -> list[dict]:
    """GFLOP/s and effective GB/s of one linear layer (out_f, in_f) in fp32 and on the INT8 / INT4 kernels."""
    g = torch.Generator().manual_seed(0)
    lin = torch.nn.Linear(in_f, out_f, bias=False)
    lin.weight.copy_(torch.randn(out_f, in_f, generator=g) * 0.02)
    variants = {"fp32": (lambda x: F.linear(x, lin.weight), 4.0)}
    for name, scheme in (("int8", QuantScheme(8, -1, True)), ("int4 g64", QuantScheme(4, 64, True))):
        k = KernelLinear(QuantLinear.from_linear(lin, scheme))
        variants[name] = (k, k.nbytes() / (out_f * in_f))
    rows = []
    for T in tokens:
        x = torch.randn(T, in_f, generator=g)
        for name, (fn, bpw) in variants.items():
            t = best_seconds(lambda: fn(x), repeats)
            rows.append(dict(layer=f"{out_f}x{in_f}", kind=name, tokens=T, seconds=t,
                             gflops=2 * T * out_f * in_f / t / 1e9, bytes_per_weight=bpw,
                             intensity=linear_intensity(T, out_f, in_f, bpw),
                             weight_gbs=out_f * in_f * bpw / t / 1e9))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=256, help="MiB per STREAM array (well above the L3 cache)")
    ap.add_argument("--n", type=int, default=1024, help="matmul size n (n x n x n)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default="reports/roofline.json")
    ap.add_argument("--md", default="reports/roofline.md")
    a = ap.parse_args()
    for k in ("mib", "n", "repeats"):
        if getattr(a, k) < 1:
            raise SystemExit(f"--{k}={getattr(a, k)} must be at least 1")
    torch.manual_seed(0)
    load0 = _load()
    res: dict = {"torch": torch.__version__, "cpus": os.cpu_count(), "mib": a.mib, "n": a.n,
                 "repeats": a.repeats, "bandwidth_gbs": {}, "matmul_gflops": {}, "linear": {}}
    for t in (1, 2):
        for kind in ("copy", "triad"):
            res["bandwidth_gbs"][f"{kind}_{t}t"] = stream_bandwidth(kind, a.mib, a.repeats, t)
        for dt in (torch.float32, torch.bfloat16):
            res["matmul_gflops"][f"{str(dt).split('.')[-1]}_{t}t"] = matmul_rate(a.n, dt, a.repeats, t)
        with threads(t):
            # the LM head shape of SmolLM2 (49152 x 576) and its MLP up-projection (1536 x 576)
            res["linear"][f"{t}t"] = (linear_points(49152, 576, (1, 512), a.repeats)
                                      + linear_points(1536, 576, (1, 512), a.repeats))
    res["load_average"] = [load0, _load()]
    with open(a.json, "w") as f:
        json.dump(res, f, indent=1)
    bw, mm = res["bandwidth_gbs"], res["matmul_gflops"]
    lines = ["# Roofline of this machine", "",
             f"torch {res['torch']}, {res['cpus']} visible CPUs, best of {a.repeats}; load average "
             f"{load0:.1f} before, {res['load_average'][1]:.1f} after (a shared machine: upper bounds on time, "
             "lower bounds on rates).", "",
             "| threads | copy GB/s | triad GB/s | fp32 matmul GFLOP/s | bf16 matmul GFLOP/s | ridge fp32 FLOP/B |",
             "|---:|---:|---:|---:|---:|---:|"]
    for t in (1, 2):
        ridge = mm[f"float32_{t}t"] / bw[f"triad_{t}t"]
        lines.append(f"| {t} | {bw[f'copy_{t}t']:.1f} | {bw[f'triad_{t}t']:.1f} | {mm[f'float32_{t}t']:.1f} | "
                     f"{mm[f'bfloat16_{t}t']:.1f} | {ridge:.1f} |")
    lines += ["", f"STREAM arrays of {a.mib} MiB float32 (copy moves 2 arrays, triad 3); matmul {a.n}^3.", "",
              "Linear layers on the roofline (weight GB/s = weight bytes / time: near the bandwidth means "
              "memory-bound):", "",
              "| threads | layer | kernel | tokens | bytes/weight | FLOP/B | GFLOP/s | weight GB/s | ms |",
              "|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    for t, rows in res["linear"].items():
        lines += [f"| {t[0]} | {r['layer']} | {r['kind']} | {r['tokens']} | {r['bytes_per_weight']:.2f} | "
                  f"{r['intensity']:.1f} | {r['gflops']:.1f} | {r['weight_gbs']:.1f} | {1e3 * r['seconds']:.2f} |"
                  for r in rows]
    lines += ["", f"Command: `OMP_NUM_THREADS=2 python benchmarks/bench_roofline.py --mib {a.mib} --n {a.n} "
              f"--repeats {a.repeats}`"]
    text = "\n".join(lines)
    print(text)
    with open(a.md, "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
