"""The cores a run may use, and the threads each fold model gets from them (counted, not timed)."""

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from threadpoolctl import threadpool_info

from cleanpipe import threads
from cleanpipe.oof import fold_threads, out_of_fold_probs


def test_available_cpus_honours_a_quota_given_to_the_process(monkeypatch):
    # joblib's count reads affinity and cgroup quotas; LOKY_MAX_CPU_COUNT caps it the same way.
    monkeypatch.setenv("LOKY_MAX_CPU_COUNT", "1")
    assert threads.available_cpus() == 1
    monkeypatch.setattr("os.getloadavg", lambda: (0.0, 0.0, 0.0))
    assert fold_threads(1) == 1


class _CountThreads(ClassifierMixin, BaseEstimator):
    """A model that records the OpenMP / BLAS thread limits in force while it is fitted."""

    seen: list = []

    def fit(self, X, y):
        _CountThreads.seen.append(max(i["num_threads"] for i in threadpool_info()))
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, X):
        return np.full((len(X), len(self.classes_)), 1.0 / len(self.classes_))


def test_fold_models_run_with_the_threads_the_budget_gives(monkeypatch):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 3)), np.arange(60) % 2
    for cores, load in ((1, 0.0), (2, 5.0)):  # one core; two cores, both busy elsewhere
        monkeypatch.setattr("cleanpipe.oof.available_cpus", lambda c=cores: c)
        monkeypatch.setattr("os.getloadavg", lambda v=load: (v, 0.0, 0.0))
        _CountThreads.seen = []
        out_of_fold_probs(X, y, model=_CountThreads(), folds=3, n_jobs=1)
        assert _CountThreads.seen and max(_CountThreads.seen) == 1, _CountThreads.seen
