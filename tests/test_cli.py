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
