"""benchmarks/retrain_auto.py: ``--write`` carries the second round's tables over (its cache is gone)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import retrain_auto  # noqa: E402


def _results(tmp_path, body: str) -> Path:
    path = tmp_path / "RESULTS.md"
    path.write_text(f"# Benchmark results\n\n## {retrain_auto.SECTION}\n\n{body}\n## Next section\n\ntext\n")
    return path


def test_previous_tables_are_taken_once_and_then_kept_as_they_are(tmp_path, monkeypatch):
    old = "prose of round two\n\n### Tuning tables: gap\n\n| a |\n| --- |\n| 1 |\n\n### Held-out tables: gap\n\n| b |\n"
    path = _results(tmp_path, old)
    monkeypatch.setattr(retrain_auto, "RESULTS_MD", path)
    first = retrain_auto._previous_tables()
    assert first.splitlines()[0] == retrain_auto.PREVIOUS_TABLES
    assert "#### Tuning tables: gap" in first and "#### Held-out tables: gap" in first and "| 1 |" in first
    assert "prose of round two" not in first and "Next section" not in first
    # after a --write the section holds new tables, then the block: the block comes back unchanged
    _results(tmp_path, f"new prose\n\n### Tuning tables: gap\n\n| new |\n\n{first}\n")
    assert retrain_auto._previous_tables() == first


def test_no_section_or_no_tables_gives_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(retrain_auto, "RESULTS_MD", tmp_path / "missing.md")
    assert retrain_auto._previous_tables() == ""
    monkeypatch.setattr(retrain_auto, "RESULTS_MD", _results(tmp_path, "only prose\n"))
    assert retrain_auto._previous_tables() == ""
