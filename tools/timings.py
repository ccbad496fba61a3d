"""Measured notebook runtimes: execute notebooks under a profile and record wall seconds in reports/timings.json.

    python tools/timings.py --profile ci                    # every notebook, one at a time
    python tools/timings.py --profile lab 03_gptq 07        # a subset (stems or prefixes)
    python tools/timings.py --profile ci --changed          # only notebooks whose source changed since recorded
    python tools/timings.py --profile ci --from-executed    # what the last `make test` measured, no rerun
    python tools/timings.py --table                         # (re)write reports/timings.md from the JSON

Each notebook runs in a fresh kernel through the executor of ``make test`` (tools/nbexec.py, nbclient), with
``LESSONLIB_PROFILE=<profile>``, ``OMP_NUM_THREADS`` as ``make test`` sets it (1 unless given) and the inline
matplotlib backend; outputs are discarded (the tracked ``.ipynb`` is never written).
``--from-executed`` runs nothing: it records what ``make test`` measured (``build/executed/*.ipynb`` carry
their wall seconds, seconds per cell and code sha), for the notebooks whose code cells have not changed since (a prose
edit does not change a runtime). The JSON shape, read by
``lessonlib.chapter.runtime_note``::

    {"machine": "...", "note": "...",
     "profiles": {"ci": {"03_gptq": {"seconds": 90.1, "max_cell_seconds": 40.2, "max_cell": 4,
                                     "sha": "<sha256 of the code cells>", "date": "...", "commit": "..."}}}}
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
from typing import Iterable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import nbexec  # noqa: E402
from nbexec import code_sha, commit, source_sha  # noqa: E402,F401 - re-exported: source_sha is part of this tool's API
BUDGET_S = {"ci": 120.0, "lab": 300.0}  # per notebook: ci < 2 min (make test), lab < 5 min (the chapters' default)
CONTENDED_NOTE = ("Timings taken on a shared, contended machine (other jobs ran at the same time): "
                  "treat them as upper bounds.")


def machine() -> str:
    """``"2 cores, Intel(R) Xeon(R) ..."``: the core count and CPU model of this machine."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {model}"


def execute(path: str, profile: str, threads: str = "1", timeout: int = 1800) -> dict:
    """Run ``path`` in a fresh kernel under ``profile`` (the executor of ``make test``, tools/nbexec.py, with
    the same kernel environment); return seconds, slowest cell and its index. A failing cell raises."""
    result = nbexec.execute(path, nbexec.kernel_env(profile, threads), timeout)
    if not result.ok:
        raise RuntimeError(result.error)
    return dict(summary(result.seconds, result.cell_seconds), cpu_seconds=result.cpu_seconds)


from lessonlib.chapter import row_is_cpu, row_seconds  # noqa: E402 - one rule for the table and the chapters


def summary(seconds: float, cell_seconds: dict) -> dict:
    """The JSON row's timing fields from a notebook's wall seconds and its {cell index: seconds}."""
    idx, slow = max(((int(k), float(v)) for k, v in cell_seconds.items()), key=lambda kv: kv[1], default=(-1, 0.0))
    return {"seconds": round(float(seconds), 1), "max_cell_seconds": round(slow, 1), "max_cell": idx}


def from_executed(path: str, profile: str, executed_dir: str) -> dict | None:
    """The timing row of ``path`` from the executed copy ``make test`` wrote (build/executed), when that copy
    ran every cell of this exact source under ``profile``; None otherwise. Nothing is executed."""
    copy = os.path.join(executed_dir, os.path.basename(path))
    try:
        with open(copy, encoding="utf-8") as f:
            meta = json.load(f).get("metadata", {}).get("lessonlib", {})
    except (OSError, ValueError):
        return None
    if not (meta.get("ok") is True and meta.get("profile") == profile and meta.get("code_sha") == code_sha(path)):
        return None
    row = dict(summary(meta["seconds"], meta.get("cell_seconds", {})), cpu_seconds=meta.get("cpu_seconds"))
    row.update(sha=meta["code_sha"], commit=meta.get("commit", "unknown"), date=meta.get("date", ""),
               source="make test (build/executed)")
    return row


def load(path: str) -> dict:
    if os.path.isfile(path):
        with open(path) as f:
            data = json.load(f)
        if not isinstance(data.get("profiles"), dict):
            raise ValueError(f"{path} has no 'profiles' mapping: not a timings file")
        return data
    return {"machine": machine(), "note": CONTENDED_NOTE, "profiles": {}}


