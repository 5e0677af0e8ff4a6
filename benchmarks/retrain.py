"""Retraining on noisy labels: cleanpipe's pipeline and robust losses vs plain CE, CleanLearning, oracle.

Each case is a data set with a clean held-out test split (25%, stratified) and noise injected into
the training part only. Every method trains on the same noisy training rows and is scored on the
clean test rows:

* ``ce (noisy)``: cleanpipe's MLP with cross-entropy on the noisy labels (the baseline);
* one row per robust loss of :data:`cleanpipe.losses.LOSSES` on the noisy labels (``forward``
  gets the noise matrix and ``dynamic-*`` the ``p_noisy`` column of ``cleanpipe.flag_table``), and
  ``dynamic-hard`` with ``noisy_weight="online"`` (a loss mixture refitted every epoch);
* ``pipeline <mode> + <loss>``: ``flag_table`` (defaults: HistGradientBoosting, 5 folds) ->
  ``clean_table(mode)`` -> ``retrain_table(loss)``; the default mode and loss are marked
  (``auto``: ``forward`` on pair-like noise, else ``sce``), and the candidates measured for the
  default (:func:`candidate_methods`) are listed too;
* ``cleanlab CleanLearning``: cleanlab 2.9 wrapping scikit-learn's ``MLPClassifier`` with the same
  layer sizes, batch size, learning rate and early stopping as cleanpipe's MLP;
* ``oracle``: cleanpipe's MLP with cross-entropy on the true labels.

``gap closed = (acc - acc_ce_noisy) / (acc_oracle - acc_ce_noisy)``: 0 is no better than training on
the noisy labels, 1 is as good as knowing the true labels. Seeds: :data:`SEEDS` per data set, the
same for every method; ``± se`` is the standard error of the mean gap closed.

Results are cached per (case, seed, method) in ``benchmarks/.cache/retrain.csv`` and flags per
(case, seed) in ``benchmarks/.cache/retrain_flags/``, so a new method costs only its own training.

Run from the repository root::

    python benchmarks/retrain.py --jobs 1        # full suite (~1 h on one core)
    python benchmarks/retrain.py --quick         # digits, 40% symmetric noise
    python benchmarks/retrain.py --methods "pipeline relabel + auto;forward"   # recompute these
    python benchmarks/retrain.py --missing       # only what the cache lacks (new methods or seeds)
    python benchmarks/retrain.py --from-cache 56 --write   # re-render, update RESULTS.md
    python benchmarks/retrain.py --throughput --write   # training samples/s, 1M x 64 synthetic
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

# One BLAS/OpenMP thread per process: the models are small and the benchmark machine is shared;
# extra threads spin against other processes (set before numpy/torch/sklearn load their pools).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
from sklearn.datasets import load_digits, make_classification  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

try:
    from ._common import (CACHE_DIR, cleanpipe_version, markdown_table, progress, provenance_block,
                          replace_section)
except ImportError:  # run as a script: benchmarks/ is on sys.path
    from _common import (CACHE_DIR, cleanpipe_version, markdown_table, progress, provenance_block,
                         replace_section)

SCRIPT = "retrain.py"
TEST_FRACTION = 0.25
NOISES = {"sym20": ("symmetric", 0.2), "sym40": ("symmetric", 0.4), "pair30": ("pair", 0.3)}
#: Weight of the prior regulariser in the ``+ prior`` rows.
PRIOR_REG = 3.0


def load_dataset(name: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``digits`` (1797 x 64, 10 classes) or ``synth20k`` (20000 x 20, 6 classes)."""
    if name == "digits":
        return load_digits(return_X_y=True)
    if name == "synth20k":
        return make_classification(n_samples=20000, n_features=20, n_informative=12, n_redundant=4,
                                   n_classes=6, n_clusters_per_class=2, class_sep=1.5,
                                   random_state=seed)
    raise ValueError(name)


def inject_noise(y: np.ndarray, kind: str, rate: float, n_classes: int, seed: int) -> np.ndarray:
    """``symmetric``: flip to a uniformly drawn other class; ``pair``: flip class c to c + 1 (mod K)."""
    rng = np.random.default_rng(seed)
    flip = rng.random(len(y)) < rate
    if kind == "symmetric":
        other = (y + rng.integers(1, n_classes, len(y))) % n_classes
    else:
        other = (y + 1) % n_classes
    return np.where(flip, other, y)


