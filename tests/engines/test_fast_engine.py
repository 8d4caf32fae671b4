"""The fast engine (cifar_tune/engines/fast.py): trains, prunes, augments on the device, reuses compiled programs,
and reaches the accuracy stock ``fit`` reaches.

Sharp where it matters: with nothing random (full batch) the engine must compute what ``fit`` computes; with
dropout, augmentation and shuffling on, Keras stepping by hand through the batches the engine drew must reproduce
its training and validation figures exactly ("replay"), and a config that reuses another's compiled programs must
train as if compiled alone. Each of these deliberate breakages fails at least one test: dropout off, no shuffling,
L2 left out of the loss, BatchNorm in inference mode while training, augmentation at evaluation, the last partial
batch dropped, a traced hyperparameter baked in from the first trial.

Keras fixes its backend at import and this test session runs TensorFlow, so the JAX checks run in a subprocess
(tests/engines/fast_engine_check.py with KERAS_BACKEND=jax) that prints plain JSON; the tests assert on that. JAX's CPU
convolutions are slow, so the data are tiny (64 images, 2 epochs) and the default checks share one process.
The TensorFlow path is checked in this process.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.paths import REPO
from tests.helpers.synthetic import synthetic_cifar

_jax_installed = pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                                    reason="JAX is not installed (pip install 'cifar-tune[jax]')")


def needs_jax(test):
    """A test that trains on JAX (marked ``jax``: CI runs these in its own step), skipped without JAX."""
    return pytest.mark.jax(_jax_installed(test))


def run_checks(checks: dict, cwd: Path, timeout: int = 900) -> dict:
    """Run fast_engine_check.py's ``checks`` under the JAX backend (CPU) in ``cwd``; -> {check: result}."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
           # cache every compiled program on disk, however quick, so the test can see the cache being written
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           # the helper runs as the module tests.engines.fast_engine_check from ``cwd``: the checkout's root finds it
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "tests.engines.fast_engine_check", json.dumps(checks)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(lines[-1][len("RESULT "):])


# The replay check: the fast engine with everything random switched on, against Keras stepping by hand through the
# batches the engine drew. 40 training images in batches of 16: three steps an epoch, the last one partial.
# mlp_bn carries dropout 0.5, L2 and BatchNorm, and 1,100 validation images: more than one evaluation batch
# (jax_loop.EVAL_BATCH, 1,024), the second padded and masked; cnn_da carries dropout and both augmentations.
REPLAY_RUNS = [{"arch": "mlp_bn", "config": {"batch_size": 16, "dropout": 0.5, "l2": 1e-3}, "n_train": 40,
                "n_val": 1100},
               {"arch": "cnn_da", "config": {"batch_size": 16, "dropout": 0.5, "flip": True, "translate": 0.1},
                "n_train": 40, "n_val": 32}]


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory) -> tuple[dict, Path]:
    """One JAX process for the default checks (as one study's trials would, later checks may reuse programs)."""
    cwd = tmp_path_factory.mktemp("jax")
    checks = {"train_all": {"n_train": 64, "n_val": 32, "epochs": 2, "batch_size": 16},
              "prune": {"epochs": 4}, "reuse": {}, "bf16": {"arch": "mlp_l2"}, "loop_modes": {},
              "full_batch": {"archs": ["mlp_bn", "mlp_l2", "cnn", "resnet"], "n_train": 64, "epochs": 3},
              "replay": {"runs": REPLAY_RUNS}, "schedules": {}}
    return run_checks(checks, cwd), cwd


# --- JAX backend ---------------------------------------------------------------------------------------------


@needs_jax
def test_fast_engine_trains_every_architecture(jax_run):
    from cifar_tune.models import architectures

    trained = jax_run[0]["train_all"]
    assert sorted(trained) == sorted(architectures.ARCHITECTURES)
    for arch, r in trained.items():
        assert (r["engine"], r["precision"], r["epochs_run"]) == ("fast", "float32", 2), arch
        assert r["info"]["backend"] == "jax" and r["info"]["device"] == "cpu"
        assert r["params"] == architectures.get(arch).seed_params, arch  # augmentation adds no weights
        assert set(r["history"]) == {"loss", "accuracy", "val_loss", "val_accuracy"}, arch
        assert all(len(v) == 2 and all(math.isfinite(x) for x in v) for v in r["history"].values()), arch
        assert r["predicted_shape"] == [32]
        # model.predict on the returned model sees the trained weights: it scores what the last epoch reported
        assert abs(r["predict_accuracy"] - r["history"]["val_accuracy"][-1]) <= 1 / 32 + 1e-9, arch
    # the synthetic classes are visible at a glance: the MLPs learn them within 2 epochs of 64 images
    for arch in ("mlp_bn", "mlp_l2"):
        assert trained[arch]["history"]["val_accuracy"][-1] >= 0.8, trained[arch]["history"]
    assert np.mean([r["history"]["val_accuracy"][-1] for r in trained.values()]) >= 0.4  # chance: 0.1


