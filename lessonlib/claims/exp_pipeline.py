"""Claims of the end-to-end pipeline (issue 9): C25, C26, C27, C32.

Quality, wherever a claim quotes "x% of the quality", is the held-out next-token top-1 accuracy of the
compressed model divided by the dense model's (``PipelineReport.quality_ratio``); the perplexity ratio
PPL_dense / PPL_compressed is reported next to it.  Sizes are real storage bytes
(``lessonlib.pipeline.storage_report``) against the dense model stored in fp16.
"""
from __future__ import annotations

import copy

from ..data import eval_tokens
from ..evaluate import perplexity
from ..models import decoder_blocks
from ..pipeline import compress, load_recipe, pack_quantized, quality, recipe_bytes_estimate, speed
from ..pipeline.size import SPARSE_ATTR
from ..quant.kernels import to_kernels
from ..roofline import decode_seconds
from . import Outcome, experiment, rules
from .stats import bootstrap_ppl

_INT4 = {"stage": "quantize", "method": "gptq", "bits": 4, "group_size": 64}


def _rows(rep) -> list[dict]:
    return [{"stage": r.label, "bytes": r.bytes, "x_smaller": round(rep.size_ratio(r), 3), "ppl": r.ppl,
             "accuracy": r.accuracy, "latency_ms": r.latency_ms, "seconds": round(r.seconds, 2)}
            for r in rep.rows]