def _table(X: np.ndarray, y: np.ndarray | None) -> pa.Table:
    cols = {f"f{i}": X[:, i].astype(np.float32) for i in range(X.shape[1])}
    if y is not None:
        cols["label"] = y.astype(np.int64)
    return pa.table(cols)


def _accuracy(result, test: pa.Table, y_test: np.ndarray) -> float:
    from cleanpipe.train import Preprocessor
    pre = Preprocessor.from_dict(result.spec["preprocessing"])
    return _model_accuracy(result.model, pre, result.spec["classes"], test, y_test)


def _model_accuracy(model, pre, classes, test: pa.Table, y_test: np.ndarray) -> float:
    """Accuracy on ``test`` of ``model`` (also mid-training) with its preprocessing ``pre``."""
    import torch

    from cleanpipe.train.loop import predict_logits
    x_num, x_cat = pre.transform(test)
    logits = predict_logits(model, torch.from_numpy(x_num), torch.from_numpy(x_cat))
    return float(np.mean(np.asarray(classes)[logits.argmax(dim=1).numpy()] == y_test))


def _config(n_train: int, quick: bool, seed: int = 0, **over):
    from cleanpipe.train import TrainConfig
    # retrain's defaults (40 epochs, patience 8): early stopping ends cross-entropy runs well
    # before the cap, the robust losses use more of it.
    epochs = 15 if quick else 40
    return TrainConfig(epochs=epochs, patience=8, seed=seed, device="cpu", threads=1, **over)


def _cleanlab(X_tr, y_noisy, X_te, y_te, config, patience: int | None = None) -> float:
    """CleanLearning around an MLPClassifier set up like ``config``; its early-stopping patience is
    ``patience`` (default ``config.patience``)."""
    from cleanlab.classification import CleanLearning
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    mlp = MLPClassifier(hidden_layer_sizes=tuple(config.hidden), alpha=config.weight_decay,
                        batch_size=config.batch_size, learning_rate_init=config.lr,
                        max_iter=config.epochs, early_stopping=True, validation_fraction=0.1,
                        n_iter_no_change=patience or config.patience, random_state=config.seed)
    # n_jobs=1: cleanlab's own process pool fails inside a joblib worker
    cl = CleanLearning(make_pipeline(StandardScaler(), mlp), seed=config.seed, cv_n_folds=5,
                       verbose=False, find_label_issues_kwargs={"n_jobs": 1})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLP convergence warnings at the epoch cap
        cl.fit(X_tr, y_noisy)
    return float(np.mean(cl.predict(X_te) == y_te))


ORACLE = "oracle (ce, true labels)"
BASELINE = "ce (noisy)"
CLEANLAB = "cleanlab CleanLearning (MLPClassifier)"
DEFAULT_MARK = " (default)"
#: Seeds per data set (split, noise, flagger and initialisation). Digits has 450 test rows and its
#: sym20 gap is about 2.4 points, so one test row moves that case's gap closed by ~0.09 per seed:
#: digits gets more seeds (it is cheap), the 20k-row table, whose 5000 test rows already average
#: most of that out, keeps 3.
SEEDS = {"digits": 10, "synth20k": 3}
#: Where the flags of each (data set, noise, seed) are kept between runs, so that adding a method
#: does not refit the flagger; delete the folder after changing the detection code.
FLAG_CACHE = CACHE_DIR / "retrain_flags"


class Case:
    """One (data set, noise, seed): the split, the noisy labels, and the flags (computed once)."""

    def __init__(self, dataset: str, noise: str, seed: int, quick: bool = False):
        X, y = load_dataset(dataset, seed)
        k = int(y.max()) + 1
        self.X_tr, self.X_te, self.y_tr, self.y_te = train_test_split(
            X, y, test_size=TEST_FRACTION, stratify=y, random_state=seed)
        kind, rate = NOISES[noise]
        self.y_noisy = inject_noise(self.y_tr, kind, rate, k, seed + 1)
        self.test = _table(self.X_te, None)
        self.dataset, self.noise, self.seed, self.quick = dataset, noise, seed, quick
        self._flags = None

    def train(self, table, over=None, **kw) -> float:
        """Test accuracy of ``retrain_table(table, **kw)`` under the benchmark's config."""
        from cleanpipe.train import retrain_table
        cfg = _config(len(self.y_tr), self.quick, self.seed, **(over or {}))
        return _accuracy(retrain_table(table, label="label", config=cfg, **kw), self.test, self.y_te)

    @property
    def flags(self):
        """``(flags table, summary, pred_probs, seconds)`` of ``flag_table`` on the noisy rows."""
        if self._flags is None:
            self._flags = _cached_flags(self)
        return self._flags

    def noise_kw(self) -> dict:
        s = self.flags[1]
        return dict(noise_matrix=s["noise_matrix"], noise_matrix_classes=s["classes"])


