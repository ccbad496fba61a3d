"""The ``lessonlib`` command: ``prepare``, ``reproduce``, ``compress``, ``scales``, ``grade``, ``exercises``, ``info``."""
from __future__ import annotations

import argparse
import sys


def _prepare(args) -> int:
    from .models import load_encoder, load_model
    model, _ = load_model(device="cpu")
    print(f"smollm2-135m ready: {sum(p.numel() for p in model.parameters()):,} parameters")
    enc, _ = load_encoder(device="cpu")
    print(f"minilm-l6 ready: {sum(p.numel() for p in enc.parameters()):,} parameters")
    return 0


def _reproduce(args) -> int:
    from .claims.runner import _parse_only, reproduce
    from .config import get_profile
    try:  # refuse bad arguments before anything runs or any report is written
        get_profile(args.profile, default="laptop")
        if args.only is not None:
            _parse_only(args.only, strict=True)
    except ValueError as e:
        print(f"lessonlib reproduce: error: {e}", file=sys.stderr)
        return 2
    res = reproduce(profile=args.profile, only=args.only, out_dir=args.out, force=args.force)
    counts: dict[str, int] = {}
    for cid, r in res.items():
        counts[r["verdict"]["label"]] = counts.get(r["verdict"]["label"], 0) + 1
        print(f"{cid}: {r['verdict']['label']:<28} {r['verdict']['rule']}")
    print("; ".join(f"{k}: {v}" for k, v in sorted(counts.items())) + f"  -> {args.out}/claims.md")
    return 1 if any(r["verdict"]["status"] == "error" for r in res.values()) else 0


# the ``compress`` options that are stage parameters of a recipe (None = not given: the recipe's default)
_STAGE_OPTIONS = ("bits", "group_size", "sym", "act_order", "sparsity", "nm", "energy", "whitened", "k")


def _stage_of(method: str, stage: str | None) -> str:
    """The recipe stage kind that offers ``method`` (``--stage`` picks one when several do)."""
    from .pipeline.recipe import STAGES
    kinds = [k for k, methods in STAGES.items() if method in methods and (stage is None or k == stage)]
    if len(kinds) == 1:
        return kinds[0]
    every = sorted({m for methods in STAGES.values() for m in methods})
    if not kinds:
        raise ValueError(f"--method {method!r}" + (f" with --stage {stage!r}" if stage else "")
                         + f" is not a recipe method; choose one of {every}")
    raise ValueError(f"--method {method!r} is offered by the stages {kinds}; pick one with --stage")


def compress_recipe(args) -> dict:
    """The recipe ``lessonlib compress`` runs: ``--recipe`` as read, or one stage built from the options."""
    if (args.recipe is None) == (args.method is None):
        raise ValueError("give either --method (and its options) or --recipe FILE")
    if args.recipe is not None:
        given = [o for o in _STAGE_OPTIONS if getattr(args, o) is not None]
        if given:
            raise ValueError(f"--recipe comes with its own parameters; drop {['--' + o.replace('_', '-') for o in given]}")
        return args.recipe
    params = {o: getattr(args, o) for o in _STAGE_OPTIONS if getattr(args, o) is not None}
    stage = {"stage": _stage_of(args.method, args.stage), "method": args.method, **params}
    return {"name": f"cli-{args.method}", "stages": [stage]}


def _tokens_for(model, tok, prof, seed: int):
    """(calibration windows (N, T), held-out stream) for ``model``: the corpora through its tokenizer, or
    seeded random ids for the random tiny model (no tokenizer: only the mechanics are meaningful)."""
    from .data import calibration_batches, eval_tokens
    if tok is not None:
        return calibration_batches(tok, n=prof.calib_samples, seqlen=prof.calib_seqlen, seed=seed), eval_tokens(tok)
    import torch

    from .models import max_positions
    T = min(prof.calib_seqlen, max_positions(model))
    g = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    calib = torch.randint(0, vocab, (prof.calib_samples, T), generator=g)  # (N, T)
    held = torch.randint(0, vocab, (4 * min(prof.seqlen, max_positions(model)),), generator=g)  # 1-D stream
    return calib, held


