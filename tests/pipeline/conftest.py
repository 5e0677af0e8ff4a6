"""Fixtures for the pipeline tests: the shipped pipeline files next to generated example data."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[2]


def _load(name: str, path: Path):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_servers = _load("cleanpipe_test_servers", REPO / "tests" / "sources" / "servers.py")
pg_server, pg_env, s3_endpoint, s3_env = _servers.pg_server, _servers.pg_env, _servers.s3_endpoint, _servers.s3_env
tiny_table = _servers.tiny_table


@pytest.fixture(scope="session")
def digits_table():
    """The example table of ``examples/make_noisy_digits.py`` (30% of labels flipped)."""
    make = _load("cleanpipe_example_digits", REPO / "examples" / "make_noisy_digits.py")
    return make.noisy_digits(noise=0.3, seed=0)


@pytest.fixture
def repo(tmp_path, digits_table):
    """A folder laid out like the repository: ``pipelines/`` (the shipped files, unchanged) and
    ``examples/data/digits_noisy.parquet``, so the files' relative paths resolve as documented."""
    shutil.copytree(REPO / "pipelines", tmp_path / "pipelines")
    data = tmp_path / "examples" / "data"
    data.mkdir(parents=True)
    pq.write_table(digits_table, data / "digits_noisy.parquet")
    return tmp_path
