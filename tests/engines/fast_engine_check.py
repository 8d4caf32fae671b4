"""Runs fast-engine checks under the JAX backend and prints one JSON object (used by test_fast_engine.py).

The test session imports Keras with TensorFlow, and Keras fixes its backend at import, so the JAX parts run
here, in a subprocess started with KERAS_BACKEND=jax:

    KERAS_BACKEND=jax python -m tests.engines.fast_engine_check '{"train_all": {}, "prune": {"epochs": 4}}'

The argument maps check names (the functions in CHECKS) to their keyword arguments; they run in that order in
one process (so later checks may reuse programs compiled by earlier ones, as trials in one study do), and the
last line printed is ``RESULT {name: result, ...}``. Everything is real: real Keras models, real training, a
real Optuna study; the output is plain data for the test to assert on.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from cifar_tune import engines
from cifar_tune.engines import jax_loop  # noqa: E402
from cifar_tune.models import architectures
from tests.conftest import synthetic_cifar  # noqa: E402

AUGMENTED = {"flip": True, "translate": 0.1}


def _seed_draws(model: keras.Model) -> dict[str, int]:
    """Per random layer (Dropout, RandomFlip, RandomTranslation): how many times its seed generator drew.

    A Keras SeedGenerator starts at state [seed, 0] and adds 1 to the second entry per draw, so this counts the
    draws that reached the model's variables, i.e. whether the RNG state was threaded through training.
    """
    draws = {}
    for i, layer in enumerate(model.layers):  # keyed "RandomFlip:0" (class, position): names vary between builds
        generators = getattr(layer, "_seed_generators", [])
        if generators:
            draws[f"{layer.__class__.__name__}:{i}"] = sum(int(np.asarray(g.state.value)[1]) for g in generators)
    return draws


def train_all(n_train: int = 64, n_val: int = 32, epochs: int = 2, batch_size: int = 16) -> dict:
    """Every architecture trained by the fast engine on tiny data (augmentation on where the model has it)."""
    x, y, xv, yv = synthetic_cifar(n_train, n_val)
    out = {}
    for arch in architectures.ARCHITECTURES:
        config = {"batch_size": batch_size}
        if "flip" in architectures.get(arch).baseline:
            config.update(AUGMENTED)
        result = engines.train(engines.TrainSpec(arch, config, epochs, engine="fast"), x, y, xv, yv)
        predicted = engines.predict_classes(result.model, xv)
        out[arch] = {"history": result.history, "epochs_run": result.epochs_run, "engine": result.engine,
                     "precision": result.precision, "info": result.info, "params": result.model.count_params(),
                     "predicted_shape": list(predicted.shape), "predict_accuracy": float((predicted == yv).mean()),
                     "seed_draws": _seed_draws(result.model), "steps_per_epoch": -(-n_train // batch_size)}
    return out


def bf16(arch: str = "cnn", n_train: int = 64, n_val: int = 32, epochs: int = 2) -> dict:
    """One bf16 run: what it records and what dtypes the trained model computes and stores in."""
    x, y, xv, yv = synthetic_cifar(n_train, n_val)
    spec = engines.TrainSpec(arch, {"batch_size": 16}, epochs, engine="fast", precision="bf16")
    result = engines.train(spec, x, y, xv, yv)
    return {"history": result.history, "precision": result.precision,
            "compute_dtype": result.model.layers[0].compute_dtype,
            "variable_dtypes": sorted({v.dtype for v in result.model.trainable_variables}),
            "predict_accuracy": float((engines.predict_classes(result.model, xv) == yv).mean())}


def prune(epochs: int = 4) -> dict:
    """A real Optuna study whose pruner prunes at epoch 1, with optuna-integration's KerasPruningCallback."""
    import optuna
    from optuna_integration import KerasPruningCallback

    x, y, xv, yv = synthetic_cifar(64, 32)
    seen = {}

    def objective(trial):
        callback = KerasPruningCallback(trial, "val_loss")
        result = engines.train(engines.TrainSpec("mlp_l2", {"batch_size": 16}, epochs, engine="fast"), x, y, xv, yv,
                               callbacks=[callback])
        seen["finished"] = result.epochs_run  # only reached if nothing was pruned
        return result.history["val_loss"][-1]

    # val_loss is always > 0, so from step 1 on (n_warmup_steps=1) every report is over the threshold.
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=0.0, n_warmup_steps=1))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    return {"state": trial.state.name, "reported_steps": sorted(trial.intermediate_values),
            "finished": seen.get("finished")}