def _cached_flags(case: Case):
    import json

    import pyarrow.parquet as pq

    from cleanpipe import flag_table
    d = FLAG_CACHE / f"{case.dataset}_{case.noise}_s{case.seed}"
    if (d / "summary.json").exists():
        return (pq.read_table(d / "flags.parquet"), json.loads((d / "summary.json").read_text()),
                np.load(d / "pred_probs.npy"), json.loads((d / "seconds.json").read_text()))
    t0 = time.perf_counter()
    res = flag_table(_table(case.X_tr, case.y_noisy), label="label", seed=case.seed)
    seconds = time.perf_counter() - t0
    issue = res.table.column("is_label_issue").to_numpy(zero_copy_only=False)
    is_noisy = case.y_noisy != case.y_tr
    progress(f"  {case.dataset}/{case.noise}/s{case.seed} flag: {issue.sum()} flagged, precision "
             f"{is_noisy[issue].mean():.3f}, recall {issue[is_noisy].mean():.3f} ({seconds:.1f}s)")
    summary = {k: res.summary[k] for k in ("noise_matrix", "classes", "class_prior", "confident_joint")}
    d.mkdir(parents=True, exist_ok=True)
    pq.write_table(res.table, d / "flags.parquet")
    np.save(d / "pred_probs.npy", np.asarray(res.pred_probs, np.float32))
    (d / "seconds.json").write_text(json.dumps(seconds))
    (d / "summary.json").write_text(json.dumps(summary))  # last: marks the entry complete
    return res.table, summary, np.asarray(res.pred_probs, np.float32), seconds


def _pipeline(mode: str, loss: str, over=None, clean_fn=None, loss_kw=None):
    """A ``flag -> clean -> retrain`` method; ``clean_fn(case, flags_table)`` replaces ``clean_table``
    and ``loss_kw(case, cleaned)`` adds retrain keyword arguments."""
    def run(case: Case) -> tuple[float, float]:
        from cleanpipe.clean import clean_table
        t0 = time.perf_counter()
        table = case.flags[0]
        cleaned = clean_fn(case, table) if clean_fn else clean_table(table, mode=mode, label="label").table
        kw = case.noise_kw() | (loss_kw(case, cleaned) if loss_kw else {})
        acc = case.train(cleaned, over=over, loss=loss,
                         weight_col="sample_weight" if "sample_weight" in cleaned.column_names else None,
                         **kw)
        return acc, case.flags[3] + time.perf_counter() - t0  # the pipeline's time includes flagging
    return run


def _pipeline_name(mode: str, loss: str, over=None, suffix: str = "") -> str:
    extra = "".join(f" + {k.replace('_reg', '')}" + (f" {v:g}" if k == "mixup" else "")
                    for k, v in (over or {}).items())
    return f"pipeline {mode} + {loss}{extra}{suffix}"


def _loss(loss: str, over=None, **kw):
    def run(case: Case) -> float:
        kw2 = case.noise_kw() if loss == "forward" else {}
        return case.train(case.flags[0], over=over, loss=loss, **kw2, **kw)
    return run


