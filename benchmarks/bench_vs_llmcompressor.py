"""lessonlib vs llm-compressor, side by side: perplexity and compression wall time (issues 4 and 5).

Same model (the embedded SmolLM2-135M, float32, CPU), same calibration windows
(``calibration_batches(tok, n, seqlen, seed=0)``), same evaluation (``lessonlib.evaluate.perplexity``:
held-out speeches, non-overlapping windows; the peer gets the very same windows and applies the same
formula), same settings on both sides:

* quantization: 4-bit, groups of 64 input columns, asymmetric (``--sym`` for symmetric), no act-order,
  GPTQ block size 128, damping 1% of mean diag(H); ``rtn`` / ``gptq`` use lessonlib's grid (float zero
  point on the exact group range), ``rtn_int`` / ``gptq_int`` the compressed-tensors grid llm-compressor
  uses (range widened to include 0, integer zero point: ``QuantScheme(int_zero=True)``); ``gptq*`` fit
  the groups up front like llm-compressor 0.14 (``static_groups=True``), ``gptq_dyn`` when GPTQ reaches them;
* pruning: 50% unstructured (per output row for Wanda, per 128-column block for SparseGPT, as in both
  references) and 2:4;
* ``lm_head`` (tied to the embeddings) and the embeddings are left alone on both sides.

lessonlib runs here (``.venv``); llm-compressor runs in its own environment (its Python is given by
``--peer-python`` or the ``LLMC_PYTHON`` environment variable, see ``benchmarks/README.md``) through ``benchmarks/peer_llmcompressor.py`` as a subprocess, skipped with a
note when that environment does not exist.  Timings are of the compression call only (calibration
forward passes included, model loading and evaluation excluded): wall seconds and process CPU seconds
(the latter is robust to other processes sharing the CPU).  Both sides use ``--threads`` torch threads.

    export LLMC_PYTHON=$HOME/peer-venv/bin/python      # wherever you created the peer environment
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_vs_llmcompressor.py               # ci sizes, ~10 min
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_vs_llmcompressor.py --profile laptop --threads 2
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import torch

from lessonlib.config import get_profile
from lessonlib.data import calibration_batches, eval_tokens, windows
from lessonlib.evaluate import perplexity
from lessonlib.models import load_model

PEER_ENV = "LLMC_PYTHON"  # the peer environment's python; no machine path is built in
PEER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peer_llmcompressor.py")
# lessonlib method -> (peer method or None, track)
METHODS = {
    "dense": ("dense", "-"),
    "rtn": ("rtn", "quant"),
    "rtn_int": ("rtn", "quant"),  # integer zero point on a 0-including range: compressed-tensors' grid
    "gptq": ("gptq", "quant"),  # static groups: fitted on the original weights, like llm-compressor 0.14
    "gptq_int": ("gptq", "quant"),  # static groups on compressed-tensors' grid (integer zero point)
    "gptq_dyn": ("gptq", "quant"),  # each group fitted when GPTQ reaches it (reference GPTQ)
    "magnitude": (None, "prune"),
    "magnitude24": (None, "prune"),
    "wanda": ("wanda", "prune"),
    "wanda24": ("wanda24", "prune"),
    "sparsegpt": ("sparsegpt", "prune"),
    "sparsegpt24": ("sparsegpt24", "prune"),
}
DEFAULT = "dense,rtn,rtn_int,gptq,gptq_int,gptq_dyn,magnitude,magnitude24,wanda,wanda24,sparsegpt,sparsegpt24"


def compress_lessonlib(method: str, model, calib: torch.Tensor, args) -> None:
    """Apply one lessonlib method to ``model`` in place."""
    from lessonlib.prune import magnitude_prune_model, sparsegpt_prune_model, wanda_prune_model
    from lessonlib.quant import QuantScheme, gptq_quantize_model, rtn_quantize_model

    scheme = QuantScheme(args.bits, args.group_size, args.sym, int_zero=method.endswith("_int") and not args.sym)
    n, m = (2, 4) if method.endswith("24") else (0, 0)
    if method.startswith("rtn"):
        rtn_quantize_model(model, scheme)
    elif method.startswith("gptq"):
        gptq_quantize_model(model, calib, scheme, act_order=False, static_groups=(method != "gptq_dyn"),
                            block_size=args.block_size, percdamp=args.percdamp, device="cpu")
    elif method.startswith("magnitude"):
        magnitude_prune_model(model, args.sparsity, n, m)
    elif method.startswith("wanda"):
        wanda_prune_model(model, calib, args.sparsity, n, m, device="cpu")
    elif method.startswith("sparsegpt"):
        sparsegpt_prune_model(model, calib, args.sparsity, n, m, block_size=args.block_size,
                              percdamp=args.percdamp, device="cpu")
    elif method != "dense":
        raise ValueError(f"unknown method {method!r}; choose from {sorted(METHODS)}")


@contextlib.contextmanager
def perturbed_propagation(eps: float, seed: int = 0):
    """Multiply every block output that ``lessonlib.calib.run_sequential`` propagates by (1 + eps * N(0, 1)).

    A sensitivity probe, not a method: eps ~ 1e-7 is float32 rounding, the size of the differences between
    two correct implementations (other kernels, other summation order).  How much the final perplexity moves
    under it says how much of a lessonlib / llm-compressor gap can be plain numerical noise.
    """
    import lessonlib.calib as calib_mod

    if eps <= 0:
        yield
        return
    orig, gen = calib_mod.run_block, torch.Generator().manual_seed(seed)

    def noisy(block, hiddens, kwargs):
        return [y * (1 + eps * torch.randn(y.shape, generator=gen)) for y in orig(block, hiddens, kwargs)]

    calib_mod.run_block = noisy
    try:
        yield
    finally:
        calib_mod.run_block = orig


def block_sparsity(model) -> float:
    z = n = 0
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and ".layers." in name:
            z += int((mod.weight == 0).sum())
            n += mod.weight.numel()
    return z / n


def run_lessonlib(methods: list[str], base, tok, calib, args) -> dict:
    out = {}
    ref_head = base.lm_head.weight.detach().clone()
    for method in methods:
        model = copy.deepcopy(base)
        t0, c0 = time.perf_counter(), time.process_time()
        with perturbed_propagation(args.perturb, args.perturb_seed):
            compress_lessonlib(method, model, calib, args)
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        r = perplexity(model, tok, seqlen=args.seqlen, max_windows=args.eval_windows, progress=False)
        out[method] = {"ppl": r.ppl, "nll": r.nll, "seconds": secs if method != "dense" else 0.0,
                       "cpu_seconds": cpu if method != "dense" else 0.0, "eval_seconds": r.seconds,
                       "block_sparsity": block_sparsity(model),
                       "lm_head_unchanged": bool(torch.equal(model.lm_head.weight, ref_head))}
        print(f"[lessonlib] {method:12s} ppl={r.ppl:.4f} compress={secs:.1f}s (cpu {cpu:.1f}s)", file=sys.stderr,
              flush=True)
        del model
    return out


def run_peer(methods: list[str], model_dir: str, data_path: str, args) -> dict | None:
    if args.no_peer:
        return None
    if not args.peer_python:
        msg = (f"[peer] no llm-compressor environment given: set {PEER_ENV}=/path/to/peer-venv/bin/python or pass "
               "--peer-python (how to create it: benchmarks/README.md)")
        if args.peer_only:
            raise SystemExit(msg)
        print(msg + "; llm-compressor side skipped (--no-peer silences this)", file=sys.stderr)
        return None
    if not os.path.isfile(args.peer_python):  # given explicitly but wrong: an error, not a silent skip
        raise SystemExit(f"[peer] --peer-python / {PEER_ENV} = {args.peer_python!r} is not a file: point it at the "
                         "python of the llm-compressor environment (benchmarks/README.md)")
    out_json = data_path.replace(".pt", "_peer.json")
    cmd = [args.peer_python, PEER_SCRIPT, "--model-dir", model_dir, "--data", data_path, "--methods",
           ",".join(methods), "--threads", str(args.threads), "--bits", str(args.bits), "--group-size",
           str(args.group_size), "--block-size", str(args.block_size), "--percdamp", str(args.percdamp),
           "--sparsity", str(args.sparsity), "--json", out_json] + (["--sym"] if args.sym else [])
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false")
    print("[peer] " + " ".join(cmd), file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=None)
    if proc.returncode != 0:
        raise RuntimeError(f"peer script failed with exit code {proc.returncode}")
    with open(out_json) as f:
        return json.load(f)


def _fmt(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def table(methods: list[str], ours: dict, peer: dict | None) -> str:
    """One markdown table: both sides, ratios lessonlib / llm-compressor, and the tracker's goals.

    The time goal is judged on process CPU seconds, which other jobs sharing the CPU distort far less
    than wall seconds (both are shown).
    """
    pres = (peer or {}).get("results", {})
    rows = ["| method | track | ppl lessonlib | ppl llm-compressor | ppl ratio | wall s lessonlib | "
            "wall s llm-compressor | wall ratio | cpu s lessonlib | cpu s llm-compressor | cpu ratio | goal |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for method in methods:
        pm, track = METHODS[method]
        o, p = ours.get(method), (pres.get(pm) if pm else None)
        both = bool(o and p)
        pr = o["ppl"] / p["ppl"] if both else None
        tr = o["seconds"] / p["seconds"] if both and p["seconds"] > 0 else None
        cr = o["cpu_seconds"] / p["cpu_seconds"] if both and p.get("cpu_seconds", 0) > 0 else None
        goal = "-"
        if pr is not None and cr is not None:
            t_goal = 0.5 if track == "quant" else 1.0
            goal = (f"ppl {'ok' if pr <= 1.01 else 'MISS'} (<=1.01), "
                    f"cpu time {'ok' if cr <= t_goal else 'MISS'} (<={t_goal:g})")
        rows.append(f"| {method} | {track} | {_fmt(o and o['ppl'], '.3f')} | {_fmt(p and p['ppl'], '.3f')} | "
                    f"{_fmt(pr, '.4f')} | {_fmt(o and o['seconds'], '.1f')} | {_fmt(p and p['seconds'], '.1f')} | "
                    f"{_fmt(tr, '.2f')} | {_fmt(o and o['cpu_seconds'], '.1f')} | "
                    f"{_fmt(p and p.get('cpu_seconds'), '.1f')} | {_fmt(cr, '.2f')} | {goal} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--profile", default="ci", help="sizes default to this lessonlib profile (ci, laptop, gpu)")
    p.add_argument("--calib-n", type=int, default=None, help="calibration sequences (default: profile)")
    p.add_argument("--calib-seqlen", type=int, default=None, help="tokens per calibration sequence")
    p.add_argument("--seqlen", type=int, default=None, help="tokens per evaluation window")
    p.add_argument("--eval-windows", type=int, default=None, help="evaluation windows (0 = all)")
    p.add_argument("--methods", default=DEFAULT, help=f"comma list from {sorted(METHODS)}")
    p.add_argument("--threads", type=int, default=1, help="torch threads on both sides")
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--group-size", type=int, default=64)
    p.add_argument("--sym", action="store_true", help="symmetric grid on both sides (default asymmetric)")
    p.add_argument("--block-size", type=int, default=128)
    p.add_argument("--percdamp", type=float, default=0.01)
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--perturb", type=float, default=0.0,
                   help="noise probe: perturb lessonlib's propagated block outputs by this relative amount (e.g. 1e-7)")
    p.add_argument("--perturb-seed", type=int, default=0)
    p.add_argument("--peer-python", default=os.environ.get(PEER_ENV),
                   help=f"python of the llm-compressor environment (default: ${PEER_ENV})")
    p.add_argument("--no-peer", action="store_true", help="lessonlib side only")
    p.add_argument("--peer-only", action="store_true", help="llm-compressor side only (lessonlib just prepares data)")
    p.add_argument("--workdir", default=None, help="where the .pt/.json exchange files go (default: a temp dir)")
    p.add_argument("--json", default=None, help="write all results here")
    args = p.parse_args(argv)

    prof = get_profile(args.profile)
    args.calib_n = args.calib_n or prof.calib_samples
    args.calib_seqlen = args.calib_seqlen or prof.calib_seqlen
    args.seqlen = args.seqlen or prof.seqlen
    args.eval_windows = prof.eval_windows if args.eval_windows is None else args.eval_windows
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"unknown methods {bad}; choose from {sorted(METHODS)}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_start = os.getloadavg()

    base, tok = load_model(device="cpu")
    model_dir = base.name_or_path  # the materialised safetensors folder under ~/.cache/lessonlib/models/
    calib = calibration_batches(tok, n=args.calib_n, seqlen=args.calib_seqlen, seed=0)  # (n, T)
    wins = windows(eval_tokens(tok), args.seqlen, args.eval_windows)  # (W, seqlen), what perplexity() scores
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench_vs_llmc_")
    os.makedirs(workdir, exist_ok=True)
    data_path = os.path.join(workdir, "windows.pt")
    torch.save({"calib": calib, "eval": wins}, data_path)

    ours = {} if args.peer_only else run_lessonlib(methods, base, tok, calib, args)
    del base
    peer_methods = list(dict.fromkeys(METHODS[m][0] for m in methods if METHODS[m][0]))
    peer = run_peer(peer_methods, model_dir, data_path, args)

    info = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "loadavg_start": load_start,
            "loadavg_end": os.getloadavg(), "machine": platform.platform(),
            "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "threads": args.threads, "calib": list(calib.shape), "eval": list(wins.shape),
            "scheme": {"bits": args.bits, "group_size": args.group_size, "sym": args.sym, "act_order": False,
                       "block_size": args.block_size, "percdamp": args.percdamp, "sparsity": args.sparsity},
            "model_dir": model_dir, "workdir": workdir, "perturb": args.perturb}
    if ours or peer:
        print(table(methods, ours, peer))
        if ours and peer and "dense" in ours and "dense" in peer["results"]:
            d = abs(ours["dense"]["ppl"] / peer["results"]["dense"]["ppl"] - 1)
            print(f"\ndense perplexity agreement between the two environments: |ratio - 1| = {d:.2e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "lessonlib": ours, "llmcompressor": peer}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
