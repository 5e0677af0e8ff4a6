"""The CPU cores this process may use.

A container with a CPU quota still sees every core of its host in ``os.cpu_count()``, and a
gradient-boosting fit starts one OpenMP thread per core it sees: fold workers times model threads
then far exceeds the cores the run may use, and on a busy or quota-limited machine the threads
spend their time waiting for each other. :func:`available_cpus` is what the process may really
use; :func:`cleanpipe.oof.fold_threads` splits it (less the cores other processes keep busy)
between the fold workers and each fold model's OpenMP / BLAS threads.
"""

from __future__ import annotations

import joblib


def available_cpus() -> int:
    """Cores this process may use: joblib's count, which honours CPU affinity, a cgroup v1/v2 CPU
    quota (rounded up) and ``LOKY_MAX_CPU_COUNT``."""
    return max(1, joblib.cpu_count())
