"""Crash safety, tested by killing: SIGKILL at varied moments never costs a user data.

For ``flag``, ``clean``, ``retrain`` and ``run`` a real process is started and killed with SIGKILL
at moments spread over its measured duration, plus moments triggered by its first temporary file
appearing (so some kills land while outputs are being written). After every kill: each final
output path is absent or complete (equal to an uninterrupted run's), and the input is
byte-identical. Then an uninterrupted run completes, removes what the killed runs left (for
``run``: resumes), and gives the same outputs as the reference run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hardening_helpers import CLI_CMD, temps

from cleanpipe.io import TMP_PREFIX

pytestmark = pytest.mark.slow

ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
#: Kills per command: uniform delays over the measured duration plus temp-triggered ones.
UNIFORM, TRIGGERED = 7, 3


def sha(path: Path) -> str:
    h = hashlib.sha256()
    paths = sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).is_dir() else [Path(path)]
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()


def run_ok(args, cwd) -> float:
    """Run the CLI to completion; return its wall time."""
    t0 = time.monotonic()
    proc = subprocess.run([*CLI_CMD, *map(str, args)], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return time.monotonic() - t0


def kill_trial(args, cwd, *, delay: float | None = None, watch: Path | None = None,
               offset: float = 0.0, limit: float = 120.0) -> bool:
    """Start the CLI and SIGKILL it after ``delay`` s, or ``offset`` s after a temporary first
    appears in ``watch``. Returns True if it was killed, False if it finished first."""
    proc = subprocess.Popen([*CLI_CMD, *map(str, args)], cwd=cwd, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    try:
        while proc.poll() is None and time.monotonic() - t0 < limit:
            if delay is not None and time.monotonic() - t0 >= delay:
                break
            if watch is not None and any(watch.rglob(f"{TMP_PREFIX}{proc.pid}-*")):  # its own
                time.sleep(offset)
                break
            time.sleep(0.005)
        if proc.poll() is not None:
            return False
        proc.send_signal(signal.SIGKILL)
        return True
    finally:
        proc.wait(timeout=60)


def plan(duration: float):
    """(delay, offset) pairs: ``UNIFORM`` delays over [0.05, 0.75] x duration, then triggered ones.

    The last delay stays well short of the reference duration because later runs start warm (page
    cache, imported wheels) and finish faster than the first one measured."""
    uniform = [(duration * (0.05 + 0.7 * i / (UNIFORM - 1)), None) for i in range(UNIFORM)]
    return uniform + [(None, off) for off in (0.0, 0.05, 0.3)[:TRIGGERED]]


def same_table(a: pa.Table, b: pa.Table) -> bool:
    return a.num_rows == b.num_rows and a.equals(b, check_metadata=False)


# --- fixtures: a 1.5M-row table with its probabilities, and the reference flag run -----------------

@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """``in/big.parquet`` (1.5M rows) and ``in/big.npy``; ``ref/`` holds a complete flag run."""
    root = tmp_path_factory.mktemp("kill")
    (root / "in").mkdir()
    n = 1_500_000
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n)
    pq.write_table(pa.table({"row_id": np.arange(n), "x": rng.normal(2.0 * y, 1.0), "label": y}),
                   root / "in" / "big.parquet")
    p = np.full((n, 3), 0.1, np.float32)
    p[np.arange(n), y] = 0.8
    flip = rng.random(n) < 0.1
    p[flip] = np.roll(p[flip], 1, axis=1)
    np.save(root / "in" / "big.npy", p)
    (root / "ref").mkdir()
    duration = run_ok(["flag", root / "in" / "big.parquet", "--pred-probs", root / "in" / "big.npy",
                       "--out", root / "ref" / "flags.parquet", "-q"], root)
    return root, duration


def _summary_core(path: Path) -> dict:
    s = json.loads(path.read_text())
    s.pop("timings", None)
    s.pop("outputs", None)
    return s


def test_flag_killed_at_any_moment(big):
    root, duration = big
    out = root / "flag_out"
    out.mkdir()
    inputs = {p: sha(p) for p in (root / "in").iterdir()}
    ref_table = pq.read_table(root / "ref" / "flags.parquet")
    ref_summary = _summary_core(root / "ref" / "flags.summary.json")
    args = ["flag", root / "in" / "big.parquet", "--pred-probs", root / "in" / "big.npy",
            "--out", out / "flags.parquet", "-q"]
    killed, left_temps, met = 0, 0, 0
    for delay, offset in plan(duration):
        for f in ("flags.parquet", "flags.summary.json"):
            (out / f).unlink(missing_ok=True)  # each trial starts without outputs; temps stay
        killed += kill_trial(args, root, delay=delay, watch=out if delay is None else None, offset=offset or 0)
        left_temps += bool(temps(out))
        if (out / "flags.parquet").exists():
            assert same_table(pq.read_table(out / "flags.parquet"), ref_table)
        if (out / "flags.summary.json").exists():
            assert _summary_core(out / "flags.summary.json") == ref_summary
        assert {p: sha(p) for p in inputs} == inputs
        met += 1
    assert killed >= UNIFORM and left_temps >= 1, (killed, left_temps)
    run_ok(args, root)  # the next run removes the killed runs' temporaries and completes
    assert not temps(out)
    assert same_table(pq.read_table(out / "flags.parquet"), ref_table)
    print(f"flag: {len(plan(duration))} trials, {killed} killed, {left_temps} left temporaries, {met} met")


def test_clean_killed_at_any_moment(big):
    root, _ = big
    src = root / "clean_in"
    src.mkdir()
    for f in ("flags.parquet", "flags.summary.json"):
        shutil.copy(root / "ref" / f, src / f)
    out = root / "clean_out"
    out.mkdir()
    args = ["clean", src / "flags.parquet", "--mode", "drop", "--out", out / "cleaned.parquet", "-q"]
    duration = run_ok(args, root)
    reference = pq.read_table(out / "cleaned.parquet")
    inputs = {p: sha(p) for p in src.iterdir()}
    killed, left_temps = 0, 0
    for delay, offset in plan(duration):
        (out / "cleaned.parquet").unlink(missing_ok=True)
        killed += kill_trial(args, root, delay=delay, watch=out if delay is None else None, offset=offset or 0)
        left_temps += bool(temps(out))
        if (out / "cleaned.parquet").exists():
            assert same_table(pq.read_table(out / "cleaned.parquet"), reference)
        assert {p: sha(p) for p in inputs} == inputs
    assert killed >= UNIFORM and left_temps >= 1, (killed, left_temps)
    run_ok(args, root)
    assert not temps(out)
    assert same_table(pq.read_table(out / "cleaned.parquet"), reference)
    print(f"clean: {len(plan(duration))} trials, {killed} killed, {left_temps} left temporaries, all met")


# --- retrain -----------------------------------------------------------------------------------------

TRAIN = ("--epochs", "3", "--batch-size", "256", "--hidden", "32", "--patience", "0", "--device", "cpu",
         "--threads", "1", "--seed", "3", "-q")


@pytest.fixture(scope="module")
def train_table(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill_train")
    n = 4_000
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, n)
    cols = {f"f{i}": rng.normal(y * (i % 3 + 1) * 0.5, 1.0) for i in range(8)}
    cols["label"] = np.where(rng.random(n) < 0.1, (y + 1) % 4, y)
    pq.write_table(pa.table(cols), root / "train.parquet")
    return root


def _model_state(path: Path) -> dict:
    import torch

    from cleanpipe.train import load_model_dir
    load_model_dir(path)  # complete: all three files, consistent, weights-only
    return torch.load(path / "model.pt", weights_only=True)


def _same_state(a: dict, b: dict) -> bool:
    import torch
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_retrain_killed_at_any_moment(train_table):
    root = train_table
    data = root / "train.parquet"
    out = root / "models"
    out.mkdir()
    args = ["retrain", data, "--out", out / "model", *TRAIN]
    # Timed warm: a first run pays torch's cold import, and kills timed from it landed after the
    # faster runs that followed had finished (7 of 10 trials killed at worst).
    run_ok(args, root)
    shutil.rmtree(out / "model")
    duration = run_ok(args, root)
    print(f"retrain: reference took {duration:.1f} s")
    reference = _model_state(out / "model")
    digest = sha(data)
    killed = []
    for delay, offset in plan(duration):
        shutil.rmtree(out / "model", ignore_errors=True)
        killed.append(kill_trial(args, root, delay=delay, watch=out if delay is None else None,
                                 offset=offset or 0))
        if (out / "model").exists():
            assert _same_state(_model_state(out / "model"), reference)
        assert sha(data) == digest
    print(f"retrain: {len(killed)} trials, {sum(killed)} killed ({killed}), all met")
    assert sum(killed) >= UNIFORM, killed
    # (that the next retrain removes a killed one's staging folder is test_stale_temps.py's job)


# --- run: kill, then resume ------------------------------------------------------------------------

PIPELINE = """
stages = ["oof", "flag", "clean", "retrain"]
[source]
type = "parquet"
path = "train.parquet"
[columns]
label = "label"
[oof]
model = "logreg"
folds = 3
seed = 0
[clean]
mode = "drop"
[retrain]
epochs = 1
hidden = [8]
patience = 0
device = "cpu"
threads = 1
seed = 5
[sink]
type = "parquet"
flags = "sink/{name}/flags.parquet"
cleaned = "sink/{name}/cleaned.parquet"
"""


def _outputs(run_dir: Path, sink: Path) -> dict:
    """The final outputs of a run that exist, each read back whole (so each is complete)."""
    got = {}
    if (run_dir / "oof" / "pred_probs.npy").exists():
        got["oof"] = np.load(run_dir / "oof" / "pred_probs.npy")
    for key, path in (("flags", run_dir / "flag" / "flags.parquet"),
                      ("cleaned", run_dir / "clean" / "cleaned.parquet"),
                      ("sink_flags", sink / "flags.parquet"), ("sink_cleaned", sink / "cleaned.parquet")):
        if path.exists():
            got[key] = pq.read_table(path)
    if (run_dir / "retrain").exists():
        got["model"] = _model_state(run_dir / "retrain" / "model")
    if (run_dir / "manifest.json").exists():
        json.loads((run_dir / "manifest.json").read_text())  # never half-written
    return got


def _agree(got: dict, ref: dict) -> None:
    for key, value in got.items():
        if key == "oof":
            np.testing.assert_array_equal(value, ref[key])
        elif key == "model":
            assert _same_state(value, ref[key])
        else:
            assert same_table(value, ref[key]), key


def test_run_killed_then_resumed_gives_the_uninterrupted_outputs(train_table):
    root = train_table
    for name in ("ref", "a", "b"):
        (root / f"{name}.toml").write_text(PIPELINE.format(name=name))
    runs = root / "runs"
    duration = run_ok(["run", root / "ref.toml", "--runs-dir", runs, "--run-id", "r", "-q"], root)
    print(f"run: reference took {duration:.1f} s")
    ref = _outputs(runs / "ref" / "r", root / "sink" / "ref")
    assert set(ref) == {"oof", "flags", "cleaned", "sink_flags", "sink_cleaned", "model"}
    digest = sha(root / "train.parquet")
    killed = 0
    # a: every trial resumes what the previous killed one left; b: every trial starts over (--force)
    for name, extra in (("a", ()), ("b", ("--force",))):
        args = ["run", root / f"{name}.toml", "--runs-dir", runs, "--run-id", "r", "-q", *extra]
        run_dir, sink = runs / name / "r", root / "sink" / name
        for i in range(5):
            delay = duration * (0.15 + 0.8 * i / 4)
            killed += kill_trial(args, root, delay=delay)
            _agree(_outputs(run_dir, sink), ref)  # whatever exists is complete and right
            assert sha(root / "train.parquet") == digest
        run_ok(args[:-1] if extra else args, root)  # resume (without --force)
        m = json.loads((run_dir / "manifest.json").read_text())
        assert m["status"] == "done"
        final = _outputs(run_dir, sink)
        assert set(final) == set(ref)
        _agree(final, ref)
        assert not temps(run_dir)
    assert killed >= 6, killed
    print(f"run: 10 trials, {killed} killed, all met; both resumed runs equal the reference")
