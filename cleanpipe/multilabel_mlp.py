"""Joint multi-label out-of-fold probabilities: one small network for every tag (``--model mlp``).

Each tag's probability is read with that tag's own given value hidden and the row's other given
tags shown, which is what the one-vs-rest ``cond`` models of
:func:`cleanpipe.oof.cross_val_probs_multilabel` estimate, ``P(tag k | x, other given tags)``; here
one network with a shared hidden layer learns all of them at once (a masked-tag model, in the way a
masked language model fills in a hidden word). torch is imported inside the functions that need it.

Training samples are ``(row, hidden set)`` pairs: every row with each tag hidden in turn, plus every
row with all its tags hidden (the features alone: how rows without tags are predicted). The input is
``[z, y * shown, shown]`` (``z`` the scaled features, ``shown`` the 0/1 mask of the visible tags),
the output one logit per tag, and the loss the binary cross-entropy on the hidden tags only, averaged
within a sample. Batches are drawn from index arrays, so memory stays ``O(rows x features)``.
"""

from __future__ import annotations

import numpy as np

#: Network and training settings, chosen on the development cases of ``benchmarks/multilabel.py``
#: (issue6 only: 10 epochs beat 30, hidden 128 beat 64; see benchmarks/RESULTS.md, "Fourth pass").
HIDDEN, EPOCHS, BATCH, LR, WEIGHT_DECAY = 128, 10, 512, 2e-3, 1e-2
#: Rows per block when predicting (each row is expanded once per tag).
PREDICT_ROWS = 4096


def _torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a core dependency today
        from .errors import InputError
        raise InputError("--model mlp needs torch; install it with pip install torch") from exc
    return torch


def _design(X, categorical, train):
    """The logistic regression's design (imputation, one-hot categories, scaling) fitted on the
    training rows, as a dense float32 matrix of every row of ``X``."""
    from .linear import preprocessing

    pre = preprocessing(categorical).fit(X[train])
    D = pre.transform(X)
    D = D.toarray() if hasattr(D, "toarray") else np.asarray(D)
    return np.ascontiguousarray(D, dtype=np.float32)


def _inputs(torch, Z, Y, rows, hidden_tag):
    """Network inputs and hidden-tag masks for ``rows`` with ``hidden_tag`` hidden (-1: all)."""
    k = Y.shape[1]
    hide = torch.zeros((len(rows), k))
    one = hidden_tag >= 0
    idx = one.nonzero()[:, 0]
    hide[idx, hidden_tag[idx]] = 1.0
    hide[~one] = 1.0
    shown = 1.0 - hide
    return torch.cat([Z[rows], Y[rows] * shown, shown], dim=1), hide


