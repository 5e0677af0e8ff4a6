"""Flagging a partitioned Parquet dataset partition by partition, in process and on Dask (issue 21)."""

from __future__ import annotations

import errno
import json
import os
import pathlib
import pickle
import shutil
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from cleanpipe.cli import cli
from cleanpipe.detect import detect
from cleanpipe.errors import InputError
from cleanpipe.partitions import MANIFEST, SUCCESS, WORK, flag_partitions
from partition_faults import error_lines, full_disk

BOUNDS = (0, 500, 501, 501, 1800, 3000)  # an empty and a single-row partition among them


def write_dataset(root, *, n=3000, k=4, bounds=BOUNDS, seed=0, names=True):
    """A Parquet dataset of len(bounds) - 1 files: id, label y, a list column of probabilities."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) * 1.5
    logits[np.arange(n), y] += 2
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    p = p.astype(np.float32)
    labels = np.where(rng.random(n) < 0.2, rng.integers(0, k, n), y)
    classes = np.array(["ant", "bee", "cat", "dog", "eel"])[:k]
    os.makedirs(root, exist_ok=True)
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        label = pa.array(classes[labels[a:b]]) if names else pa.array(labels[a:b])
        pq.write_table(pa.table({"id": np.arange(a, b), "y": label,
                                 "probs": pa.array(list(p[a:b]), type=pa.list_(pa.float32()))}),
                       os.path.join(root, f"part-{i:03d}.parquet"))
    return labels, p.astype(np.float64)


def read_flags(out):
    files = sorted(f for f in os.listdir(out) if f.endswith(".parquet"))
    return pa.concat_tables([pq.read_table(os.path.join(out, f)) for f in files])


@pytest.fixture
def dataset(tmp_path):
    labels, p = write_dataset(tmp_path / "data")
    return tmp_path / "data", labels, p


@pytest.fixture
def client(cluster):
    from distributed import Client
    with Client(cluster) as c:
        yield c


@pytest.mark.parametrize("method", ["combined", "noise_rate", "mixture"])
def test_flags_equal_the_in_memory_detector(dataset, tmp_path, method):
    data, labels, p = dataset
    summary = flag_partitions(str(data), str(tmp_path / "out"), label="y", pred_probs="probs",
                              method=method)
    ref = detect(labels, p, method=method)
    t = read_flags(tmp_path / "out")
    np.testing.assert_array_equal(t["is_label_issue"].to_numpy(), ref.is_label_issue)
    np.testing.assert_array_equal(t["label_score"].to_numpy(), ref.label_score)
    np.testing.assert_array_equal(t["p_noisy"].to_numpy(), ref.p_noisy)
    names = np.array(["ant", "bee", "cat", "dog"])
    assert t["given_label"].to_pylist() == names[labels].tolist()
    assert t["predicted_label"].to_pylist() == names[ref.predicted].tolist()
    assert t["id"].to_pylist() == list(range(3000))
    assert summary["flagged"] == ref.is_label_issue.sum()
    assert {MANIFEST, SUCCESS} <= set(os.listdir(tmp_path / "out"))
    assert not (tmp_path / "out" / WORK).exists()


def test_dask_cluster_gives_the_single_machine_flags(dataset, tmp_path, client):
    from cleanpipe.partitions import DaskEngine
    data, labels, p = dataset
    flag_partitions(str(data), str(tmp_path / "out"), label="y", pred_probs="probs",
                    engine=DaskEngine(client))
    # the single-machine flag command on the same dataset
    one = tmp_path / "one.parquet"
    r = CliRunner().invoke(cli, ["flag", str(data), "--label", "y", "--pred-probs", "probs",
                                 "--out", str(one), "--quiet"])
    assert r.exit_code == 0, r.output
    ref = pq.read_table(one)
    got = read_flags(tmp_path / "out")
    for c in ("given_label", "predicted_label", "label_score", "p_noisy", "is_label_issue"):
        assert got[c].to_pylist() == ref[c].to_pylist(), c


def test_cli_engine_dask(dataset, tmp_path, cluster):
    data, labels, p = dataset
    out = tmp_path / "flags"
    r = CliRunner().invoke(cli, ["flag", str(data), "--engine", "dask", "--scheduler",
                                 cluster.scheduler_address, "--label", "y", "--pred-probs", "probs",
                                 "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)
    assert summary["flagged"] == detect(labels, p).is_label_issue.sum()
    assert (out / SUCCESS).exists()
    r = CliRunner().invoke(cli, ["flag", str(data), "--engine", "dask", "--scheduler",
                                 cluster.scheduler_address, "--label", "y", "--pred-probs", "probs",
                                 "--out", str(out), "--checks"])
    assert r.exit_code == 2 and "--checks is not available" in r.output


def test_resume_after_an_unreadable_partition(dataset, tmp_path, client):
    from cleanpipe.partitions import DaskEngine
    data, labels, p = dataset
    out = tmp_path / "out"
    good = (data / "part-003.parquet").read_bytes()
    (data / "part-003.parquet").write_bytes(good[:100])  # truncated: a real read error
    with pytest.raises(InputError, match="part-003.parquet' could not be read"):
        flag_partitions(str(data), str(out), label="y", pred_probs="probs",
                        engine=DaskEngine(client))
    assert not (out / SUCCESS).exists()
    (data / "part-003.parquet").write_bytes(good)
    # the file changed, so the run's inputs did: nothing of the failed run may be reused ...
    s = flag_partitions(str(data), str(out), label="y", pred_probs="probs", engine=DaskEngine(client))
    assert s["passes"][0] == {"step": "totals", "computed": 5, "reused": 0}
    np.testing.assert_array_equal(read_flags(out)["is_label_issue"].to_numpy(),
                                  detect(labels, p).is_label_issue)


def test_resume_after_a_failed_write_recomputes_nothing_finished(dataset, tmp_path, client,
                                                               monkeypatch):
    from cleanpipe.partitions import DaskEngine
    data, labels, p = dataset
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        full_disk(m, out, "part-002.parquet")  # the disk fills while that flags file is written
        with pytest.raises(InputError, match=r"cannot write '.*/out/part-002\.parquet' \(no space "
                           r"left on the device\); free some space .* a rerun resumes"):
            flag_partitions(str(data), str(out), label="y", pred_probs="probs",
                            engine=DaskEngine(client))
    assert not (out / SUCCESS).exists() and (out / WORK).exists()
    assert not (out / "part-002.parquet").exists()
    assert not [f for f in os.listdir(out) if f.startswith(".tmp-")]  # nothing half-written stays
    written = {f: os.stat(out / f).st_mtime_ns for f in os.listdir(out) if f.endswith(".parquet")}
    assert len(written) == 4
    s = flag_partitions(str(data), str(out), label="y", pred_probs="probs", engine=DaskEngine(client))
    # every pass of every partition is read back from the failed run; one file is written
    assert all(step["computed"] == 0 and step["reused"] == 5 for step in s["passes"])
    assert s["written"] == {"computed": 1, "reused": 4}
    assert {f: os.stat(out / f).st_mtime_ns for f in written} == written
    np.testing.assert_array_equal(read_flags(out)["is_label_issue"].to_numpy(),
                                  detect(labels, p).is_label_issue)


def test_missing_column_in_one_partition(dataset, tmp_path, cluster):
    data, _, _ = dataset
    t = pq.read_table(data / "part-004.parquet").drop_columns(["y"])
    pq.write_table(t, data / "part-004.parquet")
    r = CliRunner().invoke(cli, ["flag", str(data), "--engine", "dask", "--scheduler",
                                 cluster.scheduler_address, "--label", "y", "--pred-probs", "probs",
                                 "--out", str(tmp_path / "out")])
    assert r.exit_code == 2
    line = r.output.strip()
    assert "\n" not in line and "label column 'y' not found in DATA partition" in line
    assert "part-004.parquet" in line and "Traceback" not in r.output


def test_label_type_differing_between_partitions(dataset, tmp_path, cluster):
    data, _, _ = dataset
    t = pq.read_table(data / "part-000.parquet")
    t = t.set_column(1, "y", pa.array(np.arange(t.num_rows) % 4))
    pq.write_table(t, data / "part-000.parquet")
    r = CliRunner().invoke(cli, ["flag", str(data), "--engine", "dask", "--scheduler",
                                 cluster.scheduler_address, "--label", "y", "--pred-probs", "probs",
                                 "--out", str(tmp_path / "out")])
    assert r.exit_code == 2
    assert "label column 'y' has type int64 in DATA partition" in r.output
    assert "same label type" in r.output and "\n" not in r.output.strip()


def test_out_inside_data_is_refused(dataset):
    data, _, _ = dataset
    with pytest.raises(InputError, match="would overwrite the input DATA"):
        flag_partitions(str(data), str(data / "flags"), label="y", pred_probs="probs")


def test_s3_dataset_on_a_moto_server(tmp_path, monkeypatch, client):
    moto_server = pytest.importorskip("moto.server")
    from pyarrow import fs as pafs

    from cleanpipe.partitions import DaskEngine
    server = moto_server.ThreadedMotoServer(port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        for key, value in (("AWS_ACCESS_KEY_ID", "x"), ("AWS_SECRET_ACCESS_KEY", "x"),
                           ("AWS_DEFAULT_REGION", "us-east-1")):
            monkeypatch.setenv(key, value)
        s3 = pafs.S3FileSystem(endpoint_override=f"http://{host}:{port}", scheme="http",
                               region="us-east-1", access_key="x", secret_key="x",
                               allow_bucket_creation=True)
        s3.create_dir("lake")
        labels, p = write_dataset(tmp_path / "data")
        for f in sorted(os.listdir(tmp_path / "data")):
            with s3.open_output_stream(f"lake/table/{f}") as fh:
                fh.write((tmp_path / "data" / f).read_bytes())
        query = f"?endpoint_override=http://{host}:{port}&scheme=http&region=us-east-1"
        summary = flag_partitions(f"s3://lake/table/{query}", f"s3://lake/flags/{query}", label="y",
                                  pred_probs="probs", engine=DaskEngine(client))
        names = sorted(i.base_name for i in s3.get_file_info(pafs.FileSelector("lake/flags")))
        assert SUCCESS in names and MANIFEST in names and WORK not in names
        flags = []
        for f in (n for n in names if n.endswith(".parquet")):
            with s3.open_input_file(f"lake/flags/{f}") as fh:
                flags.append(pq.read_table(fh, columns=["is_label_issue"]))
        got = pa.concat_tables(flags)["is_label_issue"].to_numpy()
        np.testing.assert_array_equal(got, detect(labels, p).is_label_issue)
        assert summary["partitions"] == 5
        # A Delta table on the store: its folder also holds files its log has removed, so its
        # files are not its rows; refused in one line before anything is read or written.
        with s3.open_output_stream("lake/table/_delta_log/00000000000000000000.json") as fh:
            fh.write(b"{}")
        with pytest.raises(InputError, match="is a Delta table on an object store"):
            flag_partitions(f"s3://lake/table/{query}", f"s3://lake/flags2/{query}", label="y",
                            pred_probs="probs")
        assert s3.get_file_info("lake/flags2").type == pafs.FileType.NotFound
    finally:
        server.stop()


def test_null_labels_match_the_single_machine_flag(tmp_path):
    # rows with a null label are kept, not checked: as `cleanpipe flag` does on one machine
    labels, p = write_dataset(tmp_path / "data", names=False)
    for f in ("part-001.parquet", "part-004.parquet"):
        t = pq.read_table(tmp_path / "data" / f)
        y = t.column("y").to_numpy().astype(float)
        y[::7] = np.nan
        t = t.set_column(1, "y", pa.array(y, mask=np.isnan(y), type=pa.int64()))
        pq.write_table(t, tmp_path / "data" / f)
    flag_partitions(str(tmp_path / "data"), str(tmp_path / "out"), label="y", pred_probs="probs")
    one = tmp_path / "one.parquet"
    r = CliRunner().invoke(cli, ["flag", str(tmp_path / "data"), "--label", "y", "--pred-probs",
                                 "probs", "--out", str(one), "--quiet"])
    assert r.exit_code == 0, r.output
    ref, got = pq.read_table(one), read_flags(tmp_path / "out")
    assert got["given_label"].null_count > 100
    for c in ("given_label", "predicted_label", "label_score", "p_noisy", "is_label_issue"):
        assert got[c].to_pylist() == ref[c].to_pylist(), c


@pytest.mark.slow
def test_a_worker_killed_mid_run(tmp_path):
    # a worker process dies during the confident-joint pass: the cluster reruns its tasks on the
    # other worker (those that had finished read their partials back from OUT/_work) and the flags
    # are the in-memory ones
    import signal
    import threading

    distributed = pytest.importorskip("distributed")
    from cleanpipe.partitions import DaskEngine
    labels, p = write_dataset(tmp_path / "data", n=60000,
                              bounds=tuple(np.linspace(0, 60000, 9).astype(int)))
    out = tmp_path / "out"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        box = {}

        def run():
            box["summary"] = flag_partitions(str(data), str(out), label="y", pred_probs="probs",
                                             engine=DaskEngine(client))

        data = tmp_path / "data"
        job = threading.Thread(target=run)
        job.start()
        deadline = time.monotonic() + 120
        while not ((out / WORK).is_dir() and len(os.listdir(out / WORK)) >= 4):
            assert time.monotonic() < deadline and job.is_alive()
            time.sleep(0.02)
        victim = min(client.run(os.getpid).values())
        os.kill(victim, signal.SIGKILL)
        job.join(240)
    assert "summary" in box and (out / SUCCESS).exists()
    np.testing.assert_array_equal(read_flags(out)["is_label_issue"].to_numpy(),
                                  detect(labels, p).is_label_issue)


@pytest.mark.parametrize("mode", ["drop", "weight", "relabel"])
def test_clean_partitions_equals_cleaning_the_whole_flags_table(dataset, tmp_path, client, mode):
    from cleanpipe import clean_table
    from cleanpipe.partitions import DaskEngine, clean_partitions
    data, labels, p = dataset
    flag_partitions(str(data), str(tmp_path / "flags"), label="y", pred_probs="probs")
    summary = clean_partitions(str(tmp_path / "flags"), str(tmp_path / "clean"), mode=mode,
                               engine=DaskEngine(client))
    whole = clean_table(read_flags(tmp_path / "flags"), mode=mode, label="y")
    got = read_flags(tmp_path / "clean")
    assert got.column_names == whole.table.column_names
    assert got.to_pydict() == whole.table.to_pydict()
    assert summary["counts"]["rows_out"] == whole.counts["rows_out"]
    assert (tmp_path / "clean" / SUCCESS).exists()
    with pytest.raises(InputError, match="not a committed"):
        clean_partitions(str(data), str(tmp_path / "x"))


def test_cli_clean_engine_dask(dataset, tmp_path, cluster):
    data, labels, p = dataset
    flag_partitions(str(data), str(tmp_path / "flags"), label="y", pred_probs="probs")
    out = tmp_path / "cleaned"
    r = CliRunner().invoke(cli, ["clean", str(tmp_path / "flags"), "--engine", "dask", "--scheduler",
                                 cluster.scheduler_address, "--mode", "drop", "--out", str(out),
                                 "--json"])
    assert r.exit_code == 0, r.output
    counts = json.loads(r.output)
    assert counts["rows_out"] == 3000 - detect(labels, p).is_label_issue.sum()
    assert read_flags(out).num_rows == counts["rows_out"] and (out / SUCCESS).exists()
    r = CliRunner().invoke(cli, ["clean", str(tmp_path / "flags"), "--engine", "dask", "--scheduler",
                                 cluster.scheduler_address, "--drop-outliers", "--out", str(out)])
    assert r.exit_code == 2 and "--drop-outliers is not available" in r.output



def test_cli_clean_engine_dask_relabel_takes_the_label_of_the_flags_and_resumes(dataset, tmp_path,
                                                                                cluster):
    from cleanpipe import clean_table
    data, labels, p = dataset
    flag_partitions(str(data), str(tmp_path / "flags"), label="y", pred_probs="probs")
    out = tmp_path / "cleaned"

    def clean(*extra):
        r = CliRunner().invoke(cli, ["clean", str(tmp_path / "flags"), "--engine", "dask",
                                     "--scheduler", cluster.scheduler_address, "--out", str(out),
                                     "--json", *extra])
        assert r.exit_code == 0, r.output
        return json.loads((out / "_manifest.json").read_text())

    first = clean("--mode", "relabel")  # no --label: the one flag used, from its manifest
    whole = clean_table(read_flags(tmp_path / "flags"), mode="relabel", label="y")
    assert read_flags(out).to_pydict() == whole.table.to_pydict()
    assert first["counts"]["relabelled"] == whole.counts["relabelled"] > 0
    names = first["files"]
    assert first["written"] == {"computed": len(names), "reused": 0}
    stamps = {f: os.stat(out / f).st_mtime_ns for f in names}
    assert clean("--mode", "relabel")["written"] == {"computed": 0, "reused": len(names)}
    assert {f: os.stat(out / f).st_mtime_ns for f in names} == stamps  # nothing rewritten
    assert clean("--mode", "drop")["written"] == {"computed": len(names), "reused": 0}
    assert read_flags(out).to_pydict() == clean_table(read_flags(tmp_path / "flags"), mode="drop",
                                                      label="y").table.to_pydict()

class _Planted:
    """Unpickling this creates ``marker``: the test checks that no resumed run ever does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_a_pickle_planted_among_the_partials_is_recomputed_never_run(dataset, tmp_path, client,
                                                                     monkeypatch):
    from cleanpipe.partitions import DaskEngine
    data, labels, p = dataset
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        full_disk(m, out, "part-002.parquet")  # the first run fails at its writes, its partials stay
        with pytest.raises(InputError, match="no space left"):
            flag_partitions(str(data), str(out), label="y", pred_probs="probs",
                            engine=DaskEngine(client))
    stored = sorted(pathlib.Path(out / WORK).rglob("*.npz"))
    assert stored
    marker = tmp_path / "ran"
    for path in stored:
        path.write_bytes(pickle.dumps(_Planted(str(marker))))
    s = flag_partitions(str(data), str(out), label="y", pred_probs="probs", engine=DaskEngine(client))
    assert not marker.exists()
    assert all(step["reused"] == 0 for step in s["passes"])
    np.testing.assert_array_equal(read_flags(out)["is_label_issue"].to_numpy(),
                                  detect(labels, p).is_label_issue)


