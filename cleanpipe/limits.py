"""Ranges of options that several commands share, defined once.

The CLI declares them as click types (so ``--help`` and the error name the range), the pipeline
loader checks ``[oof] seed`` / ``[retrain] seed`` against the same numbers, and the library's own
entry points call :func:`check_seed`.
"""

from __future__ import annotations

from .errors import InputError

#: Seeds are handed to numpy and torch generators, which take unsigned 32-bit values.
SEED_MIN, SEED_MAX = 0, 2**32 - 1
#: Cross-validation needs at least two folds.
MIN_FOLDS = 2


def seed_ok(seed) -> bool:
    return isinstance(seed, int) and not isinstance(seed, bool) and SEED_MIN <= seed <= SEED_MAX


def check_seed(seed, *, option: str = "--seed") -> int:
    """Return ``seed`` if it is an integer in [SEED_MIN, SEED_MAX]; else raise one line."""
    if not seed_ok(seed):
        raise InputError(f"{option} {seed!r} is out of range; pass an integer in "
                         f"[{SEED_MIN}, {SEED_MAX}]")
    return seed
