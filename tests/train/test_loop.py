"""cleanpipe.train.loop: the split, determinism, early stopping, global state left alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cleanpipe.errors import InputError
from cleanpipe.losses import cross_entropy
from cleanpipe.train import TabularMLP, TrainConfig, fit, resolve_device, stratified_split


def _data(n=200, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = (rng.normal(0, 1, (n, 4)) + 2 * y[:, None]).astype(np.float32)
    return x, np.zeros((n, 0), np.int64), y


def _train(seed=0, **cfg):
    x, c, y = _data()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = TabularMLP(4, [], (16,), 3)
    hist = fit(model, x, c, y, loss_fn=cross_entropy,
               config=TrainConfig(**{"epochs": 6, "batch_size": 32, "lr": 1e-2, "seed": seed, "device": "cpu",
                                     "threads": 1, **cfg}))
    return model, hist


def test_stratified_split_is_seeded_disjoint_and_stratified():
    y = np.repeat([0, 1, 2], [50, 30, 2])
    tr, va = stratified_split(y, 0.2, seed=3)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(y)
    assert np.bincount(y[va], minlength=3).tolist() == [10, 6, 0]  # round(0.4) = 0
    assert np.all(np.bincount(y[tr], minlength=3) >= 1)
    tr2, va2 = stratified_split(y, 0.2, seed=3)
    assert np.array_equal(va, va2)
    assert len(stratified_split(y, 0.0, seed=0)[1]) == 0


def test_same_seed_gives_an_identical_model_on_cpu():
    a, ha = _train(seed=1)
    b, hb = _train(seed=1)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    assert ha.train_loss == hb.train_loss
    c, _ = _train(seed=2)
    assert not torch.equal(a.state_dict()["net.0.weight"], c.state_dict()["net.0.weight"])


def test_training_learns_and_restores_the_best_epoch():
    model, hist = _train(epochs=15, patience=3)
    assert hist.train_loss[-1] < hist.train_loss[0]
    assert 1 <= hist.best_epoch <= hist.epochs_run <= 15
    assert hist.val_accuracy[hist.best_epoch - 1] == max(hist.val_accuracy)
    assert hist.val_accuracy[hist.best_epoch - 1] > 0.75
    assert hist.samples_per_second > 0 and hist.device == "cpu"
    assert not model.training



def test_without_validation_rows_the_last_epoch_is_kept():
    states = []
    x, c, y = _data()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = TabularMLP(4, [], (16,), 3)
    hist = fit(model, x, c, y, loss_fn=cross_entropy,
               on_epoch=lambda e, m: states.append({k: v.clone() for k, v in m["model"].state_dict().items()}),
               config=TrainConfig(epochs=5, batch_size=32, lr=1e-2, seed=0, device="cpu", threads=1,
                                  val_fraction=0.0, patience=2))
    assert hist.val_rows == 0 and hist.epochs_run == 5 and hist.best_epoch == 5
    assert all(torch.equal(v, states[-1][k]) for k, v in model.state_dict().items())

def test_online_mixture_bootstraps_after_warmup():
    from cleanpipe.losses import dynamic_bootstrap
    x, c, y = _data()
    noisy = y.copy()
    noisy[:30] = (y[:30] + 1) % 3  # 15% wrong labels
    seen = []

    def loss_fn(logits, targets, *, noisy_weight, weight=None):
        seen.append(float(noisy_weight.max()))
        return dynamic_bootstrap(logits, targets, noisy_weight=noisy_weight, weight=weight)

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = TabularMLP(4, [], (16,), 3)
    fit(model, x, c, noisy, loss_fn=loss_fn, online_warmup=3,
        config=TrainConfig(epochs=6, batch_size=32, lr=1e-2, patience=0, device="cpu", threads=1))
    steps = len(seen) // 6  # training steps + 1 validation call per epoch
    assert max(seen[:3 * steps]) == 0  # plain cross-entropy during the warm-up
    assert max(seen[3 * steps:]) > 0.5  # then some rows are judged noisy


def test_global_torch_state_is_left_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    threads = torch.get_num_threads()
    _train(threads=threads + 1)
    assert torch.equal(torch.rand(3), expected)  # the caller's RNG stream is untouched
    assert torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled()


def test_bad_settings_and_missing_cuda():
    with pytest.raises(InputError, match="--epochs"):
        TrainConfig(epochs=0).check()
    with pytest.raises(InputError, match="--val-fraction"):
        TrainConfig(val_fraction=1.0).check()
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="--device cuda"):
            resolve_device("cuda")
    assert resolve_device("cpu").type == "cpu"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_runs_with_bf16_autocast():
    model, hist = _train(device="cuda")
    assert hist.device.startswith("cuda") and hist.val_accuracy[hist.best_epoch - 1] > 0.8
