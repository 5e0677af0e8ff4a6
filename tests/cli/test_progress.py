"""Progress bars say how long is left and what the last step measured."""

import io
import sys

from cleanpipe.cli._progress import epoch_info, progress_bar


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_bar_shows_steps_time_left_and_the_last_measurement(monkeypatch):
    err = _Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setenv("COLUMNS", "110")
    with progress_bar(True) as update:
        assert update is not None
        for epoch in range(1, 4):
            update("training epochs", epoch, 10, epoch_info({"train_loss": 0.5 / epoch, "val_loss": 0.7,
                                                            "val_accuracy": 0.91}))
    shown = err.getvalue()
    assert "training epochs" in shown and "3/10" in shown and "left" in shown
    assert "loss 0.1667, val 0.7000, acc 0.910" in shown


def test_no_bar_when_stderr_is_not_a_terminal_or_quiet(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with progress_bar(True) as update:
        assert update is None
    monkeypatch.setattr(sys, "stderr", _Terminal())
    with progress_bar(False) as update:
        assert update is None


def test_epoch_info_leaves_out_what_was_not_measured():
    assert epoch_info({"train_loss": 1.25, "val_loss": None, "val_accuracy": None}) == "loss 1.2500"
    assert epoch_info({}) == ""


def test_on_a_narrow_terminal_the_counts_and_times_stay_whole(monkeypatch):
    err = _Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setenv("COLUMNS", "80")
    with progress_bar(True) as update:
        update("training epochs", 3, 10, "loss 0.1667, val 0.7000, acc 0.910")
    assert "3/10" in err.getvalue() and "left" in err.getvalue()


def test_run_shows_each_stage_and_its_folds(monkeypatch, tmp_path):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from click.testing import CliRunner

    from cleanpipe.cli import cli
    rng = np.random.default_rng(0)
    n = 120
    pq.write_table(pa.table({"x": rng.normal(size=n), "label": np.arange(n) % 2}), tmp_path / "d.parquet")
    (tmp_path / "p.toml").write_text('stages = ["oof", "flag"]\n[source]\ntype = "parquet"\n'
                                     'path = "d.parquet"\n[oof]\nmodel = "logreg"\nfolds = 3\n')
    seen = []
    import cleanpipe.cli._progress as bars
    real = bars.progress_bar

    def recording(enabled=True):
        import contextlib

        @contextlib.contextmanager
        def cm():
            with real(False):
                yield lambda *a: seen.append(a[:3])
        return cm()
    monkeypatch.setattr("cleanpipe.cli.run.progress_bar", recording)
    res = CliRunner().invoke(cli, ["run", str(tmp_path / "p.toml"), "--runs-dir", str(tmp_path / "runs")])
    assert res.exit_code == 0, res.output
    assert "oof: running" in res.stderr and "flag: done" in res.stderr
    assert ("folds", 3, 3) in seen, seen
