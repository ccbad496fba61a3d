"""The ``lessonlib`` command: ``prepare``, ``reproduce``, ``scales``, ``grade``, ``exercises``, ``info``."""
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
    sc = sub.add_parser("scales", help="compare the verdicts of several report folders (e.g. ci vs laptop)")
    sc.add_argument("folders", nargs="+", help="report folders written by `lessonlib reproduce --out`")
    sc.add_argument("--out", default="reports/scales.md", help="markdown table (default: reports/scales.md)")
    sub.add_parser("info", help="show the profiles")
    sub.add_parser("grade", help="grade a submission (see `lessonlib grade --help`)")
    sub.add_parser("exercises", help="build exercises/ and solutions/ (see `lessonlib exercises --help`)")
    args = ap.parse_args(argv)
    return {"prepare": _prepare, "reproduce": _reproduce, "scales": _scales, "info": _info}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
