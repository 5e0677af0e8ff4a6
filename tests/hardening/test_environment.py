"""Faults of the environment, and of odd but valid data, are one-line user errors (exit 2).

A full disk (a small tmpfs), a read-only folder (as a process without root's privileges), a
read-only file system, a corrupt Parquet page found mid-run, a file that vanishes mid-run, every
Arrow type a Parquet file can hold, out-of-range seeds and the messages issue 18 found unclear.
Nothing is half-written: the output folder holds no file afterwards.
"""

from __future__ import annotations

import contextlib
import decimal
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hardening_helpers import (FAST_FLAG, FAST_TRAIN, base_table, error_line, run_cli,
                               snapshot, write_flags)


def _inputs(root: Path, model: Path) -> None:
    pq.write_table(base_table(), root / "data.parquet")
    write_flags(base_table(), root / "d.flags.parquet")
    shutil.copytree(model, root / "model")
    (root / "p.toml").write_text(
        'stages = ["oof", "flag"]\n[source]\ntype = "parquet"\npath = "data.parquet"\n'
        '[columns]\nlabel = "label"\nids = ["row_id"]\n[oof]\nmodel = "logreg"\nfolds = 3\n', encoding="utf-8")


def _commands(out: str) -> dict:
    """Every command, writing under the folder ``out``."""
    return {"flag": ["flag", "data.parquet", "--out", f"{out}/f.parquet", *FAST_FLAG],
            "clean": ["clean", "d.flags.parquet", "--out", f"{out}/c.parquet"],
            "retrain": ["retrain", "data.parquet", "--out", f"{out}/m", *FAST_TRAIN, "--hidden", "512,512"],
            "predict": ["predict", "model", "data.parquet", "--out", f"{out}/p.parquet", "--probs"],
            "report": ["report", "d.flags.parquet", "--out", f"{out}/r.html"],
            "run": ["run", "p.toml", "--runs-dir", f"{out}/runs"]}


@contextlib.contextmanager
def _tmpfs(path: Path, options: str):
    path.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.decode().strip() or 'not permitted'}); "
                    "the full-disk and read-only file system checks need root and mount rights")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def world(tmp_path, monkeypatch, trained_model):
    monkeypatch.chdir(tmp_path)
    _inputs(tmp_path, trained_model)
    return tmp_path


def _no_files(folder: Path) -> list:
    return [str(p) for p in folder.rglob("*") if p.is_file()]


