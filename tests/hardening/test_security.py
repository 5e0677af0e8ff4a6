"""Hostile inputs: pickled code as model weights, code named in a pipeline file, names that try to
leave the run directory.

SQL injection and secrets (PostgreSQL / DuckDB identifiers, passwords in URIs, redaction) are
covered in tests/sources/test_sql.py, tests/sources/test_duckdb.py, tests/sources/test_postgres.py,
tests/pipeline/test_config.py and tests/pipeline/test_warehouses.py; HTML escaping of the report
in tests/report/test_report.py. See docs/RELIABILITY.md.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess

import pyarrow.parquet as pq
import pytest
import torch
from hardening_helpers import CLI_CMD, base_table, run_cli, snapshot


class _Payload:
    """Unpickling this runs ``os.system(command)``."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _evil_model(src, dst, marker, *, as_torch_zip: bool):
    shutil.copytree(src, dst)
    payload = _Payload(f"touch {marker}")
    if as_torch_zip:  # the torch.save format with the payload inside data.pkl
        torch.save({"layers.0.weight": payload}, dst / "model.pt")
    else:  # a bare pickle
        (dst / "model.pt").write_bytes(pickle.dumps(payload, protocol=2))
    return dst


@pytest.mark.parametrize("as_torch_zip", [False, True], ids=["bare_pickle", "torch_zip"])
def test_predict_refuses_a_pickle_planted_as_weights_and_never_runs_it(tmp_path, trained_model, as_torch_zip):
    marker = tmp_path / "pwned"
    model = _evil_model(trained_model, tmp_path / "model", marker, as_torch_zip=as_torch_zip)
    pq.write_table(base_table(), tmp_path / "d.parquet")
    before = snapshot(tmp_path)
    args = ["predict", model, tmp_path / "d.parquet", "--out", tmp_path / "p.parquet"]
    if as_torch_zip:  # in-process
        res = run_cli(*args)
        code, stderr = res.exit_code, res.stderr
    else:  # a real process: its exit status
        proc = subprocess.run([*CLI_CMD, *map(str, args)], capture_output=True, text=True, cwd=tmp_path,
                              timeout=120)
        code, stderr = proc.returncode, proc.stderr
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "model.pt is not a weights-only state dict" in lines[0], stderr
    assert not marker.exists()  # the payload never ran
    assert snapshot(tmp_path) == before  # nothing written, nothing changed


def test_the_pickle_payload_is_real(tmp_path):
    """The planted file does run its payload when unpickled without weights_only (the guard matters)."""
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(_Payload(f"touch {marker}"), protocol=2))
    pickle.loads(path.read_bytes())
    assert marker.exists()


EVIL_MODULE = """
import pathlib
pathlib.Path({marker!r}).write_text("imported")

class Model:
    pass
"""

PIPELINE = """
stages = ["oof", "flag"]
[source]
type = "parquet"
path = "d.parquet"
[oof]
model = "evilpkg_{tag}:Model"
folds = 3
"""


@pytest.mark.parametrize("how", ["in_file", "via_set"])
def test_a_pipeline_naming_a_custom_model_is_refused_without_the_opt_in(tmp_path, monkeypatch, how):
    """Without --allow-custom-model the named module is never imported (its code never runs)."""
    tag = f"{how}_{os.getpid()}"
    marker = tmp_path / "imported"
    (tmp_path / f"evilpkg_{tag}.py").write_text(EVIL_MODULE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    pq.write_table(base_table(), tmp_path / "d.parquet")
    text = PIPELINE.format(tag=tag)
    extra = []
    if how == "via_set":
        text = text.replace(f'model = "evilpkg_{tag}:Model"', 'model = "logreg"')
        extra = ["--set", f'oof.model="evilpkg_{tag}:Model"']
    (tmp_path / "p.toml").write_text(text)
    before = snapshot(tmp_path)
    res = run_cli("run", tmp_path / "p.toml", "--runs-dir", tmp_path / "runs", *extra)
    assert res.exit_code == 2, res.output
    line, = res.stderr.strip().splitlines()
    assert "--allow-custom-model" in line and f"evilpkg_{tag}:Model" in line
    assert not marker.exists()
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name, args", [
    ("../escape", ()),
    ("/tmp/abs-escape", ()),
    ("a/../../escape", ()),
    ("ok", ("--run-id", "../../escape")),
    ("ok", ("--run-id", "/tmp/abs-escape")),
    ("ok", ("--run-id", "a\x00b")),
    ("ok", ("--run-id", "..")),
])
def test_pipeline_and_run_names_cannot_leave_the_runs_directory(tmp_path, name, args):
    work = tmp_path / "work"
    work.mkdir()
    pq.write_table(base_table(), work / "d.parquet")
    (work / "p.toml").write_text(f'name = "{name}"\n' + PIPELINE.format(tag="x").replace(
        'model = "evilpkg_x:Model"', 'model = "logreg"'))
    before = snapshot(tmp_path)
    res = run_cli("run", work / "p.toml", "--runs-dir", work / "runs", *args)
    assert res.exit_code == 2, res.output
    line, = res.stderr.strip().splitlines()
    assert line.startswith("error: ") and "is not allowed" in line
    assert snapshot(tmp_path) == before  # nothing created, inside or outside the runs directory
    assert not os.path.exists("/tmp/abs-escape")