@needs_jax
def test_dropout_and_augmentation_draw_fresh_randomness_every_step(jax_run):
    # Every random layer draws from its own seed generator once per call (RandomTranslation twice); the count that
    # ends in the trained model proves the RNG state went through every compiled step and came back (were it not
    # threaded, every step would reuse the first draw and the counts would stay at 0 or 1).
    trained = jax_run[0]["train_all"]
    for arch, r in trained.items():
        steps = r["steps_per_epoch"] * 2
        draws = r["seed_draws"]
        kinds = sorted({name.split(":")[0] for name in draws})
        expected = {"mlp_bn": ["Dropout"], "mlp_l2": ["Dropout"], "cnn": [],
                    "cnn_da": ["Dropout", "RandomFlip", "RandomTranslation"],
                    "resnet": ["Dropout", "RandomFlip", "RandomTranslation"]}[arch]
        assert kinds == expected, (arch, draws)
        for name, count in draws.items():
            per_call = 2 if name.startswith("RandomTranslation") else 1
            assert count == per_call * steps, (arch, name, count, steps)


@needs_jax
def test_one_scan_per_epoch_trains_like_one_call_per_batch(jax_run):
    # CPU runs one call per batch; accelerators run the epoch as one lax.scan (see engines.fast._loop_mode).
    # Both are checked here on the CPU: same seed, same draws, same numbers up to float reassociation.
    modes = jax_run[0]["loop_modes"]
    assert (modes["step"]["loop"], modes["epoch"]["loop"]) == ("step", "epoch")
    assert modes["epoch"]["seed_draws"] == modes["step"]["seed_draws"]
    for key, values in modes["step"]["history"].items():
        np.testing.assert_allclose(modes["epoch"]["history"][key], values, rtol=1e-3, atol=1e-4)


@needs_jax
def test_pruning_raised_by_a_keras_callback_propagates_to_optuna(jax_run):
    pruned = jax_run[0]["prune"]
    assert pruned["state"] == "PRUNED"
    assert pruned["reported_steps"] == [0, 1]  # val_loss reported after epochs 0 and 1, pruned at 1 of 4
    assert pruned["finished"] is None  # training did not run on after the callback raised


@needs_jax
def test_traced_hyperparameters_reuse_the_compiled_programs_and_none_is_baked_in(jax_run):
    # Learning rate, dropout, L2, optimizer (Adam / AdamW), weight decay, schedule and its length are traced values:
    # the second config differs from the first in all of them and runs the first's programs.
    r, cwd = jax_run
    reuse = r["reuse"]
    assert reuse["second_reusing"]["reused"] is True  # same structure: no new trace, no new compile
    assert reuse["second_reusing"]["compiled"] == []
    # a new batch size is the same program at a new shape: the training step and the shuffle compile again,
    # evaluation (whose batches are the engine's own) does not
    assert reuse["other_batch"]["reused"] is True and reuse["other_batch"]["compiled"] == ["shuffle", "train_steps"]
    assert reuse["second_fresh"]["reused"] is False  # after the programs were forgotten: all three compiled
    assert reuse["second_fresh"]["compiled"] == ["evaluate", "shuffle", "train_steps"]
    # the values really enter the programs: the reused run equals the same config compiled on its own (any value
    # taken from the first config while tracing would make them differ) ...
    for key, values in reuse["second_fresh"]["history"].items():
        np.testing.assert_allclose(reuse["second_reusing"]["history"][key], values, rtol=1e-5, atol=1e-6,
                                   err_msg=key)
    # ... and differs from the run whose constants the shared programs were first traced with
    first_loss = reuse["first"]["history"]["loss"]
    assert reuse["second_reusing"]["history"]["loss"][:len(first_loss)] != pytest.approx(first_loss, rel=1e-3)
    # JAX's persistent compilation cache lives under storage/ of the working directory
    assert reuse["cache_files"] > 0
    assert any((cwd / "storage" / "jax_cache").iterdir())


@needs_jax
def test_bf16_is_mixed_precision_with_float32_weights(jax_run):
    r = jax_run[0]["bf16"]
    assert r["precision"] == "bf16"
    assert r["compute_dtype"] == "bfloat16" and r["variable_dtypes"] == ["float32"]
    assert all(math.isfinite(x) for x in r["history"]["loss"])
    assert r["predict_accuracy"] >= 0.5


