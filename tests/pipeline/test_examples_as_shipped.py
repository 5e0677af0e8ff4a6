"""Every example pipeline that needs no server runs as its header says, from a fresh copy of the
repository: the header's commands, in order, and nothing else (no data prepared by the test)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from pipeline_helpers import FAST

REPO = Path(__file__).resolve().parents[2]
SERVERS = {"postgres"}  # sources that need a running server (tested in test_examples.py)


def _tracked_copy(dest: Path) -> Path:
    """The repository as a fresh clone has it: the files git tracks, no data, no run folders."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True)
    for name in files.stdout.decode().split("\0"):
        if name and (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


def _header_commands(pipeline: Path) -> list[list[str]]:
    """The commands the pipeline file's header comment tells a user to type."""
    commands = []
    for line in pipeline.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip().split("  #")[0].strip()
        if text.startswith(("python ", "cleanpipe ")):
            commands.append(text.split())
    return commands


def _serverless():
    out = []
    for p in sorted((REPO / "pipelines").glob("*.toml")):
        kind = tomllib.loads(p.read_text())["source"]["type"]
        out.append(pytest.param(p.name, marks=pytest.mark.skipif(kind in SERVERS, reason=f"{kind} needs a server")))
    return out


@pytest.mark.slow  # the oof and flag stages of each example on the 1797-row digits
@pytest.mark.parametrize("name", _serverless())
def test_a_shipped_pipeline_runs_from_a_fresh_copy_as_its_header_says(tmp_path, name):
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: cannot tell which files a fresh clone has")
    copy = _tracked_copy(tmp_path / "repo")
    commands = _header_commands(copy / "pipelines" / name)
    assert commands and commands[-1][:2] == ["cleanpipe", "run"], commands
    if tomllib.loads((copy / "pipelines" / name).read_text())["source"]["type"] == "duckdb":
        pytest.importorskip("duckdb")
    env = {"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    for cmd in commands:
        if cmd[0] == "python":
            argv = [sys.executable, *cmd[1:]]
        else:  # a quick run: the shipped settings, fewer folds and epochs
            argv = [sys.executable, "-c", "from cleanpipe.cli import main; main()", *cmd[1:],
                    *FAST, "--until", "flag", "--json"]
        res = subprocess.run(argv, cwd=copy, env=env, capture_output=True, text=True, timeout=900)
        assert res.returncode == 0, (cmd, res.stderr[-2000:])
    out = json.loads(res.stdout)
    assert out["actions"]["oof"] == "ran" and out["actions"]["flag"] == "ran", out
