"""Fixtures for the source and sink tests (defined in servers.py, shared with tests/pipeline)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def load_servers():
    """``tests/sources/servers.py`` as one module, whichever test folder asks first."""
    name = "cleanpipe_test_servers"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("servers.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_servers = load_servers()
pg_server, pg_env, s3_endpoint, s3_env = _servers.pg_server, _servers.pg_env, _servers.s3_endpoint, _servers.s3_env
tiny_table = _servers.tiny_table
