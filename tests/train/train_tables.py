"""Table builders for the training tests (a module of its own: ``conftest`` names clash across folders)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def make_table(n: int = 120, seed: int = 0, label_values=("cat", "dog", "eel")) -> pa.Table:
    """Three separable classes; a numeric column with NaN, a categorical column, an id, a string label."""
    rng = np.random.default_rng(seed)
    k = len(label_values)
    y = np.arange(n) % k
    x = rng.normal(y * 2.0, 0.8).astype(np.float32)
    x[::17] = np.nan
    colour = np.array(["red", "green", "blue", "grey"])[(y + (rng.random(n) < 0.2)) % 4]
    return pa.table({
        "row_id": np.arange(n),
        "x": x,
        "x2": rng.normal(-y, 1.0),
        "colour": pa.array(colour).dictionary_encode(),
        "label": pa.array(np.asarray(label_values, dtype=object)[y].tolist()),
    })
