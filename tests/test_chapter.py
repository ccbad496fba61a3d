import json

import pytest

from lessonlib import chapter


def test_ledger_reads_the_committed_report():
    row = chapter.ledger("C20")
    assert row["verdict"]["label"] == chapter.ledger_verdict("C20")
    key = next(iter(row["measured"]))
    assert chapter.ledger_value("C20", key) == row["measured"][key]
    with pytest.raises(KeyError, match="C99"):
        chapter.ledger("C99")
    with pytest.raises(KeyError, match="nope"):
        chapter.ledger_value("C20", "nope")


def test_published_entries_carry_their_source():
    for key in ("gptq_opt", "sparsegpt_opt", "wanda_speed", "awq", "hinton_kd"):
        e = chapter.published(key)
        assert e["paper"] and e["tag"] in {"P", "R", "S"}
    assert "2210.17323" in chapter.cite("gptq_opt")
    g = chapter.published("gptq_opt")
    assert len(g["models"]) == len(g["fp16"]) == len(g["gptq4"])
    with pytest.raises(KeyError, match="choose one of"):
        chapter.published("nope")


def test_runtime_note(tmp_path):
    p = tmp_path / "t.json"
    assert "not measured" in chapter.runtime_note("03_gptq", str(p))
    p.write_text(json.dumps({"machine": "2 cores", "profiles": {"ci": {"03_gptq": {"seconds": 90.0}},
                                                                  "lab": {"03_gptq": {"seconds": 240.0}}}}))
    note = chapter.runtime_note("03_gptq", str(p))
    assert "`ci` 1.5 min" in note and "`lab` 4.0 min" in note
    # a row measured on a shared machine (one thread) stands for its kernel's CPU time, and says so
    p.write_text(json.dumps({"profiles": {"lab": {"03_gptq": {"seconds": 600.0, "cpu_seconds": 150.0,
                                                              "contended": True}}}}))
    assert "`lab` 2.5 min of CPU" in chapter.runtime_note("03_gptq", str(p))