@needs_jax
def test_without_randomness_both_engines_compute_the_same_training(jax_run):
    # One batch per epoch, no dropout, no augmentation, same seed: stock fit and the fast engine start from the
    # same weights and take the same full-batch Adam steps, so their per-epoch numbers agree up to float32
    # rounding (fit sums the batch in its own shuffled order). This pins down the loss, the L2 penalty (in loss
    # and val_loss), BatchNorm in both modes, Adam and the validation loop, architecture by architecture.
    assert {"mlp_bn", "mlp_l2", "cnn", "resnet"} <= set(jax_run[0]["full_batch"])  # never vacuously true
    for arch, by_engine in jax_run[0]["full_batch"].items():
        keras_h, fast_h = by_engine["keras"], by_engine["fast"]
        for key in ("loss", "val_loss"):
            np.testing.assert_allclose(fast_h[key], keras_h[key], rtol=1e-3, atol=1e-4, err_msg=f"{arch} {key}")
        for key in ("accuracy", "val_accuracy"):  # a rounding difference may flip one borderline image
            np.testing.assert_allclose(fast_h[key], keras_h[key], atol=1 / 32 + 1e-6, err_msg=f"{arch} {key}")


@needs_jax
def test_fast_engine_trains_exactly_as_keras_stepping_through_the_same_batches(jax_run):
    # With dropout, augmentation, BatchNorm and L2 all on, the fast engine's training is still reproducible: a
    # Keras model built from the same seed has the same weights and the same seed-generator states, so Keras's own
    # Dropout / RandomFlip / RandomTranslation draw the same masks and shifts as the engine's steps. Stepped with
    # train_on_batch through the batches the engine's shuffle drew (the partial last one included), it must log
    # the same per-epoch loss and accuracy up to float rounding. A step that skips dropout or augmentation, runs
    # BatchNorm in inference mode, leaves out L2, drops or reorders a batch, or trains on other batches than the
    # ones drawn, changes the numbers at once.
    runs = jax_run[0]["replay"]
    assert set(runs) == {"mlp_bn", "cnn_da"}  # never vacuously true
    for name, r in runs.items():
        np.testing.assert_allclose(r["fast"]["loss"], r["replay"]["loss"], rtol=1e-4, atol=1e-5,
                                   err_msg=f"{name} loss")
        # accuracy is a mean over steps of batch_size images: allow one image flipped by rounding
        one_image = 1 / (r["steps_per_epoch"] * r["batch_size"]) + 1e-6
        np.testing.assert_allclose(r["fast"]["accuracy"], r["replay"]["accuracy"], atol=one_image,
                                   err_msg=f"{name} accuracy")


@needs_jax
def test_every_epoch_trains_on_a_fresh_permutation_of_every_image(jax_run):
    # The batches the engine drew (the replay above proves it trained on exactly these): ceil(n / batch) steps,
    # so the last, partial batch counts; every image in every epoch; a shuffled order, and a new one each epoch.
    for name, r in jax_run[0]["replay"].items():
        n, batch = r["n_train"], r["batch_size"]
        steps = math.ceil(n / batch)
        assert n % batch and r["steps_per_epoch"] == steps, name  # the data do have a partial last batch
        epochs = [np.asarray(b) for b in r["batches"]]
        assert len(epochs) == 2, name
        for batches in epochs:
            assert batches.shape == (steps, batch), name
            assert set(batches.ravel().tolist()) == set(range(n)), name  # every image, the last ones included
            assert not np.array_equal(batches[0], np.arange(batch)), name  # not the data's own order
        assert not np.array_equal(epochs[0], epochs[1]), name  # reshuffled every epoch


@needs_jax
def test_validation_figures_are_keras_evaluate_also_over_padded_batches(jax_run):
    # val_loss and val_accuracy drive pruning and the trial's value, so the engine's own figures must be Keras's:
    # after every epoch they equal model.evaluate (inference mode: no dropout, no augmentation, BatchNorm's moving
    # statistics; L2 penalty included) of the replayed model, and after the last one that of the returned model.
    # mlp_bn's 1,100 validation images run two evaluation batches, the second padded: the mask must hold.
    runs = jax_run[0]["replay"]
    assert runs["mlp_bn"]["n_val"] > 1024 and runs["mlp_bn"]["n_val"] % 1024  # jax_loop.EVAL_BATCH
    for name, r in runs.items():
        one_image = 1 / r["n_val"] + 1e-6
        np.testing.assert_allclose(r["fast"]["val_loss"], r["replay"]["val_loss"], rtol=1e-4, atol=1e-5,
                                   err_msg=f"{name} val_loss")
        np.testing.assert_allclose(r["fast"]["val_accuracy"], r["replay"]["val_accuracy"], atol=one_image,
                                   err_msg=f"{name} val_accuracy")
        assert r["returned"]["val_loss"] == pytest.approx(r["fast"]["val_loss"][-1], rel=1e-4, abs=1e-5), name
        assert r["returned"]["val_accuracy"] == pytest.approx(r["fast"]["val_accuracy"][-1], abs=one_image), name


