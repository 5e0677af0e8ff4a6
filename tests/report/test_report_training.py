"""The report's optional Training section: ``build_report(training=...)`` and ``--training MODEL_DIR``."""

from __future__ import annotations

import base64
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from cleanpipe.cli import cli
from cleanpipe.errors import InputError
from cleanpipe.report import build_report, read_training, summary_path_for, write_report
from cleanpipe.report.charts import noise_model_chart, training_curve_chart

SCRIPT = "<script>alert(1)</script>"
TRAINING_CHARTS = ("chart-training-curves", "chart-noise-model")


@pytest.fixture(autouse=True)
def _stub_flag_charts(monkeypatch):
    """The four charts of the flag run are another module's business; drawing them costs a second
    a report. A tiny SVG stands in for each, and the Training charts stay real."""
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'
    for name in ("loss_mixture_chart", "noise_matrix_chart", "per_class_chart", "score_chart"):
        monkeypatch.setattr(f"cleanpipe.report.charts.{name}", lambda *a, **k: svg)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def write_flags(result, directory: Path) -> Path:
    path = directory / "data.flags.parquet"
    pq.write_table(result.table, path)
    summary_path_for(path).write_text(json.dumps(result.summary))
    return path


def write_model_dir(metrics, directory: Path) -> Path:
    """A model directory as ``cleanpipe retrain`` leaves it, as far as the report reads it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "metrics.json").write_text(json.dumps(metrics))
    return directory


def chart_svg(page: str, chart_id: str) -> str | None:
    found = re.search(rf'<img id="{chart_id}"[^>]* src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"', page)
    return base64.b64decode(found.group(1)).decode("utf-8") if found else None


def training_section(page: str) -> str:
    return page.split('<section id="training">', 1)[1].split("</section>", 1)[0]


def facts(page: str) -> dict:
    table = page.split('id="training-settings"', 1)[1].split("</table>", 1)[0]
    return dict(re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td></tr>", table))


def test_section_with_both_charts_and_the_run_table(flagged, make_training_metrics, tmp_path):
    model = write_model_dir(make_training_metrics(), tmp_path / "model")
    page = build_report(flagged.table, flagged.summary, training=model)
    section = training_section(page)
    for chart in TRAINING_CHARTS:
        assert ET.fromstring(chart_svg(section, chart)).tag.endswith("svg"), chart
    # Before Run details, in the page and in the table of contents.
    assert page.index('<section id="training">') < page.index('<section id="run">')
    toc = page.split('<nav class="toc">', 1)[1].split("</nav>", 1)[0]
    assert toc.index('href="#training"') < toc.index('href="#run"')
    assert str(model / "metrics.json") in section
    assert facts(page) == {"loss": "dynamic-hard", "noisy_weight": "online", "mixup": "1", "warmup": "3",
                           "prior_reg": "0.5", "device": "cpu", "samples/s": "81,234", "epochs run": "12",
                           "best epoch": "9", "val accuracy (best epoch)": "90.56%"}
    # The mixture fit after epoch 5 did not converge, and the page says so.
    assert "did not converge after epoch(s) 5;" in section
    # Self-contained still: the new images are data: URIs, and there is no script.
    assert "<script" not in page.lower()
    assert all(src.startswith("data:image/svg+xml;base64,") for src in re.findall(r'src="([^"]+)"', page))


def test_model_dir_metrics_path_and_dict_give_the_same_section(flagged, make_training_metrics, tmp_path):
    metrics = make_training_metrics()
    model = write_model_dir(metrics, tmp_path / "model")
    from_dir = training_section(build_report(flagged.table, flagged.summary, training=model))
    from_file = training_section(build_report(flagged.table, flagged.summary,
                                              training=str(model / "metrics.json")))
    from_dict = training_section(build_report(flagged.table, flagged.summary, training=metrics))
    assert from_dir == from_file
    # The dict has no file to name; everything else is the same.
    assert from_dict == from_dir.replace(f" (from {model / 'metrics.json'})", "")


def test_no_training_section_without_training(report_html, flagged):
    assert 'id="training"' not in report_html and 'href="#training"' not in report_html
    assert all(chart_svg(report_html, c) is None for c in TRAINING_CHARTS)
    assert build_report(flagged.table, flagged.summary, training=None).count("<img ") == 4


@pytest.mark.parametrize("noise_model", [[], None, "absent"])
def test_noise_chart_absent_without_a_noise_model(noise_model, flagged, make_training_metrics):
    metrics = make_training_metrics(noise_model=False)
    if noise_model != "absent":
        metrics["noise_model"] = noise_model
    page = build_report(flagged.table, flagged.summary, training=metrics)
    section = training_section(page)
    assert chart_svg(section, "chart-training-curves") is not None
    assert chart_svg(section, "chart-noise-model") is None and "Online noise model" not in section


def test_older_and_partial_metrics_render(flagged, make_training_metrics):
    # No AUROC (no p_noisy column), no validation split, NaN written by an older json.dumps.
    metrics = make_training_metrics(auroc=False)
    metrics["curve"]["val_loss"] = [None] * 12
    metrics["curve"]["val_accuracy"] = [None] * 12
    metrics["curve"]["train_loss"][3] = float("nan")
    del metrics["val_accuracy"], metrics["settings"]["prior_reg"]
    text = json.dumps(metrics)
    assert "NaN" in text
    section = training_section(build_report(flagged.table, flagged.summary, training=json.loads(text)))
    assert all(chart_svg(section, c) is not None for c in TRAINING_CHARTS)
    assert "prior_reg" not in facts(section) and "val accuracy (best epoch)" not in facts(section)
    # Only the noise model: no curve chart, a note instead.
    section = training_section(build_report(flagged.table, flagged.summary,
                                            training={"noise_model": make_training_metrics()["noise_model"]}))
    assert chart_svg(section, "chart-training-curves") is None and "recorded no per-epoch curve" in section
    assert chart_svg(section, "chart-noise-model") is not None


def test_values_from_the_metrics_are_escaped(flagged, make_training_metrics, tmp_path):
    metrics = make_training_metrics()
    metrics["settings"]["loss"] = SCRIPT
    metrics["device"] = SCRIPT
    model = write_model_dir(metrics, tmp_path / SCRIPT.replace("/", "_"))
    page = build_report(flagged.table, flagged.summary, training=model)
    assert SCRIPT.replace("/", "_") not in page and SCRIPT not in page
    assert facts(page)["loss"] == "&lt;script&gt;alert(1)&lt;/script&gt;"


def test_charts_accept_edge_cases():
    for svg in (training_curve_chart([0.5], [None], [None], best_epoch=1),
                training_curve_chart([], [0.4, 0.3], [0.8, 0.9]),
                noise_model_chart([4], [None], [None]),
                noise_model_chart([3, 4, 5], [0.1, 0.2, 0.2], [0.6, None, 0.7], best_epoch=1, flag_rate=0.12,
                                  converged=[True, False, None], n_epochs=9)):
        assert ET.fromstring(svg).tag.endswith("svg")


def test_the_charts_are_reproducible(make_training_metrics, flagged):
    metrics = make_training_metrics()
    first = build_report(flagged.table, flagged.summary, training=metrics)
    again = build_report(flagged.table, flagged.summary, training=metrics)
    assert all(chart_svg(first, c) == chart_svg(again, c) for c in TRAINING_CHARTS)


def test_cli_training_option(flagged, make_training_metrics, tmp_path):
    path = write_flags(flagged, tmp_path)
    model = write_model_dir(make_training_metrics(), tmp_path / "model")
    # Into the model directory itself: only metrics.json there is an input.
    out = model / "report.html"
    res = run("report", path, "--training", model, "--out", out)
    assert res.exit_code == 0, res.output
    page = out.read_text(encoding="utf-8")
    assert all(chart_svg(training_section(page), c) is not None for c in TRAINING_CHARTS)
    res = run("report", path, "--training", model / "metrics.json", "--out", tmp_path / "r.html", "-q")
    assert res.exit_code == 0 and res.stdout == ""
    assert 'id="training"' in (tmp_path / "r.html").read_text(encoding="utf-8")
    res = run("report", path, "--out", tmp_path / "plain.html")
    assert res.exit_code == 0 and 'id="training"' not in (tmp_path / "plain.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("case", ["missing", "no metrics.json", "invalid JSON", "not an object",
                                  "a flag summary", "wrong type", "not UTF-8", "out is metrics.json"])
def test_cli_bad_training_exits_2_with_one_line_and_writes_nothing(case, flagged, tmp_path):
    path = write_flags(flagged, tmp_path)
    model = tmp_path / "model"
    model.mkdir()
    metrics = model / "metrics.json"
    training, out = model, tmp_path / "r.html"
    expected = {"missing": "does not exist", "no metrics.json": "has no metrics.json",
                "invalid JSON": "is not valid JSON", "not an object": "is a JSON list, not an object",
                "a flag summary": "has none of the keys epochs, curve, noise_model",
                "wrong type": "'curve.train_loss' should be a list of numbers or nulls",
                "not UTF-8": "cannot be read (UnicodeDecodeError)",
                "out is metrics.json": "would overwrite the input"}[case]
    if case == "missing":
        training = tmp_path / "nope"
    elif case == "invalid JSON":
        metrics.write_text('{"epochs": 3,')
    elif case == "not an object":
        metrics.write_text("[1, 2]")
    elif case == "a flag summary":
        training = summary_path_for(path)
    elif case == "wrong type":
        metrics.write_text(json.dumps({"epochs": 3, "curve": {"train_loss": "0.1, 0.2"}}))
    elif case == "not UTF-8":
        metrics.write_bytes(b'{"epochs": "\xff"}')
    elif case == "out is metrics.json":
        metrics.write_text(json.dumps({"epochs": 3}))
        training, out = metrics, metrics
    res = run("report", path, "--training", training, "--out", out)
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
    if case != "out is metrics.json":
        assert str(training) in lines[0] or str(metrics) in lines[0]
        assert "cleanpipe retrain" in lines[0]  # the fix
        assert not out.exists()
    else:
        assert json.loads(metrics.read_text()) == {"epochs": 3}


def test_api_bad_training_raises_input_error_before_writing(flagged, tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        write_report(flagged.table, tmp_path / "r.html", summary=flagged.summary, training=tmp_path / "x")
    with pytest.raises(InputError, match=r"'noise_model\[0\]' should be"):
        build_report(flagged.table, flagged.summary, training={"noise_model": [{"noisy_share": 0.2}]})
    assert not (tmp_path / "r.html").exists()
    assert read_training(write_model_dir({"epochs": 1}, tmp_path / "m")).noise_model == []


def test_a_real_retrain_run(flagged, tmp_path):
    """metrics.json from ``retrain_table`` with the online noise model, through ``cleanpipe report``."""
    pytest.importorskip("torch")
    from cleanpipe.train import TrainConfig, retrain_table, save_model_dir
    result = retrain_table(flagged.table, label="label", ids=["row_id"], loss="dynamic-hard",
                           noisy_weight="online", warmup=2,
                           config=TrainConfig(epochs=5, hidden=(16,), batch_size=32, threads=1))
    save_model_dir(tmp_path / "model", result.state_dict, result.spec, result.metrics)
    path = write_flags(flagged, tmp_path)
    res = run("report", path, "--training", tmp_path / "model", "--out", tmp_path / "r.html")
    assert res.exit_code == 0, res.output
    section = training_section((tmp_path / "r.html").read_text(encoding="utf-8"))
    assert result.metrics["noise_model"], "retrain --noisy-weight online wrote no noise_model"
    assert all(chart_svg(section, c) is not None for c in TRAINING_CHARTS)
    shown = facts(section)
    assert shown["loss"] == "dynamic-hard" and shown["warmup"] == "2" and shown["device"] == "cpu"
    assert shown["best epoch"] == str(result.metrics["best_epoch"])


def test_the_run_table_says_what_auto_chose_and_why(flagged, make_training_metrics, tmp_path):
    import html

    from cleanpipe.auto import NoiseEstimate, choose_training
    metrics = make_training_metrics()
    choice = choose_training(NoiseEstimate(0.62, 0.03, 5))
    metrics["settings"]["loss_choice"] = choice.record
    page = build_report(flagged.table, flagged.summary, training=write_model_dir(metrics, tmp_path / "m"))
    shown = facts(page)
    assert list(shown)[:2] == ["loss", "why this loss (auto)"]
    assert html.unescape(shown["why this loss (auto)"]) == choice.record["reason"]
    assert shown["why this loss (auto)"].startswith("heavy noise: estimated noise rate 0.62 &gt;= 0.45")