def reuse(arch: str = "mlp_l2", epochs: int = 2) -> dict:
    """Program reuse: a config that differs in every traced value only (learning rate, dropout, L2, optimizer and
    weight decay, schedule, and the number of steps it spans) runs the programs compiled for another; its history
    must equal that of the same config compiled afresh (no value baked in from the first trial)."""
    x, y, xv, yv = synthetic_cifar(64, 32)
    # first: Adam at a constant rate over `epochs` epochs; second: AdamW with a strong decay, warm-up + cosine over
    # one epoch more (12 steps: 1 of warm-up), so each value, were it the first's, would change the second's run
    first = {"batch_size": 16, "learning_rate": 5e-4, "dropout": 0.5, "l2": 1e-2}
    second = {"batch_size": 16, "learning_rate": 3e-3, "dropout": 0.1, "l2": 1e-4, "optimizer": "adamw",
              "weight_decay": 0.5, "lr_schedule": "warmup_cosine"}
    other_batch = {**second, "batch_size": 32}

    def run(config, epochs):
        r = engines.train(engines.TrainSpec(arch, config, epochs, engine="fast"), x, y, xv, yv)
        return {"history": r.history, "reused": r.info["program_reused"], "compiled": r.info["compiled"],
                "compile_seconds": r.info["compile_seconds"]}

    out = {"first": run(first, epochs), "second_reusing": run(second, epochs + 1),
           "other_batch": run(other_batch, epochs + 1)}
    jax_loop._PROGRAMS.clear()  # forget every compiled program: the next run traces its own
    out["second_fresh"] = run(second, epochs + 1)
    out["cache_files"] = len(list(jax_loop.CACHE_DIR.glob("*")))
    return out


def loop_modes(arch: str = "cnn_da", n_train: int = 64, n_val: int = 32, epochs: int = 2) -> dict:
    """The same training as one compiled scan per epoch (the accelerator path) and as one call per batch (CPU)."""
    x, y, xv, yv = synthetic_cifar(n_train, n_val)
    out = {}
    for mode in ("step", "epoch"):
        os.environ["CIFAR_TUNE_FAST_LOOP"] = mode
        try:
            spec = engines.TrainSpec(arch, {"batch_size": 16, **AUGMENTED}, epochs, engine="fast")
            r = engines.train(spec, x, y, xv, yv)
        finally:
            del os.environ["CIFAR_TUNE_FAST_LOOP"]
        out[mode] = {"history": r.history, "loop": r.info["loop"], "seed_draws": _seed_draws(r.model)}
    return out


def full_batch(archs: list[str], n_train: int = 64, n_val: int = 32, epochs: int = 3) -> dict:
    """Both engines with one batch per epoch and nothing random (no dropout, no augmentation): the same initial
    weights (same seed) see the same full-batch gradient every step, whatever the shuffling, so the histories
    must match up to float rounding. Checks loss, L2 penalty, BatchNorm, Adam and validation exactly."""
    x, y, xv, yv = synthetic_cifar(n_train, n_val)
    out: dict = {}
    for arch in archs:
        config = {"batch_size": n_train, "dropout": 0.0}
        if arch == "mlp_l2":
            config["l2"] = 1e-2  # a strong penalty, so a mistake in it shows in loss and val_loss
        for engine in ("keras", "fast"):
            r = engines.train(engines.TrainSpec(arch, config, epochs, engine=engine), x, y, xv, yv)
            out.setdefault(arch, {})[engine] = r.history
    return out


def _engine_batches(arch: str, config: dict, seed: int, epoch: int, y: np.ndarray) -> np.ndarray:
    """The batches of image indices the fast engine trains on in ``epoch``, drawn by its own compiled shuffle
    (the program the engine keeps for this configuration in ``jax_loop._PROGRAMS``)."""
    import jax

    from cifar_tune.engines import jax_program

    key = jax_program.program_key(arch, architectures.get(arch).config(config), "float32", True)
    shuffle = jax_loop._PROGRAMS[key].shuffle
    return np.asarray(shuffle(jax.random.key(seed), np.int32(epoch), np.asarray(y, np.int32),
                              batch_size=int(config["batch_size"])))


def replay(runs: list[dict], epochs: int = 2, seed: int = 0) -> dict:
    """The fast engine's training, and the same training stepped through Keras by hand.

    Each run (``arch``, ``config``, ``n_train``, ``n_val``) trains with the fast engine; then a Keras model built
    from the same seed (same initial weights, same seed-generator states) takes ``train_on_batch`` steps on the
    batches the engine's shuffle drew for each epoch and is ``evaluate``d after each epoch. Dropout, augmentation
    and BatchNorm draw and update exactly as in the engine, so the histories must agree up to float rounding.
    Also: the returned model, evaluated by Keras, and the engine's last val_loss / val_accuracy.
    """
    out = {}
    for run in runs:
        arch, config = run["arch"], run["config"]
        x, y, xv, yv = synthetic_cifar(run["n_train"], run["n_val"])
        fast = engines.train(engines.TrainSpec(arch, config, epochs, seed, engine="fast"), x, y, xv, yv)
        batches = [_engine_batches(arch, config, seed, epoch, y) for epoch in range(epochs)]
        returned = fast.model.evaluate(engines.scale(xv), yv, verbose=0, return_dict=True)

        keras.utils.set_random_seed(seed)
        full = architectures.get(arch).config(config)
        model = engines.compile_model(architectures.get(arch).build(full), full, epochs * len(batches[0]))
        history: dict = {k: [] for k in ("loss", "accuracy", "val_loss", "val_accuracy")}
        for epoch in range(epochs):
            steps = [model.train_on_batch(engines.scale(x[idx]), y[idx], return_dict=True) for idx in batches[epoch]]
            history["loss"].append(float(np.mean([s["loss"] for s in steps])))
            history["accuracy"].append(float(np.mean([s["accuracy"] for s in steps])))
            logs = model.evaluate(engines.scale(xv), yv, verbose=0, return_dict=True)
            history["val_loss"].append(float(logs["loss"]))
            history["val_accuracy"].append(float(logs["accuracy"]))
        out[arch] = {
            "fast": fast.history, "replay": history, "n_train": run["n_train"], "n_val": run["n_val"],
            "batch_size": int(full["batch_size"]), "batches": [b.tolist() for b in batches],
            "steps_per_epoch": fast.info["steps_per_epoch"],
            "returned": {"val_loss": float(returned["loss"]), "val_accuracy": float(returned["accuracy"])}}
    return out


