"""Perplexity throughput of the embedded model against this machine's own fp32 matmul rate, in one run.

    python benchmarks/bench_perplexity.py [--seqlen 512] [--windows 8]

Reports tokens/s, the model FLOP rate that implies (2 x linear parameters per token plus attention),
and its ratio to a plain (n x n) @ (n x n) fp32 matmul measured seconds earlier on the same cores.
"""
from __future__ import annotations

import argparse
import json

import torch

from lessonlib.evaluate import matmul_gflops, perplexity
from lessonlib.models import load_model


def flops_per_token(model, seqlen: int) -> float:
    c = model.config
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    attn = 2 * 2 * c.num_hidden_layers * seqlen * c.hidden_size  # QK^T and AV, full (non-causal) kernel
    return 2 * linear + attn


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--windows", type=int, default=8)
    args = ap.parse_args()
    torch.manual_seed(0)
    model, tok = load_model(device="cpu")
    peak = matmul_gflops(1024)
    perplexity(model, tok, seqlen=args.seqlen, max_windows=1, progress=False)  # warm-up
    r = perplexity(model, tok, seqlen=args.seqlen, max_windows=args.windows, progress=False)
    achieved = r.tokens_per_s * flops_per_token(model, args.seqlen) / 1e9
    out = {"threads": torch.get_num_threads(), "seqlen": args.seqlen, "windows": r.windows, "ppl": round(r.ppl, 3),
           "tokens_per_s": round(r.tokens_per_s, 1), "model_gflops": round(achieved, 1),
           "matmul_gflops_fp32": round(peak, 1), "ratio_to_matmul": round(achieved / peak, 3)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
