"""benchmarks.summary: every target of the result files, PASS/FAIL/SKIP, and the files without targets."""

import json

import pytest

from benchmarks import summary


def _write(path, data):
    path.write_text(json.dumps(data))


def test_summary_lists_every_target_with_its_verdict(tmp_path):
    _write(
        tmp_path / "a.json",
        {
            "commit": "0123456789abcdef",
            "targets": [
                {"name": "speed, rows/s", "value": 300000.0, "target": ">= 250000 rows/s", "pass": True},
                {"name": "memory, GB", "value": 17.5, "target": "<= 16 GB", "pass": False},
                {"name": "torch side", "value": None, "target": ">= 3x", "pass": None, "note": "torch absent"},
            ],
        },
    )
    _write(tmp_path / "b.json", {"rows": 5})
    _write(tmp_path / "summary.json", {"targets": [{"name": "stale", "pass": False}]})  # its own output: skipped
    rows, untargeted = summary.collect(tmp_path)
    assert [(r["name"], r["verdict"]) for r in rows] == [
        ("speed, rows/s", "PASS"),
        ("memory, GB", "FAIL"),
        ("torch side", "SKIP"),
    ]
    assert rows[0]["commit"] == "01234567" and untargeted == ["b.json"]
    text = summary.markdown(rows, untargeted)
    assert "1 PASS, 1 FAIL, 1 skipped" in text
    assert "| FAIL | memory, GB | 17.5 | <= 16 GB | a.json |" in text
    assert "300,000" in text and "torch absent" in text and "Measured, no target: b.json." in text


def test_summary_names_the_file_of_a_malformed_target(tmp_path):
    _write(tmp_path / "bad.json", {"targets": [{"value": 1.0}]})
    with pytest.raises(SystemExit, match=r"bad.json: targets\[0\] needs the keys 'name' and 'pass'"):
        summary.collect(tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SystemExit, match="bad.json: not a readable JSON result"):
        summary.collect(tmp_path)
