"""What a chapter shows beside its live numbers: the ledger's larger run, the published number, its runtime.

Chapters (``notebooks/NN_*.ipynb``) never type a number into prose: they render computed values, read the
ledger's row for a claim from ``reports/claims.json`` (the committed laptop-profile run, or another report
folder), put the papers' numbers beside ours from ``lessonlib/resources/published.yaml`` (each with its
paper and arXiv id), and state their own measured runtime from ``reports/timings.json``
(written by ``tools/timings.py``, ``make timings``).

    from lessonlib.chapter import ledger, published, runtime_note, show
    show(f"Live: GPTQ 4-bit g64 perplexity {ppl:.2f}; ledger C20 (laptop): "
         f"{ledger('C20')['measured']['ppl_gptq']:.2f}; {cite('gptq_opt')}")
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from typing import Any

__all__ = ["repo_root", "ledger", "ledger_value", "ledger_verdict", "ledger_profile", "published", "cite", "runtime_note", "show"]


def repo_root() -> str:
    """The project folder (the parent of the ``lessonlib`` package)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@lru_cache(maxsize=8)
def _report(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no ledger report at {path}: run `lessonlib reproduce` (or pass report=)")
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get("claims"), dict):
        raise ValueError(f"{path} is not a ledger report (expected a 'claims' mapping)")
    return data


def ledger(cid: str, report: str | None = None) -> dict:
    """The ledger's row for claim ``cid`` (e.g. ``"C20"``): measured values, verdict, summary, profile."""
    path = report or os.path.join(repo_root(), "reports", "claims.json")
    data = _report(os.path.abspath(path))
    if cid not in data["claims"]:
        raise KeyError(f"claim {cid!r} is not in {path}; it has {', '.join(sorted(data['claims']))}")
    row = dict(data["claims"][cid])
    row.setdefault("profile", data.get("meta", {}).get("profile"))
    return row


def ledger_value(cid: str, key: str, report: str | None = None) -> Any:
    """One measured value of a ledger row; ``key`` may be dotted for nested values (``"wall_s.dense"``)."""
    value: Any = ledger(cid, report)["measured"]
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(f"{cid} has no measured value {key!r}")
        value = value[part]
    return value


def ledger_verdict(cid: str, report: str | None = None) -> str:
    """The verdict label of a ledger row, e.g. ``"holds at this scale"``."""
    return ledger(cid, report)["verdict"]["label"]


def ledger_profile(cid: str, report: str | None = None) -> str:
    """The name of the profile a ledger row was measured under (``"laptop"``), whether the report stores the
    profile as a name or as the full profile mapping."""
    prof = ledger(cid, report).get("profile")
    if isinstance(prof, dict):
        return str(prof.get("name", "?"))
    return str(prof)


@lru_cache(maxsize=1)
def _published() -> dict:
    import yaml
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "resources", "published.yaml")
    with open(path) as f:
        return yaml.safe_load(f)


def published(key: str) -> dict:
    """A published result by key (``"gptq_opt"``, ``"wanda_speed"``, ...): paper, arXiv id, where, values."""
    table = _published()
    if key not in table:
        raise KeyError(f"no published entry {key!r}; choose one of {', '.join(sorted(table))}")
    return dict(table[key])


def cite(key: str) -> str:
    """``"Frantar et al., GPTQ, ICLR 2023 (arXiv 2210.17323), Table 3"``: the citation of a published entry."""
    e = published(key)
    s = e["paper"] + (f" (arXiv {e['arxiv']})" if e.get("arxiv") else "")
    return s + (f", {e['where']}" if e.get("where") else "")


def row_is_cpu(row: dict) -> bool:
    """Whether a ``reports/timings.json`` row stands for CPU time: marked ``contended`` (taken on a shared machine
    with one thread) and carrying its kernel's CPU seconds."""
    return bool(row.get("contended")) and row.get("cpu_seconds") is not None


def row_seconds(row: dict) -> float:
    """The runtime a ``reports/timings.json`` row stands for: its wall seconds, or for a CPU row (``row_is_cpu``)
    its kernel's CPU seconds, which other jobs cannot inflate."""
    if row_is_cpu(row):
        return float(row["cpu_seconds"])
    return float(row["seconds"])


def runtime_note(notebook: str, path: str | None = None) -> str:
    """Markdown saying how long ``notebook`` (its stem, e.g. ``"03_gptq"``) took under each measured profile."""
    path = path or os.path.join(repo_root(), "reports", "timings.json")
    if not os.path.isfile(path):
        return "Runtime: not measured yet (`make timings`)."
    with open(path) as f:
        data = json.load(f)
    parts = []
    for prof, rows in sorted(data.get("profiles", {}).items()):
        row = rows.get(notebook)
        if row:
            secs = row_seconds(row)
            cpu = row_is_cpu(row)
            parts.append(f"`{prof}` {secs / 60:.1f} min" + (" of CPU" if cpu else ""))
    machine = data.get("machine", "")
    if not parts:
        return "Runtime: not measured yet (`make timings`)."
    return "Measured runtime: " + ", ".join(parts) + (f" ({machine})" if machine else "") + "."


def show(markdown: str) -> None:
    """Render Markdown in a notebook (prints it elsewhere): how prose shows computed numbers."""
    try:
        from IPython.display import Markdown, display
        display(Markdown(markdown))
    except ImportError:  # pragma: no cover - outside IPython
        print(markdown)
