"""Greedy decoding and prefill speed of SmolLM2-135M: fp32, bf16, packed INT8 and packed INT4, in one run.

The packed models run on torch's CPU low-bit kernels (``lessonlib.quant.kernels``): INT8 is symmetric
per-channel on every linear layer; INT4 is symmetric groups of 64 on the decoder's linear layers with the
LM head in INT8 per-channel.  Every variant decodes ``--new`` tokens greedily at batch 1 after a short
prompt (KV cache on), and runs one prefill of ``--prefill`` tokens.  The variants are measured in turns,
``--rounds`` times, and the median is kept, so contention on a shared machine hits all of them alike.

With ``--ppl`` the packed models' perplexity is compared with the same quantized model on the float
reference path (``QuantLinear``, which dequantizes in fp32: the fake-quantized model).

``--fused`` adds the packed models with q/k/v and gate/up stacked into one kernel call each
(``lessonlib.quant.fused``); ``--clock cpu`` times with this thread's CPU time instead of the wall clock
(with one thread it leaves out the waits for a core on a shared machine); ``--breakdown N`` adds where a
decode step of fp32 and of each packed model spends its time (``lessonlib.decode_profile``, N steps) and
the Amdahl limit that follows from it.  ``--prefill 0`` skips the prefill.

    OMP_NUM_THREADS=2 python benchmarks/bench_decode.py [--new 64] [--prefill 512] [--rounds 3] [--ppl]
        [--fused] [--clock wall|cpu] [--breakdown 16] [--out reports/bench_decode.md]
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time

import torch
from torch import nn

from lessonlib.decode_profile import LINEAR_CATEGORIES, amdahl_limit, decode_breakdown
from lessonlib.evaluate import model_bytes, perplexity
from lessonlib.quant.affine import QuantScheme
from lessonlib.quant.fused import fuse_projections
from lessonlib.quant.kernels import to_kernels
from lessonlib.models import is_linear_like, load_model
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


def breakdown_lines(res: dict[str, dict], clock: str) -> list[str]:
    """A markdown table of ms per decode step by category for each model, and the Amdahl reading."""
    names = list(res)
    cats = sorted({c for r in res.values() for c in r["rows"]},
                  key=lambda c: (c not in LINEAR_CATEGORIES, -max(r["rows"].get(c, 0.0) for r in res.values())))
    lines = [f"Where a decode step goes (ms per token, {clock} clock, exclusive time per module via forward hooks; "
             "for each model the round with the median step):", "",
             "| part | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    lines += [f"| {c} | " + " | ".join(f"{1e3 * res[n]['rows'].get(c, 0.0):.2f}" for n in names) + " |"
              for c in cats]
    lin = {n: sum(t for c, t in r["rows"].items() if c in LINEAR_CATEGORIES) for n, r in res.items()}
    lines += ["| **all linear layers** | " + " | ".join(f"**{1e3 * lin[n]:.2f}**" for n in names) + " |",
              "| **step (with hooks)** | " + " | ".join(f"**{1e3 * res[n]['step_s']:.2f}**" for n in names) + " |",
              "| step without hooks | " + " | ".join(f"{1e3 * res[n]['step_nohook_s']:.2f}" for n in names) + " |",
              "| linear share of the step | " + " | ".join(f"{lin[n] / res[n]['step_s']:.0%}" for n in names) + " |"]
    if "fp32" in res:
        f = res["fp32"]
        lines += ["", f"Amdahl: the fp32 step is {lin['fp32'] / f['step_s']:.0%} linear layers; with every linear "
                  f"layer at zero time it would be at most {amdahl_limit(f['step_s'], lin['fp32']):.2f}x faster."]
        for n in names[1:]:
            rest = res[n]["step_s"] - lin[n]
            lines.append(f"- {n}: linear layers {1e3 * lin[n]:.1f} ms ({lin['fp32'] / lin[n]:.2f}x less than fp32), "
                         f"the rest {1e3 * rest:.1f} ms; step {f['step_s'] / res[n]['step_s']:.2f}x fp32 "
                         f"(with hooks); if its linear layers took no time: {f['step_s'] / rest:.2f}x.")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--prefill", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ppl", action="store_true")
    ap.add_argument("--fused", action="store_true", help="also the packed models with q/k/v and gate/up stacked")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    ap.add_argument("--breakdown", type=int, default=0, help="decode steps for the per-module breakdown (0: none)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--json", default=None, help="also write the rows as JSON (the roofline chapter reads it)")
    a = ap.parse_args()
    for k, lo in (("new", 1), ("prefill", 0), ("rounds", 1), ("breakdown", 0)):
        if getattr(a, k) < lo:
            raise SystemExit(f"--{k}={getattr(a, k)} must be at least {lo}")
    clock = time.thread_time if a.clock == "cpu" else time.perf_counter
    torch.manual_seed(0)
    base, tok = load_model()
    ids = tok("The convention opened with a speech on " * 200, return_tensors="pt").input_ids
    prompt, long = ids[:, :8], ids[:, : max(a.prefill, 1)]
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
    if a.fused:
        for name, qm in list(ref.items()):
            ref[name + "-fused"] = f = copy.deepcopy(qm)
            fuse_projections(f)
            variants[name + "-fused"] = k = copy.deepcopy(f)
            to_kernels(k)
    res = {n: {"decode": [], "prefill": []} for n in variants}
    for r in range(a.rounds):
        for n, m in variants.items():
            decode_seconds(m, prompt, 4) if r == 0 else None  # warm-up
            res[n]["decode"].append(decode_seconds(m, prompt, a.new, clock))
            res[n]["prefill"].append(prefill_seconds(m, long, clock) if a.prefill else float("nan"))
    rows = []
    fp = statistics.median(res["fp32"]["decode"]), statistics.median(res["fp32"]["prefill"])
    for n, m in variants.items():
        d, p = statistics.median(res[n]["decode"]), statistics.median(res[n]["prefill"])
        rows.append(dict(model=n, mbytes=model_bytes(m) / 2**20, decode_tok_s=a.new / d, decode_x=fp[0] / d,
                         prefill_tok_s=long.shape[1] / p, prefill_x=fp[1] / p))
    ppl = {}
    if a.ppl:
        for name, qm in ref.items():
            ppl[name] = {"fake_quant": perplexity(qm, tok).ppl, "kernel": perplexity(variants[name], tok).ppl}
            if name + "-bf16model" in variants:
                ppl[name]["kernel_bf16_model"] = perplexity(variants[name + "-bf16model"], tok).ppl
        ppl["fp32"] = {"float": perplexity(base, tok).ppl}
    bd_runs: dict[str, list] = {n: [] for n in variants if a.breakdown and n != "bf16" and "bf16model" not in n}
    for r in range(a.rounds if a.breakdown else 0):  # interleaved like the timings; keep each model's median step
        for n in bd_runs:
            bd_runs[n].append(decode_breakdown(variants[n], prompt, a.breakdown, clock))
    bd = {n: sorted(runs, key=lambda b: b["step_s"])[len(runs) // 2] for n, runs in bd_runs.items()}
    lines = [f"# Decode speed (SmolLM2-135M, batch 1, {a.new} new tokens, prefill {long.shape[1]} tokens)", "",
             f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} visible CPUs, "
             f"median of {a.rounds} interleaved rounds on a shared machine (timings are contended; "
             f"compare the ratios), {a.clock} clock.", "",
             "| model | MiB | decode tok/s | vs fp32 | prefill tok/s | vs fp32 |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['mbytes']:.0f} | {r['decode_tok_s']:.1f} | {r['decode_x']:.2f}x | "
              f"{r['prefill_tok_s']:.0f} | {r['prefill_x']:.2f}x |" for r in rows]
    if ppl:
        lines += ["", "Perplexity (held-out split, profile " + os.environ.get("LESSONLIB_PROFILE", "lab") + "):",
                  "", "```", json.dumps(ppl, indent=1), "```"]
    if bd:
        lines += [""] + breakdown_lines(bd, a.clock)
    lines += ["", f"Load average: {load0:.1f} before, {os.getloadavg()[0]:.1f} after. INT8 = sym8 per-channel "
              "everywhere (LM head included); int4 = sym4 g64 decoder + INT8 LM head; int4-head4 = sym4 g64 "
              "decoder and LM head."]
    text = "\n".join(lines)
    print(text)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"new": a.new, "prefill": int(long.shape[1]), "rounds": a.rounds,
                       "threads": torch.get_num_threads(), "load_average": [load0, os.getloadavg()[0]],
                       "rows": rows, "ppl": ppl, "clock": a.clock, "breakdown": bd}, f, indent=1)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
