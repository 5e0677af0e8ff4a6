"""A model directory: ``model.pt`` (weights-only state dict), ``model.json``, ``metrics.json``.

Written atomically: the files are staged in a temporary directory beside the target and renamed
onto it only when complete. Read back defensively: ``torch.load(weights_only=True)`` refuses
pickled code, and the JSON description must rebuild a network whose shapes match the weights.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import torch

from ..errors import InputError
from ..io import TMP_PREFIX, write_json
from ..safety import MODEL_FILES
from ..safety import check_model_dir as check_replaceable
from .model import Preprocessor, TabularMLP, build_model

MODEL_FILE, SPEC_FILE, METRICS_FILE = MODEL_FILES
#: Bumped when ``model.json`` changes incompatibly.
FORMAT_VERSION = 1
FORMAT_NAME = "cleanpipe.tabular_mlp"


@dataclass
class LoadedModel:
    """A model read back from a directory, ready to predict.

    Attributes
    ----------
    model : TabularMLP
        In evaluation mode, on the CPU.
    preprocessor : Preprocessor
    classes : pyarrow.Array
        Class values in the label's own Arrow type, indexed by output column.
    label : str
        The label column (multi-label: the list column, or ``"a,b,c"`` for 0/1 columns).
    spec : dict
        The parsed ``model.json``.
    """

    model: TabularMLP
    preprocessor: Preprocessor
    classes: pa.Array
    label: str
    spec: dict

    @property
    def multi_label(self) -> bool:
        """Whether the model predicts a set of tags (``spec["multi_label"]``): one output per class,
        ``spec["output"]`` ``sigmoid`` or ``softmax``, tags where the probability exceeds
        ``spec["threshold"]``."""
        return bool(self.spec.get("multi_label", False))


def check_model_dir(path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Refuse an existing non-empty directory (unless ``overwrite``) or a missing parent."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"--out '{path}' is a file; pass a directory path for the model")
    if path.is_dir():
        check_replaceable(path, overwrite=overwrite)  # only ever replaces cleanpipe's own files
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"--out parent directory '{parent}' does not exist; create it first")
    return path


def save_model_dir(path: str | os.PathLike, state_dict: dict, spec: dict, metrics: dict, *,
                   overwrite: bool = False) -> Path:
    """Write the three files into ``path`` atomically.

    Raises
    ------
    InputError
        ``path`` exists and is not empty and ``overwrite`` is false.
    """
    path = check_model_dir(path, overwrite=overwrite)
    tmp = path.with_name(f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-{path.name}")
    trash = None
    try:
        tmp.mkdir()
        # Serialised in memory, then written by Python: a full disk is an OSError naming the
        # file, not a message from torch's C++ writer.
        buf = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, buf)
        with open(tmp / MODEL_FILE, "wb") as fh:
            fh.write(buf.getbuffer())
        write_json(spec, tmp / SPEC_FILE)
        write_json(metrics, tmp / METRICS_FILE)
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if path.exists():
            # Move the old directory aside first: rename cannot replace a non-empty directory
            trash = path.with_name(f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-old-{path.name}")
            os.replace(path, trash)
        os.replace(tmp, path)
    except BaseException:
        if trash is not None and trash.exists() and not path.exists():
            os.replace(trash, path)  # put the old model back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if trash is not None:
        _remove_model_files(trash)
    return path


def _remove_model_files(folder: Path) -> None:
    """Delete a replaced model directory: cleanpipe's own files only, then the folder if empty."""
    for name in MODEL_FILES:
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()
    with contextlib.suppress(OSError):
        folder.rmdir()


def _bad(path: Path, why: str) -> InputError:
    return InputError(f"model directory '{path}' is not a usable cleanpipe model: {why}; retrain it "
                      "with cleanpipe retrain")


def load_model_dir(path: str | os.PathLike) -> LoadedModel:
    """Read and check a directory written by :func:`save_model_dir`.

    Raises
    ------
    InputError
        Missing directory or files, JSON that does not parse or misses keys, a ``model.pt`` that is
        not a weights-only state dict (e.g. a pickle with code), or weights whose shapes do not
        match ``model.json``.
    """
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"model directory '{path}' does not exist; pass the --out of cleanpipe retrain")
    for name in (SPEC_FILE, MODEL_FILE):
        if not (path / name).is_file():
            raise _bad(path, f"{name} is missing")
    try:
        with open(path / SPEC_FILE, encoding="utf-8") as fh:
            spec = json.load(fh)
    except (OSError, ValueError) as exc:
        raise _bad(path, f"{SPEC_FILE} does not parse ({str(exc).splitlines()[0]})") from None
    if not isinstance(spec, dict) or spec.get("format") != FORMAT_NAME:
        raise _bad(path, f"{SPEC_FILE} is not a {FORMAT_NAME} description")
    if spec.get("format_version") != FORMAT_VERSION:
        raise _bad(path, f"{SPEC_FILE} has format_version {spec.get('format_version')!r}, this "
                   f"cleanpipe reads {FORMAT_VERSION}")
    try:
        pre = Preprocessor.from_dict(spec["preprocessing"])
        arch = spec["architecture"]
        model = build_model(arch)
        label_type = pa.type_for_alias(spec["label_type"])
        classes = pa.array(spec["classes"]).cast(label_type)
        label = str(spec["label"])
        if len(classes) != int(arch["n_classes"]) or int(arch["n_numeric"]) != pre.n_numeric_inputs \
                or list(arch["cardinalities"]) != pre.cardinalities:
            raise ValueError("architecture and preprocessing disagree")
        if spec.get("multi_label", False) not in (True, False):
            raise ValueError("multi_label is not true or false")
        if spec.get("multi_label") and (spec.get("output") not in ("sigmoid", "softmax")
                                        or not 0 <= float(spec.get("threshold")) <= 1):
            raise ValueError("a multi-label model needs output sigmoid|softmax and a threshold in [0, 1]")
    except (KeyError, TypeError, ValueError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise _bad(path, f"{SPEC_FILE} is malformed ({type(exc).__name__}: {exc})") from None
    try:
        # weights_only: only tensors and plain containers are unpickled, never arbitrary objects
        state = torch.load(path / MODEL_FILE, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError, RuntimeError, EOFError, ... all mean "refused"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _bad(path, f"{MODEL_FILE} is not a weights-only state dict ({first[:200]})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise _bad(path, f"{MODEL_FILE} does not hold a state dict of tensors")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(s.strip() for s in first[:3])
        raise _bad(path, f"{MODEL_FILE} does not match {SPEC_FILE} ({detail[:300]})") from None
    model.eval()
    return LoadedModel(model, pre, classes, label, spec)


def read_metrics(path: str | os.PathLike) -> dict:
    """``metrics.json`` of a model directory ({} when absent)."""
    with contextlib.suppress(FileNotFoundError, ValueError):
        with open(Path(path) / METRICS_FILE, encoding="utf-8") as fh:
            return json.load(fh)
    return {}
