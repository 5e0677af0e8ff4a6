"""The run's core budget and its split between tasks and threads."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cleanpipe import threads
from cleanpipe.errors import InputError


@given(tasks=st.integers(1, 64), cores=st.integers(1, 256))
def test_a_plan_never_oversubscribes_and_never_idles_a_core_it_could_use(tasks, cores):
    p = threads.plan(tasks, cores)
    assert 1 <= p.workers <= tasks and p.threads >= 1
    assert p.workers * p.threads <= cores
    # Every core is used unless the tasks are fewer than the cores and do not divide them.
    assert p.workers == min(tasks, cores)
    assert cores - p.workers * p.threads < p.workers


@pytest.mark.parametrize("tasks,cores,want", [(10, 2, (2, 1)), (2, 16, (2, 8)), (3, 8, (3, 2)),
                                              (1, 4, (1, 4)), (5, 5, (5, 1))])
def test_plan_known_answers(tasks, cores, want):
    assert (threads.plan(tasks, cores).workers, threads.plan(tasks, cores).threads) == want


def test_budget_is_what_the_user_gives_capped_by_what_exists():
    assert threads.budget(None, cpus=4) == 4 and threads.budget(-1, cpus=4) == 4
    assert threads.budget(2, cpus=4) == 2 and threads.budget(64, cpus=4) == 4
    for bad in (0, -2):
        with pytest.raises(InputError, match=f"--n-jobs {bad}"):
            threads.budget(bad, cpus=4)


def test_available_cpus_honours_a_quota_given_to_the_process(monkeypatch):
    # joblib's count reads affinity and cgroup quotas; LOKY_MAX_CPU_COUNT caps it the same way.
    monkeypatch.setenv("LOKY_MAX_CPU_COUNT", "1")
    assert threads.available_cpus() == 1
    assert threads.budget(8) == 1
