"""The reproduction ledger: one experiment per quoted claim, a verdict computed by an explicit rule.

A track registers an experiment for a claim id of the catalog::

    @experiment("C20")
    def c20(ctx: Context) -> Outcome: ...

``lessonlib reproduce`` (see ``runner``) runs them, caches outcomes by configuration, and writes
``reports/claims.md`` and ``reports/claims.json``.
"""
from __future__ import annotations

import copy
import importlib
import os
import pkgutil
from dataclasses import dataclass, field
from typing import Callable

from ..config import Profile, get_profile
from . import rules
from .catalog import CATALOG, ClaimInfo
from .rules import Verdict

__all__ = ["CATALOG", "ClaimInfo", "Outcome", "Context", "experiment", "registry", "rules", "Verdict"]


@dataclass
class Outcome:
    measured: dict  # JSON-able numbers (and short strings / lists) that the verdict was computed from
    verdict: Verdict
    summary: str  # one or two sentences: what we ran and what came out
    figure: str | None = None  # path of a figure, relative to the report folder
    seconds: float = 0.0
    details: dict = field(default_factory=dict)  # larger tables (sweeps) for the JSON report


_REGISTRY: dict[str, Callable[["Context"], Outcome]] = {}


def experiment(claim_id: str):
    """Register the experiment of ``claim_id`` (must be in the catalog; one experiment per claim)."""
    if claim_id not in CATALOG:
        raise ValueError(f"unknown claim id {claim_id!r}; the catalog has {CATALOG.keys().__len__()} ids C01-C41")

    def deco(fn: Callable[["Context"], Outcome]):
        if claim_id in _REGISTRY and _REGISTRY[claim_id] is not fn \
                and _REGISTRY[claim_id].__qualname__ != fn.__qualname__:
            raise ValueError(f"claim {claim_id} already has an experiment: {_REGISTRY[claim_id].__module__}")
        _REGISTRY[claim_id] = fn
        return fn
    return deco


def registry() -> dict[str, Callable[["Context"], Outcome]]:
    """Every registered experiment, after importing all ``lessonlib.claims.exp_*`` modules."""
    for mod in pkgutil.iter_modules(__path__):
        if mod.name.startswith("exp_"):
            importlib.import_module(f"{__name__}.{mod.name}")
    return dict(sorted(_REGISTRY.items()))


class Context:
    """What an experiment gets: the profile, the models (loaded once, handed out as fresh copies), a figure folder."""

    def __init__(self, profile: str | Profile | None = None, out_dir: str = "reports"):
        self.profile = get_profile(profile)
        self.out_dir = out_dir
        self._models: dict[str, tuple] = {}
        self._memo: dict[str, object] = {}

    def model(self, name: str = "smollm2-135m"):
        """A fresh, independent copy of a causal LM and its tokenizer: ``(model, tokenizer)``."""
        from ..models import load_model
        if name not in self._models:
            self._models[name] = load_model(name, device=self.profile.device)
        m, tok = self._models[name]
        return copy.deepcopy(m), tok

    def encoder(self, name: str = "minilm-l6", **kw):
        from ..models import load_encoder
        return load_encoder(name, device=self.profile.device, **kw)

    def memo(self, key: str, fn: Callable[[], object]):
        """Compute a shared quantity once per run (e.g. the dense perplexity every claim compares with)."""
        if key not in self._memo:
            self._memo[key] = fn()
        return self._memo[key]

    def dense_eval(self):
        """``PerplexityResult`` of the uncompressed embedded model on the held-out speeches, profile sizes (its
        ``window_nlls`` pair with any other model's on the same windows, for bootstrap intervals)."""
        from ..evaluate import perplexity

        def run():
            m, tok = self.model()
            return perplexity(m, tok, profile=self.profile)
        return self.memo("dense_eval", run)

    def dense_ppl(self) -> float:
        """Perplexity of the uncompressed embedded model on the held-out speeches, profile sizes."""
        return self.dense_eval().ppl

    def figure_path(self, name: str) -> tuple[str, str]:
        """``(absolute path to save to, path relative to the report)`` for a figure file name."""
        if os.sep in name or not name.endswith((".png", ".svg")):
            raise ValueError(f"figure name {name!r} must be a bare file name ending in .png or .svg")
        d = os.path.join(self.out_dir, "figures")
        os.makedirs(d, exist_ok=True)
        return os.path.join(d, name), f"figures/{name}"