def _stages_figure(rep, path: str, title: str) -> None:
    """Two panels over the stages: x smaller (real bytes) and next-token accuracy retained."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r.label for r in rep.rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 2.8))
    a.bar(labels, [rep.size_ratio(r) for r in rep.rows])
    a.set_ylabel("x smaller (fp16 = 1)")
    b.bar(labels, [rep.quality_ratio(r) for r in rep.rows], color="tab:orange")
    b.set_ylabel("accuracy retained")
    for ax in (a, b):
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@experiment("C25")
def c25(ctx) -> Outcome:
    model, tok = ctx.model()
    n = len(decoder_blocks(model))
    nb = max(1, round(n / 10))  # "distill 10x": a student with a tenth of the blocks
    recipe = {"name": "c25", "stages": [{"stage": "distill", "method": "layers", "n_blocks": nb},
                                        {**_INT4, "embeddings": True},
                                        {"stage": "prune", "method": "wanda", "sparsity": 0.2}]}
    _, rep = compress(model, recipe, tok, profile=ctx.profile, inplace=True)
    size, acc_q, ppl_q = rep.size_ratio(), rep.quality_ratio(), rep.quality_ratio(metric="ppl")
    per_stage = {r.label: round(rep.size_ratio(r), 3) for r in rep.rows[1:]}
    path, rel = ctx.figure_path("c25_pipeline_stages.png")
    _stages_figure(rep, path, "C25: distil 10x -> INT4 -> prune 20% (SmolLM2)")
    return Outcome(
        measured={"x_smaller": size, "accuracy_retained": acc_q, "ppl_ratio": ppl_q, "blocks": f"{n}->{nb}",
                  "x_smaller_after": per_stage, "bytes_dense_fp16": rep.baseline.bytes, "bytes_final": rep.final.bytes},
        verdict=rules.all_of(rules.close_to(size, 50.0, 0.25, "x smaller than the fp16 dense model"),
                             rules.at_least(acc_q, 0.85, "next-token accuracy retained")),
        summary=(f"SmolLM2 ({n} blocks) distilled into {nb} blocks ({ctx.profile.train_steps} steps), GPTQ INT4 g64 "
                 f"with embeddings, Wanda 20%: {size:.1f}x smaller in real bytes (after each stage: {per_stage}); "
                 f"quality = next-token accuracy retained {acc_q:.1%} (PPL ratio {ppl_q:.1%}). The embeddings stay "
                 "a large share at this scale and 20% sparsity costs bitmask bytes at INT4."),
        figure=rel, details={"stages": _rows(rep)})


@experiment("C26")
def c26(ctx) -> Outcome:
    p = ctx.profile
    q = {"bits": 4, "group_size": 64}
    recipes = {
        "sequential: SparseGPT then GPTQ": [{"stage": "prune", "method": "sparsegpt", "sparsity": 0.5},
                                            {"stage": "quantize", "method": "gptq", **q}],
        "sequential: magnitude then RTN": [{"stage": "prune", "method": "magnitude", "sparsity": 0.5},
                                           {"stage": "quantize", "method": "rtn", **q}],
        "joint: SparseGPT with 4-bit quantization": [{"stage": "joint", "method": "sparsegpt_quant",
                                                      "sparsity": 0.5, **q}],
    }
    res = {}
    for name, stages in recipes.items():
        model, tok = ctx.model()
        m, rep = compress(model, stages, tok, profile=p, evaluate=False, inplace=True)
        ev = perplexity(m, tok, profile=p)
        res[name] = {"bytes": rep.final.bytes, "ppl": ev.ppl, "nlls": ev.window_nlls}
        del m, model
    joint, seq = res["joint: SparseGPT with 4-bit quantization"], res["sequential: SparseGPT then GPTQ"]
    ratio, lo, hi = bootstrap_ppl(joint["nlls"], seq["nlls"], "ratio")
    return Outcome(
        measured={"ppl_dense": ctx.dense_ppl(), **{f"ppl[{k}]": v["ppl"] for k, v in res.items()},
                  "ppl_joint_over_sequential": ratio, "ppl_joint_over_sequential_ci": [lo, hi],
                  "bytes_joint": joint["bytes"], "bytes_sequential": seq["bytes"]},
        verdict=rules.all_of(rules.close_to(joint["bytes"], seq["bytes"], 0.01, "bytes joint vs sequential (same budget)"),
                             rules.at_most(ratio, 1.0, "PPL joint / PPL sequential (SparseGPT then GPTQ; paired "
                                           "bootstrap over the evaluation windows)", (lo, hi))),
        summary=(f"50% unstructured + 4-bit g64 on SmolLM2 at the same real size ({joint['bytes'] / 1e6:.1f} MB): "
                 f"joint SparseGPT+quantization PPL {joint['ppl']:.2f} vs SparseGPT then GPTQ {seq['ppl']:.2f} "
                 f"(magnitude then RTN {res['sequential: magnitude then RTN']['ppl']:.2f}; dense {ctx.dense_ppl():.2f})."),
        details={"runs": {k: {kk: vv for kk, vv in v.items() if kk != "nlls"} for k, v in res.items()}})


_METRIC = {"cloud": ("tokens_per_s", True), "edge": ("bytes", False), "realtime": ("latency_ms", False)}


def _scenario_figure(rows: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(9, 2.6))
    for ax, (key, label) in zip(axes, (("bytes", "MB"), ("latency_ms", "latency ms (1 x 64)"),
                                       ("tokens_per_s", "tokens/s (batch of 32-token prompts)"))):
        ax.bar(list(rows), [rows[r][key] / (1e6 if key == "bytes" else 1) for r in rows])
        ax.set_title(label, fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@experiment("C27")
def c27(ctx) -> Outcome:
    p = ctx.profile
    rows = {}
    for name in ("cloud", "edge", "realtime", "mobile"):
        model, tok = ctx.model()
        m, rep = compress(model, load_recipe(name), tok, profile=p, evaluate=False, inplace=True)
        toks = eval_tokens(tok)
        rows[name] = {"bytes": rep.final.bytes, **quality(m, toks, p.seqlen, p.eval_windows),
                      "latency_ms": speed(m, toks, 64, 1, p)["latency_ms"],
                      "tokens_per_s": speed(m, toks, 32, p.batch_size, p)["tokens_per_s"],
                      "stage_seconds": round(sum(r.seconds for r in rep.rows), 1)}
        del m, model

    def rank(scn: str, metric: str, among) -> int:
        key, high = _METRIC[metric] if metric in _METRIC else (metric, False)
        order = sorted(among, key=lambda r: -rows[r][key] if high else rows[r][key])
        return order.index(scn) + 1

    path, rel = ctx.figure_path("c27_scenarios.png")
    _scenario_figure(rows, path)
    # a fair test of each recipe on its own scenario: cloud, edge and real-time are ranked among those three
    # (mobile is edge's recipe plus more pruning, so it would win on bytes by construction, and ranking edge
    # against it is a rule edge cannot pass); mobile, which must balance all three, against all four
    single = [s for s in _METRIC]
    ranks = {s: rank(s, s, single) for s in _METRIC}
    mobile = {m: rank("mobile", m, list(rows)) for m in _METRIC}
    verdict = rules.parts(**{s: rules.at_most(ranks[s], 1, f"rank of the {s} recipe by {_METRIC[s][0]} among "
                                              f"{'/'.join(single)}") for s in _METRIC},
                          mobile=rules.at_most(max(mobile.values()), 2, "worst rank of the mobile recipe over bytes, "
                                                                        "latency and throughput, among all four"))
    return Outcome(
        measured={"ranks": ranks, "mobile_ranks": mobile,
                  **{f"{k}.{m}": round(v[m], 4) for k, v in rows.items() for m in ("bytes", "ppl", "latency_ms",
                                                                                   "tokens_per_s")}},
        verdict=verdict,
        summary=("The four scenario recipes (lessonlib/pipeline/recipes/*.yaml) on SmolLM2, each ranked among "
                 f"the single-constraint recipes on its own constraint (1 = best): cloud by throughput {ranks['cloud']}, "
                 f"edge by bytes {ranks['edge']}, "
                 f"real-time by latency {ranks['realtime']}; mobile on all three {mobile}. Speed is measured on "
                 "the float-held weights (no INT4 or sparse kernel on CPU), so only structural stages change it."),
        figure=rel, details={"recipes": rows})


def _c32_speed(speedup: float, layers_on_kernels: int) -> rules.Verdict:
    """C32's '2x faster' per decoded token, measured on the packed model running torch's INT4 CPU kernels
    (``quant.kernels``); without any layer on a low-bit kernel the speed part cannot be judged."""
    if layers_on_kernels == 0:
        return rules.not_measurable(
            f"'2x faster' rests on low-bit matmul kernels; no layer of the packed model ran on one here, so the "
            f"weights run float-held (measured {speedup:.2f}x)")
    return rules.at_least(speedup, 1.8, "x faster per decoded token on INT4 kernels (2x, 10% allowance)")


@experiment("C32")
def c32(ctx) -> Outcome:
    p = ctx.profile
    n7 = 7e9  # the seed's arithmetic: 7B weights at 2 bytes = 14 GB
    arith = {"fp16_GB": n7 * 2 / 1e9, "int4_values_only_GB": n7 * 0.5 / 1e9,
             "int4_g128_with_scales_GB": recipe_bytes_estimate(int(n7), 0, bits=4, group_size=128) / 1e9,
             "pruned20_values_only_GB": n7 * 0.5 * 0.8 / 1e9,
             "pruned20_with_bitmask_GB": recipe_bytes_estimate(int(n7), 0, bits=4, group_size=128,
                                                               sparsity=0.2) / 1e9}
    model, tok = ctx.model()
    recipe = [{**_INT4, "embeddings": True}, {"stage": "prune", "method": "wanda", "sparsity": 0.2}]
    m, rep = compress(model, recipe, tok, profile=p, inplace=True)
    toks = eval_tokens(tok)
    packed = copy.deepcopy(m)
    for mod in packed.modules():  # timing only: store the INT4 codes densely (no sparse kernel exists here)
        if getattr(mod, SPARSE_ATTR, False):
            setattr(mod, SPARSE_ATTR, False)
    pack_quantized(packed)
    n_kernel = to_kernels(packed, strict=False)  # INT4 layers onto torch's packed CPU kernel (quant.kernels)
    dense, _ = ctx.model()
    # the timings back to back, so that the machine's load is the same for all of them: one 64-token forward
    # (prefill-like, compute-bound) and greedy decoding at batch 1 (memory-bound: where fewer bytes pay)
    lat_dense, lat_final, lat_packed = (speed(x, toks, 64, 1, p)["latency_ms"] for x in (dense, m, packed))
    prompt, new = toks[:8].view(1, 8), 8 * p.sweep_points
    for x in (dense, m, packed):
        decode_seconds(x, prompt, 2)  # warm-up
    dec_dense, dec_final, dec_packed = (1e3 * decode_seconds(x, prompt, new) / new for x in (dense, m, packed))
    del packed, dense
    path, rel = ctx.figure_path("c32_int4_prune.png")
    _stages_figure(rep, path, "C32: INT4 -> prune 20% (SmolLM2)")
    speedup = dec_dense / min(dec_final, dec_packed)  # per generated token, the packed model on its kernels
    size, acc_q = rep.size_ratio(), rep.quality_ratio()
    return Outcome(
        measured={**arith, "x_smaller": size, "speedup": speedup, "accuracy_retained": acc_q,
                  "ppl_ratio": rep.quality_ratio(metric="ppl"), "latency_ms_dense": lat_dense,
                  "latency_ms_final_float": lat_final, "latency_ms_int4_packed": lat_packed,
                  "decode_ms_per_token_dense": dec_dense, "decode_ms_per_token_final_float": dec_final,
                  "decode_ms_per_token_int4_kernels": dec_packed, "decode_new_tokens": new,
                  "layers_on_int4_kernels": n_kernel},
        verdict=rules.parts(size=rules.at_least(size, 4.5, "x smaller than fp16 (5x, 10% allowance)"),
                            speed=_c32_speed(speedup, n_kernel),
                            quality=rules.at_least(acc_q, 0.95, "next-token accuracy retained")),
        summary=(f"At 7B: 14 GB fp16 -> {arith['int4_values_only_GB']:.1f} GB of INT4 values "
                 f"({arith['int4_g128_with_scales_GB']:.2f} GB with g128 scales) -> 20% pruned "
                 f"{arith['pruned20_values_only_GB']:.1f} GB only if positions were free "
                 f"({arith['pruned20_with_bitmask_GB']:.2f} GB with a bitmask). SmolLM2, GPTQ INT4 g64 with "
                 f"embeddings then Wanda 20%: {size:.2f}x smaller in real bytes, {speedup:.2f}x faster per decoded "
                 f"token (dense {dec_dense:.1f} ms, float-held {dec_final:.1f} ms, packed INT4 on CPU kernels "
                 f"{dec_packed:.1f} ms; one 64-token forward: {lat_dense:.1f} / {lat_final:.1f} / {lat_packed:.1f} ms), "
                 f"next-token accuracy retained {acc_q:.1%}."),
        figure=rel, details={"stages": _rows(rep)})
