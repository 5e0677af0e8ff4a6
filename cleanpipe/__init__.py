"""cleanpipe: find and fix label errors in tabular training data.

The public API: :func:`find_label_issues` (score and flag rows from labels and out-of-fold
probabilities; :func:`find_multilabel_issues` for rows with sets of tags),
:func:`out_of_fold_probs` (cross-validated probabilities), :func:`flag_table`
(the whole ``cleanpipe flag`` job on an Arrow table) and the project's exceptions.
"""

from ._version import __version__
from .api import find_label_issues
from .errors import CleanpipeError, CleanpipeWarning, ConfigError, InputError
from .flag import FlagResult, flag_table
from .multilabel import find_multilabel_issues
from .oof import out_of_fold_probs

__all__ = [
    "__version__", "find_label_issues", "find_multilabel_issues", "out_of_fold_probs", "flag_table",
    "FlagResult",
    "CleanpipeError", "CleanpipeWarning", "ConfigError", "InputError",
]
