"""Compression recipes: an ordered list of stages, read from a dict or a YAML file and validated up front.

A recipe names its stages in the order they run::

    {"name": "cloud", "scenario": "cloud",
     "stages": [{"stage": "prune", "method": "wanda", "sparsity": 0.2},
                {"stage": "quantize", "method": "gptq", "bits": 4, "group_size": 64}]}

Every stage has a ``stage`` kind, a ``method`` and that method's parameters (defaults fill the rest).
Validation happens before any work: an unknown stage, method or parameter, a value outside its range, or
an order that cannot work (an architecture change after the weights were given a number format, two
number formats for the same weight, entropy coding of float weights) raises ``ValueError`` naming the
offending stage, the value, and what is allowed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

from ..checks import short

__all__ = ["Stage", "Recipe", "STAGES", "SCENARIOS", "ARCH_STAGES", "load_recipe", "validate_recipe",
           "parse_nm", "stage_pattern", "stage_config"]

SCENARIOS = ("cloud", "edge", "realtime", "mobile", "custom")
MAX_RECIPE_BYTES = 64 * 1024  # a recipe file is a few hundred bytes; anything larger is refused unread
MAX_RECIPE_NODES = 10_000  # YAML nodes after alias expansion ("billion laughs" stops here, before construction)


# ----------------------------------------------------------------------------- parameter checks
@dataclass(frozen=True)
class Param:
    default: Any
    check: Callable[[Any], bool]
    allowed: str  # in words, for the error message


def _int(lo: int, hi: int | None = None, default: Any = None, none_ok: bool = False) -> Param:
    def ok(v: Any) -> bool:
        if v is None:
            return none_ok
        return isinstance(v, int) and not isinstance(v, bool) and v >= lo and (hi is None or v <= hi)
    words = f"an int in {lo}..{hi}" if hi is not None else f"an int >= {lo}"
    return Param(default, ok, words + (" or null" if none_ok else ""))


def _float(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False, default: Any = None,
           none_ok: bool = False) -> Param:
    def ok(v: Any) -> bool:
        if v is None:
            return none_ok
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        return (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    words = f"a number in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    return Param(default, ok, words + (" or null" if none_ok else ""))


def _bool(default: bool) -> Param:
    return Param(default, lambda v: isinstance(v, bool), "true or false")


def _choice(default: Any, choices: tuple) -> Param:
    return Param(default, lambda v: v in choices, f"one of {list(choices)}")


def parse_nm(nm: str | None) -> tuple[int, int]:
    """``"2:4"`` -> (2, 4): keep 2 of every 4 consecutive weights (N kept of M); ``None``/``""`` -> (0, 0) (unstructured)."""
    if nm in (None, ""):
        return 0, 0
    parts = str(nm).split(":") if isinstance(nm, str) else []
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"nm={short(nm)} must look like 'N:M' (e.g. '2:4'), or be omitted")
    n, m = int(parts[0]), int(parts[1])
    if not 0 < n < m:
        raise ValueError(f"nm={nm!r}: need 0 < N < M")
    return n, m


def stage_pattern(params: dict):
    """The sparsity pattern a prune/joint stage asks for: ``NM(n, m)`` when it gives ``nm``, else
    ``Unstructured(sparsity)``."""
    from ..prune.masks import NM, Unstructured
    n, m = parse_nm(params.get("nm"))
    return NM(n, m) if n else Unstructured(params["sparsity"])


def stage_config(st: "Stage", profile=None, seed: int = 0):
    """The ``compress_`` config of a stage that applies one registered technique (quantize/*, prune/magnitude,
    wanda, sparsegpt, factorise/svd, share/cluster, joint/sparsegpt_quant), else None (structural stages,
    distillation, tying, entropy coding have their own code).  ``profile`` fills QAT's steps / lr / batch.
    A QAT stage with ``steps: 0`` is plain round-to-nearest (no training), so it parses into ``RTNConfig``."""
    from ..compress import (AWQConfig, ClusterConfig, GPTQConfig, MagnitudeConfig, QATConfig, QuantScheme,
                            RTNConfig, SparseGPTConfig, SVDConfig, WandaConfig)
    p, key = st.params, (st.stage, st.method)
    scheme = QuantScheme(p["bits"], p["group_size"], p["sym"]) if "bits" in p else None
    if key == ("quantize", "qat"):
        from ..config import get_profile
        prof = get_profile(profile)
        steps = prof.train_steps if p["steps"] is None else p["steps"]
        if steps == 0:
            return RTNConfig(scheme)
        return QATConfig(scheme, steps=steps, lr=p["lr"] or prof.lr, batch_size=prof.batch_size, optimizer="adam",
                         seed=seed)
    build = {("quantize", "rtn"): lambda: RTNConfig(scheme),
             ("quantize", "gptq"): lambda: GPTQConfig(scheme, act_order=p["act_order"]),
             ("quantize", "awq"): lambda: AWQConfig(scheme),
             ("prune", "magnitude"): lambda: MagnitudeConfig(stage_pattern(p)),
             ("prune", "wanda"): lambda: WandaConfig(stage_pattern(p)),
             ("prune", "sparsegpt"): lambda: SparseGPTConfig(stage_pattern(p)),
             ("factorise", "svd"): lambda: SVDConfig(energy=p["energy"], whitened=p["whitened"]),
             ("share", "cluster"): lambda: ClusterConfig(p["k"]),
             ("joint", "sparsegpt_quant"): lambda: SparseGPTConfig(stage_pattern(p), quant=scheme)}
    return build[key]() if key in build else None


def _nm_ok(v: Any) -> bool:
    try:
        parse_nm(v)
        return True
    except ValueError:
        return False


_NM = Param(None, _nm_ok, "'N:M' with 0 < N < M (e.g. '2:4') or null")
_SPARSITY = _float(0.0, 1.0, hi_open=True, default=0.5)
_BITS = _int(2, 8, default=4)
_GROUP = Param(64, lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= -1,
               "0 (per tensor), -1 (per output channel) or a positive group size")
_QUANT = {"bits": _BITS, "group_size": _GROUP, "sym": _bool(False), "embeddings": _bool(False)}
_STEPS = _int(0, default=None, none_ok=True)
_LR = _float(0.0, 1.0, lo_open=True, default=None, none_ok=True)

# stage -> method -> parameter -> Param
STAGES: dict[str, dict[str, dict[str, Param]]] = {
    "distill": {"layers": {"every": _int(1, default=None, none_ok=True),
                           "n_blocks": _int(1, default=None, none_ok=True),
                           "steps": _STEPS, "T": _float(0.0, 100.0, lo_open=True, default=2.0),
                           "alpha": _float(0.0, 1.0, default=0.0), "lr": _LR}},
    "quantize": {"rtn": dict(_QUANT), "gptq": {**_QUANT, "act_order": _bool(False)},
                 "awq": dict(_QUANT), "qat": {**_QUANT, "steps": _STEPS, "lr": _LR}},
    "prune": {"magnitude": {"sparsity": _SPARSITY, "nm": _NM}, "wanda": {"sparsity": _SPARSITY, "nm": _NM},
              "sparsegpt": {"sparsity": _SPARSITY, "nm": _NM},
              "heads": {"fraction": _float(0.0, 1.0, lo_open=True, hi_open=True, default=1 / 3),
                        "score": _choice("gradient", ("gradient", "entropy"))},
              "ffn": {"fraction": _float(0.0, 1.0, lo_open=True, hi_open=True, default=0.2),
                      "score": _choice("activation", ("activation", "weight", "taylor")),
                      "multiple_of": _int(1, default=64)},
              "depth": {"fraction": _float(0.0, 1.0, lo_open=True, hi_open=True, default=0.2)}},
    "factorise": {"svd": {"energy": _float(0.0, 1.0, lo_open=True, default=0.9), "whitened": _bool(True)}},
    "share": {"cluster": {"k": _int(2, 256, default=16)}, "tie": {"group_size": _int(2, default=2)}},
    "entropy-code": {"huffman": {}, "rans": {}},
    "joint": {"sparsegpt_quant": {"sparsity": _SPARSITY, "nm": _NM, "bits": _BITS, "group_size": _GROUP,
                                  "sym": _bool(False)}},
}

# stages that change the architecture (shapes / block count): they must run before any number format is set
ARCH_STAGES = {("distill", "layers"), ("prune", "heads"), ("prune", "ffn"), ("prune", "depth"),
               ("factorise", "svd"), ("share", "tie")}
_FORMAT_STAGES = {("quantize", m) for m in STAGES["quantize"]} | {("joint", "sparsegpt_quant"),
                                                                  ("share", "cluster")}


@dataclass(frozen=True)
class Stage:
    stage: str
    method: str
    params: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.stage}/{self.method}"

    def as_dict(self) -> dict:
        return {"stage": self.stage, "method": self.method, **self.params}


@dataclass(frozen=True)
class Recipe:
    name: str
    stages: tuple[Stage, ...]
    scenario: str = "custom"
    description: str = ""

    def as_dict(self) -> dict:
        return {"name": self.name, "scenario": self.scenario, "description": self.description,
                "stages": [s.as_dict() for s in self.stages]}


def _stage(i: int, raw: Any) -> Stage:
    where = f"stage {i}"
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: {short(raw)} must be a mapping with 'stage' and 'method' keys")
    raw = dict(raw)
    kind = raw.pop("stage", None)
    if kind not in STAGES:
        raise ValueError(f"{where}: unknown stage {short(kind)}; allowed {sorted(STAGES)}")
    methods = STAGES[kind]
    method = raw.pop("method", None)
    if method is None and len(methods) == 1:
        method = next(iter(methods))
    if method not in methods:
        raise ValueError(f"{where} ({kind}): unknown method {short(method)}; allowed {sorted(methods)}")
    spec = methods[method]
    unknown = sorted(set(raw) - set(spec))
    if unknown:
        raise ValueError(f"{where} ({kind}/{method}): unknown parameter(s) {short(unknown)}; allowed {sorted(spec)}")
    params = {}
    for name, p in spec.items():  # (no parameter may be called "stage" or "method": as_dict() would clash)
        v = raw.get(name, p.default)
        if not p.check(v):
            raise ValueError(f"{where} ({kind}/{method}): {name}={short(v)} is not allowed; use {p.allowed}")
        params[name] = v
    if kind == "distill" and params["every"] is not None and params["n_blocks"] is not None:
        raise ValueError(f"{where} (distill): give every= or n_blocks=, not both")
    return Stage(kind, method, params)


def _check_order(stages: list[Stage]) -> None:
    fmt_at = None
    for i, s in enumerate(stages):
        key = (s.stage, s.method)
        if key in ARCH_STAGES and fmt_at is not None:
            raise ValueError(f"stage {i} ({s.label}) changes the architecture, so it must come before stage "
                             f"{fmt_at} ({stages[fmt_at].label}) which fixed the weights' number format")
        if key in _FORMAT_STAGES:
            if fmt_at is not None:
                raise ValueError(f"stage {i} ({s.label}): the weights already got a number format at stage "
                                 f"{fmt_at} ({stages[fmt_at].label}); a recipe allows one quantize/joint/cluster "
                                 "stage")
            fmt_at = i
        if s.stage == "entropy-code":
            if i != len(stages) - 1:
                raise ValueError(f"stage {i} (entropy-code) must be the last stage; it encodes the final codes")
            if fmt_at is None:
                raise ValueError(f"stage {i} (entropy-code) needs integer codes: put a quantize, joint or "
                                 "share/cluster stage before it")


def validate_recipe(recipe: dict | list | Recipe) -> Recipe:
    """A checked ``Recipe`` from a dict ``{"name", "scenario", "description", "stages": [...]}`` or a bare list
    of stage dicts.  Raises ``ValueError`` naming the bad stage, value and what is allowed."""
    if isinstance(recipe, Recipe):
        recipe = recipe.as_dict()
    if isinstance(recipe, list):
        recipe = {"name": "custom", "stages": recipe}
    if not isinstance(recipe, dict):
        raise ValueError(f"a recipe must be a dict with a 'stages' list (or a list of stages), got "
                         f"{type(recipe).__name__}")
    extra = sorted(set(recipe) - {"name", "scenario", "description", "stages"})
    if extra:
        raise ValueError(f"unknown recipe key(s) {short(extra)}; allowed ['description', 'name', 'scenario', 'stages']")
    stages = recipe.get("stages")
    if not isinstance(stages, list) or not stages:
        raise ValueError(f"'stages' must be a non-empty list, got {short(stages)}")
    scenario = recipe.get("scenario", "custom")
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario={short(scenario)} is not allowed; use one of {list(SCENARIOS)}")
    parsed = [_stage(i, s) for i, s in enumerate(stages)]
    _check_order(parsed)
    name, desc = recipe.get("name", "custom"), recipe.get("description", "")
    for key, v in (("name", name), ("description", desc)):
        if not isinstance(v, (str, int, float)) or len(str(v)) > 1000:
            raise ValueError(f"recipe {key}={short(v)} must be a string of at most 1000 characters")
    return Recipe(str(name), tuple(parsed), scenario, str(desc))


def recipes_dir() -> str:
    """The folder of the shipped scenario recipes (``lessonlib/pipeline/recipes/``, installed as package data)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "recipes")


def load_recipe(source: str | dict | list | Recipe) -> Recipe:
    """A validated recipe from a dict/list, a YAML file path, or a shipped scenario name (``"cloud"``...)."""
    if isinstance(source, (dict, list, Recipe)):
        return validate_recipe(source)
    if not isinstance(source, str):
        raise ValueError(f"recipe source must be a dict, list, YAML path or scenario name, got {type(source).__name__}")
    path = source
    if not os.path.exists(path):
        shipped = os.path.join(recipes_dir(), f"{source}.yaml")
        if not os.path.exists(shipped):
            raise ValueError(f"recipe {short(source)} is neither a file nor a shipped recipe; shipped: "
                             f"{sorted(f[:-5] for f in os.listdir(recipes_dir()) if f.endswith('.yaml'))}")
        path = shipped
    data = read_yaml(path)
    try:
        return validate_recipe(data)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def _expanded_size(node, memo: dict[int, int], limit: int) -> int:
    """Number of YAML nodes once every alias is expanded (memoised per node, so the walk stays small)."""
    key = id(node)
    if key in memo:
        if memo[key] < 0:
            raise ValueError("recursive YAML alias (a node that contains itself)")
        return memo[key]
    memo[key] = -1
    value = node.value
    children = []
    if isinstance(value, list):
        for item in value:
            children.extend(item if isinstance(item, tuple) else (item,))
    total = 1
    for c in children:
        total += _expanded_size(c, memo, limit)
        if total > limit:
            break
    memo[key] = total
    return total


def read_yaml(path: str, max_bytes: int = MAX_RECIPE_BYTES, max_nodes: int = MAX_RECIPE_NODES) -> Any:
    """Safely parse a small YAML file: at most ``max_bytes`` bytes and ``max_nodes`` nodes after alias expansion.

    A size or alias bomb raises ``ValueError`` naming the file before any large object is built; so does a
    file that is not valid YAML or not UTF-8.
    """
    import yaml

    try:
        size = os.path.getsize(path)
        if size > max_bytes:
            raise ValueError(f"{path}: recipe file of {size} bytes is larger than the limit of {max_bytes} bytes")
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)
    except OSError as e:
        raise ValueError(f"{path}: cannot read the recipe file ({e.strerror or e})") from e
    if len(raw) > max_bytes:
        raise ValueError(f"{path}: recipe file is larger than the limit of {max_bytes} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: a recipe must be UTF-8 text ({e.reason} at byte {e.start})") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        n = _expanded_size(node, {}, max_nodes)
        if n > max_nodes:
            raise ValueError(f"{path}: the recipe expands to more than {max_nodes} YAML nodes (nested aliases?); "
                             "refusing to build it")
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {short(str(e), 300)}") from None
    finally:
        loader.dispose()
