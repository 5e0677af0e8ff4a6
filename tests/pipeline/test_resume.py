"""Run directories and resume: crashes, changed settings, --force/--from/--until, kills."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pyarrow.parquet as pq
import pytest
from pipeline_helpers import manifest, run_cli

from cleanpipe.pipeline import runner, stages

PIPE = """
stages = ["oof", "flag", "clean"]
[source]
type = "parquet"
path = "data.parquet"
[columns]
ids = ["row_id"]
[oof]
model = "logreg"
folds = 3
"""


@pytest.fixture
def pipe(tmp_path, tiny_table):
    pq.write_table(tiny_table, tmp_path / "data.parquet")
    path = tmp_path / "tiny.toml"
    path.write_text(PIPE)
    return path


def _run(pipe, *args):
    res = run_cli("run", pipe, "--runs-dir", pipe.parent / "runs", "--run-id", "r1", "--json", *args)
    return res


def _state(run_dir):
    m = manifest(run_dir)
    return {s: (r["status"], r.get("finished")) for s, r in m["stages"].items()}


def test_crash_in_a_stage_then_rerun_reuses_the_earlier_stages(pipe, monkeypatch):
    def crash(ctx, out):
        (out / "cleaned.parquet").write_bytes(b"half a file")  # partial output, never published
        raise RuntimeError("simulated crash in clean")

    monkeypatch.setitem(stages.STAGE_FUNCTIONS, "clean", crash)
    res = _run(pipe)
    assert res.exit_code == 1 and "simulated crash" in res.stderr
    run_dir = pipe.parent / "runs" / "tiny" / "r1"
    m = manifest(run_dir)
    assert m["status"] == "failed"
    assert m["stages"]["oof"]["status"] == m["stages"]["flag"]["status"] == "done"
    assert m["stages"]["clean"]["status"] == "failed" and "simulated crash" in m["stages"]["clean"]["error"]
    assert not (run_dir / "clean").exists()  # the partial folder was never renamed into place
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock", "flag", "manifest.json", "oof"]
    before = _state(run_dir)
    mtimes = {p: p.stat().st_mtime_ns for p in (run_dir / "oof" / "pred_probs.npy", run_dir / "flag" / "flags.parquet")}

    monkeypatch.undo()
    res = _run(pipe)
    assert res.exit_code == 0, res.output
    import json
    assert json.loads(res.stdout)["actions"] == {"oof": "reused", "flag": "reused", "clean": "ran"}
    after = _state(run_dir)
    assert after["oof"] == before["oof"] and after["flag"] == before["flag"]  # not recomputed
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    assert after["clean"][0] == "done" and manifest(run_dir)["status"] == "done"
    assert pq.read_table(run_dir / "clean" / "cleaned.parquet").num_rows <= 60


def test_changed_settings_resume_at_the_first_changed_stage(pipe):
    import json
    assert _run(pipe).exit_code == 0
    res = _run(pipe, "--set", 'clean.mode="weight"')
    assert json.loads(res.stdout)["actions"] == {"oof": "reused", "flag": "reused", "clean": "ran"}
    res = _run(pipe, "--set", 'clean.mode="weight"', "--set", 'flag.method="both"')
    assert json.loads(res.stdout)["actions"] == {"oof": "reused", "flag": "ran", "clean": "ran"}
    # n_jobs changes nothing in the results, so it is not part of any stage's key
    res = _run(pipe, "--set", 'clean.mode="weight"', "--set", 'flag.method="both"', "--set", "oof.n_jobs=2")
    assert set(json.loads(res.stdout)["actions"].values()) == {"reused"}
    res = _run(pipe, "--set", "oof.seed=1")
    assert set(json.loads(res.stdout)["actions"].values()) == {"ran"}


def test_changed_input_reruns_everything(pipe, tiny_table):
    import json
    assert _run(pipe).exit_code == 0
    pq.write_table(tiny_table.slice(0, 57), pipe.parent / "data.parquet")
    res = _run(pipe)
    out = json.loads(res.stdout)
    assert set(out["actions"].values()) == {"ran"} and out["input"]["rows"] == 57


def test_force_from_and_until(pipe):
    import json
    res = _run(pipe, "--until", "oof")
    out = json.loads(res.stdout)
    assert out["actions"] == {"oof": "ran", "flag": "skipped", "clean": "skipped"}
    assert out["status"] == "partial"
    assert json.loads(_run(pipe, "--from", "flag").stdout)["actions"] == {
        "oof": "reused", "flag": "ran", "clean": "ran"}
    assert json.loads(_run(pipe, "--from", "flag", "--until", "flag").stdout)["actions"] == {
        "oof": "reused", "flag": "ran", "clean": "skipped"}
    assert set(json.loads(_run(pipe, "--force").stdout)["actions"].values()) == {"ran"}
    # --from refuses to build on a stage whose settings changed since it ran
    res = _run(pipe, "--from", "flag", "--set", "oof.folds=4")
    assert res.exit_code == 2 and "stage oof is out of date" in res.stderr


def test_default_run_id_follows_the_source_and_latest_points_at_the_last_run(pipe, tiny_table):
    runs = pipe.parent / "runs"
    assert run_cli("run", pipe, "--runs-dir", runs, "--until", "oof").exit_code == 0
    first = (runs / "tiny" / "latest").resolve()
    assert first.name.startswith("src-")
    assert run_cli("run", pipe, "--runs-dir", runs, "--until", "oof").exit_code == 0
    assert (runs / "tiny" / "latest").resolve() == first  # same source: same directory, resumed
    pq.write_table(tiny_table, pipe.parent / "other.parquet")
    res = run_cli("run", pipe, "--runs-dir", runs, "--until", "oof", "--set", 'source.path="other.parquet"')
    assert res.exit_code == 0
    assert (runs / "tiny" / "latest").resolve() != first


def test_a_kill_between_folder_swap_and_done_mark_recomputes_the_stage(pipe, monkeypatch):
    """The window where the output folder is in place but the manifest not yet updated."""
    import json
    real_swap = runner.swap_in

    def swap_then_die(tmp, final):
        real_swap(tmp, final)
        if final.name == "flag":
            raise KeyboardInterrupt  # what a SIGINT/kill at this instant looks like to the runner

    monkeypatch.setattr(runner, "swap_in", swap_then_die)
    res = _run(pipe)
    assert res.exit_code != 0
    run_dir = pipe.parent / "runs" / "tiny" / "r1"
    assert (run_dir / "flag" / "flags.parquet").exists()
    assert manifest(run_dir)["stages"]["flag"]["status"] != "done"  # never trusted
    monkeypatch.undo()
    assert json.loads(_run(pipe).stdout)["actions"] == {"oof": "reused", "flag": "ran", "clean": "ran"}


SLOW_MODEL = '''
import time
from sklearn.linear_model import LogisticRegression

class SlowLogReg(LogisticRegression):
    def fit(self, X, y, sample_weight=None):
        time.sleep(60)
        return super().fit(X, y, sample_weight)
'''


@pytest.mark.slow
def test_sigkill_during_a_stage_leaves_it_not_done_and_the_rerun_completes(pipe, tmp_path):
    (tmp_path / "slowmodel.py").write_text(textwrap.dedent(SLOW_MODEL))
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    cmd = [sys.executable, "-c", "from cleanpipe.cli import main; main()", "run", str(pipe),
           "--runs-dir", str(tmp_path / "runs"), "--run-id", "r1", "--allow-custom-model",
           "--set", 'oof.model="slowmodel:SlowLogReg"', "-q"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    run_dir = tmp_path / "runs" / "tiny" / "r1"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if manifest(run_dir)["stages"].get("oof", {}).get("status") == "running":
                break
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(f"the run never reached the oof stage: {proc.communicate()}")
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    m = manifest(run_dir)
    assert m["stages"]["oof"]["status"] == "running"  # not done: the next run recomputes it
    assert not (run_dir / "oof").exists()
    assert any(p.name.startswith(".cleanpipe-tmp-") for p in run_dir.iterdir())
    res = _run(pipe)
    assert res.exit_code == 0, res.output
    assert manifest(run_dir)["stages"]["oof"]["status"] == "done"
    assert not any(p.name.startswith(".cleanpipe-tmp-") for p in run_dir.iterdir())


def test_retrain_stage_takes_the_online_mixture_mixup_and_flag_prior(pipe):
    import json
    res = _run(pipe, "--until", "retrain", "--set", 'stages=["oof", "flag", "clean", "retrain"]',
               "--set", 'retrain.loss="dynamic-hard"', "--set", "retrain.epochs=3", "--set", "retrain.warmup=1",
               "--set", "retrain.mixup=0.5", "--set", "retrain.prior_reg=1.0", "--set", "retrain.patience=0")
    assert res.exit_code == 0, res.output
    run_dir = pipe.parent / "runs" / "tiny" / "r1"
    m = json.loads((run_dir / "retrain" / "model" / "metrics.json").read_text())
    s = m["settings"]
    assert s["mixup"] == 0.5 and s["prior_reg"] == 1.0 and s["noisy_weight"] == "online"
    flag_summary = json.loads((run_dir / "flag" / "summary.json").read_text())
    prior = flag_summary["class_prior"]
    assert s["prior"] == pytest.approx([p / sum(prior) for p in prior], abs=1e-5)
    assert [r["epoch"] for r in m["noise_model"]] == [1, 2, 3]


def test_retrain_stage_default_loss_chooses_from_the_flag_noise_matrix(pipe):
    import json

    from cleanpipe.train import choose_loss
    res = _run(pipe, "--until", "retrain", "--set", 'stages=["oof", "flag", "clean", "retrain"]',
               "--set", "retrain.epochs=2")
    assert res.exit_code == 0, res.output
    run_dir = pipe.parent / "runs" / "tiny" / "r1"
    s = json.loads((run_dir / "retrain" / "model" / "metrics.json").read_text())["settings"]
    flag_summary = json.loads((run_dir / "flag" / "summary.json").read_text())
    # the same choice as auto makes from the flag stage's matrix and prior, which it therefore read
    want = choose_loss(flag_summary["noise_matrix"], flag_summary["class_prior"])[1]
    assert {k: s["loss_choice"][k] for k in ("chosen", "labels", "source")} == {
        k: want[k] for k in ("chosen", "labels", "source")}
    assert s["loss_choice"]["noise_rate"] == pytest.approx(want["noise_rate"], abs=1e-5)
    assert s["loss"] == s["loss_choice"]["chosen"] and "flip_concentration" in s["loss_choice"]