def save(data: dict, path: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)  # atomic: an interrupted run never leaves half a file


def select(notebooks: list[str], wanted: Iterable[str]) -> list[str]:
    """Notebook paths whose stem starts with one of ``wanted`` (all when empty); unknown names raise."""
    wanted = list(wanted)
    if not wanted:
        return notebooks
    out = []
    for w in wanted:
        w = os.path.basename(w).removesuffix(".ipynb")
        hits = [p for p in notebooks if os.path.basename(p).startswith(w)]
        if not hits:
            names = ", ".join(os.path.basename(p)[:-6] for p in notebooks)
            raise ValueError(f"no notebook matches {w!r}; known: {names}")
        out += [h for h in hits if h not in out]
    return out


def table(data: dict) -> str:
    """Markdown: one row per notebook, one column per profile, minutes, flagged where over budget."""
    profs = sorted(data.get("profiles", {}), key=lambda p: (p not in BUDGET_S, list(BUDGET_S).index(p)
                                                             if p in BUDGET_S else 0, p))
    stems = sorted({s for p in profs for s in data["profiles"][p]})
    budgets = ", ".join(f"`{p}` {BUDGET_S[p] / 60:.0f} min" for p in profs if p in BUDGET_S)
    lines = ["# Measured notebook runtimes", "",
             f"Generated by `make timings` (`tools/timings.py --table`) from `reports/timings.json`. "
             f"Machine: {data.get('machine', 'unknown')}. {data.get('note', '')}".rstrip(), "",
             f"Wall minutes per notebook (slowest cell in brackets, seconds); budget per notebook: {budgets}. "
             "**bold ⚠** = over budget; — = not measured. A value marked ᶜ was measured on a shared machine "
             "(`--contended`, one thread): it is the kernel's CPU time, what the notebook costs on an idle core, "
             "since waiting for a busy core would inflate its wall time.", "",
             "| notebook | " + " | ".join(f"`{p}`" for p in profs) + " |",
             "|---|" + "---:|" * len(profs)]
    for s in stems:
        cells = []
        for p in profs:
            row = data["profiles"][p].get(s)
            if not row:
                cells.append("—")
                continue
            mark = "ᶜ" if row_is_cpu(row) else ""
            txt = f"{row_seconds(row) / 60:.1f}{mark} ({row.get('max_cell_seconds', 0):.0f} s)"
            over = p in BUDGET_S and row_seconds(row) > BUDGET_S[p]
            cells.append(f"**{txt} ⚠**" if over else txt)
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    for p in profs:
        tot = sum(row_seconds(r) for r in data["profiles"][p].values())
        dates = sorted(r.get("date", "") for r in data["profiles"][p].values())
        lines.append("")
        lines.append(f"- `{p}`: {len(data['profiles'][p])} notebooks, {tot / 60:.1f} min in all, "
                     f"measured {dates[0][:10]} to {dates[-1][:10]}.")
    return "\n".join(lines) + "\n"


