"""A local Spark session for the Spark tests: one per test run, one core, no UI.

Skips (with the reason) where Java or pyspark is missing; ``.ci/run`` installs both (Debian's
OpenJDK headless and the pyspark package).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest


def _java_problem() -> str | None:
    java = os.path.join(os.environ["JAVA_HOME"], "bin", "java") if os.environ.get("JAVA_HOME") \
        else shutil.which("java")
    if not java or not os.path.exists(java):
        return "no Java runtime (apt-get install default-jre-headless, or set JAVA_HOME)"
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"java -version failed ({exc})"
    if out.returncode != 0:
        return f"java -version failed ({out.stderr.strip().splitlines()[:1]})"
    return None


@pytest.fixture(scope="session")
def spark():
    """A ``local[1]`` SparkSession (2 shuffle partitions, UI off, Arrow on), stopped at the end."""
    pytest.importorskip("pyspark", reason="the Spark tests need pyspark (pip install 'cleanpipe[spark]')")
    problem = _java_problem()
    if problem:
        pytest.skip(f"the Spark tests need Java 17+: {problem}")
    from pyspark.sql import SparkSession
    # Workers run this interpreter, so they import the same cleanpipe (PYTHONPATH is inherited).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    session = (SparkSession.builder.master("local[1]").appName("cleanpipe-tests")
               .config("spark.ui.enabled", "false")
               .config("spark.sql.shuffle.partitions", "2")
               .config("spark.default.parallelism", "2")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true")
               .config("spark.driver.memory", "1g")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.session.timeZone", "UTC")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
