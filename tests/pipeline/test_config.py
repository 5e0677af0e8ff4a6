"""Bad pipeline files and options are rejected before any work, in one line naming the key."""

from __future__ import annotations

import textwrap

import pyarrow.parquet as pq
import pytest
from pipeline_helpers import run_cli

from cleanpipe.errors import ConfigError
from cleanpipe.pipeline import STAGES, load_pipeline, select_stages

GOOD = """
stages = ["oof", "flag"]
[source]
type = "parquet"
path = "data.parquet"
[columns]
label = "label"
[oof]
model = "logreg"
folds = 3
"""


@pytest.fixture
def folder(tmp_path, tiny_table):
    pq.write_table(tiny_table, tmp_path / "data.parquet")
    return tmp_path


def _write(folder, text: str, name: str = "p.toml"):
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def _fails(folder, text, *args, expect):
    """Run the pipeline ``text``; assert exit 2 with one ``error:`` line holding every ``expect``."""
    path = _write(folder, text)
    res = run_cli("run", path, "--runs-dir", folder / "runs", *args)
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for part in [expect] if isinstance(expect, str) else expect:
        assert part in lines[0], lines[0]
    assert not (folder / "runs").exists() or not any((folder / "runs").rglob("manifest.json"))
    return lines[0]


def test_good_file_parses_into_frozen_dataclasses(folder):
    p = load_pipeline(_write(folder, GOOD))
    assert p.name == "p" and p.stages == ("oof", "flag") and p.oof.folds == 3
    assert p.source.path == str(folder / "data.parquet")  # relative to the pipeline file
    with pytest.raises(AttributeError):
        p.oof.folds = 4  # frozen
    res = run_cli("run", folder / "p.toml", "--check", "--runs-dir", folder / "runs")
    assert res.exit_code == 0, res.output
    assert "ok" in res.stdout and not (folder / "runs").exists()


@pytest.mark.parametrize("text, expect", [
    (GOOD + "foldz = 3\n", ["[oof]", "unknown key 'foldz'", "did you mean 'folds'"]),
    (GOOD + "[oofs]\nfolds = 3\n", ["unknown section 'oofs'", "did you mean 'oof'"]),
    (GOOD.replace("folds = 3", 'folds = "3"'), ["[oof] folds must be an integer", "folds = 5"]),
    (GOOD.replace('label = "label"', "label = 3"), ["[columns] label must be a string"]),
    (GOOD + '[columns.x]\n', ["[columns] has an unknown key 'x'"]),
    (GOOD.replace('[source]\ntype = "parquet"\npath = "data.parquet"\n', ""), "[source] section is missing"),
    (GOOD.replace('path = "data.parquet"', ""), ["[source] path is missing", "path = "]),
    (GOOD.replace('type = "parquet"', 'type = "parquett"'), ["[source] type", "did you mean 'parquet'"]),
    (GOOD.replace('path = "data.parquet"', 'path = "missing.parquet"'),
     ["[source] path", "does not exist"]),
    (GOOD.replace('label = "label"', 'label = "lable"'),
     ["[columns] label names 'lable'", "columns: row_id, x, colour, label"]),
    (GOOD + '[flag]\nmethod = "best"\n', ["[flag] method = 'best' is not known", "combined"]),
    (GOOD.replace("folds = 3", "folds = 1"), ["[oof] folds = 1 is out of range", "at least 2"]),
    (GOOD.replace('stages = ["oof", "flag"]', 'stages = ["oof", "clean"]'),
     ["must be a contiguous run", "stages = ['oof', 'flag', 'clean']"]),
    (GOOD.replace('stages = ["oof", "flag"]', 'stages = ["flag", "oof"]'), "contiguous run in the order"),
    (GOOD.replace('"logreg"', '"os:system"'), ["[oof] model", "--allow-custom-model"]),
    (GOOD + '[oof.x]\n', "unknown key 'x'"),
    (GOOD.replace('model = "logreg"', 'model = "logreg"\nbackend = "dask"'), ["[oof] backend", "scheduler"]),
    (GOOD + '[sink]\ntype = "parquet"\ncleaned = "c.parquet"\n', ["[sink] cleaned is set", "no clean stage"]),
    (GOOD + '[sink]\ntype = "parquet"\nflags = "data.parquet"\n', "would overwrite the source"),
    (GOOD + "stages = [\n", "is not valid TOML"),
    (GOOD.replace('stages = ["oof", "flag"]', 'stages = ["oof", "flag", "clean", "retrain"]')
     + '[retrain]\nloss = "cee"\n', ["[retrain] loss = 'cee' is not known", "did you mean 'ce'"]),
    (GOOD + '[retrain]\nhidden = [0]\n', ["[retrain] hidden", "positive widths"]),
])
def test_bad_files_name_the_key(folder, text, expect):
    _fails(folder, text, expect=expect)


