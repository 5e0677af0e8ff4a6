"""``cleanpipe retrain`` (train a model on flagged/cleaned data) and ``cleanpipe predict``."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import click

from ..limits import SEED_MAX, SEED_MIN
from . import cli, csv_option, overwrite_option
from ._progress import epoch_info, progress_bar


def _parse_hidden(value: str) -> tuple:
    from ..errors import InputError
    try:
        hidden = tuple(int(v) for v in csv_option(value) or ())
    except ValueError:
        hidden = ()
    if not hidden or min(hidden) < 1:
        raise InputError(f"--hidden must be comma-separated positive layer widths such as 256,128; "
                         f"got {value!r}")
    return hidden


def _parse_loss_params(pairs) -> dict:
    from ..errors import InputError
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        try:
            if not sep or not key.strip():
                raise ValueError
            out[key.strip()] = float(value)
        except ValueError:
            raise InputError(f"--loss-param must be KEY=NUMBER such as q=0.7; got {pair!r}") from None
    return out


def _flag_summary(explicit, data: str, table, key: str) -> dict | None:
    """The flag summary holding ``key``: --noise-matrix, the sidecar summary, or the cleaned file's metadata."""
    from ..clean import read_summary, sidecar_summary_path, table_metadata
    from ..errors import InputError
    if explicit:
        s = read_summary(explicit, what="--noise-matrix")
        if key not in s:
            raise InputError(f"--noise-matrix '{explicit}' has no {key!r} key; pass the "
                             ".summary.json that cleanpipe flag wrote")
        return s
    meta = table_metadata(table, "cleanpipe.clean")
    candidates = [sidecar_summary_path(data)]
    if meta.get("flag_summary"):
        candidates.append(Path(meta["flag_summary"]))
    for path in candidates:
        if path.is_file():
            s = read_summary(path, what="summary")
            if key in s:
                return s
    return meta if key in meta else None


def _noise_matrix(explicit, data: str, table):
    """(matrix, classes) of the flag run behind DATA, or (None, None)."""
    s = _flag_summary(explicit, data, table, "noise_matrix")
    return (None, None) if s is None else (s["noise_matrix"], s.get("classes"))


def _class_prior(explicit, data: str, table):
    """(prior, classes) that flag estimated for DATA, or None (then the label frequencies are used)."""
    s = _flag_summary(explicit, data, table, "class_prior")
    return None if s is None else (s["class_prior"], s.get("classes"))


@cli.command()
@click.argument("data", type=click.Path(path_type=str))
@click.option("--out", required=True, type=click.Path(path_type=str), help="Model directory to create.")
@click.option("--label", default=None, help="Label column (default: the one flag used, else 'label').")
@click.option("--multi-label", is_flag=True,
              help="Rows hold sets of tags (implied by a list --label or --label a,b,c): K sigmoid "
                   "outputs, loss bce by default.")
@click.option("--features", default=None, help="Comma-separated feature columns (default: all others).")
@click.option("--exclude", default=None, help="Comma-separated columns that are not features.")
@click.option("--id", "ids", default=None, help="Comma-separated id columns (not features).")
@click.option("--weight-col", default="auto", show_default=True,
              help="Row-weight column; 'auto' uses sample_weight when DATA has it, 'none' ignores it.")
@click.option("--loss", default=None,
              help="Loss from cleanpipe.losses.LOSSES (ce, sce, gce, forward, dynamic-hard, ...) or "
                   "auto: forward when flag's noise matrix is pair-like (most flips of a class go "
                   "to one other class), else sce [default: auto].")
@click.option("--loss-param", "loss_params", multiple=True, metavar="KEY=VALUE",
              help="Loss hyper-parameter, repeatable (e.g. --loss gce --loss-param q=0.7).")
@click.option("--noisy-weight", default="online", show_default=True, type=click.Choice(["online", "column"]),
              help="dynamic-* losses: per-row noise posterior online, from a Beta mixture refitted to "
                   "the network's own losses after every epoch, or fixed from the p_noisy column.")
@click.option("--warmup", default=5, show_default=True, type=int,
              help="--noisy-weight online: epochs of plain cross-entropy first.")
@click.option("--mixup", default=0.0, show_default=True, type=float, metavar="ALPHA",
              help="Mixup with lambda ~ Beta(ALPHA, ALPHA), any loss (0: off).")
@click.option("--prior-reg", default=0.0, show_default=True, type=float, metavar="WEIGHT",
              help="Weight of KL(class prior || mean batch prediction); the prior is flag's estimate "
                   "when its summary is found, else the label frequencies (0: off).")