def methods() -> dict:
    """Every method of the benchmark: name -> ``fn(case)`` returning the test accuracy, or
    ``(accuracy, seconds)`` when its time is not just its own call (pipelines include flagging).

    The default pipeline's name carries no mark here; :func:`mark_default` adds it."""
    from cleanpipe.clean import MODES
    from cleanpipe.train import DEFAULT_LOSS, single_label_losses
    out = {ORACLE: lambda c: c.train(_table(c.X_tr, c.y_tr), loss="ce"),
           BASELINE: lambda c: c.train(c.flags[0], loss="ce")}
    for loss in single_label_losses():
        if loss != "ce":
            out[loss] = _loss(loss)
    out["dynamic-hard (column p_noisy)"] = _loss("dynamic-hard", noisy_weight="column")
    out["dynamic-soft (column p_noisy)"] = _loss("dynamic-soft", noisy_weight="column")
    out["dynamic-hard + prior"] = _loss("dynamic-hard", over={"prior_reg": PRIOR_REG})
    out["dynamic-hard + mixup 0.5 + prior"] = _loss("dynamic-hard",
                                                    over={"prior_reg": PRIOR_REG, "mixup": 0.5})
    pipes = [(m, DEFAULT_LOSS, {}) for m in MODES]
    pipes += [p for p in [("relabel", "sce", {}), ("drop", "sce", {}), ("weight", "sce", {}),
                          ("relabel", "dynamic-hard", {}),
                          ("relabel", "dynamic-hard", {"prior_reg": PRIOR_REG}),
                          ("relabel", "dynamic-hard", {"mixup": 0.5, "prior_reg": PRIOR_REG})]
              if p not in pipes]
    for mode, loss, over in pipes:
        out[_pipeline_name(mode, loss, over)] = _pipeline(mode, loss, over)
    out.update(candidate_methods())
    out[CLEANLAB] = lambda c: _cleanlab(c.X_tr, c.y_noisy, c.X_te, c.y_te,
                                        _config(len(c.y_tr), c.quick, c.seed))
    return out