def _fill(folder: Path) -> Path:
    """Fill the file system of ``folder`` to the last byte; return the filler file."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_CREAT | os.O_WRONLY)
    try:
        with contextlib.suppress(OSError):
            while os.write(fd, b"\0" * 4096):
                pass
    finally:
        os.close(fd)
    return filler


@pytest.mark.parametrize("command", list(_commands("x")))
def test_full_disk_is_one_line_and_leaves_nothing(command, world):
    with _tmpfs(world / "full", "size=64k") as full:
        filler = _fill(full)
        before = snapshot(world / "model")
        line = error_line(run_cli(*_commands("full")[command]))
        assert "no space left" in line and "full" in line, line
        left = [f for f in _no_files(full) if f != str(filler)]
        if command == "run":  # the run keeps its manifest (status failed) to resume; no stage output
            left = [f for f in left if not f.endswith(("manifest.json", ".lock"))]
        assert left == []
        assert snapshot(world / "model") == before


@pytest.mark.parametrize("command", list(_commands("x")))
def test_read_only_file_system_is_refused_before_work(command, world):
    with _tmpfs(world / "ro", "ro,size=16k"):
        line = error_line(run_cli(*_commands("ro")[command]))
        assert "read-only file system" in line and "'ro" in line or "/ro" in line, line


def _unprivileged_prefix() -> list:
    """A command prefix that runs as a non-root user (nobody) if it can run this Python, else as
    root without capabilities (no CAP_DAC_OVERRIDE: folder permissions apply as for any user)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to run a command as an unprivileged user")
    for prefix in ([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"],
                   [setpriv, "--bounding-set=-all", "--inh-caps=-all"]):
        if subprocess.run([*prefix, sys.executable, "-c", "pass"], capture_output=True).returncode == 0:
            return prefix
    pytest.skip("setpriv cannot start this Python without privileges here")


@pytest.fixture
def open_world(trained_model):
    """Like ``world`` but in a folder every user can read (pytest's own are private to root)."""
    root = Path(tempfile.mkdtemp(prefix="cleanpipe-ro-"))
    os.chmod(root, 0o755)
    _inputs(root, trained_model)
    for p in root.rglob("*"):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    yield root
    shutil.rmtree(root, ignore_errors=True)


#: Runs each command line of argv[1] (JSON) in one interpreter; prints exit status and stderr of each.
_RUN_ALL = """
import contextlib, io, json, sys
from cleanpipe.cli import cli
out = []
for args in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            cli.main(args, prog_name="cleanpipe")
            code = 0
        except SystemExit as exc:
            code = exc.code
    out.append([code, err.getvalue()])
print(json.dumps(out))
"""


@pytest.mark.slow
def test_read_only_folder_as_unprivileged_user(open_world):
    """Every command, as an unprivileged user, with its output in a folder it may not write."""
    prefix = _unprivileged_prefix()
    ro = open_world / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), HOME=str(open_world))
    commands = _commands("ro")
    res = subprocess.run([*prefix, sys.executable, "-c", _RUN_ALL, json.dumps(list(commands.values()))],
                         capture_output=True, text=True, env=env, cwd=open_world, timeout=300)
    assert res.returncode == 0, res.stderr
    for name, (code, err) in zip(commands, json.loads(res.stdout.strip().splitlines()[-1])):
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (name, err)
        assert "ro" in lines[0] and ("permission" in lines[0] or "writable" in lines[0]), (name, lines[0])
    assert list(ro.iterdir()) == []


# --- data faults found mid-run ---------------------------------------------------------------------


def _corrupt_page(src: Path, dst: Path, column: str) -> None:
    """``src`` rewritten with snappy pages and one data page of ``column`` overwritten mid-file:
    the footer reads, the page does not decode."""
    t = pq.read_table(src)
    pq.write_table(t, dst, compression="snappy", row_group_size=20)
    md = pq.ParquetFile(dst).metadata
    off = md.row_group(1).column(md.schema.names.index(column)).data_page_offset
    raw = bytearray(dst.read_bytes())
    raw[off + 8: off + 120] = b"\xab" * 112
    dst.write_bytes(bytes(raw))


@pytest.mark.parametrize("command", ["flag", "report", "clean"])
def test_corrupt_data_page_found_mid_run_is_one_line(command, world):
    if command == "flag":
        _corrupt_page(world / "data.parquet", world / "bad.parquet", "x")
        args = ["flag", "bad.parquet", "--out", "o.parquet", *FAST_FLAG]
    else:
        _corrupt_page(world / "d.flags.parquet", world / "bad.flags.parquet", "x")
        shutil.copy(world / "d.flags.summary.json", world / "bad.flags.summary.json")
        args = [command, "bad.flags.parquet", "--out", "o.html" if command == "report" else "o.parquet"]
    line = error_line(run_cli(*args))
    assert "bad" in line and "corrupt" in line, line
    assert not (world / "o.parquet").exists() and not (world / "o.html").exists()


def test_file_vanishing_mid_run_is_one_line(world, monkeypatch):
    import cleanpipe.flag as flag_mod
    (world / "ds").mkdir()
    for i in range(2):
        pq.write_table(base_table().slice(30 * i, 30), world / "ds" / f"p{i}.parquet")
    opened = flag_mod.open_dataset

    def open_then_lose_a_file(path, **kw):
        dataset = opened(path, **kw)
        (world / "ds" / "p1.parquet").unlink()  # another process moves it away
        return dataset

    monkeypatch.setattr(flag_mod, "open_dataset", open_then_lose_a_file)
    line = error_line(run_cli("flag", "ds", "--out", "o.parquet", *FAST_FLAG))
    assert "p1.parquet" in line or "ds" in line, line
    assert "rerun" in line or "no such file" in line, line
    assert not (world / "o.parquet").exists()