@click.option("--noise-matrix", default=None, type=click.Path(path_type=str),
              help="summary.json of the flag run, for the noise matrix of --loss forward / auto and "
                   "--prior-reg's class prior (default: beside DATA, or the cleaned file's metadata).")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--epochs", default=40, show_default=True, type=int)
@click.option("--batch-size", default=256, show_default=True, type=int)
@click.option("--lr", default=2e-3, show_default=True, type=float, help="AdamW learning rate.")
@click.option("--weight-decay", default=1e-4, show_default=True, type=float)
@click.option("--hidden", default="256,128", show_default=True, help="Hidden layer widths.")
@click.option("--dropout", default=0.1, show_default=True, type=float)
@click.option("--patience", default=8, show_default=True, type=int,
              help="Early-stopping patience in epochs (0: off).")
@click.option("--val-fraction", default=0.1, show_default=True, type=float,
              help="Stratified validation share for early stopping.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(SEED_MIN, SEED_MAX))
@click.option("--threads", default=None, type=int,
              help="CPU threads while training (default: torch's choice; 1 is often fastest on a "
                   "busy machine).")
@click.option("--overwrite", is_flag=True,
              help="Replace an --out directory holding an earlier model (only cleanpipe's own "
                   "files; a folder holding anything else is refused).")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as one JSON object.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar, nothing printed on success.")
def retrain(data, out, label, multi_label, features, exclude, ids, weight_col, loss, loss_params, noisy_weight,
            warmup, mixup, prior_reg, noise_matrix, device, epochs, batch_size, lr, weight_decay, hidden, dropout, patience,
            val_fraction, seed, threads, overwrite, as_json, quiet):
    """Train a tabular MLP on a flags or cleaned Parquet table.

    The flag/clean columns (given_label, predicted_label, label_score, p_noisy,
    is_label_issue, sample_weight, original_label) are never features. Trains on
    CUDA when available (bf16 autocast), else on the CPU (deterministic per --seed).
    Writes model.pt (weights only), model.json and metrics.json into --out.
    A list label column or --label a,b,c (or --multi-label) trains one sigmoid
    per tag with a multi-label loss (bce, softmax-labels, abs-kl; default bce);
    metrics.json then holds validation micro-F1, macro-F1 and mAP.

    \b
    Examples:
      cleanpipe retrain data.cleaned.parquet --out model/
      cleanpipe retrain data.flags.parquet --loss forward --out model/ --overwrite
      cleanpipe retrain data.flags.parquet --loss gce --loss-param q=0.7 --out model/
      cleanpipe retrain photos.cleaned.parquet --label tags --out tags_model/
      cleanpipe retrain data.parquet --loss dynamic-hard --mixup 1 --out model/
    """
    from ..clean import label_from_metadata
    from ..errors import InputError
    from ..io import cleanup_stale_temps, read_table
    from ..losses import get_loss
    from ..safety import guard_files
    from ..train import AUTO_LOSS, DEFAULT_LOSS, TrainConfig, check_model_dir, retrain_table, save_model_dir

    if loss and loss != AUTO_LOSS:
        get_loss(loss)  # an unknown name fails before the data is read
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                         hidden=_parse_hidden(hidden), dropout=dropout, patience=patience,
                         val_fraction=val_fraction, seed=seed, device=device,
                         threads=threads, mixup=mixup, prior_reg=prior_reg).check()
    params = _parse_loss_params(loss_params)
    from ..clean import sidecar_summary_path
    # Every file retrain may read: DATA, the summary beside it, --noise-matrix.
    guard_files({"DATA": data, "--noise-matrix": noise_matrix,
                 "the summary of DATA": sidecar_summary_path(data)}, {},
                overwrite=overwrite, model_dir=("--out", out))
    check_model_dir(out, overwrite=overwrite)
    cleanup_stale_temps(Path(out).parent)  # staging folders a killed retrain left beside --out
    table = read_table(data)
    label = label or label_from_metadata(table) or "label"
    loss, params = _resolve_loss(loss, params, table, label, multi_label, DEFAULT_LOSS)
    if weight_col == "auto":
        weight_col = "sample_weight" if "sample_weight" in table.column_names else None
    elif weight_col == "none":
        weight_col = None
    # auto (the default) picks its loss from the noise matrix when flag's summary is found
    nm, nm_classes = (_noise_matrix(noise_matrix, data, table) if loss in ("forward", AUTO_LOSS)
                      else (None, None))
    prior = _class_prior(noise_matrix, data, table) if prior_reg > 0 else None
    with progress_bar(not quiet) as update:
        on_epoch = None if update is None else (
            lambda epoch, m: update("training epochs", epoch, epochs, epoch_info(m)))
        result = retrain_table(table, label=label, features=csv_option(features),
                               exclude=csv_option(exclude) or (), ids=csv_option(ids) or (),
                               weight_col=weight_col, loss=loss, loss_params=params,
                               noisy_weight=noisy_weight, warmup=warmup, noise_matrix=nm,
                               noise_matrix_classes=nm_classes, class_prior=prior, config=config,
                               source=data,
                               on_epoch=on_epoch)
    save_model_dir(out, result.state_dict, result.spec, result.metrics, overwrite=overwrite)
    m = result.metrics
    if as_json:
        click.echo(json.dumps(dict(m, out=str(out))))
    elif not quiet and m.get("multi_label"):
        f1 = "n/a" if m["val_micro_f1"] is None else f"{m['val_micro_f1']:.4f}"
        click.echo(f"{data}: trained {m['epochs']} epochs on {m['device']} (best epoch {m['best_epoch']}), "
                   f"validation micro-F1 {f1}; wrote {out}")
    elif not quiet:
        acc = "n/a" if m["val_accuracy"] is None else f"{m['val_accuracy']:.4f}"
        click.echo(f"{data}: trained {m['epochs']} epochs on {m['device']} (best epoch {m['best_epoch']}), "
                   f"validation accuracy {acc}, {m['samples_per_second']:,.0f} samples/s; wrote {out}")


