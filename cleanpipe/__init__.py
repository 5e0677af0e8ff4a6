"""cleanpipe: find and fix label errors in tabular training data.

The public API: :func:`find_label_issues` (score and flag rows from labels and out-of-fold
probabilities; :func:`find_multilabel_issues` for rows with sets of tags),
:func:`out_of_fold_probs` (cross-validated probabilities), :func:`flag_table`
(the whole ``cleanpipe flag`` job on a DataFrame or Arrow table; ``checks=`` a
:class:`CheckSettings` adds the data checks), :func:`clean_table`,
:func:`retrain_table` (with :class:`TrainConfig`), :func:`run_checks` (duplicates, outliers,
leakage and the other data checks on a feature matrix, with :class:`CheckSettings`),
:func:`flag_partitions` (a partitioned Parquet dataset flagged partition by partition, here or on
a Dask cluster) and the project's exceptions.
"""

import importlib

from ._version import __version__
from .errors import CleanpipeError, CleanpipeWarning, ConfigError, InputError

# Each public function by the module that defines it. They are imported on first use (PEP 562),
# so that `import cleanpipe.cli` (and `cleanpipe --help`) does not pay for scikit-learn.
_PUBLIC = {
    "find_label_issues": "api", "find_multilabel_issues": "multilabel",
    "out_of_fold_probs": "oof", "flag_table": "flag", "FlagResult": "flag",
    "clean_table": "clean", "retrain_table": "train", "TrainConfig": "settings",
    "run_checks": "checks", "CheckResult": "checks", "CheckSettings": "settings",
    "flag_partitions": "partitions",
}

__all__ = [
    "__version__", *_PUBLIC,
    "CleanpipeError", "CleanpipeWarning", "ConfigError", "InputError",
]


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cleanpipe' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
