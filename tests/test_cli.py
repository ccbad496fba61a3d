import subprocess
import sys

import pytest

from lessonlib.cli import main


def test_info_lists_profiles(capsys):
    assert main(["info"]) == 0
    assert "laptop" in capsys.readouterr().out


def test_reproduce_only_writes_report(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LESSONLIB_CACHE", str(tmp_path / "c"))
    assert main(["reproduce", "--profile", "ci", "--only", "C41", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "C41:" in out and ("not measurable here" in out or "holds" in out or "does not hold" in out)
    assert (tmp_path / "claims.md").exists()


def test_console_script_entry_point():
    r = subprocess.run([sys.executable, "-m", "lessonlib.cli", "info"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "active profile" in r.stdout


def test_bad_profile_is_reported(capsys):
    assert main(["reproduce", "--profile", "tiny", "--only", "C40"]) == 2  # refused before anything runs
    assert "'tiny'" in capsys.readouterr().err


def test_compress_gptq_on_the_tiny_model_reports_the_packed_bytes(tmp_path, capsys):
    import json

    from lessonlib.models import linear_modules, tiny_causal_lm
    from lessonlib.quant import QuantScheme
    from lessonlib.quant.qlinear import quant_layer_bytes
    out = tmp_path / "gptq"
    rc = main(["compress", "--method", "gptq", "--bits", "4", "--group-size", "32", "--model", "tiny-llama",
               "--profile", "ci", "--out", str(out)])
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["configs"][0].startswith("GPTQConfig(scheme=QuantScheme(bits=4, group_size=32")
    dense, final = rep["rows"]
    assert (dense["label"], final["label"]) == ("dense", "quantize/gptq")
    want = sum(quant_layer_bytes(*m.weight.shape, QuantScheme(4, 32))["total"]
               for m in linear_modules(tiny_causal_lm("llama")).values())  # every block linear, packed
    assert final["by_format"]["quant"] == want
    assert final["bytes"] == dense["bytes"] - 2 * sum(m.weight.numel() for m in linear_modules(tiny_causal_lm("llama")).values()) + want
    assert 1 <= final["ppl"] < 1e4 and 0 <= final["accuracy"] <= 1
    assert "cli-gptq" in capsys.readouterr().out and (out / "report.md").exists()


def test_compress_wanda_2_of_4_without_evaluation(tmp_path):
    import json
    rc = main(["compress", "--method", "wanda", "--nm", "2:4", "--no-eval", "--model", "tiny-llama",
               "--profile", "ci", "--out", str(tmp_path)])
    assert rc == 0
    final = json.loads((tmp_path / "report.json").read_text())["rows"][-1]
    assert final["ppl"] is None and any(k.startswith("float+") for k in final["by_format"])


@pytest.mark.parametrize("argv,msg", [
    (["--method", "nope"], "not a recipe method"),
    (["--method", "gptq", "--recipe", "cloud"], "either --method"),
    (["--recipe", "cloud", "--bits", "4"], "drop ['--bits']"),
    (["--method", "gptq", "--bits", "9"], "bits"),
    ([], "either --method"),
])
def test_compress_refuses_bad_arguments_before_loading_a_model(argv, msg, tmp_path, capsys):
    assert main(["compress", *argv, "--model", "tiny-llama", "--out", str(tmp_path / "x")]) == 2
    assert msg in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