def embed(readme: str, md: str) -> bool:
    """Replace the block between ``<!-- timings:begin`` and ``<!-- timings:end -->`` in ``readme`` with the
    table part of ``md`` (from its first ``|`` line); False when the README has no such markers."""
    if not os.path.isfile(readme):
        return False
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    b, e = text.find("<!-- timings:begin"), text.find("<!-- timings:end -->")
    if b < 0 or e < b:
        return False
    b = text.index("-->", b) + 3
    lines = md.splitlines()
    first = next((i for i, line in enumerate(lines) if line.startswith("|")), len(lines))
    body = "\n".join(lines[first - 2:]) if first >= 2 else "\n".join(lines)  # the legend line and the table
    with open(readme, "w", encoding="utf-8") as f:
        f.write(text[:b] + "\n" + body.strip("\n") + "\n" + text[e:])
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", help="stems or prefixes (e.g. 03_gptq or 03); default: all")
    ap.add_argument("--profile", help="ci | lab | laptop | gpu (required unless only --table)")
    ap.add_argument("--changed", action="store_true", help="only notebooks whose code-cell sha differs from the JSON")
    ap.add_argument("--table", action="store_true", help="(re)write the Markdown table from the JSON")
    ap.add_argument("--dir", default=os.path.join(ROOT, "notebooks"))
    ap.add_argument("--json", default=os.path.join(ROOT, "reports", "timings.json"))
    ap.add_argument("--md", default=os.path.join(ROOT, "reports", "timings.md"))
    ap.add_argument("--readme", default=os.path.join(ROOT, "README.md"), help="README whose timings block --table updates")
    ap.add_argument("--threads", default=os.environ.get("OMP_NUM_THREADS", "1"), help="OMP_NUM_THREADS (default 1)")
    ap.add_argument("--from-executed", action="store_true",
                    help="record the timings make test left in --executed-dir instead of executing")
    ap.add_argument("--executed-dir", default=str(nbexec.EXECUTED), help="default build/executed")
    ap.add_argument("--contended", action="store_true",
                    help="the machine is shared: judge and show these rows by the kernel's CPU time (needs --threads 1)")
    ap.add_argument("--timeout", type=int, default=1800, help="per-cell timeout, seconds")
    a = ap.parse_args(argv)
    if a.profile is None and not a.table:
        ap.error("give --profile (to measure) and/or --table (to write the Markdown)")
    if a.contended and str(a.threads) != "1":
        ap.error(f"--contended needs --threads 1 (got {a.threads!r}): CPU time stands for wall time only on one core")
    if a.profile is not None:
        from lessonlib.config import PROFILES  # validates the name the way the library does
        if a.profile not in PROFILES:
            ap.error(f"unknown profile {a.profile!r}; allowed: {', '.join(PROFILES)}")
        data = load(a.json)
        rows = data["profiles"].setdefault(a.profile, {})
        paths = sorted(os.path.join(a.dir, f) for f in os.listdir(a.dir) if f.endswith(".ipynb"))
        todo = select(paths, a.notebooks)
        if a.changed:
            todo = [p for p in todo if rows.get(os.path.basename(p)[:-6], {}).get("sha") != code_sha(p)]
        rev = commit()
        failed: list[str] = []
        for p in todo:
            stem = os.path.basename(p)[:-6]
            print(f"[timings] {a.profile} {stem} ...", flush=True)
            load_avg = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
            try:
                if a.from_executed:
                    rec = from_executed(p, a.profile, a.executed_dir)
                    if rec is None:
                        raise FileNotFoundError(f"no executed copy of this source under {a.profile} in "
                                                f"{a.executed_dir} (run make test)")
                    rows[stem] = dict(rec, threads=int(a.threads), load_at_start=None)
                    data["machine"] = machine()
                    save(data, a.json)
                    print(f"[timings] {a.profile} {stem}: {rec['seconds']:.1f} s from {a.executed_dir}", flush=True)
                    continue
                rec = execute(p, a.profile, a.threads, a.timeout)
            except Exception as e:  # noqa: BLE001 - a failing notebook is reported, the others still run
                failed.append(stem)
                print(f"[timings] {a.profile} {stem} FAILED: {type(e).__name__}: {str(e)[-300:]}", flush=True)
                continue
            rec.update(sha=code_sha(p), commit=rev, threads=int(a.threads), load_at_start=load_avg,
                       contended=bool(a.contended),
                       date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
            rows[stem] = rec
            data["machine"] = machine()
            data.setdefault("note", CONTENDED_NOTE)
            save(data, a.json)  # after every notebook: a long run keeps what it measured
            print(f"[timings] {a.profile} {stem}: {rec['seconds']:.1f} s (slowest cell {rec['max_cell']}: "
                  f"{rec['max_cell_seconds']:.1f} s)", flush=True)
        if not todo:
            print("[timings] nothing to run", flush=True)
        if failed:
            print(f"[timings] FAILED (not recorded): {', '.join(failed)}", flush=True)
    if a.table:
        md = table(load(a.json))
        with open(a.md, "w") as f:
            f.write(md)
        print(f"[timings] wrote {a.md}" + (f" and the table in {a.readme}" if embed(a.readme, md) else ""))
        if os.path.abspath(a.json) == os.path.join(ROOT, "reports", "timings.json"):  # the chapters' table reads it too
            import chapter_table  # tools/ is on sys.path (above)
            chapter_table.main([])
    return 1 if a.profile is not None and failed else 0


if __name__ == "__main__":
    sys.exit(main())