# --- output safety of the partitioned paths (one rule for flag and clean) ------------------------


@pytest.mark.parametrize("command", ["flag", "clean"])
def test_a_users_file_named_like_a_partition_output_is_refused_and_kept(dataset, tmp_path, cluster,
                                                                        command):
    data, _, _ = dataset
    flag_partitions(str(data), str(tmp_path / "flags"), label="y", pred_probs="probs")
    out = tmp_path / "mine"
    out.mkdir()
    mine = b"the user's own notes, not a partition"
    (out / "part-001.parquet").write_bytes(mine)
    args = (["flag", str(data), "--label", "y", "--pred-probs", "probs"] if command == "flag"
            else ["clean", str(tmp_path / "flags"), "--mode", "drop"])
    r = CliRunner().invoke(cli, [*args, "--engine", "dask", "--scheduler",
                                 cluster.scheduler_address, "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert error_lines(r.output) == [
        f"error: --out directory '{out}' holds files cleanpipe did not write (part-001.parquet); "
        "they are never replaced: choose an empty or new --out directory"]
    assert "Traceback" not in r.output
    assert (out / "part-001.parquet").read_bytes() == mine
    assert sorted(os.listdir(out)) == ["part-001.parquet"]


def test_a_parquet_file_of_the_users_named_like_a_partition_is_refused(dataset, tmp_path):
    from cleanpipe.partitions import clean_partitions
    data, _, _ = dataset
    flag_partitions(str(data), str(tmp_path / "flags"), label="y", pred_probs="probs")
    out = tmp_path / "cleaned"
    out.mkdir()
    shutil.copy(data / "part-003.parquet", out / "part-003.parquet")  # Parquet, but not cleanpipe's
    before = (out / "part-003.parquet").read_bytes()
    with pytest.raises(InputError, match=r"holds files cleanpipe did not write \(part-003.parquet\)"):
        clean_partitions(str(tmp_path / "flags"), str(out))
    assert (out / "part-003.parquet").read_bytes() == before


@pytest.mark.parametrize("where", ["flags", "flags/cleaned", "data", "data/cleaned"])
def test_clean_out_on_or_inside_its_inputs_is_refused(dataset, tmp_path, where):
    from cleanpipe.partitions import clean_partitions
    data, _, _ = dataset
    flag_partitions(str(data), str(tmp_path / "flags"), label="y", pred_probs="probs")
    before = {f: (tmp_path / "flags" / f).read_bytes() for f in os.listdir(tmp_path / "flags")}
    what = "FLAGS" if where.startswith("flags") else r"DATA \(the source of FLAGS\)"
    with pytest.raises(InputError, match=rf"--out '.*{where}' would overwrite the input {what}"):
        clean_partitions(str(tmp_path / "flags"), str(tmp_path / where))
    assert {f: (tmp_path / "flags" / f).read_bytes() for f in os.listdir(tmp_path / "flags")} == before
    assert not (tmp_path / "flags" / "cleaned").exists() and not (data / "cleaned").exists()


def test_clean_reruns_into_its_own_output_folder(dataset, tmp_path):
    from cleanpipe.partitions import clean_partitions
    data, _, _ = dataset
    flag_partitions(str(data), str(tmp_path / "flags"), label="y", pred_probs="probs")
    first = clean_partitions(str(tmp_path / "flags"), str(tmp_path / "cleaned"))
    again = clean_partitions(str(tmp_path / "flags"), str(tmp_path / "cleaned"))
    assert again["written"] == {"computed": 0, "reused": first["partitions"]}
    assert again["counts"] == first["counts"]


@pytest.mark.parametrize("command", ["flag", "clean"])
def test_a_full_disk_on_dask_is_one_line_and_a_rerun_resumes(dataset, tmp_path, cluster,
                                                             monkeypatch, command):
    data, labels, p = dataset
    if command == "clean":
        flag_partitions(str(data), str(tmp_path / "flags"), label="y", pred_probs="probs")
    out = tmp_path / "out"
    args = (["flag", str(data), "--label", "y", "--pred-probs", "probs"] if command == "flag"
            else ["clean", str(tmp_path / "flags"), "--mode", "drop"])
    args += ["--engine", "dask", "--scheduler", cluster.scheduler_address, "--out", str(out)]
    with monkeypatch.context() as m:
        full_disk(m, out, "part-001.parquet")
        r = CliRunner().invoke(cli, args)
    assert r.exit_code == 2, r.output
    assert error_lines(r.output) == [
        f"error: cannot write '{out}/part-001.parquet' (no space left on the device); free some "
        "space or write the outputs elsewhere; the partitions already written are kept and a rerun "
        "resumes from them"]
    assert "Traceback (most recent call last)" not in r.output
    assert not (out / SUCCESS).exists() and not (out / "part-001.parquet").exists()
    assert not [f for f in os.listdir(out) if f.startswith(".tmp-")]
    kept = {f: os.stat(out / f).st_mtime_ns for f in os.listdir(out) if f.endswith(".parquet")}
    assert len(kept) == 4
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["written"] == {"computed": 1, "reused": 4}
    assert {f: os.stat(out / f).st_mtime_ns for f in kept} == kept  # finished ones not rewritten
    if command == "flag":
        np.testing.assert_array_equal(read_flags(out)["is_label_issue"].to_numpy(),
                                      detect(labels, p).is_label_issue)


def test_a_full_disk_on_the_local_engine_is_one_line(dataset, tmp_path, monkeypatch):
    from cleanpipe.partitions import clean_partitions
    data, _, _ = dataset
    flag_partitions(str(data), str(tmp_path / "flags"), label="y", pred_probs="probs")
    out = tmp_path / "cleaned"
    with monkeypatch.context() as m:
        full_disk(m, out, "part-004.parquet")
        with pytest.raises(InputError, match=r"cannot write '.*/cleaned/part-004\.parquet' \(no "
                           r"space left on the device\); free some space"):
            clean_partitions(str(tmp_path / "flags"), str(out))
    assert sorted(f for f in os.listdir(out)) == [f"part-00{i}.parquet" for i in range(4)]
    assert clean_partitions(str(tmp_path / "flags"), str(out))["written"] == {"computed": 1,
                                                                               "reused": 4}


@pytest.mark.parametrize("code, words", [(errno.EROFS, "read-only file system"),
                                         (errno.EACCES, "permission denied")])
def test_an_os_error_a_task_raised_is_mapped_on_the_driver(code, words):
    from cleanpipe.partitions import LocalEngine

    def task(i):
        raise OSError(code, os.strerror(code), f"/somewhere/part-{i}.parquet")

    with pytest.raises(InputError, match=rf"{words} at '/somewhere/part-0.parquet'"):
        LocalEngine().get(LocalEngine().map(task, [0, 1]))


@pytest.mark.parametrize("command", ["flag", "clean"])
@pytest.mark.parametrize("marker", [SUCCESS, MANIFEST, WORK])
def test_a_users_own_marker_in_out_is_refused_and_kept(dataset, tmp_path, command, marker):
    """``_SUCCESS``, ``_manifest.json`` and ``_work`` are cleanpipe's only when they carry its
    signature: a user's own (Spark's empty ``_SUCCESS``, a manifest of another tool, a folder)
    is refused in one line like any other file, and left as it was."""
    from cleanpipe.partitions import clean_partitions
    data, _, _ = dataset
    flag_partitions(str(data), str(tmp_path / "flags"), label="y", pred_probs="probs")
    out = tmp_path / "out"
    out.mkdir()
    if marker == WORK:
        (out / WORK).mkdir()
        (out / WORK / "notes.txt").write_text("mine")
    else:
        (out / marker).write_text("" if marker == SUCCESS else '{"files": ["part-000.parquet"]}')
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    with pytest.raises(InputError) as err:
        if command == "flag":
            flag_partitions(str(data), str(out), label="y", pred_probs="probs")
        else:
            clean_partitions(str(tmp_path / "flags"), str(out))
    assert str(err.value) == (f"--out directory '{out}' holds files cleanpipe did not write "
                              f"({marker}); they are never replaced: choose an empty or new "
                              "--out directory")
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before


def test_a_flags_folder_from_before_the_signed_markers_is_still_cleaned(dataset, tmp_path):
    """FLAGS is only read: a folder an earlier version committed (an empty _SUCCESS, a manifest
    without ``written_by``) is cleaned as before; one without _SUCCESS is not committed."""
    from cleanpipe.partitions import clean_partitions
    data, _, _ = dataset
    flags = tmp_path / "flags"
    flag_partitions(str(data), str(flags), label="y", pred_probs="probs")
    assert (flags / SUCCESS).read_text().startswith("cleanpipe")
    manifest = json.loads((flags / MANIFEST).read_text())
    assert manifest.pop("written_by").startswith("cleanpipe")
    signed = clean_partitions(str(flags), str(tmp_path / "signed"))
    (flags / SUCCESS).write_text("")
    (flags / MANIFEST).write_text(json.dumps(manifest))
    old = clean_partitions(str(flags), str(tmp_path / "old"))
    assert old["counts"] == signed["counts"] and old["partitions"] == signed["partitions"]
    files = sorted((tmp_path / "signed").glob("*.parquet"))
    assert files
    for f in files:
        assert pq.read_table(tmp_path / "old" / f.name).equals(pq.read_table(f))
    (flags / SUCCESS).unlink()
    with pytest.raises(InputError, match=r"is not a committed partitioned flags dataset"):
        clean_partitions(str(flags), str(tmp_path / "cleaned"))


def test_clean_from_another_folder_still_refuses_an_out_inside_relative_data(dataset, tmp_path,
                                                                             monkeypatch):
    """DATA given relative to the folder flag ran in is recorded absolute, so a clean run from
    elsewhere still refuses an --out inside it."""
    from cleanpipe.partitions import clean_partitions
    data, _, _ = dataset
    monkeypatch.chdir(tmp_path)
    flag_partitions("data", "flags", label="y", pred_probs="probs")
    assert json.loads((tmp_path / "flags" / MANIFEST).read_text())["source"] == str(data)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(InputError, match=r"--out '.*/data/cleaned' would overwrite the input DATA "
                                         r"\(the source of FLAGS\)"):
        clean_partitions(str(tmp_path / "flags"), str(data / "cleaned"))
    assert not (data / "cleaned").exists()


def test_an_old_relative_source_is_resolved_against_the_manifests_folder(dataset, tmp_path,
                                                                         monkeypatch):
    """A manifest written before DATA was recorded absolute: the relative DATA is taken against
    the manifest's folder (and the current one), not only the current folder."""
    from cleanpipe.partitions import clean_partitions
    data, _, _ = dataset
    flags = tmp_path / "flags"
    flag_partitions(str(data), str(flags), label="y", pred_probs="probs")
    manifest = json.loads((flags / MANIFEST).read_text())
    (flags / MANIFEST).write_text(json.dumps(dict(manifest, source="../data")))
    cwd = tmp_path / "a" / "b"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)  # not where flag ran: ../data from here is a/data
    with pytest.raises(InputError, match=r"--out '.*/data/cleaned' would overwrite the input DATA "
                                         r"\(the source of FLAGS\)"):
        clean_partitions(str(flags), str(data / "cleaned"))
    assert not (data / "cleaned").exists()


def test_a_large_signed_manifest_is_cleanpipes(tmp_path):
    """A manifest of many partitions (over a MiB of file names) is read whole, not cut short and
    taken for the user's."""
    from pyarrow import fs

    from cleanpipe.partitions import SIGNATURE, _marker_is_ours
    files = [f"part-{i:07d}-0123456789abcdef.parquet" for i in range(40_000)]
    (tmp_path / MANIFEST).write_text(json.dumps({"files": files, "written_by": SIGNATURE}))
    assert (tmp_path / MANIFEST).stat().st_size > 1 << 20
    assert _marker_is_ours(fs.LocalFileSystem(), str(tmp_path), MANIFEST)
    (tmp_path / MANIFEST).write_text(json.dumps({"files": files}))
    assert not _marker_is_ours(fs.LocalFileSystem(), str(tmp_path), MANIFEST)
