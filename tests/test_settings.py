"""One home for defaults and ranges: the CLI, the pipeline loader and the library read cleanpipe.settings."""

from __future__ import annotations

import dataclasses
import math

import click
import pytest

from cleanpipe import settings as S
from cleanpipe.cli import cli
from cleanpipe.errors import ConfigError, InputError
from cleanpipe.pipeline.config import CleanSettings, FlagSettings, OofSettings, RetrainSettings
from cleanpipe.pipeline.rules import _check_group

#: command -> the settings groups its options come from
COMMANDS = {"retrain": (S.TRAIN, S.RETRAIN), "clean": (S.CLEAN,), "flag": (S.OOF, S.FLAG, S.CHECKS)}


def _options(command: str) -> dict:
    return {p.name: p for p in cli.get_command(click.Context(cli), command).params if isinstance(p, click.Option)}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_cli_defaults_and_ranges_are_the_declared_ones(command):
    opts = _options(command)
    for group in COMMANDS[command]:
        for name, setting in group.items():
            opt = opts[name]
            if opt.default is None and name in ("method", "noisy_threshold"):
                # flag resolves these from the kind of label (single or multi-label)
                assert "multi-label" in str(opt.show_default), name
                continue
            want = ",".join(map(str, setting.default)) if setting.kind is tuple else setting.default
            assert opt.default == want, name
            if isinstance(opt.type, click.types._NumberRangeBase):
                assert (opt.type.min, opt.type.max, opt.type.min_open, opt.type.max_open) == (
                    setting.lo, setting.hi, setting.lo_open, setting.hi_open), name
            if isinstance(opt.type, click.Choice) and name != "method":
                assert tuple(opt.type.choices) == setting.choices, name


def test_pipeline_sections_default_to_the_declarations():
    for cls, groups in ((RetrainSettings, (S.TRAIN, S.RETRAIN)), (CleanSettings, (S.CLEAN,)),
                        (OofSettings, (S.OOF,))):
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        for group in groups:
            for name, setting in group.items():
                assert defaults[name] == setting.default, (cls.__name__, name)
    assert FlagSettings().mixture == S.FLAG["mixture"].default
    # every optimisation setting of the loop is a [retrain] key, and builds the loop's config
    assert {f.name for f in dataclasses.fields(S.TrainConfig)} == set(S.TRAIN)
    assert RetrainSettings().train_config() == S.TrainConfig()


def test_setting_ok_known_answers():
    epochs, lr, threads, n_jobs = S.TRAIN["epochs"], S.TRAIN["lr"], S.TRAIN["threads"], S.OOF["n_jobs"]
    assert epochs.ok(1) and not epochs.ok(0) and not epochs.ok(True) and not epochs.ok(1.5)
    assert lr.ok(1e-9) and not lr.ok(0.0) and not lr.ok(math.inf) and not lr.ok(math.nan)
    assert threads.ok(None) and threads.ok(2) and not threads.ok(0)
    assert n_jobs.ok(-1) and n_jobs.ok(3) and not n_jobs.ok(0) and not n_jobs.ok(-2)
    hidden = S.TRAIN["hidden"]
    assert hidden.ok((8,)) and not hidden.ok(()) and not hidden.ok((8, 0))
    assert S.TRAIN["device"].ok("cpu") and not S.TRAIN["device"].ok("tpu")


@pytest.mark.parametrize("key, bad", [("epochs", 0), ("lr", 0.0), ("dropout", 1.0), ("val_fraction", -0.1),
                                      ("patience", -1), ("threads", 0), ("mixup", -1.0), ("seed", -1)])
def test_library_and_pipeline_refuse_the_same_values(key, bad):
    with pytest.raises(InputError, match=f"--{key.replace('_', '-')} must be"):
        dataclasses.replace(S.TrainConfig(), **{key: bad}).check()
    with pytest.raises(ConfigError, match=rf"\[retrain\] {key} = "):
        _check_group("p.toml", "retrain", S.TRAIN, dataclasses.replace(RetrainSettings(), **{key: bad}))
