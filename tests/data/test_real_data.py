"""The shared JPEG-derived CIFAR-10 copy (materialized into .data/ by .ci/run): it loads as CIFAR-10, and a short
`cifar-tune baseline` of the Simple CNN on a stratified real subset beats chance (10%) by a wide margin."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from cifar_tune import cli
from cifar_tune.data import cifar10


def test_real_copy_loads_as_cifar10(real_npz):
    ds = cifar10.load(real_npz)
    assert ds.x_train.shape == (50_000, 32, 32, 3) and ds.x_test.shape == (10_000, 32, 32, 3)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.uint8
    assert np.bincount(ds.y_train).tolist() == [5_000] * 10 and np.bincount(ds.y_test).tolist() == [1_000] * 10
    assert ds.y_train[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]  # the official order
    assert ds.y_test[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert 100 < ds.x_test.mean() < 140  # real photographs, not blank or noise
    # the decoded arrays' SHA-256 published in ../shared/cifar10/README.md: loading changed no byte
    digests = {k: hashlib.sha256(getattr(ds, k).tobytes()).hexdigest()[:8] for k in ("x_train", "y_train", "x_test",
                                                                                    "y_test")}
    assert digests == {"x_train": "5aaf8a2c", "y_train": "2b7cd2f2", "x_test": "b7018a06", "y_test": "cec8a24a"}


@pytest.mark.slow
def test_short_cnn_baseline_on_a_real_subset_beats_chance_widely(real_npz, tmp_path, capsys):
    # 10,000 stratified training images (1,000 held out for validation), 3 epochs; tested on 2,000 test images.
    status = cli.main(["baseline", "--archs", "cnn", "--data", str(real_npz), "--subset", "10000", "--epochs",
                       "3", "--protocol", "holdout", "--val-size", "1000", "--out", str(tmp_path / "real")])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "train 9,000, validation 1,000, test 2,000" in out
    table = pd.read_csv(tmp_path / "real" / "metrics.csv")
    accuracy, f1 = table.loc[0, "Accuracy"], table.loc[0, "F1 Score"]
    assert accuracy >= 0.35 and f1 >= 0.30, out  # chance is 0.10; expect about 0.5


@pytest.mark.slow
def test_every_baseline_learns_under_the_quick_preset(real_npz):
    """The quick preset's first trial (the seed baseline) of every architecture is clearly above chance: at least
    .30 validation accuracy (the ResNet read .155 on the old preset's 4,000 images)."""
    import optuna

    for arch in ("mlp_bn", "mlp_l2", "cnn", "cnn_da", "resnet"):
        status = cli.main(["optimize", "--arch", arch, "--preset", "quick", "--n-trials", "1",
                           "--data", str(real_npz)])
        assert status == 0
        study = optuna.load_study(study_name=f"cifar10-{arch}", storage="sqlite:///storage/cifar_tune.db")
        baseline = study.trials[0]
        assert baseline.user_attrs["baseline"] and baseline.state == optuna.trial.TrialState.COMPLETE
        assert baseline.user_attrs["val_accuracy"] >= 0.30, (arch, baseline.user_attrs["val_accuracy"])
