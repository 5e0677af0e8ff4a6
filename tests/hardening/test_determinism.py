"""Same input, settings and seed: the same output bytes, on the CPU, whatever --n-jobs."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from hardening_helpers import FAST_TRAIN, base_table, run_cli


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("determinism")
    pq.write_table(base_table(150), d / "d.parquet")
    return d


def _core_summary(path):
    s = json.loads(path.read_text())
    s.pop("timings", None)
    s.pop("outputs", None)
    s["settings"].pop("n_jobs", None)
    return s


def test_flag_default_model_is_byte_identical_across_runs_and_n_jobs(data, tmp_path):
    outs = []
    for name, n_jobs in (("a", "1"), ("b", "1"), ("c", "2")):
        out = tmp_path / f"{name}.parquet"
        res = run_cli("flag", data / "d.parquet", "--seed", "7", "--n-jobs", n_jobs, "--folds", "3",
                      "--out", out, "-q")
        assert res.exit_code == 0, res.output
        outs.append(out)
    first = outs[0].read_bytes()
    assert all(o.read_bytes() == first for o in outs[1:])
    summaries = [_core_summary(o.with_suffix(".summary.json")) for o in outs]
    assert summaries[1] == summaries[0] and summaries[2] == summaries[0]


def _clean_meta(path):
    t = pq.read_table(path)
    meta = json.loads(t.schema.metadata[b"cleanpipe.clean"])
    meta.pop("created")
    meta.pop("source")
    return t, meta


@pytest.mark.parametrize("mode", ["relabel", "drop", "weight"])
def test_clean_gives_identical_outputs(data, tmp_path, mode):
    flags = tmp_path / "f.parquet"
    assert run_cli("flag", data / "d.parquet", "--model", "logreg", "--folds", "3", "--out", flags, "-q").exit_code == 0
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    for out in (a, b):
        assert run_cli("clean", flags, "--mode", mode, "--out", out, "-q").exit_code == 0
    (ta, ma), (tb, mb) = _clean_meta(a), _clean_meta(b)
    assert ta.equals(tb) and ma == mb  # only the 'created' timestamp differs


def test_retrain_same_seed_gives_identical_model_files(data, tmp_path):
    dirs = []
    for name, seed in (("a", "4"), ("b", "4"), ("c", "5")):
        res = run_cli("retrain", data / "d.parquet", "--out", tmp_path / name, "--seed", seed, "-q", *FAST_TRAIN)
        assert res.exit_code == 0, res.output
        dirs.append(tmp_path / name)
    a, b, c = dirs
    assert (a / "model.pt").read_bytes() == (b / "model.pt").read_bytes()
    assert (a / "model.json").read_bytes() == (b / "model.json").read_bytes()
    assert (a / "model.pt").read_bytes() != (c / "model.pt").read_bytes()  # the seed matters
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert ma["curve"] == mb["curve"] and ma["val_accuracy"] == mb["val_accuracy"]
    preds = []
    for d in (a, b):
        out = tmp_path / f"{d.name}.preds.parquet"
        assert run_cli("predict", d, data / "d.parquet", "--out", out, "--probs", "-q").exit_code == 0
        preds.append(pq.read_table(out))
    assert preds[0].equals(preds[1])


PIPE = """
stages = ["oof", "flag", "clean", "retrain"]
[source]
type = "parquet"
path = "{data}"
[columns]
ids = ["row_id"]
[oof]
folds = 3
seed = 2
[retrain]
epochs = 2
hidden = [8]
patience = 0
device = "cpu"
threads = 1
"""


def test_run_same_seed_gives_identical_stage_outputs_across_n_jobs(data, tmp_path):
    (tmp_path / "p.toml").write_text(PIPE.format(data=data / "d.parquet"))
    for run_id, n_jobs in (("one", "1"), ("two", "2")):
        res = run_cli("run", tmp_path / "p.toml", "--runs-dir", tmp_path / "runs", "--run-id", run_id,
                      "--set", f"oof.n_jobs={n_jobs}", "-q")
        assert res.exit_code == 0, res.output
    one, two = tmp_path / "runs" / "p" / "one", tmp_path / "runs" / "p" / "two"
    for rel in ("oof/pred_probs.npy", "retrain/model/model.pt", "retrain/model/model.json"):
        assert (one / rel).read_bytes() == (two / rel).read_bytes(), rel
    for rel in ("flag/flags.parquet", "clean/cleaned.parquet"):
        a, b = pq.read_table(one / rel), pq.read_table(two / rel)
        assert a.equals(b)  # values; the metadata names each run's own folder
        assert a.schema.metadata.keys() == b.schema.metadata.keys()