def test_missing_file(tmp_path):
    res = run_cli("run", tmp_path / "nope.toml")
    assert res.exit_code == 2 and "does not exist" in res.stderr


def test_password_in_uri_is_refused_and_never_echoed(folder):
    text = """
    stages = ["oof", "flag"]
    [source]
    type = "postgres"
    uri = "postgresql://alice:hunter2-secret@db.example.com:5432/prod"
    table = "train"
    """
    line = _fails(folder, text, expect=["[source] uri holds a password", "PGPASSWORD", ".pgpass"])
    assert "hunter2-secret" not in line
    text2 = text.replace("alice:hunter2-secret@", "alice@").replace("/prod", "/prod?password=hunter2-secret")
    assert "hunter2-secret" not in _fails(folder, text2, expect="holds a password")


@pytest.mark.parametrize("args, where", [
    (("--set", 'name="../escape"'), "name '../escape' is not allowed"),
    (("--set", 'name="/abs/path"'), "is not allowed"),
    (("--set", 'name="a\\u0000b"'), "is not allowed"),
    (("--set", 'name=".."'), "is not allowed"),
    (("--run-id", "../../etc"), "--run-id '../../etc' is not allowed"),
    (("--run-id", "/tmp/x"), "--run-id '/tmp/x' is not allowed"),
    (("--run-id", "latest"), "is not allowed"),
])
def test_names_cannot_escape_the_runs_directory(folder, args, where):
    _fails(folder, GOOD, *args, expect=where)
    assert not (folder.parent / "escape").exists()


@pytest.mark.parametrize("args, expect", [
    (("--from", "flag", "--until", "oof"), "--from flag --until oof selects no stage"),
    (("--from", "clean"), "--from clean is not a stage of this pipeline"),
    (("--until", "retrain"), "--until retrain is not a stage"),
    (("--set", "oof.folds"), "must be KEY=VALUE"),
    (("--backend", "dask"), ["[oof] backend", "scheduler"]),
])
def test_bad_options(folder, args, expect):
    _fails(folder, GOOD, *args, expect=expect)


def test_from_needs_the_earlier_stages_done(folder):
    _fails(folder, GOOD, "--from", "flag", expect=["--from flag", "oof has not completed"])
    assert not (folder / "runs").exists()  # refused before the run directory is created


def test_defaults_follow_the_library():
    from cleanpipe.clean import DEFAULT_MIN_WEIGHT, DEFAULT_RELABEL_P_NOISY, DEFAULT_RELABEL_SCORE
    from cleanpipe.detect.combine import NOISY_THRESHOLD
    from cleanpipe.pipeline.config import CleanSettings, FlagSettings, RetrainSettings
    from cleanpipe.train import TrainConfig
    from cleanpipe.detect import METHODS
    assert FlagSettings().detector() == {"method": METHODS[0], "mixture": "beta",
                                         "noisy_threshold": NOISY_THRESHOLD}
    c = CleanSettings()
    assert (c.min_weight, c.relabel_p_noisy, c.relabel_score) == (
        DEFAULT_MIN_WEIGHT, DEFAULT_RELABEL_P_NOISY, DEFAULT_RELABEL_SCORE)
    r, t = RetrainSettings(), TrainConfig()
    assert (r.epochs, r.batch_size, r.lr, r.weight_decay, r.hidden, r.dropout, r.patience,
            r.val_fraction) == (t.epochs, t.batch_size, t.lr, t.weight_decay, tuple(t.hidden),
                                t.dropout, t.patience, t.val_fraction)


