"""The published numbers beside ours: each ledger row's source, the scale of its number, the published value
and our value on the closest metric, read from ``lessonlib/resources/published.yaml`` (its ``ledger`` table).

Nothing here measures: ``beside(cid, measured)`` resolves references into the published entries and into a
row's measured values.  A reference is ``[entry, field, index...]`` (published) or a measured key (ours); an
operation is ``{diff|ratio|rel: [a, b]}`` over two references (rel = a / b - 1).
"""
from __future__ import annotations

import functools
import math
import os

__all__ = ["ledger_table", "beside", "resolve", "format_beside"]


@functools.lru_cache(maxsize=1)
def _yaml() -> dict:
    import yaml
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "resources", "published.yaml")
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def ledger_table() -> dict:
    """claim id -> its row of the ``ledger`` table (source, scale, published, ours, note)."""
    return dict(_yaml().get("ledger", {}))


def _published_ref(ref: list):
    entries = _yaml()
    if not isinstance(ref, list) or len(ref) < 2 or ref[0] not in entries:
        raise KeyError(f"published reference {ref!r} must start with an entry of published.yaml")
    v = entries[ref[0]]
    for k in ref[1:]:
        if isinstance(v, list):
            if not isinstance(k, int) or not -len(v) <= k < len(v):
                raise KeyError(f"published reference {ref!r}: index {k!r} is not in a list of {len(v)}")
        elif not isinstance(v, dict) or k not in v:
            raise KeyError(f"published reference {ref!r}: no field {k!r}")
        v = v[k]
    return v


def resolve(spec, measured: dict | None = None):
    """The number a spec names: a published reference (list), a measured key (str, needs ``measured``) or an
    operation ``{diff|ratio|rel: [a, b]}``.  Returns None when a measured key is missing (a row as run did not
    measure it) or a value is not a number."""
    if isinstance(spec, dict):
        if len(spec) != 1 or next(iter(spec)) not in ("diff", "ratio", "rel"):
            raise ValueError(f"operation {spec!r} must be one of diff, ratio, rel over two references")
        op, (a, b) = next(iter(spec.items()))
        x, y = resolve(a, measured), resolve(b, measured)
        if x is None or y is None or (op != "diff" and y == 0):
            return None
        return x - y if op == "diff" else x / y if op == "ratio" else x / y - 1
    if isinstance(spec, list):
        v = _published_ref(spec)
    elif isinstance(spec, str):
        v = None if measured is None else measured.get(spec)
    else:
        raise TypeError(f"spec {spec!r} must be a list (published), a str (measured key) or an operation")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        return None
    return float(v)


def beside(cid: str, measured: dict) -> dict | None:
    """The row's comparison: source citation, scale, published label and value(s), our label and value, note."""
    row = ledger_table().get(cid)
    if row is None:
        return None
    out = {"scale": row.get("scale", ""), "note": row.get("note", ""), "source": None}
    src = row.get("source")
    if src:
        e = _yaml()[src]
        out["source"] = (f"{e['paper']}" + (f" (arXiv {e['arxiv']})" if e.get("arxiv") else "")
                         + (f", {e['where']}" if e.get("where") else "") + f" [{e.get('tag', '?')}]")
        pub = row.get("published", {})
        out["published_label"] = pub.get("label", "")
        out["published"] = [resolve(pub[k]) for k in ("value", "value2") if k in pub]
    ours = row.get("ours")
    if ours:
        out["ours_label"] = ours.get("label", "")
        out["ours"] = resolve(ours["value"], measured)
    return out


def _g(x) -> str:
    return "-" if x is None else f"{x:.4g}"


def format_beside(b: dict | None) -> str:
    """One markdown cell: source and scale, the published value, ours, and the note."""
    if b is None:
        return "-"
    if not b.get("source"):
        return f"{b['note']} (scale: {b['scale']})"
    pub = " / ".join(_g(v) for v in b.get("published", []))
    text = f"{b['source']}; {b['scale']}: {b['published_label']} = {pub}"
    if "ours" in b:
        text += f"; ours (this run): {b['ours_label']} = {_g(b['ours'])}"
    return f"{text}. {b['note']}"
