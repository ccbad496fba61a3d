"""``lessonlib reproduce``: run the registered experiments, cache their outcomes, write the report."""
from __future__ import annotations

import datetime as _dt
import ast
import hashlib
import inspect
import json
import os
import platform
import shutil
import subprocess
import time
import traceback
import warnings

import torch
from tqdm.auto import tqdm

from ..checks import short
from ..config import cache_dir, get_profile, progress_disabled
from . import CATALOG, Context, Outcome, registry, rules
from .rules import Verdict

__all__ = ["reproduce", "write_report", "config_key", "code_fingerprint", "source_closure"]


_NOT_MEASURING = ("runner.py", "cli.py")  # report writing, not measuring
# a row a stopped run did not reach (``cached_only``): a report status, never a verdict of a rule
NOT_RUN, NOT_RUN_LABEL = "not run", "not measured in this report (the run stopped first)"


def source_closure(module_file: str, root: str | None = None) -> list[str]:
    """The lessonlib source files ``module_file`` imports, directly or through other lessonlib modules.

    Static imports only (``import``/``from`` statements anywhere in a file, relative or ``lessonlib.``);
    a package import brings in its ``__init__.py`` (and its parents'), ``from pkg import name`` also the submodule ``name``
    when there is one.  Sorted, ``module_file`` included; the grading package and the runner are left out.
    ``root`` is the ``lessonlib`` package folder (default: this one).
    """
    root = root or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # lessonlib/
    top = os.path.dirname(root)

    def files_of(dotted: str) -> list[str]:
        base = os.path.join(top, *dotted.split("."))
        return [f for f in (base + ".py", os.path.join(base, "__init__.py")) if os.path.isfile(f)]

    name = os.path.basename(root)  # "lessonlib": imports outside it are not followed
    seen: set[str] = set()
    todo = [os.path.abspath(module_file)]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        rel = os.path.relpath(path, top)[:-3].replace(os.sep, ".")
        pkg = rel[:-len(".__init__")] if rel.endswith(".__init__") else rel.rpartition(".")[0]
        for node in ast.walk(ast.parse(open(path).read(), filename=path)):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = pkg.split(".")
                    base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                if t == name or t.startswith(name + "."):
                    parts = t.split(".")  # importing a.b.c runs a/__init__ and a/b/__init__ too
                    for i in range(1, len(parts) + 1):
                        todo.extend(f for f in files_of(".".join(parts[:i])) if f not in seen)
    keep = [p for p in seen if os.path.basename(p) not in _NOT_MEASURING
            and os.sep + "grading" + os.sep not in p]
    return sorted(keep)


def _hash_files(paths: list[str]) -> str:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    h = hashlib.sha256()
    for path in paths:
        h.update(os.path.relpath(path, root).encode())
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:12]


def code_fingerprint(fn) -> str:
    """Hash of the sources that can change ``fn``'s outcome: its module and every lessonlib module it imports."""
    try:
        return _hash_files(source_closure(inspect.getsourcefile(fn)))
    except (OSError, TypeError):
        return hashlib.sha256(fn.__qualname__.encode()).hexdigest()[:12]


