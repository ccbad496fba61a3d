"""Figures the report draws from a row's measured numbers, for every sweep whose experiment draws none:
the claim's band shaded and the published point (``published.yaml``'s ledger table) marked.

Drawn when the report is written (``runner.write_report``), from ``claims.json``'s numbers only, so a cached
row gets its figure without re-measuring.  A row already carrying a figure keeps it.
"""
from __future__ import annotations

import os
import warnings

from .published import beside

__all__ = ["draw_sweep_figures", "FIGURES"]


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _pct(p: str) -> float | None:
    return float(p[:-1]) / 100 if p.endswith("%") else None


def _published_point(ax, cid: str, m: dict, x, label_x: str = "") -> None:
    b = beside(cid, m)
    if b and b.get("published"):
        v = b["published"][0]
        if v is not None:
            ax.plot([x], [v], marker="*", ms=12, color="tab:red", ls="",
                    label=f"published: {b['published_label']}{label_x}")


def _c02(m: dict, d: dict, ax) -> None:
    rows = d.get("table") or []
    shapes = sorted({tuple(r["shape"]) for r in rows})
    for sh in shapes:
        pts = sorted((r["sparsity"], r["dense_ms"] / r["csr_ms"]) for r in rows if tuple(r["shape"]) == sh)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"{sh[0]}x{sh[1]}")
    ax.axvspan(0.5, 0.8, color="tab:green", alpha=0.15, label="claim: crossover in 50-80%")
    ax.axhline(1.0, color="gray", ls=":")
    ax.set_yscale("log")
    _published_point(ax, "C02", m, 0.5, " (OPT-2.7B, DeepSparse)")
    ax.set_xlabel("sparsity")
    ax.set_ylabel("dense time / CSR time")


def _c03(m: dict, d: dict, ax) -> None:
    dense = m["ppl_dense"]
    for meth, pts in (d.get("sweep") or {}).items():
        xs = sorted((_pct(k), v["ppl"] / dense) for k, v in pts.items() if _pct(k) is not None)
        if xs:
            ax.plot([x for x, _ in xs], [y for _, y in xs], "o-", label=meth)
    ax.axvspan(0.1, 0.3, color="tab:green", alpha=0.15, label="claim: 'holds up' (<= 1.1x)")
    ax.axhline(1.1, color="tab:green", ls=":")
    ax.set_yscale("log")
    _published_point(ax, "C03", m, 0.5, " (OPT-125M)")
    ax.set_xlabel("sparsity")
    ax.set_ylabel("PPL / dense PPL")


def _c28(m: dict, d: dict, ax) -> None:
    xs = [(0.3, "rel_30"), (0.5, "rel_50"), (0.7, "rel_70")]
    ys = [m[k] for _, k in xs]
    lo = [m[k] - m.get(f"{k}_ci", [m[k]])[0] for _, k in xs]
    hi = [m.get(f"{k}_ci", [0, m[k]])[1] - m[k] for _, k in xs]
    ax.errorbar([x for x, _ in xs], ys, yerr=[lo, hi], fmt="o-", capsize=3, label="ours, best one-shot (95% CI)")
    ax.axhspan(0, 0.10, color="tab:green", alpha=0.12, label="'little' (< 10%)")
    ax.axhspan(0.10, 1.0, color="tab:orange", alpha=0.10, label="'some'")
    ax.axhline(1.0, color="tab:red", ls=":", label="'a lot' (>= 100%)")
    ax.set_yscale("symlog", linthresh=0.1)
    _published_point(ax, "C28", m, 0.5, " (OPT-125M)")
    ax.set_xlabel("sparsity")
    ax.set_ylabel("relative PPL increase")


def _c10(m: dict, d: dict, ax) -> None:
    for name in ("maxprob", "classifier"):
        pts = [(c, m.get(f"easy_saved_{name}_{c}pct")) for c in (1, 5, 10)]
        pts = [(c / 100, v) for c, v in pts if v is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"easy tokens, {name}")
    ax.axhspan(0.30, 0.60, color="tab:green", alpha=0.15, label="claim: 30-60% saved")
    _published_point(ax, "C10", m, 0.05, " (DeeBERT)")
    ax.set_xlabel("allowed relative PPL cost")
    ax.set_ylabel("share of blocks skipped")


def _c15(m: dict, d: dict, ax) -> None:
    bi = m["block_influence"]
    removed = set(m.get("removed", []))
    ax.bar(range(len(bi)), bi, color=["tab:red" if i in removed else "tab:blue" for i in range(len(bi))])
    ax.axvspan(len(bi) / 2 - 0.5, len(bi) - 0.5, color="tab:green", alpha=0.1, label="claim: late blocks (2nd half)")
    ax.set_yscale("log")
    ax.set_xlabel(f"block (red: removed; PPL ratio {m.get('ppl_ratio', float('nan')):.3g})")
    ax.set_ylabel("Block Influence (1 - cos)")


