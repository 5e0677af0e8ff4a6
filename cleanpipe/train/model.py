"""A tabular MLP and the preprocessing that feeds it, both described by plain JSON.

:class:`Preprocessor` turns an Arrow table into two arrays: standardised numeric features (NaN -> 0
after standardising, plus a 0/1 missing indicator for every numeric feature that had NaN in the
training data) and integer category codes for an embedding per categorical column. Its state (means,
stds, vocabularies) is JSON, so a saved model is ``model.json`` + a weights-only ``model.pt`` with no
pickled Python objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import nn

from ..errors import InputError
from ..features import table_to_features, value_counts, vocabulary
from ..settings import MAX_CATEGORIES, TRAIN


def embedding_dim(cardinality: int) -> int:
    """Embedding width for a column with ``cardinality`` codes (fast.ai's rule, capped at 16)."""
    return int(min(16, max(2, round(1.6 * cardinality ** 0.56))))


def _as_strings(col: pa.ChunkedArray) -> pa.ChunkedArray:
    # Categories are matched as strings so a vocabulary survives JSON whatever the column's type
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    return col if pa.types.is_string(col.type) else col.cast(pa.string())


def build_vocabulary(col: pa.ChunkedArray) -> list:
    """Most frequent categories first (ties by value), at most :data:`MAX_CATEGORIES`, as strings
    (:func:`cleanpipe.features.vocabulary`, the features' and the partitioned paths' choice)."""
    return vocabulary(value_counts(_as_strings(col)), MAX_CATEGORIES).to_pylist()


def category_codes(col: pa.ChunkedArray, vocabulary: list) -> np.ndarray:
    """Codes ``0..V-1`` for known categories, ``V`` for unknown ones, ``V + 1`` for null (int64)."""
    values = _as_strings(col)
    v = len(vocabulary)
    codes = pc.index_in(values, value_set=pa.array(vocabulary, type=pa.string()))
    codes = pc.fill_null(codes, v).to_numpy(zero_copy_only=False).astype(np.int64)
    codes[values.is_null().to_numpy(zero_copy_only=False)] = v + 1
    return codes


@dataclass
class Preprocessor:
    """Table -> (numeric float32 matrix, category int64 matrix), with JSON state.

    Attributes
    ----------
    columns : list of str
        Table columns read, in order.
    numeric : list of str
        Numeric feature names (``emb[3]`` for a vector element), in matrix order.
    mean, std : list of float
        Standardisation of each numeric feature (std 1 for constant features).
    missing : list of str
        Numeric features that get a missing indicator.
    categorical : list of str
        Categorical columns, in code-matrix order.
    vocabularies : list of list of str
        One vocabulary per categorical column.
    """

    columns: list
    numeric: list
    mean: list
    std: list
    missing: list
    categorical: list
    vocabularies: list

    @classmethod
    def fit(cls, table: pa.Table, columns: list, rows: np.ndarray | None = None) -> "Preprocessor":
        """Learn the preprocessing of ``columns``; statistics from ``rows`` (default: every row)."""
        feats = table_to_features(table, columns)
        num = ~feats.categorical
        x = feats.X[:, num] if rows is None else feats.X[rows][:, num]
        with np.errstate(all="ignore"):
            # float64 accumulation: float32 sums over millions of rows drift
            mean = np.nan_to_num(np.nanmean(x.astype(np.float64), axis=0)) if x.size else np.zeros(0)
            std = np.nan_to_num(np.nanstd(x.astype(np.float64), axis=0)) if x.size else np.zeros(0)
        std = np.where(std > 1e-12, std, 1.0)
        names = np.asarray(feats.names, dtype=object)
        has_nan = np.isnan(x).any(axis=0) if x.size else np.zeros(0, bool)
        cats = list(names[feats.categorical])
        return cls(columns=list(feats.columns), numeric=list(names[num]), mean=mean.tolist(),
                   std=std.tolist(), missing=list(names[num][has_nan]), categorical=cats,
                   vocabularies=[build_vocabulary(table.column(c)) for c in cats])

    @property
    def n_numeric_inputs(self) -> int:
        return len(self.numeric) + len(self.missing)

    @property
    def cardinalities(self) -> list:
        """Embedding rows per categorical column: vocabulary + "other" + "missing"."""
        return [len(v) + 2 for v in self.vocabularies]

    def to_dict(self) -> dict:
        return {"columns": self.columns, "numeric": self.numeric, "mean": self.mean, "std": self.std,
                "missing_indicator": self.missing, "categorical": self.categorical,
                "vocabularies": self.vocabularies}

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessor":
        pre = cls(columns=list(d["columns"]), numeric=list(d["numeric"]), mean=list(d["mean"]),
                  std=list(d["std"]), missing=list(d["missing_indicator"]),
                  categorical=list(d["categorical"]), vocabularies=[list(v) for v in d["vocabularies"]])
        if not (len(pre.mean) == len(pre.std) == len(pre.numeric)) or len(pre.vocabularies) != len(
                pre.categorical) or not set(pre.missing) <= set(pre.numeric):
            raise ValueError("preprocessing lists disagree in length")
        return pre

    def transform(self, table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        """The model inputs of ``table``.

        Returns
        -------
        x_num : ndarray of shape (n_samples, n_numeric_inputs), float32
        x_cat : ndarray of shape (n_samples, n_categorical), int64

        Raises
        ------
        InputError
            A column is missing or its type no longer gives the same features.
        """
        missing_cols = [c for c in self.columns if c not in table.column_names]
        if missing_cols:
            raise InputError(f"DATA lacks the feature column(s) the model was trained on: "
                             f"{', '.join(missing_cols)}; pass a table with them")
        n = table.num_rows
        # An all-null column would be dropped by table_to_features; it stands for NaN features here
        present = [c for c in self.columns if table.column(c).null_count < n]
        feats = table_to_features(table, present) if present else None
        got = dict(zip(feats.names, feats.categorical)) if feats else {}
        index = {name: i for i, name in enumerate(feats.names)} if feats else {}
        x = np.full((n, len(self.numeric)), np.nan, dtype=np.float32)
        for j, name in enumerate(self.numeric):  # a loop over columns, never rows
            col = name.split("[", 1)[0]
            if col in present:
                if got.get(name, True):
                    raise InputError(f"feature column '{col}' of DATA does not give the numeric feature "
                                     f"'{name}' the model was trained on (type {table.column(col).type}); "
                                     "pass data with the training schema")
                x[:, j] = feats.X[:, index[name]]
        for col in self.categorical:
            if col in present and not got.get(col, False):
                raise InputError(f"feature column '{col}' of DATA has type {table.column(col).type}, "
                                 "but the model used it as a category; pass data with the training schema")
        miss = np.isnan(x[:, [self.numeric.index(m) for m in self.missing]])
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)  # NaN -> the training mean
        x_num = np.concatenate([x, miss.astype(np.float32)], axis=1)
        x_cat = np.zeros((n, len(self.categorical)), dtype=np.int64)
        for j, (col, vocab) in enumerate(zip(self.categorical, self.vocabularies)):
            x_cat[:, j] = category_codes(table.column(col), vocab) if col in present else len(vocab) + 1
        return np.ascontiguousarray(x_num, dtype=np.float32), x_cat


class TabularMLP(nn.Module):
    """Feed-forward network over numeric inputs and one embedding per categorical column.

    Parameters
    ----------
    n_numeric : int
        Width of the numeric input (standardised features + missing indicators).
    cardinalities : list of int
        Embedding rows per categorical column.
    hidden : sequence of int
        Hidden layer widths; each is Linear -> ReLU -> Dropout.
    n_classes : int
    dropout : float, default: ``TRAIN["dropout"]`` of :mod:`cleanpipe.settings`
    """

    def __init__(self, n_numeric: int, cardinalities, hidden, n_classes: int,
                 dropout: float = TRAIN["dropout"].default):
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(c, embedding_dim(c)) for c in cardinalities)
        width = n_numeric + sum(e.embedding_dim for e in self.embeddings)
        layers = []
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, n_classes))
        self.net = nn.Sequential(*layers)

    def embed(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        """The network's input vector: numeric features, then each categorical column's embedding.

        Mixup mixes rows here, so categoricals are mixed in embedding space.
        """
        parts = [x_num] + [emb(x_cat[:, j]) for j, emb in enumerate(self.embeddings)]
        return torch.cat(parts, dim=1) if len(parts) > 1 else x_num

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """Logits from an :meth:`embed` output."""
        return self.net(h)

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x_num, x_cat))


