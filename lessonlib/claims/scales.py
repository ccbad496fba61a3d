"""Which verdicts change with scale: one table over several ledger runs (e.g. the ci and laptop profiles).

Reads the ``claims.json`` of each report folder and writes a markdown table, claim by claim, with each run's
verdict side by side, whether the verdicts agree, and what a change is due to (scale, noise or method set).
Runs of different commits are not compared (a change could come from the code).  Nothing is judged here:
every cell is copied from a report the runner wrote.
"""
from __future__ import annotations

import json
import os

from .rules import INCONCLUSIVE, label_of

__all__ = ["load_report", "compare_reports", "change_kind"]


def load_report(folder: str) -> dict:
    """The ``claims.json`` of a report folder (``meta`` and ``claims``); a clear error when it is missing."""
    path = os.path.join(folder, "claims.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: give a folder written by `lessonlib reproduce --out`")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({type(e).__name__}: {str(e)[:200]})") from e
    if not isinstance(data, dict) or not {"meta", "claims"} <= set(data):
        raise ValueError(f"{path} is not a ledger report (needs 'meta' and 'claims')")
    return data


def _cell(claim: dict | None) -> str:
    if claim is None:
        return "not run"
    return label_of(claim["verdict"])


def _status(claim: dict | None) -> str | None:
    return None if claim is None else claim["verdict"].get("status")


def change_kind(cells: list[dict | None]) -> str:
    """Why a claim's verdict differs between runs of the same commit: ``method set`` when the runs measured
    different things (different measured keys: e.g. the ci profile runs fewer methods or points), ``noise``
    when a verdict is inconclusive (an interval straddles the edge) in one run, else ``scale``."""
    present = [c for c in cells if c is not None]
    if len(present) < len(cells):
        return "method set (not run in every profile)"
    keys = [frozenset(c.get("measured", {})) for c in present]
    if len(set(keys)) > 1:
        return "method set"
    if any(_status(c) == INCONCLUSIVE for c in present):
        return "noise"
    return "scale"


def compare_reports(folders: list[str], out_path: str | None = None) -> str:
    """Markdown: one row per claim, one verdict column per report, and what a change is due to.

    ``folders`` are report folders (at least two).  Only runs of the same commit are compared: a verdict that
    differs between commits may come from a code change, so with different commits the table is not made and
    the text says so.  The text is written to ``out_path`` when given.
    """
    if len(folders) < 2:
        raise ValueError(f"need at least two report folders to compare, got {folders}")
    reports = [load_report(f) for f in folders]
    names = [r["meta"]["profile"]["name"] for r in reports]
    ids = sorted({c for r in reports for c in r["claims"]})
    lines = ["# Verdicts across scales", "",
             "Each column is one full run of `lessonlib reproduce`; cells are copied from its claims.json.", ""]
    for folder, r in zip(folders, reports):
        m = r["meta"]
        p = m["profile"]
        counts: dict[str, int] = {}
        for c in r["claims"].values():
            counts[label_of(c["verdict"])] = counts.get(label_of(c["verdict"]), 0) + 1
        lines.append(f"- `{p['name']}` ({folder}): {m['date']}, commit `{m['commit']}`, {m['machine']}; "
                     f"{p['eval_windows']} x {p['seqlen']}-token windows, {p['calib_samples']} x {p['calib_seqlen']} "
                     f"calibration, {p['train_steps']} training steps" + (" (partial run)" if m.get("partial") else "")
                     + "; verdicts: " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    commits = {r["meta"]["commit"] for r in reports}
    if len(commits) > 1:
        lines += ["", f"The comparison is not made: these runs come from different commits ({', '.join(sorted(commits))}), "
                  "so a verdict that differs could come from a change of the experiment's code, its rule or the "
                  "verdict vocabulary rather than from scale. Re-run every profile on one commit to compare them."]
    else:
        lines += ["", "Each change is labelled: *scale* (same measurements, the verdict moves with the profile's "
                  "size), *noise* (one run is inconclusive: its interval straddles the band's edge) or *method set* "
                  "(the runs measured different methods or points).", "",
                  "| claim | claim (our words) | " + " | ".join(names) + " | same verdict | change due to |",
                  "|---|---|" + "---|" * len(names) + "---|---|"]
        n_same = 0
        kinds: dict[str, int] = {}
        for cid in ids:
            cells = [r["claims"].get(cid) for r in reports]
            labels = [_cell(c) for c in cells]
            same = len(set(labels)) == 1
            n_same += same
            kind = "-" if same else change_kind(cells)
            if not same:
                kinds[kind] = kinds.get(kind, 0) + 1
            statement = next(c["statement"] for c in cells if c is not None)
            lines.append("| " + " | ".join([cid, statement.replace("|", "/")] + labels +
                                           ["yes" if same else "**no**", kind]) + " |")
        lines += ["", f"{n_same} of {len(ids)} claims get the same verdict in every run"
                  + ("; the others change by " + ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items())) if kinds
                     else "") + "."]
    text = "\n".join(lines) + "\n"
    if out_path:
        os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
        with open(out_path, "w") as f:
            f.write(text)
    return text