SCHEDULES = {"adam_cosine": {"lr_schedule": "cosine"},
             "adamw_warmup_cosine": {"optimizer": "adamw", "weight_decay": 0.05, "lr_schedule": "warmup_cosine"},
             "adamw_constant": {"optimizer": "adamw", "weight_decay": 0.05}}


def schedules(arch: str = "mlp_bn", n_train: int = 64, n_val: int = 32, epochs: int = 10) -> dict:
    """Learning-rate schedules and AdamW, full batch (nothing random) in both engines; on the fast engine each
    variant after the first must run the programs compiled for the first (values traced, not constants)."""
    x, y, xv, yv = synthetic_cifar(n_train, n_val)
    out: dict = {}
    for name, extra in SCHEDULES.items():
        config = {"batch_size": n_train, "dropout": 0.0, "learning_rate": 3e-3, **extra}  # warm-up: 1 step of 10
        for engine in ("keras", "fast"):
            r = engines.train(engines.TrainSpec(arch, config, epochs, engine=engine), x, y, xv, yv)
            out.setdefault(name, {})[engine] = {"history": r.history, "reused": r.info.get("program_reused")}
    return out


def equivalence(archs: list[str], seeds: list[int], n_train: int = 256, n_val: int = 200, epochs: int = 3,
                batch_size: int = 32, data: str = "hard", npz: str | None = None) -> dict:
    """Validation accuracy after training, per architecture, engine and seed (keras engine = stock fit on JAX)."""
    if npz:  # a stratified subset of the real training images; the first n_val test images
        from cifar_tune.data import cifar10

        ds = cifar10.load(npz)
        sub = cifar10.subset(ds, n_train, seed=0)
        x, y, xv, yv = sub.x_train, sub.y_train, ds.x_test[:n_val], ds.y_test[:n_val]
    else:
        x, y, xv, yv = hard_synthetic(n_train, n_val)
    out: dict = {}
    for arch in archs:
        for engine in ("keras", "fast"):
            for seed in seeds:
                start = time.perf_counter()
                spec = engines.TrainSpec(arch, {"batch_size": batch_size}, epochs, seed, engine=engine)
                r = engines.train(spec, x, y, xv, yv)
                seconds = round(time.perf_counter() - start, 1)
                acc = float((engines.predict_classes(r.model, xv) == yv).mean())
                evaluated = r.model.evaluate(engines.scale(xv), yv, verbose=0, return_dict=True)
                out.setdefault(arch, {}).setdefault(engine, []).append(
                    {"seed": seed, "accuracy": acc, "val_accuracy": r.history["val_accuracy"][-1],
                     "val_loss": r.history["val_loss"][-1], "train_accuracy": r.history["accuracy"][-1],
                     "evaluated_loss": float(evaluated["loss"]), "evaluated_accuracy": float(evaluated["accuracy"]),
                     "seconds": seconds})
    return out


def hard_synthetic(n_train: int, n_val: int, seed: int = 0):
    """Like conftest's synthetic data, but a fainter stripe and 20% random labels (right by chance a tenth of the
    time): accuracy tops out near 0.82 and both engines must get there; a broken engine stays far below."""
    rng = np.random.default_rng(seed)

    def make(n):
        y = np.arange(n) % 10
        rng.shuffle(y)
        x = rng.integers(0, 128, size=(n, 32, 32, 3), dtype=np.uint8)
        for c in range(10):
            x[y == c, 3 * c:3 * c + 3, :, c % 3] += 100
        noisy = rng.random(n) < 0.2
        y[noisy] = rng.integers(0, 10, noisy.sum())
        return x, y.astype(np.uint8)

    return (*make(n_train), *make(n_val))


CHECKS = {f.__name__: f for f in (train_all, bf16, prune, reuse, loop_modes, full_batch, replay, schedules,
                                  equivalence)}

if __name__ == "__main__":
    assert keras.backend.backend() == "jax", keras.backend.backend()
    checks = json.loads(sys.argv[1])
    results = {}
    for name, kwargs in checks.items():
        start = time.perf_counter()
        results[name] = CHECKS[name](**kwargs)
        print(f"{name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    print("RESULT " + json.dumps(results))
