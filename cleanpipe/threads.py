"""One budget of CPU cores for a run, split between parallel tasks and each task's own threads.

A container with a CPU quota still sees every core of its host in ``os.cpu_count()``, and a
gradient-boosting fit starts one OpenMP thread per core it sees: fold workers times model threads
then far exceeds the cores the run may use, and on a busy or quota-limited machine the threads
spend their time waiting for each other. The budget here is what the process may really use
(its CPU affinity and its cgroup quota, or fewer if the user says so), and every parallel stage takes
``workers x threads <= budget`` from :func:`plan`.
"""

from __future__ import annotations

from dataclasses import dataclass

import joblib

from .errors import InputError


def available_cpus() -> int:
    """Cores this process may use: joblib's count, which honours CPU affinity, a cgroup v1/v2 CPU
    quota (rounded up) and ``LOKY_MAX_CPU_COUNT``."""
    return max(1, joblib.cpu_count())


@dataclass(frozen=True)
class Plan:
    """``workers`` parallel tasks, each allowed ``threads`` threads (``workers * threads <= cores``)."""

    workers: int
    threads: int


def budget(n_jobs: int | None = None, *, cpus: int | None = None) -> int:
    """The cores a run may use: ``n_jobs`` if given (``-1``: all), never more than are available.

    Raises
    ------
    InputError
        ``n_jobs`` is 0 or below -1.
    """
    cpus = available_cpus() if cpus is None else cpus
    if n_jobs is None or n_jobs == -1:
        return cpus
    if n_jobs < 1:
        raise InputError(f"--n-jobs {n_jobs} is not valid; pass a positive count of cores, or -1 "
                         "for every core this process may use")
    return min(n_jobs, cpus)


def plan(tasks: int, cores: int) -> Plan:
    """Split ``cores`` between ``tasks`` independent tasks: as many run at once as there are cores
    (more workers than tasks would idle), and the cores left over go to each task's threads."""
    if tasks < 1 or cores < 1:
        raise ValueError(f"plan needs tasks >= 1 and cores >= 1, got {tasks} and {cores}")
    workers = min(tasks, cores)
    return Plan(workers, max(1, cores // workers))