def test_select_stages_unit():
    assert select_stages(STAGES) == STAGES
    assert select_stages(STAGES, "flag", "clean") == ("flag", "clean")
    assert select_stages(("clean", "retrain"), until_stage="clean") == ("clean",)
    with pytest.raises(ConfigError, match="selects no stage"):
        select_stages(STAGES, "retrain", "oof")


def test_custom_model_needs_opt_in_and_must_import(folder, monkeypatch):
    text = GOOD.replace('"logreg"', '"sklearn.naive_bayes:GaussianNB"')
    _fails(folder, text, expect="--allow-custom-model")
    monkeypatch.setenv("CLEANPIPE_ALLOW_CUSTOM_MODEL", "1")  # only the command line can opt in
    _fails(folder, text, expect="--allow-custom-model")
    res = run_cli("run", _write(folder, text), "--allow-custom-model", "--check", "--runs-dir", folder / "runs")
    assert res.exit_code == 0, res.output
    missing = GOOD.replace('"logreg"', '"no_such_pkg.mod:Model"')
    _fails(folder, missing, "--allow-custom-model", expect=["[oof] model", "could not be imported"])


def test_a_locked_run_directory_is_refused(folder):
    from cleanpipe.pipeline.rundir import RunLock
    path = _write(folder, GOOD)
    res = run_cli("run", path, "--runs-dir", folder / "runs", "--run-id", "busy", "--until", "oof")
    assert res.exit_code == 0, res.output
    with RunLock(folder / "runs" / "p" / "busy"):
        res = run_cli("run", path, "--runs-dir", folder / "runs", "--run-id", "busy")
    assert res.exit_code == 2 and "in use by another cleanpipe run" in res.stderr


def test_stage_defaults_are_the_commands_defaults():
    """The pipeline's [clean] and [retrain] defaults are those of `cleanpipe clean` / `retrain`."""
    import dataclasses

    from cleanpipe.clean import DEFAULT_MIN_WEIGHT, DEFAULT_RELABEL_P_NOISY, DEFAULT_RELABEL_SCORE, MODES
    from cleanpipe.pipeline.config import CleanSettings, RetrainSettings
    from cleanpipe.train import DEFAULT_WARMUP, TrainConfig
    c = CleanSettings()
    assert (c.mode, c.min_weight, c.relabel_p_noisy, c.relabel_score) == (
        MODES[0], DEFAULT_MIN_WEIGHT, DEFAULT_RELABEL_P_NOISY, DEFAULT_RELABEL_SCORE)
    r = RetrainSettings()
    assert r.loss is None and r.noisy_weight == "online" and r.warmup == DEFAULT_WARMUP
    for f in dataclasses.fields(TrainConfig):
        assert tuple(getattr(r, f.name)) == tuple(f.default) if f.name == "hidden" else \
            getattr(r, f.name) == f.default, f.name


def test_unset_flag_settings_take_the_defaults_of_the_data():
    from cleanpipe.pipeline.config import FlagSettings
    # single-label: the single-label defaults fill what the file left unset
    assert FlagSettings(method="both").detector() == {"method": "both", "mixture": "beta",
                                                       "noisy_threshold": 0.8}
    # multi-label: only what the file says, so the multi-label detector's defaults apply...
    assert FlagSettings().detector(multi_label=True) == {"mixture": "beta"}
    # ...and a value written in the file is used as written, even the single-label default
    assert FlagSettings(noisy_threshold=0.8).detector(multi_label=True) == {
        "mixture": "beta", "noisy_threshold": 0.8}