def fit_network(Z_train, Y_train, *, seed: int = 0):
    """The joint network trained on one fold's rows (float32 scaled features, 0/1 tags).

    Returns the trained ``torch.nn.Module`` in eval mode; :func:`predict_network` applies it (on
    this machine, or on a worker it was shipped to: the partitioned path). ``seed`` seeds the
    initial weights and the batch order (the global torch state is left alone).
    """
    torch = _torch()
    n, k = Y_train.shape
    Z = torch.from_numpy(np.ascontiguousarray(Z_train, dtype=np.float32))
    Y = torch.from_numpy(np.ascontiguousarray(Y_train, dtype=np.float32))
    # sample s < n * k: row s // k with tag s % k hidden; s >= n * k: row s - n * k, all hidden
    n_samples = n * (k + 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Linear(Z.shape[1] + 2 * k, HIDDEN), torch.nn.ReLU(),
                                  torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.ReLU(),
                                  torch.nn.Linear(HIDDEN, k))
        gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    net.train()
    for _ in range(EPOCHS):
        order = torch.randperm(n_samples, generator=gen)
        for start in range(0, n_samples, BATCH):
            s = order[start:start + BATCH]
            single = s < n * k
            rows = torch.where(single, s // k, s - n * k)
            tag = torch.where(single, s % k, torch.full_like(s, -1))
            A, hide = _inputs(torch, Z, Y, rows, tag)
            loss = (bce(net(A), Y[rows], reduction="none") * hide).sum(1) / hide.sum(1)
            opt.zero_grad()
            loss.mean().backward()
            opt.step()
    net.eval()
    return net


def predict_network(net, Z, Y=None) -> np.ndarray:
    """Tag probabilities of rows from :func:`fit_network`'s network (float32 ``(n, n_classes)``).

    With ``Y`` (the rows' given 0/1 tags) each tag is read with its own value hidden and the
    others shown; without (rows that have no tags) from the features alone.
    """
    k = net[-1].out_features
    return _predict(_torch(), net, Z, Y, k, one_hidden=Y is not None)


def fit_predict(Z_train, Y_train, Z_test, Y_test, *, seed: int = 0, Z_extra=None):
    """Train on one fold's rows and predict the held-out rows (and untagged extra rows).

    Parameters
    ----------
    Z_train : ndarray of shape (n_train, n_inputs)
        Scaled features of the training rows (float32).
    Y_train : ndarray of shape (n_train, n_classes)
        Their given 0/1 tags.
    Z_test, Y_test : ndarrays of shape (n_test, n_inputs) and (n_test, n_classes)
        The held-out rows; ``Y_test[n, k]`` is shown when predicting every tag of row ``n`` but ``k``.
    seed : int, default=0
        Seeds the initial weights and the batch order (the global torch state is left alone).
    Z_extra : ndarray of shape (n_extra, n_inputs), optional
        Rows without tags: predicted with every tag hidden.

    Returns
    -------
    tuple of ndarray
        ``(P_test, P_extra)``, float32, of shapes ``(n_test, n_classes)`` and ``(n_extra, n_classes)``.
    """
    torch = _torch()
    k = Y_train.shape[1]
    net = fit_network(Z_train, Y_train, seed=seed)
    return (_predict(torch, net, Z_test, Y_test, k, one_hidden=True),
            _predict(torch, net, Z_extra, None, k, one_hidden=False))


def _predict(torch, net, Z, Y, k, *, one_hidden):
    if Z is None or len(Z) == 0:
        return np.zeros((0, k), np.float32)
    Z = torch.from_numpy(np.ascontiguousarray(Z, dtype=np.float32))
    Y = torch.zeros((len(Z), k)) if Y is None else torch.from_numpy(np.ascontiguousarray(Y, dtype=np.float32))
    out = np.empty((len(Z), k), np.float32)
    with torch.no_grad():
        for start in range(0, len(Z), PREDICT_ROWS):
            rows = torch.arange(start, min(start + PREDICT_ROWS, len(Z)))
            if one_hidden:  # row r, tag c hidden -> output c, for every (r, c) at once
                r = rows.repeat_interleave(k)
                c = torch.arange(k).repeat(len(rows))
                A, _ = _inputs(torch, Z, Y, r, c)
                logit = net(A).gather(1, c[:, None]).reshape(len(rows), k)
            else:
                A, _ = _inputs(torch, Z, Y, rows, torch.full((len(rows),), -1))
                logit = net(A)
            out[start:start + len(rows)] = torch.sigmoid(logit).numpy()
    return out


def cross_val_probs_mlp(X, Y, splits, *, categorical=None, seed: int = 0, X_extra=None,
                        on_fold=None):
    """Out-of-fold tag probabilities of the joint network on the given folds.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Features (NaN allowed; ``categorical`` columns hold category codes).
    Y : ndarray of shape (n_samples, n_classes)
        Given 0/1 tags.
    splits : list of (train, test) index arrays
        The folds (:func:`cleanpipe.oof.multilabel_folds`).
    categorical : ndarray of bool, optional
    seed : int, default=0
        Fold ``f`` trains with seed ``seed * 1000 + f``.
    X_extra : ndarray of shape (n_extra, n_features), optional
        Rows without tags, predicted by every fold's network from the features alone.
    on_fold : callable, optional
        Called with the fold's index after each fold's network is trained and has predicted.

    Returns
    -------
    tuple of ndarray
        ``(pred_probs, extra_probs)``: float32 ``(n_samples, n_classes)`` (each row from the network
        of the fold that left it out) and the extra rows' probabilities summed over the folds.

    Examples
    --------
    >>> from sklearn.datasets import make_multilabel_classification
    >>> from cleanpipe.oof import multilabel_folds
    >>> X, Y = make_multilabel_classification(n_samples=200, n_classes=3, random_state=0)
    >>> P, _ = cross_val_probs_mlp(X, Y, multilabel_folds(Y, 3, 0))
    >>> P.shape
    (200, 3)
    """
    Y = np.asarray(Y, dtype=np.float32)
    n, k = Y.shape
    X_extra = np.zeros((0, X.shape[1]), X.dtype) if X_extra is None else X_extra
    pred = np.zeros((n, k), np.float32)
    extra = np.zeros((len(X_extra), k), np.float64)
    for f, (train, test) in enumerate(splits):
        D = _design(np.concatenate([X, X_extra]) if len(X_extra) else X, categorical, train)
        P_test, P_extra = fit_predict(D[train], Y[train], D[test], Y[test], seed=seed * 1000 + f,
                                      Z_extra=D[n:])
        pred[test] = P_test
        extra += P_extra
        if on_fold:
            on_fold(f)
    return pred, extra
