"""What a killed run leaves behind is removed by the next run of any command, and only that.

A killed writer leaves ``.cleanpipe-tmp-<pid>-...`` files or folders beside its outputs. The next
run removes those whose process is gone and keeps those of a live process (another run writing
into the same folder). The kill suite (test_kill.py) shows this with real kills; here each command
is checked deterministically with planted temporaries.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from hardening_helpers import FAST_FLAG, FAST_TRAIN, base_table, probs_for, run_cli, write_flags

from cleanpipe.io import TMP_PREFIX, cleanup_stale_temps


@pytest.fixture(scope="module")
def pids():
    """(a dead process id, a live one); the live process is stopped at the end."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield dead.pid, live.pid
    live.kill()
    live.wait()


def plant(folder, pids):
    """A stale file, a stale folder (a killed model write) and a live writer's file in ``folder``."""
    dead, live = pids
    folder.mkdir(parents=True, exist_ok=True)
    stale_file = folder / f"{TMP_PREFIX}{dead}-0badc0de-out.parquet"
    stale_file.write_bytes(b"PAR1 half a file")
    stale_dir = folder / f"{TMP_PREFIX}{dead}-0badc0de-model"
    stale_dir.mkdir()
    (stale_dir / "model.pt").write_bytes(b"half")
    busy = folder / f"{TMP_PREFIX}{live}-0badc0de-out.parquet"
    busy.write_bytes(b"being written")
    return stale_file, stale_dir, busy


def assert_cleaned(planted):
    stale_file, stale_dir, busy = planted
    assert not stale_file.exists() and not stale_dir.exists()
    assert busy.exists()  # a live process's temporary is never touched


def test_cleanup_stale_temps_unit(tmp_path, pids):
    planted = plant(tmp_path, pids)
    assert cleanup_stale_temps(tmp_path) == 2
    assert_cleaned(planted)


def test_flag_removes_stale_temps(tmp_path, pids):
    pq.write_table(base_table(), tmp_path / "d.parquet")
    planted = plant(tmp_path / "out", pids)
    res = run_cli("flag", tmp_path / "d.parquet", "--out", tmp_path / "out" / "f.parquet", *FAST_FLAG, "-q")
    assert res.exit_code == 0, res.output
    assert_cleaned(planted)


def test_clean_removes_stale_temps(tmp_path, pids):
    flags = write_flags(base_table(), tmp_path / "d.flags.parquet")
    planted = plant(tmp_path / "out", pids)
    assert run_cli("clean", flags, "--out", tmp_path / "out" / "c.parquet", "-q").exit_code == 0
    assert_cleaned(planted)


def test_report_removes_stale_temps(tmp_path, pids):
    flags = write_flags(base_table(), tmp_path / "d.flags.parquet")
    planted = plant(tmp_path / "out", pids)
    assert run_cli("report", flags, "--out", tmp_path / "out" / "r.html", "-q").exit_code == 0
    assert_cleaned(planted)


def test_predict_removes_stale_temps(tmp_path, pids, trained_model):
    pq.write_table(base_table(), tmp_path / "d.parquet")
    planted = plant(tmp_path / "out", pids)
    res = run_cli("predict", trained_model, tmp_path / "d.parquet", "--out", tmp_path / "out" / "p.parquet", "-q")
    assert res.exit_code == 0, res.output
    assert_cleaned(planted)


def test_retrain_removes_stale_temps(tmp_path, pids):
    pq.write_table(base_table(), tmp_path / "d.parquet")
    planted = plant(tmp_path / "models", pids)
    res = run_cli("retrain", tmp_path / "d.parquet", "--out", tmp_path / "models" / "m", *FAST_TRAIN, "-q")
    assert res.exit_code == 0, res.output
    assert_cleaned(planted)


PIPE = """
stages = ["oof", "flag", "clean"]
[source]
type = "parquet"
path = "d.parquet"
[oof]
model = "logreg"
folds = 3
[sink]
type = "parquet"
flags = "sink/flags.parquet"
"""


def test_run_removes_stale_temps_in_the_run_directory(tmp_path, pids):
    pq.write_table(base_table(), tmp_path / "d.parquet")
    (tmp_path / "p.toml").write_text(PIPE)
    planted = plant(tmp_path / "runs" / "p" / "r", pids)
    res = run_cli("run", tmp_path / "p.toml", "--runs-dir", tmp_path / "runs", "--run-id", "r", "-q")
    assert res.exit_code == 0, res.output
    assert_cleaned(planted)


def test_run_removes_stale_temps_in_the_sink_folder(tmp_path, pids):
    pq.write_table(base_table(), tmp_path / "d.parquet")
    (tmp_path / "p.toml").write_text(PIPE)
    planted = plant(tmp_path / "sink", pids)
    res = run_cli("run", tmp_path / "p.toml", "--runs-dir", tmp_path / "runs", "--run-id", "r", "-q")
    assert res.exit_code == 0, res.output
    assert_cleaned(planted)


def test_flag_pred_probs_run_leaves_no_temporaries(tmp_path):
    """A failing run removes its own temporaries (AtomicOutputs), not only the next run."""
    pq.write_table(base_table(), tmp_path / "d.parquet")
    bad = probs_for(base_table())
    bad[3, 0] = np.nan
    np.save(tmp_path / "p.npy", bad)
    res = run_cli("flag", tmp_path / "d.parquet", "--pred-probs", tmp_path / "p.npy",
                  "--out", tmp_path / "f.parquet", "-q")
    assert res.exit_code == 2
    assert not list(tmp_path.glob(f"{TMP_PREFIX}*")) and not (tmp_path / "f.parquet").exists()
