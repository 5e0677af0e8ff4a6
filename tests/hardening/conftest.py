"""Fixtures for the hardening suite (helpers live in ``hardening_helpers``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hardening_helpers import FAST_TRAIN, base_table, run_cli


def _servers():
    """``tests/sources/servers.py`` (the PostgreSQL test server), loaded once under its shared name."""
    name = "cleanpipe_test_servers"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "sources" / "servers.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


pg_server, pg_env = _servers().pg_server, _servers().pg_env


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory):
    """A tiny model directory written by ``cleanpipe retrain`` on :func:`base_table`."""
    d = tmp_path_factory.mktemp("hardening_model")
    pq.write_table(base_table(), d / "train.parquet")
    res = run_cli("retrain", d / "train.parquet", "--out", d / "model", "--id", "row_id", "-q", *FAST_TRAIN)
    assert res.exit_code == 0, res.output
    return d / "model"


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Work inside ``tmp_path`` so default output paths land there (and are seen by snapshots)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