def _resolve_loss(loss, params: dict, table, label: str, multi_label: bool, default: str):
    """The loss name and parameters: the multi-label default for multi-label data, and a one-line
    error for a single-label loss on multi-label data (the reverse is refused by retrain_table)."""
    from ..errors import InputError
    from ..multilabel import resolve_label_columns
    from ..train import is_multilabel_loss
    from ..train.multilabel import (DEFAULT_MULTILABEL_LOSS, DEFAULT_MULTILABEL_LOSS_PARAMS,
                                    is_multilabel_label, multilabel_losses)
    if multi_label and not is_multilabel_label(table.schema, label):
        resolve_label_columns(table.schema, label)  # raises: names what is wrong with --label
    if not (multi_label or is_multilabel_label(table.schema, label)):
        return loss or default, params
    if loss is None:
        return DEFAULT_MULTILABEL_LOSS, dict(DEFAULT_MULTILABEL_LOSS_PARAMS, **params)
    if not is_multilabel_loss(loss):
        raise InputError(f"--loss {loss} is a single-label loss and label '{label}' holds sets of tags; "
                         f"choose one of: {', '.join(multilabel_losses())}")
    return loss, params


@cli.command()
@click.argument("model_dir", type=click.Path(path_type=str))
@click.argument("data", type=click.Path(path_type=str))
@click.option("--out", default=None, type=click.Path(path_type=str),
              help="Output Parquet (default: ./<DATA stem>.preds.parquet).")
@click.option("--probs", is_flag=True, help="Also write pred_probs, a list<float32> per row in class order.")
@click.option("--prefix", default="", help="Prefix for the added column names.")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@overwrite_option()
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
def predict(model_dir, data, out, probs, prefix, device, overwrite, quiet):
    """Score a Parquet table with a model written by cleanpipe retrain.

    Writes every input column plus predicted_label (in the label's own type) and
    confidence (the largest class probability), and pred_probs with --probs.
    A multi-label model writes predicted_label as the list of tags whose
    probability passes its threshold (0.5 for sigmoid outputs) and always
    pred_probs, one probability per class in the order of model.json's classes.

    \b
    Examples:
      cleanpipe predict model/ new.parquet --out new.preds.parquet
      cleanpipe predict model/ data.flags.parquet --prefix model_ --probs
    """
    from .. import __version__
    from ..io import AtomicOutputs, cleanup_stale_temps, read_table, write_parquet
    from ..safety import guard_files
    from ..train import load_model_dir, predict_table

    stem = Path(data.rstrip("/")).name.split(".")[0] or "data"
    out_path = Path(out) if out else Path.cwd() / f"{stem}.preds.parquet"
    guard_files({"MODEL_DIR": model_dir, "DATA": data}, {"--out": out_path}, overwrite=overwrite)
    loaded = load_model_dir(model_dir)
    table = read_table(data)
    result = predict_table(loaded, table, probs=probs, prefix=prefix, device=device)
    provenance = {"cleanpipe_version": __version__, "source": str(data), "model_dir": str(model_dir),
                  "label": loaded.label, "loss": loaded.spec.get("loss"),
                  **({"multi_label": True, "classes": loaded.spec["classes"]} if loaded.multi_label else {}),
                  "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    cleanup_stale_temps(out_path.parent)
    with AtomicOutputs() as outputs:
        write_parquet(result, outputs.stage(out_path), metadata={"cleanpipe.predict": provenance})
    if not quiet:
        click.echo(f"{data}: predicted {result.num_rows} rows with {model_dir}; wrote {out_path}")
