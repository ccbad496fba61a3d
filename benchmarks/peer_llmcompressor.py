"""Peer side of ``bench_vs_llmcompressor.py``: the same compressions done by llm-compressor.

Runs INSIDE the separate peer environment (``$LLMC_PYTHON``, e.g. ``~/peer-venv/bin/python``; llm-compressor 0.14.x pins
transformers <= 5.17, so it cannot share ``.venv``); it does not import lessonlib.  The driver
``benchmarks/bench_vs_llmcompressor.py`` writes a ``.pt`` file holding lessonlib's calibration windows
(``calibration_batches(tok, n, seqlen, seed=0)``, (n, T)) and evaluation windows (held-out speeches,
non-overlapping, (W, T)) and calls

    $LLMC_PYTHON benchmarks/peer_llmcompressor.py --model-dir DIR --data FILE.pt --json OUT.json

For every method it loads a fresh copy of the model folder (the safetensors checkpoint lessonlib
materialises under ``~/.cache/lessonlib/models/``), runs ``llmcompressor.oneshot`` with exactly those
calibration windows (a ``datasets.Dataset`` of ``input_ids``, no shuffling), times the ``oneshot`` call
(calibration forward passes + the compression itself: the "compression step"), then computes perplexity
with lessonlib's formula: per window the mean next-token NLL over T-1 predictions, ppl =
exp(sum_w nll_w * T / (W * T)).  Prints one JSON document (and writes it to ``--json``).

Methods (``--methods``): dense, rtn (QuantizationModifier), gptq (GPTQModifier), wanda, wanda24
(WandaPruningModifier), sparsegpt, sparsegpt24 (SparseGPTModifier).  Every modifier targets the
``Linear`` layers and ignores ``lm_head`` (tied to the embeddings in SmolLM2); embeddings are never touched.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

METHODS = ("dense", "rtn", "gptq", "wanda", "wanda24", "sparsegpt", "sparsegpt24")


def load(model_dir: str):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return model.eval()


@torch.inference_mode()
def perplexity(model, wins: torch.Tensor) -> tuple[float, float]:
    """lessonlib.evaluate.perplexity's protocol on pre-cut windows (W, T): (ppl, mean nll)."""
    nlls = []
    for w in wins:
        logits = model(w.unsqueeze(0), use_cache=False).logits[0]  # (T, V)
        nlls.append(F.cross_entropy(logits[:-1].float(), w[1:]).item())  # mean over T-1 predictions
    t = torch.tensor(nlls, dtype=torch.float64)
    seqlen = wins.shape[1]
    ppl = float(torch.exp((t * seqlen).sum() / (t.numel() * seqlen)))
    if not math.isfinite(ppl):
        raise FloatingPointError(f"perplexity is not finite ({ppl})")
    return ppl, float(t.mean())


def weight_scheme(args):
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    wargs = QuantizationArgs(num_bits=args.bits, type="int", symmetric=args.sym, strategy="group",
                             group_size=args.group_size, actorder=None)
    return {"group_0": QuantizationScheme(targets=["Linear"], weights=wargs)}


def recipe(method: str, args):
    from llmcompressor.modifiers.pruning.sparsegpt import SparseGPTModifier
    from llmcompressor.modifiers.pruning.wanda import WandaPruningModifier
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier

    ignore = ["re:.*lm_head"]
    nm = "2:4" if method.endswith("24") else "0:0"
    if method == "rtn":
        return QuantizationModifier(config_groups=weight_scheme(args), ignore=ignore)
    if method == "gptq":
        return GPTQModifier(config_groups=weight_scheme(args), ignore=ignore, block_size=args.block_size,
                            dampening_frac=args.percdamp, actorder=None)
    if method.startswith("wanda"):
        return WandaPruningModifier(sparsity=args.sparsity, mask_structure=nm, targets=["Linear"], ignore=ignore)
    if method.startswith("sparsegpt"):
        return SparseGPTModifier(sparsity=args.sparsity, mask_structure=nm, targets=["Linear"], ignore=ignore,
                                 block_size=args.block_size, dampening_frac=args.percdamp)
    raise ValueError(f"unknown method {method!r}; choose from {METHODS}")


def block_sparsity(model) -> float:
    """Fraction of exact zeros over the decoder blocks' linear weights."""
    z = n = 0
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and ".layers." in name:
            z += int((m.weight == 0).sum())
            n += m.weight.numel()
    return z / n


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-dir", required=True, help="safetensors folder of the embedded SmolLM2")
    p.add_argument("--data", required=True, help=".pt with 'calib' (n, T) and 'eval' (W, T) LongTensors")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma list from {METHODS}")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--group-size", type=int, default=64)
    p.add_argument("--sym", action="store_true", help="symmetric grid (default asymmetric)")
    p.add_argument("--block-size", type=int, default=128)
    p.add_argument("--percdamp", type=float, default=0.01)
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--json", default=None, help="also write the JSON here")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from datasets import Dataset
    from loguru import logger

    logger.remove()  # llm-compressor logs every layer at INFO; keep warnings only
    logger.add(sys.stderr, level="WARNING")
    from llmcompressor import oneshot
    import llmcompressor
    import transformers

    data = torch.load(args.data)
    calib, wins = data["calib"].long(), data["eval"].long()  # (n, T), (W, T)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"unknown methods {bad}; choose from {METHODS}")
    ds = Dataset.from_dict({"input_ids": calib.tolist()})

    results = {}
    for method in methods:
        model = load(args.model_dir)
        ref_head = model.lm_head.weight.detach().clone()
        secs = cpu = 0.0
        if method != "dense":
            kw = dict(model=model, recipe=recipe(method, args))
            if method != "rtn":  # RTN is data-free
                kw.update(dataset=ds, num_calibration_samples=calib.shape[0], max_seq_length=calib.shape[1],
                          shuffle_calibration_samples=False, batch_size=1)
            t0, c0 = time.perf_counter(), time.process_time()
            model = oneshot(**kw)
            secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        t0 = time.perf_counter()
        ppl, nll = perplexity(model, wins)
        results[method] = {"ppl": ppl, "nll": nll, "seconds": secs, "cpu_seconds": cpu,
                           "eval_seconds": time.perf_counter() - t0,
                           "block_sparsity": block_sparsity(model),
                           "lm_head_unchanged": bool(torch.equal(model.lm_head.weight, ref_head))}
        print(f"[peer] {method:12s} ppl={ppl:.4f} compress={secs:.1f}s (cpu {cpu:.1f}s)", file=sys.stderr, flush=True)
        del model

    out = {"peer": "llm-compressor", "llmcompressor": llmcompressor.__version__, "torch": torch.__version__,
           "transformers": transformers.__version__, "threads": args.threads,
           "calib": list(calib.shape), "eval": list(wins.shape),
           "scheme": {"bits": args.bits, "group_size": args.group_size, "sym": args.sym, "actorder": None,
                      "block_size": args.block_size, "percdamp": args.percdamp, "sparsity": args.sparsity},
           "results": results}
    text = json.dumps(out, indent=1)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
