"""``cleanpipe retrain`` (train a model on flagged/cleaned data) and ``cleanpipe predict``."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from types import SimpleNamespace

import click

from .._version import __version__
from ..auto import FALLBACK_LOSS, HEAVY, HEAVY_NOISE, LIGHT
from ..errors import InputError
from ..flagsfile import flag_estimate, flag_settings, label_from_metadata, summary_path_for
from ..io import AtomicOutputs, cleanup_stale_temps, read_table, write_parquet
from ..loss_kinds import is_multilabel_loss, loss_kind, multilabel_losses
from ..safety import guard_files
from ..settings import AUTO_LOSS, DEFAULT_LOSS, DEFAULT_MULTILABEL_LOSS, RETRAIN, TRAIN, TrainConfig
from ..target import is_multilabel, resolve_label_columns
from ._group import cli
from ._progress import epoch_info, progress_bar
from .options import (csv_option, device_option, exclude_option, features_option, ids_option,
                      input_format_options, json_option, label_option, multi_label_option,
                      overwrite_option, quiet_option, seed_option, setting_option)


def _parse_hidden(value: str) -> tuple:
    try:
        hidden = tuple(int(v) for v in csv_option(value) or ())
    except ValueError:
        hidden = ()
    if not hidden or min(hidden) < 1:
        raise InputError(f"--hidden must be comma-separated positive layer widths such as 256,128; "
                         f"got {value!r}")
    return hidden


def _parse_loss_params(pairs) -> dict:
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


@cli.command()
@click.argument("data", type=click.Path(path_type=str))
@input_format_options
@click.option("--out", required=True, type=click.Path(path_type=str), help="Model directory to create.")
@label_option("Label column (default: the one flag used, else 'label').")
@multi_label_option("Rows hold sets of tags (implied by a list --label or --label a,b,c): K sigmoid "
                    "outputs, loss bce by default.")
@features_option
@exclude_option
@ids_option("Comma-separated id columns (not features).")
@click.option("--weight-col", default="auto", show_default=True,
              help="Row-weight column; 'auto' uses sample_weight when DATA has it, 'none' ignores it.")
@click.option("--loss", default=None,
              help="Loss from cleanpipe.losses.LOSSES (ce, sce, gce, forward, dynamic-hard, ...) or "
                   "auto: from flag's estimates (or a quick one of its own without a flag run), "
                   "forward when the noise is pair-like (most flips of a class go to one other "
                   f"class); when the estimated noise rate is >= {HEAVY_NOISE:g}, {HEAVY['loss']} with "
                   f"--mixup {HEAVY['settings']['mixup']:g} --prior-reg {HEAVY['settings']['prior_reg']:g}, "
                   f"{HEAVY['settings']['epochs']} epochs without a validation split, last epoch kept; "
                   f"below it {LIGHT['loss']} (early-learning regularisation) for "
                   f"{LIGHT['settings']['epochs']} epochs, last epoch kept; without any estimate "
                   f"{FALLBACK_LOSS}. Settings you change from their defaults are kept "
                   "[default: auto].")
@click.option("--loss-param", "loss_params", multiple=True, metavar="KEY=VALUE",
              help="Loss hyper-parameter, repeatable (e.g. --loss gce --loss-param q=0.7).")
@setting_option("--noisy-weight", RETRAIN["noisy_weight"],
                help="dynamic-* losses: per-row noise posterior online, from a Beta mixture refitted to "
                     "the network's own losses after every epoch, or fixed from the p_noisy column.")
@setting_option("--warmup", RETRAIN["warmup"], help="--noisy-weight online: epochs of plain cross-entropy first.")
@setting_option("--mixup", TRAIN["mixup"], metavar="ALPHA",
                help="Mixup with lambda ~ Beta(ALPHA, ALPHA), any loss (0: off).")
@setting_option("--prior-reg", TRAIN["prior_reg"], metavar="WEIGHT",
                help="Weight of KL(class prior || mean batch prediction); the prior is flag's estimate "
                     "when its summary is found, else the label frequencies (0: off).")
@click.option("--noise-matrix", default=None, type=click.Path(path_type=str),
              help="summary.json of the flag run, for the noise matrix and class prior of --loss "
                   "forward / auto and --prior-reg's class prior (default: beside DATA, or the cleaned file's metadata).")
@device_option()
@setting_option("--epochs", TRAIN["epochs"])
@setting_option("--batch-size", TRAIN["batch_size"])
@setting_option("--lr", TRAIN["lr"], help="AdamW learning rate.")
@setting_option("--weight-decay", TRAIN["weight_decay"])
@click.option("--hidden", default=",".join(map(str, TRAIN["hidden"].default)), show_default=True,
              help="Hidden layer widths.")
@setting_option("--dropout", TRAIN["dropout"])
@setting_option("--patience", TRAIN["patience"], help="Early-stopping patience in epochs (0: off).")
@setting_option("--val-fraction", TRAIN["val_fraction"], help="Stratified validation share for early stopping.")
@seed_option()
@setting_option("--threads", TRAIN["threads"],
                help="CPU threads while training (default: torch's choice; 1 is often fastest on a "
                     "busy machine).")
@overwrite_option("Replace an --out directory holding an earlier model (only cleanpipe's own "
                  "files; a folder holding anything else is refused).")
@json_option("Print the metrics as one JSON object.")
@quiet_option("No progress bar, nothing printed on success.")
def retrain(data, out, label, multi_label, features, exclude, ids, weight_col, loss, loss_params, noisy_weight,
            warmup, noise_matrix, overwrite, as_json, quiet, fmt, **train):
    """Train a tabular MLP on a flags or cleaned table.

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
    # torch (seconds to import) only for the commands that train or predict
    from ..train import check_model_dir, retrain_table, save_model_dir

    if loss and loss != AUTO_LOSS:
        loss_kind(loss)  # an unknown name fails before the data is read
    config = TrainConfig.take(SimpleNamespace(**dict(train, hidden=_parse_hidden(train["hidden"])))).check()
    params = _parse_loss_params(loss_params)
    # Every file retrain may read: DATA, the summary beside it, --noise-matrix.
    guard_files({"DATA": data, "--noise-matrix": noise_matrix,
                 "the summary of DATA": summary_path_for(data)}, {},
                overwrite=overwrite, model_dir=("--out", out))
    check_model_dir(out, overwrite=overwrite)
    cleanup_stale_temps(Path(out).parent)  # staging folders a killed retrain left beside --out
    table = read_table(data, fmt=fmt)
    label = label or label_from_metadata(table) or "label"
    # What flag was told travels with its output: without --features/--exclude/--id, train on the
    # features flag used (never on its ids or the columns it was told to leave out).
    features, exclude, ids = csv_option(features), csv_option(exclude) or (), csv_option(ids) or ()
    recorded = flag_settings(table)
    if features is None and not exclude and not ids and recorded.get("features"):
        features = [c for c in recorded["features"] if c in table.column_names] or None
        ids = tuple(c for c in recorded.get("ids") or () if c in table.column_names)
    loss, params = _resolve_loss(loss, params, table, label, multi_label, DEFAULT_LOSS)
    if weight_col == "auto":
        weight_col = "sample_weight" if "sample_weight" in table.column_names else None
    elif weight_col == "none":
        weight_col = None
    # auto (the default) picks its loss from the noise matrix when flag's summary is found
    summaries = [summary_path_for(data)]
    nm, nm_classes = ((flag_estimate("noise_matrix", table, explicit=noise_matrix, summaries=summaries)
                       or (None, None)) if loss in ("forward", AUTO_LOSS) else (None, None))
    # auto reads the prior too: the noise rate it chooses by weighs each class's flips by it
    prior = (flag_estimate("class_prior", table, explicit=noise_matrix, summaries=summaries)
             if config.prior_reg > 0 or loss == AUTO_LOSS else None)
    with progress_bar(not quiet) as update:
        on_epoch = None if update is None else (
            lambda epoch, m: update("training epochs", epoch, config.epochs, epoch_info(m)))
        result = retrain_table(table, label=label, features=features, exclude=exclude, ids=ids, refuse_ids=True,
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
    labelled_as_tags = is_multilabel(table.schema, label)
    if multi_label and not labelled_as_tags:
        resolve_label_columns(table.schema, label)  # raises: names what is wrong with --label
    if not (multi_label or labelled_as_tags):
        return loss or default, params
    if loss is None:
        return DEFAULT_MULTILABEL_LOSS, params
    if not is_multilabel_loss(loss):
        raise InputError(f"--loss {loss} is a single-label loss and label '{label}' holds sets of tags; "
                         f"choose one of: {', '.join(multilabel_losses())}")
    return loss, params


@cli.command()
@click.argument("model_dir", type=click.Path(path_type=str))
@click.argument("data", type=click.Path(path_type=str))
@input_format_options
@click.option("--out", default=None, type=click.Path(path_type=str),
              help="Output Parquet (default: ./<DATA stem>.preds.parquet).")
@click.option("--probs", is_flag=True, help="Also write pred_probs, a list<float32> per row in class order.")
@click.option("--prefix", default="", help="Prefix for the added column names.")
@device_option()
@overwrite_option()
@quiet_option()
def predict(model_dir, data, out, probs, prefix, device, overwrite, quiet, fmt):
    """Score a table with a model written by cleanpipe retrain.

    Writes every input column plus predicted_label (in the label's own type) and
    confidence (the largest class probability), and pred_probs with --probs.
    A multi-label model writes predicted_label as the list of tags whose
    probability passes the cut retrain tuned on its validation rows (model.json's
    threshold; 0.5 for a model saved without one) and always pred_probs, one
    probability per class in the order of model.json's classes.

    \b
    Examples:
      cleanpipe predict model/ new.parquet --out new.preds.parquet
      cleanpipe predict model/ data.flags.parquet --prefix model_ --probs
    """
    # torch (seconds to import) only for the commands that train or predict
    from ..train import load_model_dir, predict_table

    stem = Path(data.rstrip("/")).name.split(".")[0] or "data"
    out_path = Path(out) if out else Path.cwd() / f"{stem}.preds.parquet"
    guard_files({"MODEL_DIR": model_dir, "DATA": data}, {"--out": out_path}, overwrite=overwrite)
    loaded = load_model_dir(model_dir)
    table = read_table(data, fmt=fmt)
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