def _compress(args) -> int:
    import json
    import os

    from .config import get_profile
    from .pipeline.core import compress
    from .pipeline.recipe import load_recipe, stage_config
    try:  # every argument is checked before a model is loaded
        prof = get_profile(args.profile, default="lab")
        rec = load_recipe(compress_recipe(args))
    except ValueError as e:
        print(f"lessonlib compress: error: {e}", file=sys.stderr)
        return 2
    if args.model.startswith("tiny-"):
        from .models import tiny_causal_lm
        model, tok = tiny_causal_lm(args.model[len("tiny-"):], seed=args.seed), None
    else:
        from .models import load_model
        model, tok = load_model(args.model)
    calib, held = _tokens_for(model, tok, prof, args.seed)
    configs = [repr(stage_config(st, prof, args.seed)) for st in rec.stages]
    model, report = compress(model, rec, calib=calib, tokens=held, profile=prof, evaluate=not args.no_eval,
                             seed=args.seed, inplace=True)
    os.makedirs(args.out, exist_ok=True)
    out = {"model": args.model, "profile": prof.name, "configs": configs, **report.as_dict()}
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(out, f, indent=1, default=str)
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write(f"# `lessonlib compress` on {args.model} ({prof.name} profile)\n\n{report.table()}\n")
    if args.save_model:
        import torch
        torch.save(model.state_dict(), os.path.join(args.out, "model.pt"))
    print(report.table())
    fin = report.final
    print(f"{rec.name}: {fin.bytes:,} bytes ({report.size_ratio():.2f}x smaller than fp16)"
          + (f", perplexity {report.baseline.ppl:.2f} -> {fin.ppl:.2f}" if fin.ppl is not None else "")
          + f"  -> {args.out}")
    return 0


def _scales(args) -> int:
    from .claims.scales import compare_reports
    compare_reports(args.folders, args.out)
    print(f"-> {args.out}")
    return 0


def _info(args) -> int:
    from .config import PROFILES, get_profile
    print(f"active profile: {get_profile().name}")
    for p in PROFILES.values():
        print(" ", p)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "grade":
        from lessonlib_grader import cli_grade
        return cli_grade(argv[1:])
    if argv and argv[0] == "exercises":
        from lessonlib_grader import cli_exercises
        return cli_exercises(argv[1:])
    ap = argparse.ArgumentParser(prog="lessonlib", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("prepare", help="materialise the embedded models into the cache")
    r = sub.add_parser("reproduce", help="run the claim experiments and write reports/claims.md")
    r.add_argument("--profile", default=None, help="ci, lab, laptop or gpu (default: $LESSONLIB_PROFILE or laptop)")
    r.add_argument("--only", default=None, help="comma-separated claim ids, e.g. C12,C21")
    r.add_argument("--out", default="reports", help="report folder (default: reports)")
    r.add_argument("--force", action="store_true", help="ignore cached outcomes")
    c = sub.add_parser("compress", help="compress a model with one method (or a recipe) and report bytes and perplexity",
                       description="Build the technique's config, run it through compress_ (as a one-stage recipe) "
                                   "and write report.json / report.md (bytes, perplexity, latency per stage) to --out.")
    c.add_argument("--method", default=None, help="gptq, rtn, awq, qat, wanda, sparsegpt, magnitude, svd, cluster, ...")
    c.add_argument("--recipe", default=None, help="a recipe YAML file or shipped scenario name, instead of --method")
    c.add_argument("--stage", default=None, help="the recipe stage kind, when several offer --method")
    c.add_argument("--bits", type=int, default=None)
    c.add_argument("--group-size", dest="group_size", type=int, default=None, help="-1 per channel, 0 per tensor")
    c.add_argument("--sym", action=argparse.BooleanOptionalAction, default=None, help="symmetric grid")
    c.add_argument("--act-order", dest="act_order", action=argparse.BooleanOptionalAction, default=None)
    c.add_argument("--sparsity", type=float, default=None)
    c.add_argument("--nm", default=None, help="N:M pattern, N kept of every M, e.g. 2:4")
    c.add_argument("--energy", type=float, default=None, help="SVD: fraction of spectral energy kept")
    c.add_argument("--whitened", action=argparse.BooleanOptionalAction, default=None)
    c.add_argument("--k", type=int, default=None, help="clustering: codebook size")
    c.add_argument("--model", default="smollm2-135m", help="smollm2-135m (default) or tiny-<family> (random, for tests)")
    c.add_argument("--profile", default=None, help="ci, lab, laptop or gpu (default: $LESSONLIB_PROFILE or lab)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--no-eval", dest="no_eval", action="store_true", help="bytes only, no perplexity")
    c.add_argument("--save-model", dest="save_model", action="store_true", help="also write model.pt (state dict)")
    c.add_argument("--out", required=True, help="report folder")
    sc = sub.add_parser("scales", help="compare the verdicts of several report folders (e.g. ci vs laptop)")
    sc.add_argument("folders", nargs="+", help="report folders written by `lessonlib reproduce --out`")
    sc.add_argument("--out", default="reports/scales.md", help="markdown table (default: reports/scales.md)")
    sub.add_parser("info", help="show the profiles")
    sub.add_parser("grade", help="grade a submission (see `lessonlib grade --help`)")
    sub.add_parser("exercises", help="build exercises/ and solutions/ (see `lessonlib exercises --help`)")
    args = ap.parse_args(argv)
    return {"prepare": _prepare, "reproduce": _reproduce, "compress": _compress, "scales": _scales, "info": _info}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