@needs_jax
def test_schedules_and_adamw_train_alike_in_both_engines_and_reuse_one_program(jax_run):
    # Cosine decay, warm-up + cosine, AdamW with decoupled weight decay: full batch, nothing random, so stock
    # fit (Keras's optimizer with our Schedule) and the fast engine must agree step for step; the fast engine
    # traces the schedule and the decay as values, so every variant after the first runs the same programs.
    runs = jax_run[0]["schedules"]
    assert set(runs) == {"adam_cosine", "adamw_warmup_cosine", "adamw_constant"}
    for name, by_engine in runs.items():
        for key in ("loss", "val_loss"):
            np.testing.assert_allclose(by_engine["fast"]["history"][key], by_engine["keras"]["history"][key],
                                       rtol=1e-3, atol=1e-4, err_msg=f"{name} {key}")
    assert runs["adamw_warmup_cosine"]["fast"]["reused"] and runs["adamw_constant"]["fast"]["reused"]
    # the variants really differ (the values are not ignored)
    losses = {name: r["keras"]["history"]["loss"][-1] for name, r in runs.items()}
    assert len({round(v, 4) for v in losses.values()}) == 3, losses


def assert_own_figures_are_keras_evaluate(run: dict, n_val: int, what) -> None:
    """The engine's own last val_loss / val_accuracy (which drive pruning) are what Keras measures on the model it
    returned: ``evaluate``'s loss (L2 penalty included) and the share of ``predict``'s classes that are right."""
    one_image = 1 / n_val + 1e-6
    assert run["val_loss"] == pytest.approx(run["evaluated_loss"], rel=1e-4, abs=1e-5), what
    assert run["val_accuracy"] == pytest.approx(run["accuracy"], abs=one_image), what
    assert run["evaluated_accuracy"] == pytest.approx(run["accuracy"], abs=one_image), what


@needs_jax
def test_fast_and_keras_engines_reach_the_same_accuracy(tmp_path):
    # With dropout and shuffled batches the runs differ, so only the outcome can agree: cnn_da (dropout 0.5).
    # Same config, same data, same seed; engine keras is stock fit on the same (JAX) backend. The data are the
    # synthetic stripes made fainter, with 20% of the labels random, so the best reachable accuracy is about
    # 0.82 and not 1: a broken engine (wrong scaling, loss, dropout or BatchNorm mode) falls visibly short.
    # Tolerance 0.10, from measured noise (256 training / 200 validation images, batch 16, 5 epochs, this CPU):
    # seeds 0-2 gave keras 0.745-0.80 and fast 0.80-0.80 for cnn_da.
    # Each accuracy also carries a binomial standard error of ~2.8 points (200 images), so |fast - keras| has a
    # standard deviation of ~4 points: 0.10 is about 2.5 of them. Both must also be far above chance (0.1).
    # An outcome this coarse does not notice dropout switched off or batches left unshuffled (both measured at
    # 0.80, as keras): the replay tests above pin those down.
    result = run_checks({"equivalence": {"archs": ["cnn_da"], "seeds": [0], "n_train": 256,
                                         "n_val": 200, "epochs": 5, "batch_size": 16}}, tmp_path)["equivalence"]
    for arch, by_engine in result.items():
        keras_acc = by_engine["keras"][0]["accuracy"]
        fast_acc = by_engine["fast"][0]["accuracy"]
        assert keras_acc >= 0.6 and fast_acc >= 0.6, (arch, by_engine)
        assert abs(fast_acc - keras_acc) <= 0.10, (arch, by_engine)
        assert_own_figures_are_keras_evaluate(by_engine["fast"][0], 200, arch)


# Lower bounds on the real data (chance: 0.10), per run, with margin below the lowest measured (2 seeds per engine,
# 12 for mlp_l2): after 3 epochs of 2,000 images every model's validation accuracy is 0.22-0.38 in both engines,
# except the ResNet's, near chance in both (0.10-0.17, inference mode); its training accuracy (training mode, as
# the engines log it) is 0.33-0.37, so it does learn, and every model's is at least 0.24.
REAL_MIN_VAL_ACCURACY = {"mlp_bn": 0.18, "mlp_l2": 0.18, "cnn": 0.18, "cnn_da": 0.18, "resnet": 0.0}
REAL_MIN_TRAIN_ACCURACY = 0.2


