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


def _tiny_case(monkeypatch):
    tiny = ("tune", dict(n_samples=400, n_features=6, n_informative=4, n_redundant=0, n_classes=3,
                         n_clusters_per_class=1, class_sep=1.5), 1, 1.0)
    monkeypatch.setitem(retrain_auto.TABLES, "tiny", tiny)
    case = retrain_auto.Case("tiny", "sym60", 0)
    case._flags = (None, {"classes": [0, 1, 2], "class_prior": [0.2, 0.3, 0.5]})  # no flag run needed
    return case


def test_dividemix_is_deterministic_on_cpu_given_the_seed(monkeypatch):
    import json
    case = _tiny_case(monkeypatch)
    first = retrain_auto._dividemix(case, epochs=4, warmup=1)
    again = retrain_auto._dividemix(case, epochs=4, warmup=1)
    assert first == again
    record = json.loads(first[1]["choice"])
    assert [d["net"] for d in record["last_division"]] == [0, 1]  # each network trained on a division
    assert all(0 <= d["labelled_share"] <= 1 for d in record["last_division"])
    other = retrain_auto._dividemix(case, epochs=4, warmup=1, balanced=True)
    assert json.loads(other[1]["choice"])["settings"]["balanced"] is True


def test_sharpen_known_answer():
    import torch
    p = torch.tensor([[0.5, 0.25, 0.25], [1 / 3, 1 / 3, 1 / 3]])
    out = retrain_auto._sharpen(p, 0.5)  # squares, renormalised
    assert torch.allclose(out[0], torch.tensor([4 / 6, 1 / 6, 1 / 6]))
    assert torch.allclose(out[1], p[1])


def test_dividemix_diagnostics_refuse_held_out_tables():
    import pytest
    case = retrain_auto.Case.__new__(retrain_auto.Case)
    case.table = "k3 4-cluster cat"
    with pytest.raises(SystemExit):
        retrain_auto.run_row(case, "dividemix, full-length epochs")
