"""The out-of-fold probabilities a partitioned flag run loads, kept for the tests that compare
them with the pure functions run in one process (``test_partitioned_oof*.py``)."""

from __future__ import annotations

import os


def flag_keeping_probs(data: str, out: str, **options):
    """:func:`cleanpipe.partitions.flag_partitions` (``options`` passed on), with
    :func:`cleanpipe.partitioned_oof.load_probs` spied for the call (the workers of the
    in-process cluster share this module).

    Returns
    -------
    (dict, dict)
        The run's summary, and each partition's probabilities as the detector read them, by the
        partition file's name.
    """
    from cleanpipe import partitioned_oof
    from cleanpipe.partitions import flag_partitions
    probs, real = {}, partitioned_oof.load_probs

    def spy(out_, path, n_rows, n_classes, where):
        P = real(out_, path, n_rows, n_classes, where)
        probs[os.path.basename(where)] = P
        return P

    partitioned_oof.load_probs = spy
    try:
        summary = flag_partitions(data, out, **options)
    finally:
        partitioned_oof.load_probs = real
    return summary, probs