@needs_jax
@pytest.mark.slow
def test_engines_agree_on_the_real_data_for_every_architecture(real_npz, tmp_path):
    # The equivalence: each architecture, same config, same real subset (2,000 training images, 1,500
    # test images, 3 epochs, batch 32), two seeds per engine. 1,500 validation images: more than one evaluation
    # batch (jax_loop.EVAL_BATCH, 1,024), so the fast engine's padded, masked evaluation runs, as it does with the
    # default 5,000. Measured on this 2-core CPU (seeds 0 and 1, about 12 minutes in all), per architecture:
    # - both engines learn: see the lower bounds above;
    # - the fast engine's own val_loss / val_accuracy equal Keras's evaluate / predict on the model it returned
    #   (to float rounding): the figures that prune trials and score them are Keras's;
    # - training accuracy of the last epoch, mean of the two seeds: |fast - keras| 0.005-0.015, seed-to-seed spread
    #   up to 0.04 (resnet): tolerance 0.05;
    # - validation accuracy, mean of two seeds: |fast - keras| 0.00-0.05 (resnet near chance in both), seed-to-seed
    #   spread up to 8 points (cnn, keras: 0.274 / 0.353), i.e. a standard deviation of ~3 points for a mean of
    #   two, plus ~1 of binomial error: tolerance 0.10, about three standard deviations of the difference;
    # - validation loss, mean of two seeds: |fast - keras| / keras 3-12% (cnn: 1.74 / 1.97, its seeds alone 1.84 /
    #   2.09): tolerance 25%; not the ResNet's (3.06 / 2.84 for keras's two seeds, 3.62 / 2.90 for fast).
    from cifar_tune.models import architectures

    n_val = 1500
    result = run_checks({"equivalence": {"archs": list(architectures.ARCHITECTURES), "seeds": [0, 1],
                                         "n_train": 2000, "n_val": n_val, "epochs": 3, "batch_size": 32,
                                         "npz": str(real_npz)}}, tmp_path, timeout=3000)["equivalence"]
    print(json.dumps(result))  # the figures, for `pytest -s`
    assert n_val > 1024 and n_val % 1024 and set(result) == set(architectures.ARCHITECTURES)
    for arch, by_engine in result.items():
        for engine, runs in by_engine.items():
            for run in runs:
                what = (arch, engine, run)
                assert run["accuracy"] >= REAL_MIN_VAL_ACCURACY[arch], what
                assert run["train_accuracy"] >= REAL_MIN_TRAIN_ACCURACY, what
                assert_own_figures_are_keras_evaluate(run, n_val, what)
        means = {e: {k: np.mean([run[k] for run in runs]) for k in ("accuracy", "train_accuracy", "val_loss")}
                 for e, runs in by_engine.items()}
        fast, keras = means["fast"], means["keras"]
        assert abs(fast["train_accuracy"] - keras["train_accuracy"]) <= 0.05, (arch, means)
        assert abs(fast["accuracy"] - keras["accuracy"]) <= 0.10, (arch, means)
        if arch != "resnet":
            assert fast["val_loss"] == pytest.approx(keras["val_loss"], rel=0.25), (arch, means)


# --- TensorFlow backend (this process) -----------------------------------------------------------------------


def test_fast_engine_on_tensorflow_is_compiled_fit_returning_the_inner_model():
    import keras

    from cifar_tune import engines

    if keras.backend.backend() != "tensorflow":
        pytest.skip("this test session's backend is not TensorFlow")
    x, y, xv, yv = synthetic_cifar(96, 40)
    result = engines.train(engines.TrainSpec("mlp_l2", {"batch_size": 32}, epochs=3, engine="fast"), x, y, xv, yv)
    assert result.engine == "fast" and result.info["backend"] == "tensorflow"
    assert result.info["steps_per_execution"] == 3  # one host round trip per epoch
    assert set(result.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert result.epochs_run == 3
    # the returned model is the seed's (no rescaling layer): it takes [0, 1] floats like the keras engine's
    assert result.model.count_params() == 1_578_506
    predicted = engines.predict_classes(result.model, xv)
    assert (predicted == yv).mean() == pytest.approx(result.history["val_accuracy"][-1], abs=1e-6)
    assert result.history["val_accuracy"][-1] >= 0.8