# --- every Arrow type ------------------------------------------------------------------------------

N = 6
FEATURE_TYPES = {
    # used
    "time32": (pa.array([1000 * i for i in range(N)], pa.time32("ms")), True),
    "time64": (pa.array([10**6 * i for i in range(N)], pa.time64("us")), True),
    "float16": (pa.array(np.arange(N, dtype=np.float16)), True),
    "decimal128": (pa.array([decimal.Decimal(i) for i in range(N)], pa.decimal128(10, 2)), True),
    "decimal256": (pa.array([decimal.Decimal(i) for i in range(N)], pa.decimal256(40, 2)), True),
    "large_string": (pa.array([str(i % 2) for i in range(N)], pa.large_string()), True),
    "large_list": (pa.array([[1.0, 2.0]] * N, pa.large_list(pa.float64())), True),
    "dict_uint8": (pa.array(["a", "b"] * 3).dictionary_encode().cast(pa.dictionary(pa.uint8(), pa.string())), True),
    "dict_uint64": (pa.array([1, 2] * 3).dictionary_encode().cast(pa.dictionary(pa.uint64(), pa.int64())), True),
    "dict_float16": (pa.array(np.array([1, 2] * 3, np.float16)).dictionary_encode()
                     .cast(pa.dictionary(pa.int8(), pa.float16())), True),
    "duration": (pa.array(range(N), pa.duration("s")), True),
    "date64": (pa.array(range(N), pa.date32()).cast(pa.date64()), True),
    "timestamp_tz": (pa.array(range(N), pa.timestamp("s", tz="UTC")), True),
    # refused, naming the column and its type
    "large_binary": (pa.array([b"a"] * N, pa.large_binary()), False),
    "struct": (pa.array([{"a": 1}] * N), False),
    "map": (pa.array([[("a", 1)]] * N, pa.map_(pa.string(), pa.int64())), False),
    "list_of_lists": (pa.array([[[1]]] * N), False),
    "list_of_strings": (pa.array([["a"]] * N), False),
    "fixed_size_binary": (pa.array([b"ab"] * N, pa.binary(2)), False),
}


@pytest.mark.parametrize("name", list(FEATURE_TYPES))
def test_every_arrow_type_is_a_feature_or_refused_naming_it(name, tmp_path):
    from cleanpipe.errors import InputError
    from cleanpipe.features import table_to_features
    col, used = FEATURE_TYPES[name]
    pq.write_table(pa.table({name: col}), tmp_path / "t.parquet")  # a type Parquet can hold
    table = pq.read_table(tmp_path / "t.parquet")
    if used:
        X = table_to_features(table, [name]).X
        assert X.dtype == np.float32 and X.shape[0] == N and np.isfinite(X).all()
    else:
        with pytest.raises(InputError) as info:
            table_to_features(table, [name])
        msg = str(info.value)
        assert f"'{name}'" in msg and str(table.column(name).type).split("<")[0] in msg and "\n" not in msg


@pytest.mark.parametrize("label_type, ok", [
    (pa.float16(), True), (pa.dictionary(pa.uint8(), pa.string()), True), (pa.large_string(), True),
    (pa.decimal128(5, 1), False), (pa.time32("s"), False), (pa.binary(), False)])
def test_label_types_are_used_or_refused(label_type, ok, world):
    t = base_table()
    codes = np.array([int(v[1]) for v in t.column("label").to_pylist()])
    if pa.types.is_dictionary(label_type) or pa.types.is_large_string(label_type) or pa.types.is_binary(label_type):
        values = pa.array([f"c{c}" for c in codes]).cast(
            label_type.value_type if pa.types.is_dictionary(label_type) else label_type)
        if pa.types.is_dictionary(label_type):
            values = values.dictionary_encode().cast(label_type)
    elif pa.types.is_decimal(label_type):
        values = pa.array([decimal.Decimal(int(c)) for c in codes], label_type)
    else:
        values = pa.array(codes.astype(np.int32)).cast(pa.int32()).cast(
            label_type if pa.types.is_time(label_type) else pa.float64()).cast(label_type)
    pq.write_table(t.set_column(3, "label", values), world / "typed.parquet")
    res = run_cli("flag", "typed.parquet", "--out", "typed.flags.parquet", "-q", *FAST_FLAG)
    if not ok:
        line = error_line(res)
        assert "'label'" in line, line
        return
    assert res.exit_code == 0, res.output
    res = run_cli("clean", "typed.flags.parquet", "--out", "typed.cleaned.parquet", "-q")
    assert res.exit_code == 0, res.output
    assert pq.read_schema(world / "typed.cleaned.parquet").field("label").type == label_type


