import pytest

from lessonlib.config import PROFILES, get_profile


def test_profiles_scale_up():
    ci, lap, gpu = PROFILES["ci"], PROFILES["laptop"], PROFILES["gpu"]
    assert ci.seqlen < lap.seqlen < gpu.seqlen
    assert ci.calib_samples < lap.calib_samples < gpu.calib_samples
    assert gpu.calib_seqlen == 2048 and gpu.calib_samples == 128  # the published GPTQ protocol


def test_env_selects_profile(monkeypatch):
    monkeypatch.setenv("LESSONLIB_PROFILE", "laptop")
    assert get_profile().name == "laptop"
    assert get_profile("gpu").name == "gpu"


def test_unknown_profile_names_choices(monkeypatch):
    monkeypatch.setenv("LESSONLIB_PROFILE", "huge")
    with pytest.raises(ValueError, match=r"'huge'.*ci.*gpu.*lab.*laptop"):
        get_profile()


def test_with_changes_one_field():
    p = PROFILES["ci"].with_(seqlen=64)
    assert p.seqlen == 64 and p.calib_samples == PROFILES["ci"].calib_samples


def test_chapters_default_to_lab_and_the_ledger_to_laptop(monkeypatch):
    monkeypatch.delenv("LESSONLIB_PROFILE", raising=False)
    assert get_profile().name == "lab"
    assert get_profile(default="laptop").name == "laptop"
    lab, lap = PROFILES["lab"], PROFILES["laptop"]
    assert lab.eval_windows * lab.seqlen < lap.eval_windows * lap.seqlen  # chapters run a smaller live version
    assert lab.train_steps < lap.train_steps


def test_no_module_branches_on_a_profile_name():
    """Sizes come from profile fields: comparing ``<x>.name`` with a profile's name ("ci", "lab", ...) is refused."""
    import ast
    import pathlib
    from lessonlib.config import PROFILES
    root = pathlib.Path(__file__).resolve().parents[1] / "lessonlib"
    bad = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and isinstance(node.left, ast.Attribute) and node.left.attr == "name":
                names = [c.value for c in node.comparators if isinstance(c, ast.Constant)]
                if any(n in PROFILES for n in names):
                    bad.append(f"{path.relative_to(root.parent)}:{node.lineno}")
    assert bad == [], "read a profile field instead of the profile's name: " + ", ".join(bad)