def _c20(m: dict, d: dict, ax) -> None:
    ys = {"RTN g64": m.get("rel_increase_rtn"), "GPTQ g64": m.get("rel_increase_gptq")}
    ax.bar(list(ys), [v or 0 for v in ys.values()], color=["tab:gray", "tab:blue"])
    ci = m.get("rel_increase_gptq_ci")
    if ci:
        ax.errorbar([1], [m["rel_increase_gptq"]], yerr=[[m["rel_increase_gptq"] - ci[0]], [ci[1] - m["rel_increase_gptq"]]],
                    fmt="none", color="k", capsize=4)
    ax.axhspan(0, 0.01, color="tab:green", alpha=0.3, label="claim: < 1%")
    b = beside("C20", m)
    if b and b.get("published"):
        for v, lab in zip(b["published"], ("OPT-125M", "OPT-175B")):
            if v is not None:
                ax.plot([1], [v], marker="*", ms=12, ls="", label=f"published GPTQ 4-bit, {lab}")
    ax.set_ylabel("relative PPL increase")


def _c23(m: dict, d: dict, ax) -> None:
    import numpy as np
    keys = ["qat", "rtn", "gptq", "ft+rtn", "ft+gptq"]
    for j, bits in enumerate((4, 3)):
        vals = [m.get(f"ppl_{k}_{bits}") for k in keys]
        xs = np.arange(len(keys)) + 0.4 * j
        ax.bar(xs, [v or 0 for v in vals], width=0.4, label=f"{bits}-bit")
    ax.axhline(m.get("ppl_dense", 0), color="k", ls=":", label="dense (dequantized Q4_1)")
    ax.set_xticks(np.arange(len(keys)) + 0.2, keys)
    ax.set_ylabel("PPL (lower is better)")


def _c35(m: dict, d: dict, ax) -> None:
    for key, lab in (("acc_oneshot_no_ft", "one-shot, no fine-tune"), ("acc_oneshot_ft", "one-shot + fine-tune"),
                     ("acc_gradual", "gradual")):
        ax.plot([0.7, 0.9], [m.get(f"{key}_70"), m.get(f"{key}_90")], "o-", label=lab)
    ci = m.get("gradual_minus_oneshot_90_ci")
    ax.axhline(m.get("acc_dense", 0), color="k", ls=":", label="dense")
    ax.set_xlabel("sparsity" + (f" (gradual - one-shot at 90%: CI [{ci[0]:+.3f}, {ci[1]:+.3f}])" if ci else ""))
    ax.set_ylabel("MNIST test accuracy")


FIGURES = {"C02": _c02, "C03": _c03, "C10": _c10, "C15": _c15, "C20": _c20, "C23": _c23, "C28": _c28, "C35": _c35}


def draw_sweep_figures(claims: dict, out_dir: str) -> list[str]:
    """Draw the figure of every row in ``FIGURES`` that has none (and measured numbers); set its ``figure``.
    Returns the claim ids drawn.  A row whose numbers do not fit (an old report) is skipped with a warning."""
    drawn = []
    for cid, fn in FIGURES.items():
        c = claims.get(cid)
        if c is None or c.get("figure") or not c.get("measured"):
            continue
        plt = _plt()
        fig, ax = plt.subplots(figsize=(5.5, 3.2))
        try:
            fn(c["measured"], c.get("details") or {}, ax)
            ax.set_title(f"{cid}: {c['verdict'].get('label', '')}", fontsize=8)
            ax.legend(fontsize=6)
            fig.tight_layout()
            d = os.path.join(out_dir, "figures")
            os.makedirs(d, exist_ok=True)
            fig.savefig(os.path.join(d, f"{cid.lower()}_sweep.png"), dpi=100)
            c["figure"] = f"figures/{cid.lower()}_sweep.png"
            drawn.append(cid)
        except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError) as e:
            warnings.warn(f"{cid}: no report figure ({type(e).__name__}: {e})", RuntimeWarning, stacklevel=2)
        finally:
            plt.close(fig)
    return drawn


def line_figure(ctx, name: str, xs: list, series: dict[str, list], xlabel: str, ylabel: str,
                logy: bool = False) -> str:
    """A small line plot of ``series`` over ``xs`` saved as the claim figure ``name``; returns its relative path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path, rel = ctx.figure_path(name)
    fig, ax = plt.subplots(figsize=(5, 3))
    for label, ys in series.items():
        ax.plot(xs, ys, "o-", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return rel