# --- option ranges and messages --------------------------------------------------------------------


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_seed_out_of_range_is_refused_everywhere(seed, world):
    for args in (["flag", "data.parquet", *FAST_FLAG], ["retrain", "data.parquet", "--out", "m", *FAST_TRAIN],
                 ["run", "p.toml", "--set", f"oof.seed={seed}"], ["run", "p.toml", "--set", f"retrain.seed={seed}"]):
        extra = [] if args[0] == "run" else ["--seed", seed]
        line = error_line(run_cli(*args, *extra))
        assert seed in line and "4294967295" in line, line
    assert run_cli("flag", "data.parquet", "--seed", str(2**32 - 1), "-q", *FAST_FLAG).exit_code == 0


def test_one_dimensional_pred_probs_says_so(world):
    np.save(world / "p1.npy", np.full(base_table().num_rows, 0.5))
    line = error_line(run_cli("flag", "data.parquet", "--pred-probs", "p1.npy"))
    assert "1-D" in line and "2-D" in line


def test_users_own_sample_weight_is_not_called_already_cleaned(world):
    t = base_table()
    write_flags(t.append_column("sample_weight", pa.array(np.ones(t.num_rows))), world / "w.flags.parquet")
    line = error_line(run_cli("clean", "w.flags.parquet", "--mode", "weight", "--out", "w.parquet"))
    assert "sample_weight" in line and "of the data's own" in line


def test_hash_in_postgres_uri_does_not_hide_a_password():
    from cleanpipe.errors import ConfigError
    from cleanpipe.sources.postgres import check_uri
    for uri in ("postgresql://me#:hunter2@db/x", "postgresql://me:hun#ter2@db/x"):
        with pytest.raises(ConfigError, match="holds a password") as info:
            check_uri(uri)
        assert "hunter2" not in str(info.value)
    check_uri("postgresql://me@db/x#frag")  # no password: fine


@pytest.mark.parametrize("edit, key", [
    (lambda s: s.update(rows="sixty"), "rows"),
    (lambda s: s.update(flagged=-1), "flagged"),
    (lambda s: s.update(noise_matrix=[[1.0]]), "noise_matrix"),
    (lambda s: s["flagged_per_class"].update(c0="x"), "flagged_per_class")])
def test_report_checks_the_summary_values(edit, key, world):
    summary = json.loads((world / "d.flags.summary.json").read_text())
    edit(summary)
    (world / "s.json").write_text(json.dumps(summary))
    line = error_line(run_cli("report", "d.flags.parquet", "--summary", "s.json", "--out", "r.html"))
    assert key in line and "s.json" in line


def test_retrain_threads_are_part_of_the_retrain_stage_key(tmp_path):
    import dataclasses

    from cleanpipe.pipeline import load_pipeline
    from cleanpipe.pipeline.runner import stage_settings
    pq.write_table(base_table(), tmp_path / "data.parquet")
    (tmp_path / "p.toml").write_text('[source]\ntype = "parquet"\npath = "data.parquet"\n'
                                     '[retrain]\nthreads = 1\n', encoding="utf-8")
    p = load_pipeline(tmp_path / "p.toml")
    two = dataclasses.replace(p, retrain=dataclasses.replace(p.retrain, threads=2))
    assert stage_settings(p, "retrain") != stage_settings(two, "retrain")
    assert stage_settings(p, "flag") == stage_settings(two, "flag")
