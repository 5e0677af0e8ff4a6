"""Retraining with PyTorch: a tabular MLP, its training loop, and model directories.

This subpackage imports torch; the CLI imports it only inside ``retrain`` and ``predict`` so other
commands start fast. Its settings and their defaults (:class:`TrainConfig`, the default losses) are
in the torch-free :mod:`cleanpipe.settings`, the kinds of the losses in :mod:`cleanpipe.loss_kinds`.

:func:`retrain_table` trains on an Arrow table (a flags or cleaned table, or any labelled table;
one class per row, or a set of tags), :func:`save_model_dir` / :func:`load_model_dir` write and read
``model.pt`` + ``model.json`` + ``metrics.json``, and :func:`predict_table` scores a table with a
loaded model.
"""

from ..loss_kinds import is_multilabel_loss, multilabel_losses, single_label_losses
from ..settings import AUTO_LOSS, DEFAULT_LOSS, DEFAULT_MULTILABEL_LOSS, DEFAULT_WARMUP, TrainConfig
from .loop import TrainHistory, fit, random_split, resolve_device, stratified_split
from .model import Preprocessor, TabularMLP, architecture, build_model
from .predict import predict_multilabel_table, predict_table
from .retrain import (FALLBACK_LOSS, NON_FEATURE_COLUMNS, PAIR_SHARE, RetrainResult, align_noise_matrix,
                      choose_loss, flip_concentration, retrain_multilabel_table, retrain_table)
from .store import LoadedModel, check_model_dir, load_model_dir, read_metrics, save_model_dir

__all__ = [
    "AUTO_LOSS", "DEFAULT_LOSS", "DEFAULT_WARMUP", "FALLBACK_LOSS", "PAIR_SHARE", "choose_loss",
    "flip_concentration", "NON_FEATURE_COLUMNS", "LoadedModel", "Preprocessor", "RetrainResult", "TabularMLP",
    "TrainConfig", "TrainHistory", "align_noise_matrix", "architecture", "build_model", "check_model_dir",
    "fit", "is_multilabel_loss", "load_model_dir", "predict_table", "read_metrics", "resolve_device",
    "retrain_table", "save_model_dir", "single_label_losses", "stratified_split", "multilabel_losses",
    "DEFAULT_MULTILABEL_LOSS", "predict_multilabel_table", "random_split", "retrain_multilabel_table",
]