def _codes(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy(zero_copy_only=False).astype(np.int64)


def _relabelled(case: Case, table: pa.Table) -> pa.Table:
    """``clean --mode relabel`` without its ``original_label`` column, so that ``forward`` trains on
    the relabelled labels (retrain would otherwise take the original ones)."""
    from cleanpipe.clean import clean_table
    return clean_table(table, mode="relabel", label="label").table.drop_columns(["original_label"])


def _adjusted_matrix(case: Case, cleaned: pa.Table) -> dict:
    """The flag's noise matrix with every relabelled row moved from (old label, new label) to
    (new label, new label) in its joint."""
    s = case.flags[1]
    nm = _relabel_joint(np.asarray(s["noise_matrix"]), np.asarray(s["class_prior"]),
                        _codes(case.flags[0], "given_label"), _codes(cleaned, "label"))
    return dict(noise_matrix=nm.tolist())


def _relabel_joint(nm, prior, old, new):
    k = len(prior)
    joint = nm * prior[None, :] * len(old)
    moved = np.bincount(old * k + new, minlength=k * k).reshape(k, k) * (1 - np.eye(k))
    joint = np.maximum(joint - moved, 0) + np.diag(moved.sum(axis=0))
    col = joint.sum(axis=0)
    return np.where(col > 0, joint / np.where(col > 0, col, 1), np.eye(k))


def _reestimated_matrix(case: Case, cleaned: pa.Table) -> dict:
    """Confident learning rerun on the relabelled labels with the same out-of-fold probabilities."""
    from cleanpipe.detect.confident import confident_learning
    cl = confident_learning(_codes(cleaned, "label"), case.flags[2])
    return dict(noise_matrix=cl.noise_matrix.tolist())


def _hybrid(case: Case, table: pa.Table) -> pa.Table:
    """relabel the strong-evidence rows, down-weight the other flagged ones."""
    from cleanpipe.clean import _bools, _floats, clean_table, sample_weights
    out = clean_table(table, mode="relabel", label="label").table
    changed = _codes(out, "original_label") != _codes(out, "label")
    w = sample_weights(_floats(table, "label_score"), _floats(table, "p_noisy"),
                       _bools(table, "is_label_issue") & ~changed)
    return out.append_column("sample_weight", pa.array(w, type=pa.float32()))


RELABELLED_FORWARD = "pipeline relabel + forward on the relabelled labels"


def candidate_methods() -> dict:
    """Pipelines measured as candidates for the default."""
    return {
        f"{RELABELLED_FORWARD} (flag matrix)": _pipeline("relabel", "forward", clean_fn=_relabelled),
        f"{RELABELLED_FORWARD} (adjusted matrix)": _pipeline("relabel", "forward", clean_fn=_relabelled,
                                                            loss_kw=_adjusted_matrix),
        f"{RELABELLED_FORWARD} (re-estimated matrix)": _pipeline("relabel", "forward", clean_fn=_relabelled,
                                                                loss_kw=_reestimated_matrix),
        "pipeline relabel-weight + sce": _pipeline("relabel", "sce", clean_fn=_hybrid),
        "pipeline relabel + dynamic-hard, warm-up 10": _pipeline("relabel", "dynamic-hard",
                                                                 loss_kw=lambda c, t: {"warmup": 10}),
    }


def default_pipeline_name() -> str:
    from cleanpipe.clean import MODES
    from cleanpipe.train import DEFAULT_LOSS
    return _pipeline_name(MODES[0], DEFAULT_LOSS)


def mark_default(df: pd.DataFrame) -> pd.DataFrame:
    """Strip any old default mark and mark the current default pipeline."""
    name = df.method.str.replace(DEFAULT_MARK, "", regex=False)
    return df.assign(method=name.where(name != default_pipeline_name(), name + DEFAULT_MARK))


def run_case(dataset: str, noise: str, seed: int = 0, *, quick: bool = False, only=None) -> pd.DataFrame:
    """Test accuracy of every method (or of the names in ``only``) on one case; one row per method."""
    case, rows, t_case = Case(dataset, noise, seed, quick), [], time.perf_counter()
    if only is None or set(only) - {ORACLE, CLEANLAB}:
        case.flags  # flag first, so that no single method's time includes it
    for name, fn in methods().items():
        if only is not None and name not in only:
            continue
        t0 = time.perf_counter()
        out = fn(case)
        acc, seconds = out if isinstance(out, tuple) else (out, time.perf_counter() - t0)
        rows.append(dict(dataset=dataset, noise=noise, seed=seed, method=name, accuracy=acc,
                         seconds=seconds))
        progress(f"  {dataset}/{noise}/s{seed} {name:<40} acc {acc:.4f} ({seconds:.1f}s)")
    progress(f"{dataset}/{noise}/s{seed} done in {time.perf_counter() - t_case:.0f}s")
    return pd.DataFrame(rows, columns=["dataset", "noise", "seed", "method", "accuracy", "seconds"])


def gap_closed(df: pd.DataFrame) -> pd.DataFrame:
    """Seed-mean accuracy, ``gap_closed`` and its standard error per (case, method).

    Accuracies are averaged over seeds per (case, method) before the gap is taken. The standard
    error is that of the mean paired difference ``acc - acc_ce_noisy`` over seeds (same split,
    noise and flags), divided by the case's gap ``acc_oracle - acc_ce_noisy`` (taken as fixed)."""
    df = df.assign(seed=df["seed"] if "seed" in df.columns else 0)
    out = []
    for _, g in df.groupby(["dataset", "noise"], sort=False):
        base = g[g.method == BASELINE].set_index("seed")["accuracy"]
        oracle = g.loc[g.method.str.startswith("oracle"), "accuracy"].mean()
        gap = oracle - base.mean()
        diff = g.accuracy.to_numpy() - base.reindex(g.seed).to_numpy()
        g = g.assign(diff=diff)
        m = g.groupby(["dataset", "noise", "method"], sort=False).agg(
            accuracy=("accuracy", "mean"), diff=("diff", "mean"), sd=("diff", "std"),
            n=("diff", "count")).reset_index()
        ok = gap > 0
        m["gap_closed"] = (m["accuracy"] - base.mean()) / gap if ok else np.nan
        m["gap_se"] = (m["sd"].fillna(0) / np.sqrt(m["n"]) / gap) if ok else np.nan
        out.append(m.drop(columns=["diff", "sd"]))
    return pd.concat(out)


def summarize(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Accuracy and gap-closed tables: one row per method, one column per case, plus the mean and
    the standard error of the mean gap closed (cases independent)."""
    df = gap_closed(df)
    df = df.assign(case=df.dataset + " " + df.noise)
    order = list(dict.fromkeys(df.method))
    acc = df.pivot(index="method", columns="case", values="accuracy").reindex(order)
    acc["mean"] = acc.mean(axis=1)
    gap = df.pivot(index="method", columns="case", values="gap_closed").reindex(order)
    se = df.pivot(index="method", columns="case", values="gap_se").reindex(order)
    gap["mean"] = gap.mean(axis=1)
    gap["± se"] = np.sqrt((se ** 2).sum(axis=1)) / se.notna().sum(axis=1)
    return acc.reset_index(), gap.sort_values("mean", ascending=False).reset_index()


def _verdict(gap: pd.DataFrame) -> str:
    g = gap.set_index("method")["mean"]
    default = next((m for m in g.index if m.endswith("(default)")), None)
    cl = next((m for m in g.index if m.startswith("cleanlab")), None)
    if default is None:
        return "The default pipeline was not run."
    text = f"Default pipeline (`{default}`) closes {g[default]:.0%} of the gap on average (target >= 60%)"
    if cl is not None:
        text += (f"; CleanLearning closes {g[cl]:.0%}, so the default pipeline "
                 f"{'beats' if g[default] > g[cl] else 'does not beat'} it on average")
    return text + "."


#: (batch size, CPU threads) measured by ``--throughput``; 2 threads only with larger batches, where
#: there is enough work per operator to split (small batches on 2 busy cores mostly spin).
CPU_CONFIGS = ((256, 1), (1024, 1), (4096, 1), (1024, 2), (4096, 2))


def throughput(rows: int = 1_000_000, features: int = 64, cpu_configs=CPU_CONFIGS,
               cuda_batch_sizes=(1024, 4096)) -> pd.DataFrame:
    """Training samples/second of one epoch on a synthetic ``rows x features`` table, per device."""
    import torch

    from cleanpipe.losses import cross_entropy
    from cleanpipe.train import TabularMLP, TrainConfig, fit
    rng = np.random.default_rng(0)
    X = rng.standard_normal((rows, features), dtype=np.float32)
    y = (X @ rng.standard_normal((features, 10), dtype=np.float32)).argmax(axis=1)
    x_cat = np.zeros((rows, 0), dtype=np.int64)
    runs = [("cpu", bs, th) for bs, th in cpu_configs]
    if torch.cuda.is_available():
        runs += [("cuda", bs, None) for bs in cuda_batch_sizes]
    out = []
    for device, bs, th in runs:
        cfg = TrainConfig(epochs=1, batch_size=bs, patience=0, val_fraction=0.0, device=device, threads=th)
        model = TabularMLP(features, [], cfg.hidden, 10)
        hist = fit(model, X, x_cat, y, loss_fn=cross_entropy, config=cfg)
        out.append(dict(device=device, batch_size=bs, threads=th or "-", epochs=1,
                        seconds=round(hist.train_seconds, 1),
                        samples_per_second=round(hist.samples_per_second)))
        progress(f"  {device} batch {bs} threads {th}: {hist.samples_per_second:,.0f} samples/s")
    return pd.DataFrame(out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits with 40%% symmetric noise only")
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    parser.add_argument("--throughput", action="store_true", help="training samples/s instead")
    parser.add_argument("--no-cleanlab", action="store_true", help="skip CleanLearning")
    parser.add_argument("--seeds", type=int, default=None,
                        help="seeds per case for every data set (default: SEEDS, digits 10, synth20k 3)")
    parser.add_argument("--jobs", type=int, default=2, help="cases run in parallel processes")
    parser.add_argument("--datasets", default=None, help="comma-separated subset (digits,synth20k)")
    parser.add_argument("--noises", default=None, help="comma-separated subset (sym20,sym40,pair30)")
    parser.add_argument("--methods", default=None,
                        help="only these methods (names separated by ';', as in the tables, without "
                             "the default mark); their results replace theirs in the cache")
    parser.add_argument("--missing", action="store_true",
                        help="compute only the (case, seed, method) results the cache lacks and merge")
    parser.add_argument("--from-cache", type=float, default=None, metavar="MINUTES",
                        help="only re-render the tables from the cached results (MINUTES: the run time "
                             "of the runs that made them, for the text)")
    parser.add_argument("--note", default="", help="a sentence on how the cached results were made, "
                                                     "written after the setup text")
    args = parser.parse_args(argv)
    if args.throughput:
        return _main_throughput(args)
    cache = CACHE_DIR / ("retrain_quick.csv" if args.quick else "retrain.csv")
    if args.from_cache is not None:
        return _report(_load_cache(cache), args.from_cache, args)
    all_methods = list(methods())
    only = all_methods if args.methods is None else [m.strip() for m in args.methods.split(";")]
    unknown = [m for m in only if m not in all_methods]
    if unknown:
        parser.error(f"--methods: unknown {unknown}; known: {all_methods}")
    if args.no_cleanlab:
        only = [m for m in only if m != CLEANLAB]
    datasets = args.datasets.split(",") if args.datasets else list(SEEDS)
    noises = args.noises.split(",") if args.noises else list(NOISES)
    if args.quick:
        jobs = [("digits", "sym40", 0, only)]
    else:
        jobs = [(d, n, s, only) for d in datasets for n in noises
                for s in range(args.seeds if args.seeds is not None else SEEDS[d])]
    merge = args.methods is not None or args.missing or args.datasets or args.noises
    old = _load_cache(cache) if merge and cache.exists() else None
    if args.missing and old is not None:
        have = set(zip(old.dataset, old.noise, old.seed, old.method))
        jobs = [(d, n, s, [m for m in ms if (d, n, s, m) not in have]) for d, n, s, ms in jobs]
        jobs = [j for j in jobs if j[3]]
    from joblib import Parallel, delayed
    t0 = time.perf_counter()
    parts = Parallel(n_jobs=args.jobs)(delayed(run_case)(d, n, s, quick=args.quick, only=ms)
                                       for d, n, s, ms in jobs)
    df = pd.concat(parts) if parts else old.iloc[:0]
    minutes = (time.perf_counter() - t0) / 60
    if old is not None:
        key = ["dataset", "noise", "seed", "method"]
        stale = old.set_index(key).index.isin(df.set_index(key).index)
        df = _sort_rows(pd.concat([old[~stale], df]))
    CACHE_DIR.mkdir(exist_ok=True)
    df.to_csv(cache, index=False)
    progress(f"this invocation: {minutes:.1f} min")
    _report(df, minutes, args)


def _load_cache(path) -> pd.DataFrame:
    """Cached rows, without the default mark of the run that wrote them (added when reporting)."""
    df = pd.read_csv(path)
    return df.assign(method=df.method.str.replace(DEFAULT_MARK, "", regex=False))


def _sort_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows in case, seed and :func:`methods` order (the tables list methods in first-seen order)."""
    order = {m: i for i, m in enumerate(methods())}
    cases = {c: i for i, c in enumerate((d, n) for d in SEEDS for n in NOISES)}
    return df.assign(_c=[cases.get(c, 99) for c in zip(df.dataset, df.noise)],
                     _m=df.method.map(order).fillna(999)).sort_values(
        ["_c", "seed", "_m"], kind="stable").drop(columns=["_c", "_m"])


def _report(df: pd.DataFrame, minutes: float, args) -> None:
    df = mark_default(df)
    acc, gap = summarize(df)
    verdict = _verdict(gap)
    seeds = df.groupby("dataset", sort=False)["seed"].nunique().to_dict()
    print("## Test accuracy\n" + markdown_table(acc, floatfmt=".4f"))
    print("\n## Gap closed\n" + markdown_table(gap, floatfmt=".2f"))
    print(f"\n{verdict} ({minutes:.1f} min)")
    if args.write:
        body = "\n".join([provenance_block(SCRIPT, cleanpipe_version()), _setup_text(minutes, seeds) + (f" {args.note}" if args.note else ""), "",
                          "### Gap closed (sorted by mean)", "", markdown_table(gap, floatfmt=".2f"), "",
                          "### Test accuracy", "", markdown_table(acc, floatfmt=".4f"), "", verdict, "",
                          _defaults_text(gap, df)])
        replace_section("Retrain", body)
        progress("wrote the Retrain section of benchmarks/RESULTS.md")


def _setup_text(minutes: float, seeds: dict) -> str:
    per = ", ".join(f"{n} on {d}" for d, n in seeds.items())
    return (f"Digits (1797 x 64, 10 classes) and `make_classification` (20000 x 20, 6 classes); 25% "
            "clean stratified test split, noise only on the training part: symmetric 20% / 40% (to a "
            "uniform other class) and pair 30% (class c -> c+1). cleanpipe's MLP (256-128, AdamW, "
            "batch 256, at most 40 epochs with early stopping (patience 8) on a 10% split, 1 CPU "
            f"thread); every method runs on the same seeds ({per}; a seed sets the split, the noise, "
            "the flagger and the initialisation), and accuracies are averaged over seeds before the "
            "gap is computed. Digits gets more seeds because its gap is a few test rows (450 test "
            "rows; on sym20 one row is ~0.09 of the gap per seed). Each (case, seed, method) result "
            "is computed once and cached (`--missing` / `--methods` add to the cache; flags are "
            "cached per case and seed, so every method of a seed uses the same flags). Flags from "
            "`cleanpipe.flag_table` defaults (HistGradientBoosting, 5 folds). CleanLearning wraps "
            "`StandardScaler + MLPClassifier` with the same layers, batch size, learning rate, L2 and "
            f"early stopping (cv_n_folds=5). Gap closed = (acc - acc_ce_noisy) / (acc_oracle - "
            f"acc_ce_noisy); `± se` is the standard error of the mean gap closed (per case: the "
            f"standard error over seeds of the paired difference acc - acc_ce_noisy, over the case's "
            f"gap; cases independent). Run time of the runs behind the table: {minutes:.1f} min on "
            "2 shared cores.")


def _auto_choices(df: pd.DataFrame) -> str:
    """What ``--loss auto`` picked from each cached flag summary behind ``df``, per noise kind."""
    import json

    from cleanpipe.train import choose_loss
    picks = {}
    for d, n, seed in df[["dataset", "noise", "seed"]].drop_duplicates().itertuples(index=False):
        path = FLAG_CACHE / f"{d}_{n}_s{seed}" / "summary.json"
        if path.exists():
            loss, why = choose_loss(json.loads(path.read_text())["noise_matrix"])
            picks.setdefault(NOISES[n][0], []).append((loss, why.get("flip_concentration", np.nan)))
    return "; ".join(
        f"{kind} noise: " + ", ".join(f"`{loss}` {sum(p[0] == loss for p in v)}/{len(v)}"
                                      for loss in sorted({p[0] for p in v}))
        + f" (flip concentration {min(p[1] for p in v):.2f}-{max(p[1] for p in v):.2f})"
        for kind, v in picks.items())


def _pair_mean(gap: pd.DataFrame, method: str) -> float:
    g = gap.set_index("method")
    cols = [c for c in g.columns if NOISES.get(c.split(" ")[-1], ("",))[0] == "pair"]
    return float(g.loc[method, cols].mean()) if method in g.index else np.nan


def _defaults_text(gap: pd.DataFrame, df: pd.DataFrame) -> str:
    """Which loss and clean mode these numbers favour, next to the configured defaults."""
    from cleanpipe.clean import MODES
    from cleanpipe.train import DEFAULT_LOSS, FALLBACK_LOSS, PAIR_SHARE
    g = gap.set_index("method")["mean"]
    losses = g[[m for m in g.index if not m.startswith(("oracle", "pipeline", "cleanlab", "ce (noisy)"))]]
    pipes = g[[m for m in g.index if m.startswith("pipeline") and not m.endswith(DEFAULT_MARK)]]
    return (f"Defaults: `cleanpipe clean --mode {MODES[0]}` and `cleanpipe retrain --loss {DEFAULT_LOSS}`: "
            f"`forward` (trained on `original_label`, the labels whose noise flag's matrix describes) "
            f"when flag's noise matrix is pair-like (flip concentration >= {PAIR_SHARE:g}, most of a "
            f"class's flips go to one other class), else `{FALLBACK_LOSS}`. Per flag run here, auto "
            f"picked: {_auto_choices(df)}. On the noisy labels `forward` beats `sce` on pair noise "
            f"({_pair_mean(gap, 'forward'):.2f} vs {_pair_mean(gap, 'sce'):.2f} mean gap closed over "
            "the pair cases) and loses to it on every symmetric case; after relabelling, `forward` "
            "on the relabelled labels, with flag's matrix, the matrix adjusted for the relabelled rows or confident "
            "learning rerun on them, closes less of the pair-noise gap than on the original labels. "
            f"Best loss on the noisy labels: `{losses.idxmax()}` ({losses.max():.2f}); best other "
            f"pipeline: `{pipes.idxmax()}` ({pipes.max():.2f}).")


def _main_throughput(args) -> None:
    import torch
    t0 = time.perf_counter()
    df = throughput()
    table = markdown_table(df)
    cuda = torch.cuda.is_available()
    note = ("CUDA measured above." if cuda else "No GPU was available for this run (none is lent to this "
            "task), so only CPU numbers are shown; on CUDA the loop keeps the whole table on the device, "
            "slices batches there with a device-side permutation and runs the forward pass under bf16 "
            "autocast.")
    text = (f"One epoch of `cleanpipe.train.fit` on a synthetic 1,000,000 x 64 float32 table, 10 classes, "
            f"MLP 256-128, cross-entropy; samples/s counts optimiser steps only. {note} "
            f"Run took {(time.perf_counter() - t0) / 60:.1f} min on a shared 2-core machine.")
    print(table + "\n\n" + text)
    if args.write:
        replace_section("Training throughput",
                        "\n".join([provenance_block(SCRIPT, cleanpipe_version()), text, "", table]))
        progress("wrote the Training throughput section of benchmarks/RESULTS.md")


if __name__ == "__main__":
    sys.exit(main())
