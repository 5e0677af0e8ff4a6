"""Real servers for the source/sink tests: a throwaway PostgreSQL cluster and a moto S3 server.

Shared by ``tests/sources`` and ``tests/pipeline`` (their conftests load this file by path and
re-export the fixtures at the bottom). Each server starts at most once per test session: the
first fixture that asks starts it and an ``atexit`` hook stops it.
"""

from __future__ import annotations

import atexit
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pytest

_STARTED: dict = {}


@dataclass(frozen=True)
class PgServer:
    """A running PostgreSQL cluster with a password-authenticated role ``cleanpipe``."""

    host: str
    port: int
    user: str
    password: str
    superuser_uri: str  # unix socket, trust auth

    def env(self, database: str) -> dict:
        """libpq environment variables for ``database`` as the ``cleanpipe`` role."""
        return {"PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": self.user,
                "PGPASSWORD": self.password, "PGDATABASE": database}

    def create_database(self, name: str) -> None:
        import adbc_driver_postgresql.dbapi as dbapi
        with dbapi.connect(self.superuser_uri, autocommit=True) as con, con.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}" OWNER "{self.user}"')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[-3]) if p.split("/")[-3].isdigit() else 0)
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


def postgres_server():
    """Start (once) and return a :class:`PgServer`, or a string saying why it cannot run."""
    if "postgres" in _STARTED:
        return _STARTED["postgres"]
    try:
        import adbc_driver_postgresql.dbapi  # noqa: F401
    except ImportError:
        return _remember("postgres", "adbc-driver-postgresql is not installed (pip install -e '.[test]')")
    bindir = _pg_bin()
    if bindir is None:
        return _remember("postgres", "no PostgreSQL server binaries (initdb); apt-get install postgresql")
    prefix = []
    # /tmp: reachable by the postgres user, and short enough for a unix socket path (107 bytes).
    base = tempfile.mkdtemp(prefix="cleanpipe-pg-", dir="/tmp" if os.path.isdir("/tmp") else None)
    if os.geteuid() == 0:
        # PostgreSQL refuses to run as root: run it as the postgres system user.
        import pwd
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            return _remember("postgres", "running as root and there is no 'postgres' user to run the server")
        os.chown(base, pw.pw_uid, pw.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data, sock, port = os.path.join(base, "data"), base, _free_port()

    def run(*cmd):
        subprocess.run(prefix + list(cmd), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    try:
        run(f"{bindir}/initdb", "-D", data, "-U", "postgres", "--auth-local=trust",
            "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync")
        run(f"{bindir}/pg_ctl", "-D", data, "-l", os.path.join(base, "server.log"), "-w", "-t", "60",
            "-o", f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off "
                  "-c synchronous_commit=off -c full_page_writes=off", "start")
    except (subprocess.CalledProcessError, OSError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        shutil.rmtree(base, ignore_errors=True)
        return _remember("postgres", f"could not start PostgreSQL ({exc}; {detail.decode()[-300:]})")
    atexit.register(_stop_postgres, prefix, bindir, data, base)
    password = "pw-" + secrets.token_hex(10)
    server = PgServer("127.0.0.1", port, "cleanpipe", password,
                      f"postgresql://postgres@/postgres?host={sock}&port={port}")
    import adbc_driver_postgresql.dbapi as dbapi
    with dbapi.connect(server.superuser_uri, autocommit=True) as con, con.cursor() as cur:
        cur.execute(f"CREATE ROLE cleanpipe LOGIN PASSWORD '{password}'")
    return _remember("postgres", server)


def _stop_postgres(prefix, bindir, data, base) -> None:
    subprocess.run(prefix + [f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    shutil.rmtree(base, ignore_errors=True)


def moto_server():
    """Start (once) a moto S3 server on localhost; return its ``http://host:port`` endpoint."""
    if "moto" in _STARTED:
        return _STARTED["moto"]
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        return _remember("moto", "moto[server] is not installed (pip install -e '.[test]')")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    atexit.register(server.stop)
    host, port = server.get_host_and_port()
    return _remember("moto", f"http://{host}:{port}")


def _remember(name: str, value):
    _STARTED[name] = value
    return value


# Fixtures (re-exported by the conftests of tests/sources and tests/pipeline).

@pytest.fixture(scope="session")
def pg_server():
    server = postgres_server()
    if isinstance(server, str):
        pytest.skip(server)
    return server


@pytest.fixture
def pg_env(pg_server, monkeypatch):
    """A fresh database; the PG* variables (password included) point at it for this test."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    pg_server.create_database(name)
    for key, value in pg_server.env(name).items():
        monkeypatch.setenv(key, value)
    return pg_server.env(name)


@pytest.fixture(scope="session")
def s3_endpoint():
    endpoint = moto_server()
    if not endpoint.startswith("http"):
        pytest.skip(endpoint)
    return endpoint


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch):
    """Dummy AWS credentials (moto accepts any) and a fresh bucket; returns (endpoint, bucket)."""
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret",
                       "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(key, value)
    import pyarrow.fs as pafs
    bucket = f"b-{uuid.uuid4().hex[:10]}"
    fs = pafs.S3FileSystem(endpoint_override=s3_endpoint.split("://")[1], scheme="http",
                           region="us-east-1", allow_bucket_creation=True)
    fs.create_dir(bucket)
    assert fs.get_file_info(bucket).type == pafs.FileType.Directory
    return s3_endpoint, bucket


@pytest.fixture
def tiny_table():
    """60 rows, 3 classes, a string id, a float feature, a dictionary feature."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    return pa.table({
        "row_id": pa.array([f"r{i:03d}" for i in range(60)]),
        "x": rng.normal(y * 3.0, 0.5).astype(np.float32),
        "colour": pa.array(np.array(["red", "green", "blue"])[y]).dictionary_encode(),
        "label": y,
    })
