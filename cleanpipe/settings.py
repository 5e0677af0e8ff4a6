"""Every option's default and range, declared once, side by side (no torch, no numpy).

The CLI builds its click types and ``--help`` defaults from these declarations
(:func:`cleanpipe.cli.options.click_type`), the pipeline loader checks a TOML file against them
(:meth:`Setting.ok`, :attr:`Setting.want`), and the library reads its defaults from them:
:class:`TrainConfig` (the training loop's settings) lives here so that neither the CLI's
``--help`` nor a pipeline check has to import torch to know it.

Each group is a dict ``name -> Setting`` named for the command or pipeline section it belongs to:
:data:`OOF`, :data:`FLAG`, :data:`CLEAN`, :data:`TRAIN` (the fields of :class:`TrainConfig`) and
:data:`RETRAIN` (what ``retrain`` adds around the loop) and :data:`CHECKS` (the data checks
beyond wrong labels, :class:`CheckSettings`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from .errors import InputError


@dataclass(frozen=True)
class Setting:
    """One option: its default and the values it accepts.

    Attributes
    ----------
    default : object
    kind : type
        ``int``, ``float``, ``str`` or ``tuple`` (a tuple of positive ints: layer widths).
    lo, hi : float, optional
        Bounds of a number (inclusive unless ``lo_open`` / ``hi_open``); numbers must be finite.
    choices : tuple of str, optional
        The accepted values of a string.
    also : tuple, default=()
        Values accepted outside the range (``None`` for "unset", ``-1`` for "every core").
    want : str
        What a good value is, for error messages ("a positive integer").
    """

    default: object
    kind: type
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple | None = None
    also: tuple = ()
    want: str = ""

    def ok(self, value) -> bool:
        """Whether ``value`` is accepted (the type is checked too: bools are not numbers)."""
        if any(value is a or (a is not None and value == a and type(value) is type(a)) for a in self.also):
            return True
        if self.choices is not None:
            return value in self.choices
        if self.kind is tuple:
            return (isinstance(value, (tuple, list)) and len(value) > 0
                    and all(self._number(v, int) for v in value))
        return self._number(value, self.kind)

    def _number(self, value, kind) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
            return False
        if not math.isfinite(value):
            return False
        lo_ok = self.lo is None or (value > self.lo if self.lo_open else value >= self.lo)
        hi_ok = self.hi is None or (value < self.hi if self.hi_open else value <= self.hi)
        return lo_ok and hi_ok


def _int(default, lo=None, hi=None, *, want, also=()):
    return Setting(default, int, lo=lo, hi=hi, want=want, also=also)


def _float(default, lo=None, hi=None, *, lo_open=False, hi_open=False, want):
    return Setting(default, float, lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open, want=want)


def _choice(default, choices):
    return Setting(default, str, choices=tuple(choices), want=f"one of: {', '.join(choices)}")


#: Seeds are handed to numpy and torch generators, which take unsigned 32-bit values.
SEED_MIN, SEED_MAX = 0, 2**32 - 1
#: Cross-validation needs at least two folds.
MIN_FOLDS = 2
#: The seed of folds, models and training when none is given; the folds of cross-validation.
DEFAULT_SEED, DEFAULT_FOLDS = 0, 5
SEED = _int(DEFAULT_SEED, SEED_MIN, SEED_MAX, want=f"an integer in [{SEED_MIN}, {SEED_MAX}]")


def seed_ok(seed) -> bool:
    return SEED.ok(seed)


def check_seed(seed, *, option: str = "--seed") -> int:
    """Return ``seed`` if it is an integer in [SEED_MIN, SEED_MAX]; else raise one line."""
    if not seed_ok(seed):
        raise InputError(f"{option} {seed!r} is out of range; pass an integer in "
                         f"[{SEED_MIN}, {SEED_MAX}]")
    return seed

DEVICES = ("auto", "cpu", "cuda")
#: Where models run unless told: a CUDA device when one is present, else the CPU.
DEFAULT_DEVICE = DEVICES[0]
#: Loss-mixture families; the first is the default.
MIXTURES = ("beta", "gaussian")
DEFAULT_MIXTURE = MIXTURES[0]

# --- oof: cross-validated probabilities --------------------------------------------------------------

#: Names accepted by ``model=`` besides ``"package.module:Class"``.
MODELS = ("gbm", "hgb", "logreg", "lgb", "xgb", "mlp")
#: Families that only multi-label labels take: ``mlp`` is one network for every tag at once
#: (:mod:`cleanpipe.multilabel_mlp`), with no single-label counterpart.
MULTILABEL_ONLY_MODELS = ("mlp",)
#: The model families of ``flag``, pipelines and the API: their out-of-fold probabilities are
#: averaged. A booster and logistic regression: chosen on ``benchmarks/ensembles.py`` (held-out
#: seed: mean F1 +0.030, AUPRC +0.053 over hgb alone, for 2% more fitting time). The booster is
#: ``gbm``: LightGBM (``cleanpipe[fast]``) when installed, else HistGradientBoosting; LightGBM with
#: bins shared by the folds and half the rows per tree gave higher F1 and AUPRC at about the same
#: time on ``benchmarks/whole_job.py`` (see ``benchmarks/RESULTS.md``, "Whole job").
DEFAULT_MODEL = "gbm,logreg"
#: Out-of-fold at scale (cleanpipe.hashed_folds, ``flag --engine dask`` without --pred-probs):
#: rows each fold model trains on, a Bernoulli sample of the other folds' rows. Set at the knee of
#: the whole-job learning curve (``benchmarks/RESULTS.md``, "Learning curve at 1,000,000 rows"):
#: with 200,000 training rows per fold F1 is flat (-0.0014 against all 800,000) and AUPRC
#: -0.0076, for a third of the CPU; 400,000 rows gain 0.005 AUPRC for 1.8x the fit time. 2e5
#: rows x 30 features is ~24 MB of float32, a fit one 2 GiB worker holds easily.
SCALE_SAMPLE_ROWS = 200_000
#: Categories kept per categorical (text or dictionary) feature column, most frequent first, ties by
#: value; the rest share one "other" code. HistGradientBoosting accepts at most 255 bins, one of
#: which is reserved for missing values. The one-machine features and the partitioned out-of-fold
#: paths' merged vocabulary (Dask, Spark) both keep these.
MAX_CATEGORIES = 250
#: Distinct values of one categorical feature column that the partitioned out-of-fold paths count
#: exactly (the vocabulary partial, merged over the partitions, so that every partition codes the
#: column as the whole table would); a column with more is refused as an identifier-like column.
MAX_VOCABULARY = 100_000
#: joblib backends the fold fits can run on (``backend=``).
BACKENDS = ("loky", "dask")

OOF = {
    "folds": _int(DEFAULT_FOLDS, MIN_FOLDS, want=f"at least {MIN_FOLDS}"),
    "seed": SEED,
    "n_jobs": _int(1, 1, want="a positive count, or -1 for every core", also=(-1,)),
    "backend": _choice("loky", BACKENDS),
    # auto: XGBoost on the GPU for the boosted families when an NVIDIA device is present
    "device": _choice(DEFAULT_DEVICE, DEVICES),
}
#: Where a pipeline runs (``[oof] backend``, also spelled ``engine``): a joblib backend of the
#: fold fits, or ``spark``: every stage on Spark (:mod:`cleanpipe.spark`, ``docs/SPARK.md``).
ENGINES = (*BACKENDS, "spark")
#: ``[oof]`` of a pipeline: :data:`OOF` with the engines a pipeline can run on.
PIPELINE_OOF = {**OOF, "backend": _choice(OOF["backend"].default, ENGINES)}

# --- flag: the detectors -----------------------------------------------------------------------------

#: Single-label rules that set ``is_label_issue``; the first is the default.
METHODS = ("combined", "noise_rate", "per_class", "both", "mixture")
DEFAULT_METHOD = METHODS[0]
#: Multi-label rules; the first is the default.
MULTILABEL_METHODS = ("posterior", "noise_rate", "mixture", "both")
DEFAULT_MULTILABEL_METHOD = MULTILABEL_METHODS[0]
#: Every method name, single-label ones first (what ``cleanpipe flag --method`` accepts).
ALL_METHODS = tuple(dict.fromkeys(METHODS + MULTILABEL_METHODS))
#: ``p_noisy`` above this counts a row as noisy for the mixture's estimate of the number of issues.
#: Chosen on benchmarks/detection_quality.py: 0.5 over-counts when the noise rate is low and the
#: noisy component overlaps the clean tail (mean F1 0.792 at 0.5, 0.795 at 0.8).
NOISY_THRESHOLD = 0.8
#: The same for multi-label rows (their ``p_noisy`` is the posterior of the per-row tag loss).
MULTILABEL_NOISY_THRESHOLD = 0.5
#: ``method="mixture"`` flags the rows the mixture finds likelier noisy than clean,
#: ``p_noisy >= 0.5``: the threshold the report draws on the loss histogram. (0.8 would flag
#: nothing where the two components overlap, as on the Quick start's table, top p_noisy 0.70.)
MIXTURE_FLAG_THRESHOLD = 0.5


def default_noisy_threshold(method: str, multi_label: bool = False) -> float:
    """The ``noisy_threshold`` a method uses when none is given."""
    if multi_label:
        return MULTILABEL_NOISY_THRESHOLD
    return MIXTURE_FLAG_THRESHOLD if method == "mixture" else NOISY_THRESHOLD

FLAG = {
    "method": Setting(DEFAULT_METHOD, str, choices=METHODS, want=f"one of: {', '.join(METHODS)}"),
    "mixture": _choice(DEFAULT_MIXTURE, MIXTURES),
    "noisy_threshold": _float(NOISY_THRESHOLD, 0.0, 1.0, hi_open=True, want="in [0, 1)"),
}

# --- clean -------------------------------------------------------------------------------------------

#: Cleaning modes; the first is the default. ``benchmarks/retrain.py`` chose it: with a strong
#: flagger (digits) ``drop`` helps most, but with a weak one (a 20k-row synthetic table, where the
#: out-of-fold model is far below the retrained MLP) dropping or down-weighting its false flags
#: costs more than the noise does, while ``relabel`` acts only on strong evidence and never hurt
#: (mean gap closed with retrain's default loss: relabel 0.69, weight 0.52, drop 0.36).
MODES = ("relabel", "drop", "weight")
#: Default floor of ``sample_weight`` for flagged rows.
DEFAULT_MIN_WEIGHT = 0.05
#: Default relabel evidence: a flagged row is relabelled when ``p_noisy >= 0.5`` and
#: ``label_score <= 0.25``.
DEFAULT_RELABEL_P_NOISY = 0.5
DEFAULT_RELABEL_SCORE = 0.25
#: Default evidence to *add* a suspect-missing tag: its out-of-fold probability ``p >= 0.9``.
#: Chosen with ``benchmarks/multilabel_retrain.py --measure-relabel``: over the 18 cases of
#: ``benchmarks/multilabel.py`` (synth10, synth20, digits6 x missing/spurious/mixed tag noise at 10%
#: and 30%; flags from ``flag`` defaults, HistGradientBoosting, 5 folds), 0.9 fixed the most tags net
#: of those it broke: +1184 (0.8: +307, 0.85: +939, 0.93: +1111, 0.95: +975, 0.99: +373).
DEFAULT_RELABEL_ADD = 0.9
#: Default evidence to *remove* a suspect-spurious tag: ``p <= 1 - 0.999``. Removal is riskier: on
#: the synthetic sets a one-vs-rest model trained on noisy tags confidently contradicts many present
#: tags that are right (tags barely visible in the features), so on the same 18 cases removals broke
#: more tags than they fixed at every threshold below 0.999 (0.9: -17041, 0.98: -1887, 0.995: -44);
#: 0.999 is the only one measured with a net gain (+49). Digits6, where the flagger is strong,
#: would gain from a laxer one (+1066 at 0.95): pass ``--relabel-remove`` for such data.
DEFAULT_RELABEL_REMOVE = 0.999

_UNIT = "in [0, 1]"
CLEAN = {
    "mode": _choice(MODES[0], MODES),
    "min_weight": _float(DEFAULT_MIN_WEIGHT, 0.0, 1.0, want=_UNIT),
    "relabel_p_noisy": _float(DEFAULT_RELABEL_P_NOISY, 0.0, 1.0, want=_UNIT),
    "relabel_score": _float(DEFAULT_RELABEL_SCORE, 0.0, 1.0, want=_UNIT),
    "relabel_add": _float(DEFAULT_RELABEL_ADD, 0.0, 1.0, want=_UNIT),
    "relabel_remove": _float(DEFAULT_RELABEL_REMOVE, 0.0, 1.0, want=_UNIT),
}

# --- retrain -----------------------------------------------------------------------------------------

#: The optimisation settings of the training loop: the fields of :class:`TrainConfig`, in order.
TRAIN = {
    "epochs": _int(40, 1, want="a positive integer"),
    "batch_size": _int(256, 1, want="a positive integer"),
    "lr": _float(2e-3, 0.0, lo_open=True, want="a positive number"),
    "weight_decay": _float(1e-4, 0.0, want="a number >= 0"),
    "hidden": Setting((256, 128), tuple, lo=1, want="a non-empty list of positive widths"),
    "dropout": _float(0.1, 0.0, 1.0, hi_open=True, want="in [0, 1)"),
    "patience": _int(8, 0, want="an integer >= 0"),
    "val_fraction": _float(0.1, 0.0, 1.0, hi_open=True, want="in [0, 1)"),
    "seed": SEED,
    "device": _choice("auto", DEVICES),
    "threads": _int(None, 1, want="a positive integer", also=(None,)),
    "mixup": _float(0.0, 0.0, want="a number >= 0 (0: off)"),
    "prior_reg": _float(0.0, 0.0, want="a number >= 0 (0: off)"),
}

#: ``loss="auto"``: pick the loss, the labels and the settings that go with it from ``flag``'s noise
#: estimates, or retrain's own quick one (:func:`cleanpipe.auto.choose_training`).
AUTO_LOSS = "auto"
#: Default loss of ``cleanpipe retrain``, chosen from ``benchmarks/retrain.py``: after ``clean
#: --mode relabel``, ``auto`` closed 0.69 of the noisy-to-oracle gap on average against 0.56 for
#: ``sce`` (the default before it) and 0.46 for ``dynamic-hard``.
DEFAULT_LOSS = AUTO_LOSS
#: Default multi-label loss, chosen with ``benchmarks/multilabel_retrain.py`` (synth10, mixed tag
#: noise at 10% / 30%): plain sigmoid binary cross-entropy. Label smoothing 0.1 lost 0.006 / 0.027
#: test micro-F1 against it; bootstrapping 0.2 gained 0.002 / 0.003 (within one seed's spread).
DEFAULT_MULTILABEL_LOSS = "bce"
#: Where ``dynamic-*`` losses get each row's noise posterior; the first is the default.
NOISY_WEIGHTS = ("online", "column")
#: Default epochs of plain cross-entropy before the first online mixture fit.
DEFAULT_WARMUP = 5
#: Momentum ``beta`` of ELR's per-row target average (``--loss elr``): Liu et al.'s value for
#: CIFAR-10 (NeurIPS 2020), where noise is symmetric and the classes few, as on tabular tables.
ELR_MOMENTUM = 0.7

#: What ``retrain`` adds around the loop (the loss is checked against :mod:`cleanpipe.loss_kinds`).
RETRAIN = {
    "noisy_weight": _choice(NOISY_WEIGHTS[0], NOISY_WEIGHTS),
    "warmup": _int(DEFAULT_WARMUP, 1, want="a positive integer"),
}


# --- checks: data issues beyond wrong labels (issue 17) ----------------------------------------------

#: How the neighbour index is built; ``auto`` is exact below ``NEIGHBOR_APPROX_MIN_ROWS`` rows.
NEIGHBOR_METHODS = ("auto", "exact", "approx")
#: Rows from which ``auto`` builds an approximate index (when faiss is installed). Below it the
#: blocked brute force is fast enough and exact: 20,000 x 50 took 4.9 CPU seconds, a time that
#: grows with the square of the rows (50,000: ~30 s), the IVF index's about linearly.
NEIGHBOR_APPROX_MIN_ROWS = 20_000
#: Memory of one block of the exact search (a block of rows against every row), in bytes.
NEIGHBOR_BLOCK_BYTES = 64 * 2**20
#: The approximate index's cells: ``NEIGHBOR_NLIST_PER_ROOT * sqrt(n)`` k-means cells, each query
#: scanning the ``NEIGHBOR_NPROBE`` nearest (see ``benchmarks/neighbor_index.py``).
NEIGHBOR_NLIST_PER_ROOT = 1.0
NEIGHBOR_NPROBE = 8
#: Neighbours per row used by the outlier score and the kNN label signal.
DEFAULT_CHECK_K = 10
#: The default near-duplicate radius is this fraction of the median distance from a row to its
#: nearest other (non-identical) row: a scale-free radius that follows the table's own density.
#: Chosen on the tuning part of ``benchmarks/data_issues.py --tune`` (mean near-duplicate F1 over
#: digits, wine, iris and a 1e5-row synthetic table, seed 0: 0.13 (Datalab's) 0.956, 0.2 1.000,
#: 0.3 0.998; duplicates-with-conflicting-labels F1 0.875 / 1.000 / 1.000).
NEAR_DUPLICATE_FRACTION = 0.2
#: A row is an outlier when its kNN-distance score is this many robust standard deviations
#: (1.4826 x MAD of log score) above the table's median log score. Chosen on the same tuning part
#: (mean outlier F1: z=3 0.595, 3.5 0.818, 4 0.893, 5 0.877).
OUTLIER_Z = 4.0
#: Standardised values are clipped to [-CLIP_Z, CLIP_Z] before distances are measured, so that one
#: rare value in a near-constant column (a digit's border pixel) does not make its row an outlier
#: on its own. Chosen on the same tuning part (mean outlier F1 at z=4: no clip 0.893, clip 5
#: 0.985, clip 3 1.000). The price: a row odd in a single column only (a typo of 1e6 in one
#: column) adds at most CLIP_Z to its distances; unset it (None) to find those.
CLIP_Z = 3.0
#: Weight of the neighbours' label shares mixed into ``pred_probs`` for the opt-in kNN-assisted
#: label rule (``knn_weight``; 0 is off, the default, so ``flag``'s rule is unchanged). 0.2 was
#: best on ``benchmarks/knn_label_signal.py``'s tuning seed (digits, wine, breast_cancer, iris x 12
#: noises, logreg): mean F1 0.584 vs 0.578 for the detector alone (21 wins, 6 losses), AUPRC
#: 0.808 vs 0.783; held-out seed 1: F1 0.625 vs 0.591 (24 wins, 6 losses), AUPRC 0.826 vs 0.802.
KNN_LABEL_WEIGHT = 0.2
#: The labels of a row's duplicates are evidence for the label detector
#: (:func:`cleanpipe.detect.evidence.with_duplicate_labels`): each other member's label is taken as
#: a report that is wrong this often. Chosen on ``benchmarks/duplicate_evidence.py``'s tuning seed
#: (digits, wine, breast_cancer, iris with 5% flips and 3% near copies with moved labels; mean
#: F1 of the default rule: alone 0.863, 0.1 0.845, 0.2 0.881, 0.3 0.883, 0.4 0.853); held-out seed
#: 1: alone 0.841, 0.3 0.861 (digits 0.859 -> 0.821: a correct row's copy with a moved label
#: contradicts it too).
DUPLICATE_LABEL_NOISE = 0.3
#: A row (column) with more than this share of nulls among the feature columns is null-heavy.
NULL_HEAVY_FRACTION = 0.5
#: A class with fewer rows than this share of the mean class size is under-represented.
IMBALANCE_FRACTION = 0.1

CHECKS = {
    "k": _int(DEFAULT_CHECK_K, 1, 200, want="an integer in [1, 200]"),
    "near_radius": Setting(None, float, lo=0.0, want="a distance >= 0 in standardised units, or "
                           "unset for the calibrated default", also=(None,)),
    "near_fraction": _float(NEAR_DUPLICATE_FRACTION, 0.0, 1.0, want="in [0, 1]"),
    "outlier_z": _float(OUTLIER_Z, 0.0, lo_open=True, want="a positive number"),
    "clip": Setting(CLIP_Z, float, lo=0.0, lo_open=True, also=(None,),
                    want="a positive number, or unset for no clipping"),
    "knn_weight": _float(0.0, 0.0, 1.0, want=f"in [0, 1] (0: off; {KNN_LABEL_WEIGHT} measured best)"),
    # above 1/2 a two-class report would count against the class it names
    "duplicate_noise": _float(DUPLICATE_LABEL_NOISE, 0.0, 0.5, hi_open=True,
                              want="in [0, 0.5) (0: duplicates' labels are not used as evidence)"),
    "null_heavy": _float(NULL_HEAVY_FRACTION, 0.0, 1.0, want="in [0, 1]"),
    "imbalance": _float(IMBALANCE_FRACTION, 0.0, 1.0, want="in [0, 1]"),
    "neighbors": _choice(NEIGHBOR_METHODS[0], NEIGHBOR_METHODS),
}


@dataclass(frozen=True)
class CheckSettings:
    """Settings of :func:`cleanpipe.checks.run_checks`; defaults and ranges from :data:`CHECKS`.

    Attributes
    ----------
    k : int
        Neighbours per row for the outlier score and the kNN label signal.
    near_radius : float, optional
        Distance (standardised units) within which two rows are near duplicates; unset: calibrated
        as ``near_fraction`` x the median nearest-neighbour distance.
    near_fraction : float
    outlier_z : float
        Robust z-score of the log kNN distance above which a row is an outlier.
    clip : float, optional
        Standardised values are clipped to ``[-clip, clip]`` before distances (None: not clipped).
    knn_weight : float
        With labels and ``pred_probs``: run the label detector on
        ``(1 - w) * pred_probs + w * knn_probs`` too (0: off; ``KNN_LABEL_WEIGHT`` measured best).
    duplicate_noise : float
        The label detector reads the out-of-fold probabilities updated by the labels of each row's
        duplicates, each taken as a report wrong this often (0: not used).
    null_heavy : float
        Share of null feature cells above which a row or column is null-heavy.
    imbalance : float
        A class under this share of the mean class size is reported as under-represented.
    neighbors : {"auto", "exact", "approx"}
    """

    k: int = CHECKS["k"].default
    near_radius: float | None = CHECKS["near_radius"].default
    near_fraction: float = CHECKS["near_fraction"].default
    outlier_z: float = CHECKS["outlier_z"].default
    clip: float | None = CHECKS["clip"].default
    knn_weight: float = CHECKS["knn_weight"].default
    duplicate_noise: float = CHECKS["duplicate_noise"].default
    null_heavy: float = CHECKS["null_heavy"].default
    imbalance: float = CHECKS["imbalance"].default
    neighbors: str = CHECKS["neighbors"].default

    def check(self) -> "CheckSettings":
        """Raise :class:`InputError` on an out-of-range setting; return self."""
        check(CHECKS, self)
        return self

    def to_dict(self) -> dict:
        return asdict(self)


def option_name(name: str) -> str:
    """The CLI spelling of a setting: ``val_fraction`` -> ``--val-fraction``."""
    return "--" + name.replace("_", "-")


def check(group: dict, values, *, name=option_name, error=InputError) -> None:
    """Raise ``error`` naming the first setting of ``group`` whose value in ``values`` is refused.

    ``values`` is an object with one attribute per setting (a dataclass); ``name`` spells the
    setting in the message (the CLI option by default, ``[retrain] lr`` for a pipeline file).
    """
    for key, setting in group.items():
        value = getattr(values, key)
        if not setting.ok(value):
            raise error(f"{name(key)} must be {setting.want}; got {value!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of :func:`cleanpipe.train.fit`; defaults and ranges from :data:`TRAIN`.

    Attributes
    ----------
    epochs : int
    batch_size : int
    lr : float
        AdamW learning rate.
    weight_decay : float
    hidden : tuple of int
    dropout : float
    patience : int
        Stop after this many epochs without a better validation score (0: never stop early).
    val_fraction : float
        Stratified share of labelled rows held out for early stopping (0: no validation, train
        for ``epochs``).
    seed : int
    device : {"auto", "cpu", "cuda"}
    threads : int, optional
        CPU threads for the run (restored afterwards); default: torch's setting. Small networks
        gain little from more threads, and on a busy machine extra OpenMP threads spin against
        other processes (1 thread was 25x faster than 2 on a loaded 2-core box).
    mixup : float
        Mixup's ``alpha``: each batch is mixed with a permutation of itself with
        ``lambda ~ Beta(alpha, alpha)`` (numeric features directly, categoricals in embedding
        space) and the loss is ``lambda L(target_p) + (1 - lambda) L(target_q)``; 0 is off.
    prior_reg : float
        Weight of ``KL(prior || mean prediction over the batch)``, which keeps a network trained on
        heavy noise from collapsing onto a few classes; 0 is off.
    """

    epochs: int = TRAIN["epochs"].default
    batch_size: int = TRAIN["batch_size"].default
    lr: float = TRAIN["lr"].default
    weight_decay: float = TRAIN["weight_decay"].default
    hidden: tuple = TRAIN["hidden"].default
    dropout: float = TRAIN["dropout"].default
    patience: int = TRAIN["patience"].default
    val_fraction: float = TRAIN["val_fraction"].default
    seed: int = TRAIN["seed"].default
    device: str = TRAIN["device"].default
    threads: int | None = TRAIN["threads"].default
    mixup: float = TRAIN["mixup"].default
    prior_reg: float = TRAIN["prior_reg"].default

    @classmethod
    def take(cls, values) -> "TrainConfig":
        """The config whose fields are the same-named attributes of ``values`` (pipeline settings,
        the CLI's parsed options as a namespace); ``hidden`` becomes a tuple."""
        kwargs = {f.name: getattr(values, f.name) for f in fields(cls)}
        kwargs["hidden"] = tuple(kwargs["hidden"])
        return cls(**kwargs)

    def check(self) -> "TrainConfig":
        """Raise :class:`InputError` on an out-of-range setting; return self."""
        check(TRAIN, self)
        return self

    def to_dict(self) -> dict:
        return dict(asdict(self), hidden=list(self.hidden))
