"""The package's layering (docs/CONVENTIONS.md, "Layering"): core -> technique families -> compress_ ->
pipeline -> claims / CLI / grading.  A module may import only from its own layer or the layers below it;
this test parses every import of ``lessonlib`` with ``ast`` (lazy imports inside functions included) and
fails on one that points upwards."""
from __future__ import annotations

import ast
import pathlib

import lessonlib

ROOT = pathlib.Path(lessonlib.__file__).parent
FAMILIES = {"quant", "prune", "distill", "exit", "arch", "lowrank", "share", "coding", "sparsity", "lottery",
            "export"}
RANK = {"core": 0, "family": 1, "compress": 2, "pipeline": 3, "top": 4}
# Known upward imports, each with its reason; a new one fails the test.
ALLOWED = {
    ("lessonlib.models", "lessonlib.arch.reload"): "load_model reloads structurally pruned checkpoints (lazy import)",
}


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) < 2:
        return "core"
    head = parts[1]
    if head in FAMILIES:
        return "family"
    if head in ("compress", "roofline"):  # model-level: roofline builds packed models from the quant family
        return "compress"
    if head == "pipeline":
        return "pipeline"
    if head in ("claims", "cli", "grading", "__main__"):
        return "top"
    return "core"  # config, models, data, evaluate, calib, hessian, checks, atomic, technique, ...


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: pathlib.Path) -> list[str]:
    """Every ``lessonlib`` module that ``path`` imports, relative imports resolved."""
    mod = _module_name(path)
    pkg = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[:len(pkg) - node.level + 1]
                if node.module:
                    out.append(".".join(base + [node.module]))
                else:
                    out.extend(".".join(base + [a.name]) for a in node.names)
            elif node.module and node.module.split(".")[0] == "lessonlib":
                out.append(node.module)
        elif isinstance(node, ast.Import):
            out.extend(a.name for a in node.names if a.name.split(".")[0] == "lessonlib")
    return out


def upward_imports() -> list[tuple[str, str]]:
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        mod = _module_name(path)
        for target in imports_of(path):
            if RANK[layer(target)] > RANK[layer(mod)] and (mod, target) not in ALLOWED:
                bad.append((mod, target))
    return bad


def test_no_import_points_upwards():
    bad = upward_imports()
    assert not bad, "imports that break the layering (core -> families -> compress_ -> pipeline -> claims/CLI): " + \
        ", ".join(f"{a} imports {b}" for a, b in bad)


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    # a family module that imports the pipeline must be reported (the check can fail)
    fake = ROOT / "quant" / "rtn.py"
    src = fake.read_text(encoding="utf-8") + "\nfrom ..pipeline import compress  # noqa\n"
    monkeypatch.setattr(pathlib.Path, "read_text", lambda self, encoding=None: src if self == fake else
                        _read(self))
    assert ("lessonlib.quant.rtn", "lessonlib.pipeline") in upward_imports()
    assert layer("lessonlib.technique") == "core" and layer("lessonlib.compress") == "compress"


_orig_read = pathlib.Path.read_text


def _read(p: pathlib.Path) -> str:
    return _orig_read(p, encoding="utf-8")
