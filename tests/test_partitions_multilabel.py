"""Multi-label data flagged partition by partition, in process and on Dask: the one-machine flags (issue 21)."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from cleanpipe.cli import cli
from cleanpipe.partitions import SUCCESS, DaskEngine, flag_partitions

BOUNDS = (0, 700, 701, 701, 1900, 2500)  # an empty and a single-row partition among them
TAGS = np.array(["cloud", "dog", "sea", "tree", "wall"])
COLUMNS = ("given_label", "predicted_label", "label_score", "p_noisy", "is_label_issue",
           "suspect_missing", "suspect_spurious")


def write_tag_dataset(root, *, n=2500, bounds=BOUNDS, seed=0):
    """Parquet files of id, a list-of-tags column (a few null = unlabelled), 0/1 tag columns and a
    list column of tag probabilities, with planted missing and spurious tags."""
    rng = np.random.default_rng(seed)
    k = len(TAGS)
    true = rng.random((n, k)) < 0.3
    p = np.clip(true * 0.55 + rng.normal(0.22, 0.2, (n, k)), 0.0, 1.0).astype(np.float32)
    given = true ^ (rng.random((n, k)) < 0.06)
    unlabelled = rng.random(n) < 0.02
    os.makedirs(root, exist_ok=True)
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        lists = [None if unlabelled[r] else TAGS[given[r]].tolist() for r in range(a, b)]
        cols = {"id": np.arange(a, b), "tags": pa.array(lists, type=pa.list_(pa.string())),
                "probs": pa.array(list(p[a:b]), type=pa.list_(pa.float32()))}
        cols.update({f"is_{t}": pa.array(given[a:b, j].astype(np.int8)) for j, t in enumerate(TAGS)})
        pq.write_table(pa.table(cols), os.path.join(root, f"part-{i:03d}.parquet"))
    return given, p


def read_flags(out):
    files = sorted(f for f in os.listdir(out) if f.endswith(".parquet"))
    return pa.concat_tables([pq.read_table(os.path.join(out, f)) for f in files])


def one_machine(data, out, *args):
    r = CliRunner().invoke(cli, ["flag", str(data), "--pred-probs", "probs", "--out", str(out),
                                 "--quiet", *args])
    assert r.exit_code == 0, r.output
    return pq.read_table(out)


def assert_same_flags(got, ref):
    for c in COLUMNS:
        assert got[c].type == ref[c].type, c
        assert got[c].to_pylist() == ref[c].to_pylist(), c


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("tags") / "data"
    write_tag_dataset(root)
    return root


@pytest.fixture
def client(cluster):
    from distributed import Client
    with Client(cluster) as c:
        yield c


@pytest.mark.parametrize("method", ["posterior", "noise_rate", "mixture", "both"])
def test_a_list_label_gives_the_one_machine_flags(dataset, tmp_path, method):
    summary = flag_partitions(str(dataset), str(tmp_path / "out"), label="tags", pred_probs="probs",
                              method=method)
    ref = one_machine(dataset, tmp_path / "one.parquet", "--label", "tags", "--method", method)
    got = read_flags(tmp_path / "out")
    assert_same_flags(got, ref)
    assert got["id"].to_pylist() == list(range(2500))
    assert summary["multi_label"] and summary["method"] == method
    assert summary["flagged"] == sum(ref["is_label_issue"].to_pylist()) > 0
    one = json.loads((tmp_path / "one.summary.json").read_text())
    assert summary["estimated_issues"] == one["estimated_issues"]
    assert summary["estimated_noise_rate"] == one["estimated_noise_rate"]


def test_dask_cluster_and_the_cli(dataset, tmp_path, cluster):
    out = tmp_path / "flags"
    r = CliRunner().invoke(cli, ["flag", str(dataset), "--engine", "dask", "--scheduler",
                                 cluster.scheduler_address, "--label", "tags", "--pred-probs",
                                 "probs", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["multi_label"] and (out / SUCCESS).exists()
    assert_same_flags(read_flags(out), one_machine(dataset, tmp_path / "one.parquet", "--label", "tags"))


def test_dask_engine_with_0_1_columns(dataset, tmp_path, client):
    label = ",".join(f"is_{t}" for t in TAGS)
    flag_partitions(str(dataset), str(tmp_path / "out"), label=label, pred_probs="probs",
                    engine=DaskEngine(client))
    assert_same_flags(read_flags(tmp_path / "out"),
                      one_machine(dataset, tmp_path / "one.parquet", "--label", label))


def test_a_single_label_method_is_refused(dataset, tmp_path):
    from cleanpipe.errors import InputError
    with pytest.raises(InputError, match="not available for multi-label"):
        flag_partitions(str(dataset), str(tmp_path / "out"), label="tags", pred_probs="probs",
                        method="combined")
