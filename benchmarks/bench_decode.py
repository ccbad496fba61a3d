"""Greedy decoding and prefill speed of SmolLM2-135M: fp32, bf16, packed INT8 and packed INT4, in one run.

The packed models run on torch's CPU low-bit kernels (``lessonlib.quant.kernels``): INT8 is symmetric
per-channel on every linear layer; INT4 is symmetric groups of 64 on the decoder's linear layers with the
LM head in INT8 per-channel.  Every variant decodes ``--new`` tokens greedily at batch 1 after a short
prompt (KV cache on), and runs one prefill of ``--prefill`` tokens.  The variants are measured in turns,
``--rounds`` times, and the median is kept, so contention on a shared machine hits all of them alike.

With ``--ppl`` the packed models' perplexity is compared with the same quantized model on the float
reference path (``QuantLinear``, which dequantizes in fp32: the fake-quantized model).

    OMP_NUM_THREADS=2 python benchmarks/bench_decode.py [--new 64] [--prefill 512] [--rounds 3] [--ppl]
        [--out reports/bench_decode.md]
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics

import torch
from torch import nn

from lessonlib.evaluate import model_bytes, perplexity
from lessonlib.models import load_model
from lessonlib.quant.affine import QuantScheme
from lessonlib.quant.kernels import to_kernels
from lessonlib.models import is_linear_like
from lessonlib.quant.qlinear import default_filter, quantize_
from lessonlib.roofline import decode_seconds, prefill_seconds

INT8 = QuantScheme(8, -1, True)
INT4 = QuantScheme(4, 64, True)


def quantized(model: nn.Module, body: QuantScheme, head: QuantScheme = INT8) -> nn.Module:
    """A copy of ``model`` with decoder linears in ``body`` and the LM head in ``head`` (float path)."""
    m = copy.deepcopy(model)
    quantize_(m, body)  # decoder linears
    quantize_(m, head, filter_fn=lambda mod, n: is_linear_like(mod) and not default_filter(mod, n))  # lm_head
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--prefill", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ppl", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--json", default=None, help="also write the rows as JSON (the roofline chapter reads it)")
    a = ap.parse_args()
    for k in ("new", "prefill", "rounds"):
        if getattr(a, k) < 1:
            raise SystemExit(f"--{k}={getattr(a, k)} must be at least 1")
    torch.manual_seed(0)
    base, tok = load_model()
    ids = tok("The convention opened with a speech on " * 200, return_tensors="pt").input_ids
    prompt, long = ids[:, :8], ids[:, : a.prefill]
    load0 = os.getloadavg()[0]
    q8, q4, q44 = quantized(base, INT8), quantized(base, INT4), quantized(base, INT4, INT4)
    ref = {"int8": q8, "int4": q4, "int4-head4": q44}
    variants = {"fp32": base, "bf16": copy.deepcopy(base).to(torch.bfloat16)}
    for name, qm in ref.items():
        k = copy.deepcopy(qm)
        to_kernels(k)
        variants[name] = k
        if a.ppl:
            variants[name + "-bf16model"] = copy.deepcopy(k).to(torch.bfloat16)
    res = {n: {"decode": [], "prefill": []} for n in variants}
    for r in range(a.rounds):
        for n, m in variants.items():
            decode_seconds(m, prompt, 4) if r == 0 else None  # warm-up
            res[n]["decode"].append(decode_seconds(m, prompt, a.new))
            res[n]["prefill"].append(prefill_seconds(m, long))
    rows = []
    fp = statistics.median(res["fp32"]["decode"]), statistics.median(res["fp32"]["prefill"])
    for n, m in variants.items():
        d, p = statistics.median(res[n]["decode"]), statistics.median(res[n]["prefill"])
        rows.append(dict(model=n, mbytes=model_bytes(m) / 2**20, decode_tok_s=a.new / d, decode_x=fp[0] / d,
                         prefill_tok_s=long.shape[1] / p, prefill_x=fp[1] / p))
    ppl = {}
    if a.ppl:
        for name, qm in ref.items():
            ppl[name] = {"fake_quant": perplexity(qm, tok).ppl, "kernel": perplexity(variants[name], tok).ppl,
                         "kernel_bf16_model": perplexity(variants[name + "-bf16model"], tok).ppl}
        ppl["fp32"] = {"float": perplexity(base, tok).ppl}
    lines = [f"# Decode speed (SmolLM2-135M, batch 1, {a.new} new tokens, prefill {long.shape[1]} tokens)", "",
             f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} visible CPUs, "
             f"median of {a.rounds} interleaved rounds on a shared machine (timings are contended; "
             "compare the ratios).", "",
             "| model | MiB | decode tok/s | vs fp32 | prefill tok/s | vs fp32 |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['mbytes']:.0f} | {r['decode_tok_s']:.1f} | {r['decode_x']:.2f}x | "
              f"{r['prefill_tok_s']:.0f} | {r['prefill_x']:.2f}x |" for r in rows]
    if ppl:
        lines += ["", "Perplexity (held-out split, profile " + os.environ.get("LESSONLIB_PROFILE", "lab") + "):",
                  "", "```", json.dumps(ppl, indent=1), "```"]
    lines += ["", f"Load average: {load0:.1f} before, {os.getloadavg()[0]:.1f} after. INT8 = sym8 per-channel "
              "everywhere (LM head included); int4 = sym4 g64 decoder + INT8 LM head; int4-head4 = sym4 g64 "
              "decoder and LM head."]
    text = "\n".join(lines)
    print(text)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"new": a.new, "prefill": int(long.shape[1]), "rounds": a.rounds,
                       "threads": torch.get_num_threads(), "load_average": [load0, os.getloadavg()[0]],
                       "rows": rows, "ppl": ppl}, f, indent=1)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
