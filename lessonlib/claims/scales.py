"""Which verdicts change with scale: one table over several ledger runs (e.g. the ci and laptop profiles).

Reads the ``claims.json`` of each report folder and writes a markdown table, claim by claim, with each run's
verdict side by side and whether the verdicts agree.  Nothing is judged here: every
cell is copied from a report the runner wrote.
"""
from __future__ import annotations

import json
import os

__all__ = ["load_report", "compare_reports"]


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
    return claim["verdict"]["label"]


def compare_reports(folders: list[str], out_path: str | None = None) -> str:
    """Markdown: one row per claim, one verdict column per report, and whether the verdicts agree.

    ``folders`` are report folders (at least two); the table is written to ``out_path`` when given.
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
        lines.append(f"- `{p['name']}` ({folder}): {m['date']}, commit `{m['commit']}`, {m['machine']}; "
                     f"{p['eval_windows']} x {p['seqlen']}-token windows, {p['calib_samples']} x {p['calib_seqlen']} "
                     f"calibration, {p['train_steps']} training steps" + (" (partial run)" if m.get("partial") else ""))
    if len({r["meta"]["commit"] for r in reports}) > 1:
        lines += ["", "These runs come from different commits: a verdict can change because the experiment's code "
                  "changed as well as because of scale (each row of claims.json names the commit that measured it)."]
    lines += ["", "| claim | claim (our words) | " + " | ".join(names) + " | same verdict |",
              "|---|---|" + "---|" * len(names) + "---|"]
    n_same = 0
    for cid in ids:
        cells = [r["claims"].get(cid) for r in reports]
        labels = [_cell(c) for c in cells]
        same = len(set(labels)) == 1
        n_same += same
        statement = next(c["statement"] for c in cells if c is not None)
        lines.append("| " + " | ".join([cid, statement.replace("|", "/")] + labels + ["yes" if same else "**no**"])
                     + " |")
    lines += ["", f"{n_same} of {len(ids)} claims get the same verdict in every run; the rest change with scale "
              "(or with what the larger run could measure)."]
    text = "\n".join(lines) + "\n"
    if out_path:
        os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
        with open(out_path, "w") as f:
            f.write(text)
    return text