def architecture(pre: Preprocessor, hidden, n_classes: int, dropout: float) -> dict:
    """The JSON description :func:`build_model` rebuilds a :class:`TabularMLP` from."""
    return {"kind": "TabularMLP", "n_numeric": pre.n_numeric_inputs, "cardinalities": pre.cardinalities,
            "hidden": [int(h) for h in hidden], "n_classes": int(n_classes), "dropout": float(dropout)}


def build_model(arch: dict) -> TabularMLP:
    """A fresh :class:`TabularMLP` from :func:`architecture`'s output."""
    if arch.get("kind") != "TabularMLP":
        raise ValueError(f"unknown architecture kind {arch.get('kind')!r}")
    return TabularMLP(int(arch["n_numeric"]), [int(c) for c in arch["cardinalities"]],
                      [int(h) for h in arch["hidden"]], int(arch["n_classes"]), float(arch["dropout"]))


#: Rows per forward pass when evaluating (no gradients, so much larger than a training batch).
EVAL_BATCH = 8192


def predict_logits(model: torch.nn.Module, x_num: torch.Tensor, x_cat: torch.Tensor,
                   rows: torch.Tensor | None = None) -> torch.Tensor:
    """float32 logits of ``rows`` (default all) in evaluation mode, in blocks of :data:`EVAL_BATCH`."""
    was_training = model.training
    model.eval()
    n = x_num.shape[0] if rows is None else rows.shape[0]
    out = []
    with torch.no_grad():
        for start in range(0, n, EVAL_BATCH):
            idx = slice(start, start + EVAL_BATCH) if rows is None else rows[start:start + EVAL_BATCH]
            out.append(model(x_num[idx], x_cat[idx]).float())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros((0, 0), device=x_num.device)