def config_key(claim_id: str, fn, profile, fingerprint: str | None = None) -> str:
    """Hash of what determines an outcome: the claim, the code it runs (``code_fingerprint``, computed here
    unless given), the profile and torch's version.  Editing a library module an experiment imports therefore
    re-measures it."""
    fingerprint = code_fingerprint(fn) if fingerprint is None else fingerprint
    blob = json.dumps([claim_id, fingerprint, profile.as_dict(), torch.__version__], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _outcome_to_json(o: Outcome) -> dict:
    return {"measured": o.measured, "verdict": o.verdict.as_dict(), "summary": o.summary, "figure": o.figure,
            "seconds": round(o.seconds, 2), "details": o.details}


def _outcome_from_json(d: dict) -> Outcome:
    return Outcome(measured=d["measured"], verdict=Verdict.from_dict(d["verdict"]), summary=d["summary"],
                   figure=d.get("figure"), seconds=d.get("seconds", 0.0), details=d.get("details", {}))


def _parse_only(only, strict: bool = False) -> list[str] | None:
    """Claim ids from ``"C12,C21"`` or a list; ``None`` (or ``""`` unless ``strict``) means all.  A selection
    that names no id (``","``) or an unknown id raises ValueError, so a typo never writes an empty ledger."""
    if only is None or (not strict and isinstance(only, (str, list, tuple)) and len(only) == 0):
        return None
    if not isinstance(only, (str, list, tuple)):
        raise TypeError(f"only={short(only)} must be a comma-separated string or a list of claim ids")
    items = only.split(",") if isinstance(only, str) else list(only)
    if not all(isinstance(i, str) for i in items):
        raise TypeError(f"only={short(only)} must hold claim id strings")
    ids = [s.strip().upper() for s in items if s.strip()]
    if not ids:
        raise ValueError(f"--only {short(only)} names no claim id; give ids like C12,C21 (valid: C01-C41)")
    bad = [i for i in ids if i not in CATALOG]
    if bad:
        raise ValueError(f"unknown claim ids {short(bad)}; valid ids are {min(CATALOG)}-{max(CATALOG)}")
    return ids


_ENTRY_KEYS = {"measured": dict, "verdict": dict, "summary": str}


def _load_cached(path: str, cid: str) -> dict | None:
    """A cached outcome, validated entry by entry; ``None`` (with a warning naming the file) when it is unusable:
    not JSON, missing keys, wrong types, or a figure path that would leave the report folder."""
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return _bad_entry(path, cid, f"unreadable ({type(e).__name__}: {short(str(e), 120)})")
    if not isinstance(d, dict):
        return _bad_entry(path, cid, f"holds a {type(d).__name__}, not an object")
    for k, t in _ENTRY_KEYS.items():
        if not isinstance(d.get(k), t):
            return _bad_entry(path, cid, f"key {k!r} is missing or not a {t.__name__}")
    v = d["verdict"]
    if not all(isinstance(v.get(k), str) for k in ("status", "rule", "label")):
        return _bad_entry(path, cid, "verdict needs string 'status', 'rule' and 'label'")
    if v["status"] == "error":
        return _bad_entry(path, cid, "caches an error (never written by this runner)")
    try:
        Verdict.from_dict(v)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        return _bad_entry(path, cid, f"verdict does not parse ({type(e).__name__}: {short(str(e), 120)})")
    if not isinstance(d.get("seconds", 0.0), (int, float)) or isinstance(d.get("seconds"), bool):
        return _bad_entry(path, cid, "seconds is not a number")
    for k in ("details", "computed"):
        if k in d and not isinstance(d[k], dict):
            return _bad_entry(path, cid, f"{k} is not an object")
    fig = d.get("figure")
    if fig is not None and _safe_figure(fig) is None:
        return _bad_entry(path, cid, f"figure={short(fig)} is not a relative path inside the report folder")
    return d


def _bad_entry(path: str, cid: str, why: str) -> None:
    warnings.warn(f"claims cache {path}: {why}; re-measuring {cid}", RuntimeWarning, stacklevel=3)
    return None


def _safe_figure(fig) -> str | None:
    """``fig`` if it is a relative path that stays inside the report folder (no absolute path, no ``..``)."""
    if not isinstance(fig, str) or not fig or len(fig) > 255 or "\0" in fig:
        return None
    if os.path.isabs(fig) or fig.startswith(("/", "\\")) or (len(fig) > 1 and fig[1] == ":"):
        return None
    parts = fig.replace("\\", "/").split("/")
    if any(p in ("..", "") for p in parts):
        return None
    return fig


def reproduce(profile=None, only=None, out_dir: str = "reports", force: bool = False,
              use_cache: bool = True, cached_only: bool = False) -> dict[str, dict]:
    """Run every registered claim (or ``only`` those ids), then write ``out_dir``/claims.{md,json}.

    Outcomes are cached under ``$LESSONLIB_CACHE/claims`` by (claim, experiment source, profile), so an
    interrupted run resumes where it stopped; ``force`` re-runs anyway.  Claims with no experiment yet
    appear as pending.  An experiment that raises is reported with status ``error`` and the run goes on.
    ``cached_only`` measures nothing: rows with no cached outcome for the current code are written as pending
    (saying so), e.g. to write the report of a run that was stopped before its end.
    """
    prof = get_profile(profile, default="laptop")  # the ledger's own default; chapters default to lab
    ids = _parse_only(only)
    exps = registry()
    ctx = Context(prof, out_dir=out_dir)
    results: dict[str, dict] = {}
    missing: list[str] = []
    todo = [c for c in CATALOG if ids is None or c in ids]
    for cid in tqdm(todo, desc=f"claims ({prof.name})", disable=progress_disabled()):
        info = CATALOG[cid]
        if cid not in exps:
            o = Outcome(measured={}, verdict=rules.pending(info.issue), summary="")
            results[cid] = _outcome_to_json(o)
            continue
        fingerprint = code_fingerprint(exps[cid])  # one walk of the import closure per claim
        key = config_key(cid, exps[cid], prof, fingerprint)
        path = os.path.join(cache_dir("claims", prof.name), f"{cid}-{key}.json")
        cached = _load_cached(path, cid) if use_cache and not force and os.path.exists(path) else None
        if cached is None and cached_only:
            results[cid] = {"measured": {}, "summary": "", "figure": None, "seconds": 0.0, "details": {},
                            "verdict": {"status": NOT_RUN, "label": NOT_RUN_LABEL, "rule": (
                                "not measured in this report: no cached outcome for the current code (the run was "
                                "stopped before this claim; run `lessonlib reproduce` to measure it)")}}
            missing.append(cid)
            continue
        if cached is not None:
            results[cid] = cached
            results[cid].setdefault("computed", {"date": _utc(os.path.getmtime(path)), "commit": "unknown"})
            results[cid]["computed"]["cached"] = True
            results[cid]["computed"]["current"] = results[cid]["computed"].get("library") == fingerprint
            _restore_figure(results[cid], path, out_dir)
            continue
        t0 = time.perf_counter()
        try:
            o = exps[cid](ctx)
            if not isinstance(o, Outcome):
                raise TypeError(f"experiment {cid} returned {type(o).__name__}, not Outcome")
            if o.figure is not None and _safe_figure(o.figure) is None:
                raise ValueError(f"figure={short(o.figure)} must be a relative path inside the report folder")
        except Exception as e:  # report it, keep going
            o = Outcome(measured={}, verdict=Verdict("error", f"{type(e).__name__}: {e}"),
                        summary="the experiment raised", details={"traceback": traceback.format_exc()[-4000:]})
        o.seconds = time.perf_counter() - t0
        results[cid] = _outcome_to_json(o)
        results[cid]["computed"] = {"date": _utc(time.time()), "commit": _git_commit(), "cached": False,
                                    "library": fingerprint, "current": True}
        if o.verdict.status != "error" and use_cache:
            _keep_figure(results[cid], path, out_dir)
            with open(path, "w") as f:
                json.dump(results[cid], f, indent=1)
    write_report(results, prof, out_dir, partial=ids is not None or bool(missing), not_measured=missing)
    return results


def _figure_copy(cache_json: str) -> str:
    return cache_json[:-len(".json")] + ".png"  # the figure kept next to its cached outcome


def _keep_figure(result: dict, cache_json: str, out_dir: str) -> None:
    """Copy a fresh outcome's figure next to its cache entry, so a later report can show it again."""
    fig = result.get("figure")
    if fig and _safe_figure(fig) is not None and os.path.exists(os.path.join(out_dir, fig)):
        shutil.copyfile(os.path.join(out_dir, fig), _figure_copy(cache_json))


def _restore_figure(result: dict, cache_json: str, out_dir: str) -> None:
    """Put a cached outcome's figure back into this report's folder; drop the link if it was not kept."""
    fig = result.get("figure")
    if not fig:
        return
    if _safe_figure(fig) is None:  # _load_cached refuses these; never write outside out_dir
        result["figure"] = None
        return
    dst = os.path.join(out_dir, fig)
    if os.path.exists(_figure_copy(cache_json)):
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if os.path.abspath(dst) != os.path.abspath(_figure_copy(cache_json)):
            shutil.copyfile(_figure_copy(cache_json), dst)
    elif not os.path.exists(dst):
        result["figure"] = None  # measured before figures were cached: re-run with --force to redraw it


def _utc(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _machine() -> str:
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {dev}, torch {torch.__version__}"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v[:8]) + (", ..." if len(v) > 8 else "") + "]"
    return str(v)


def _verdict_cell(v: dict) -> str:
    """The verdict's label, and each part's label for a compound claim."""
    cell = rules.label_of(v)
    if v.get("parts"):
        cell += " (" + "; ".join(f"{p['name']}: {rules.label_of(p)}" for p in v["parts"]) + ")"
    return cell


def _previous(out_dir: str) -> dict | None:
    """The report this one replaces (same folder), to list the verdicts that changed; None if none/unreadable."""
    path = os.path.join(out_dir, "claims.json")
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        return d if isinstance(d, dict) and {"meta", "claims"} <= set(d) else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def change_reason(old: dict, new: dict) -> str:
    """Why a row's verdict differs from the previous report's: the vocabulary (a status the old report could
    not write), a guard (the new verdict is inconclusive / invalid / not measurable), the experiment or rule
    (different rule text or measured keys: 'method set'), or, with the same rule and keys, noise."""
    o, n = old["verdict"], new["verdict"]
    new_words = {rules.INCONCLUSIVE, rules.INVALID}
    if n["status"] in new_words or (n.get("parts") and not o.get("parts")):
        return "vocabulary and guards: the new verdict splits the claim or reads its interval/sanity check"
    if n["status"] == rules.NOT_MEASURABLE or o["status"] == rules.NOT_MEASURABLE:
        return "what can be measured here changed (hardware, data or budget named in the rule)"
    if o["rule"] != n["rule"] or set(old.get("measured", {})) != set(new.get("measured", {})):
        return "method set: the experiment or its rule changed"
    return "noise: same rule and measurements, different numbers"


def write_report(results: dict[str, dict], profile, out_dir: str = "reports", partial: bool = False,
                 not_measured: list[str] | None = None) -> None:
    """Write claims.json (everything) and claims.md (a table a reader can scan) to ``out_dir``.

    Each row gets the published numbers beside ours (``published.beside``) and, for a sweep without a figure
    of its own, a figure drawn from its numbers (``report_figures``); the closing note lists every verdict that
    changed against the report this one replaces."""
    from .published import beside, format_beside
    from .report_figures import draw_sweep_figures

    os.makedirs(out_dir, exist_ok=True)
    prev = _previous(out_dir)
    meta = {"date": _utc(time.time()), "commit": _git_commit(),
            "machine": _machine(), "profile": profile.as_dict(), "partial": partial,
            "not_measured": list(not_measured or [])}
    claims = {cid: {"seeds": list(CATALOG[cid].seeds), "statement": CATALOG[cid].statement,
                    "test": CATALOG[cid].test, "issue": CATALOG[cid].issue, **r} for cid, r in results.items()}
    for cid, c in claims.items():
        try:
            c["published"] = beside(cid, c.get("measured") or {})
        except (KeyError, TypeError, ValueError) as e:
            warnings.warn(f"{cid}: published numbers not resolved ({e})", RuntimeWarning, stacklevel=2)
            c["published"] = None
    draw_sweep_figures(claims, out_dir)
    changes = []
    if prev is not None:
        for cid, c in claims.items():
            old = prev["claims"].get(cid)
            if c["verdict"]["status"] in (rules.PENDING, NOT_RUN):
                continue  # not measured in this report: nothing to compare
            same_parts = not old.get("verdict", {}).get("parts") if old else True
            same_parts = same_parts or [p["status"] for p in old["verdict"]["parts"]] == \
                [p["status"] for p in c["verdict"].get("parts", [])]
            if old is None or old["verdict"].get("status") == c["verdict"]["status"] and same_parts:
                continue
            changes.append({"claim": cid, "from": _verdict_cell(old["verdict"]), "to": _verdict_cell(c["verdict"]),
                            "why": change_reason(old, c)})
        meta["previous"] = {"commit": prev["meta"].get("commit"), "date": prev["meta"].get("date")}
    meta["changes"] = changes
    with open(os.path.join(out_dir, "claims.json"), "w") as f:
        json.dump({"meta": meta, "claims": claims}, f, indent=1)
    n_cached = sum(1 for r in results.values() if r.get("computed", {}).get("cached"))
    n_current = sum(1 for r in results.values() if r.get("computed", {}).get("current"))
    counts: dict[str, int] = {}
    for r in results.values():
        counts[rules.label_of(r["verdict"])] = counts.get(rules.label_of(r["verdict"]), 0) + 1
    lines = ["# Reproduction ledger", "",
             f"Generated by `lessonlib reproduce --profile {profile.name}` on {meta['date']}, commit "
             f"`{meta['commit']}`, {meta['machine']}." + (" Partial run (--only)." if partial and not not_measured else "")
             + (f" Partial report: the run was stopped before {len(not_measured)} claims "
                f"({', '.join(not_measured)}); their rows say so and carry no verdict." if not_measured else ""), "",
             "Every verdict below was computed by the rule shown, from the numbers measured in the same run of "
             "its experiment. Outcomes are cached by (claim, the source of its experiment and of every lessonlib "
             "module that experiment imports, profile, torch version); "
             f"{n_cached} of {len(results)} rows come from that cache, and claims.json gives for each row the date "
             "(and, when run by this command, the commit) of the run that measured it. "
             f"{n_current} of {len(results)} rows were measured with the code they import as it is now "
             f"(`computed.library` in claims.json); `--force` re-measures every row.", "",
             "Totals: " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())), "",
             "Verdicts: *holds* / *does not hold* at this scale (the value, and its 95% interval where it has "
             "one, lies inside / outside the claim's band); *inconclusive* (the interval, a paired bootstrap over "
             "the evaluation windows or the spread over three seeds, straddles the band's edge); *not measurable "
             "here* (the hardware, data or budget the claim needs is missing: the rule says which); *invalid run* "
             "(a sanity check failed, e.g. a classifier collapsed onto one class). A compound claim lists its "
             "parts, each with its own verdict." + ("" if torch.cuda.is_available() else
             " This machine has no CUDA GPU: the `gpu` profile and the GPU-only rows (C41's 2:4 kernels, the "
             "kernel-speed parts of C31 and C32) are not measurable here, each with its reason."), "",
             "| claim | seed | claim (our words) | measured | verdict | rule | published beside ours | figure |",
             "|---|---|---|---|---|---|---|---|"]
    for cid, c in claims.items():
        measured = "; ".join(f"{k} = {_fmt(v)}" for k, v in c["measured"].items()) or "-"
        if c["summary"]:
            measured = f"{c['summary']} ({measured})"
        fig = f"![{cid}]({c['figure']})" if c.get("figure") else ""
        row = [cid, ", ".join(c["seeds"]), c["statement"], measured, _verdict_cell(c["verdict"]), c["verdict"]["rule"],
               format_beside(c.get("published")), fig]
        lines.append("| " + " | ".join(s.replace("|", "/").replace("\n", " ") for s in row) + " |")
    if prev is not None:
        pm = prev["meta"]
        lines += ["", f"## Verdicts that changed since the previous report (commit `{pm.get('commit')}`, "
                  f"{pm.get('date')})", ""]
        lines += [f"- {ch['claim']}: {ch['from']} -> {ch['to']}. Why: {ch['why']}." for ch in changes] or \
                 ["- none"]
    with open(os.path.join(out_dir, "claims.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
