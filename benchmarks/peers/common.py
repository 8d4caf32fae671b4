"""What every peer shares, so the four tools do the same work: data split, models, optimizer, space, logs, retraining.

Sources, and why they are copies: cifar-tune's package internals are being reorganised, so nothing here imports
``cifar_tune.*``. The split reproduces ``cifar-tune --subset N`` (a stratified subset of N training images and N/5
test images, then a stratified tenth of the N carved out for validation, all with seed 0; sklearn's
``train_test_split`` as cifar-tune calls it), and ``split_description`` is the string cifar-tune stores in its
study (user attribute ``data``), so the benchmark and ``tests/benchmarks/test_peers.py`` check that the indices are
equal. The models are the seed's Simple CNN and MLP with L2 as ``cifar_tune/models/architectures.py`` builds them
(parameter counts checked by the tests); the optimizer is Adam or AdamW (decoupled decay, kernels only) at a constant
rate, a cosine decay to 0 over all steps, or a 10% linear warm-up then cosine, as cifar-tune trains (Keras's
``CosineDecay``).
Keras is imported inside the functions that train, so the cifar-tune runner never loads TensorFlow itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
ARCHS = ("cnn", "mlp_l2")
SEED_TRAINING = {"learning_rate": 1e-3, "batch_size": 32, "optimizer": "adam", "weight_decay": 0.0,
                 "lr_schedule": "constant"}
# The seed's configs (cifar_tune/models/architectures.py), and their parameter counts (README's table).
BASELINES = {"cnn": {"width": 1.0, "dense_units": 64, "dropout": 0.0, "l2": 0.0, **SEED_TRAINING},
             "mlp_l2": {"units": 512, "dropout": 0.2, "l2": 1e-3, **SEED_TRAINING}}
SEED_PARAMS = {"cnn": 167_562, "mlp_l2": 1_578_506}
FIRST_SEED = 1000  # cifar-tune compare's fresh seeds count up from here, skipping the study's seed
NO_DECAY = ("bias", "gamma", "beta")


@dataclass(frozen=True)
class Budget:
    """One study definition: architecture, trials, maximum epochs per trial, training images (``--subset``), the
    study's seed (sampler and every trial's training), the number of fresh retraining seeds, and the data file."""

    arch: str
    n_trials: int
    epochs: int
    subset: int
    data: str
    seed: int = 0
    seeds: int = 3

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Budget:
        return cls(**json.loads(text))


# --- data ------------------------------------------------------------------------------------------------------


def _fingerprint(*arrays: np.ndarray) -> str:
    """cifar-tune's data fingerprint: SHA-256 over (shape, bytes) of x_train, y_train, x_test, y_test; 16 hex."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()[:16]


def _stratified(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    from sklearn.model_selection import train_test_split

    if n >= len(y):
        return np.arange(len(y))
    return np.sort(train_test_split(np.arange(len(y)), train_size=n, stratify=y, random_state=seed)[0])


def load_split(data: str, subset: int, seed: int = 0) -> dict:
    """cifar-tune's split for ``--data data --subset subset --seed seed``: uint8 images (N, 32, 32, 3), uint8
    labels (N,). Keys: ``x_train``/``y_train`` (subset minus validation), ``x_val``/``y_val`` (a tenth, at most
    5,000), ``x_full``/``y_full`` (the whole subset: what compare retrains on), ``x_test``/``y_test`` (subset/5),
    ``description`` (the string cifar-tune's study stores as ``data``)."""
    from sklearn.model_selection import train_test_split

    with np.load(data) as z:
        x_tr, y_tr = z["x_train"], z["y_train"].reshape(-1).astype(np.uint8)
        x_te, y_te = z["x_test"], z["y_test"].reshape(-1).astype(np.uint8)
    n_test = max(10, round(subset * len(y_te) / len(y_tr)))
    tr, te = _stratified(y_tr, subset, seed), _stratified(y_te, n_test, seed)
    x_full, y_full, x_test, y_test = x_tr[tr], y_tr[tr], x_te[te], y_te[te]
    val_size = max(10, min(5000, subset // 10))
    a, b = train_test_split(np.arange(subset), test_size=val_size, stratify=y_full, random_state=seed)
    a, b = np.sort(a), np.sort(b)
    fp = _fingerprint(x_full, y_full, x_test, y_test)
    return {"x_train": x_full[a], "y_train": y_full[a], "x_val": x_full[b], "y_val": y_full[b],
            "x_full": x_full, "y_full": y_full, "x_test": x_test, "y_test": y_test,
            "description": f"data {fp} val {val_size} seed {seed}"}


def scale(x: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1], as the seed does."""
    return x.astype("float32") / 255.0


# --- the search space ------------------------------------------------------------------------------------------


def space(arch: str) -> dict:
    """``search_spaces/<arch>.toml``'s ``params`` table: name -> {type, low, high, step, log, choices, optional,
    when, baseline}, in file order (a conditional parameter follows the one it depends on)."""
    with open(REPO / "search_spaces" / f"{arch}.toml", "rb") as f:
        return tomllib.load(f)["params"]


def full_config(arch: str, values: dict) -> dict:
    """The seed's config overlaid with ``values`` (hyperparameters a tool did not sample keep the seed's value)."""
    return {**BASELINES[arch], **{k: v for k, v in values.items() if k in BASELINES[arch]}}


# --- models and training ---------------------------------------------------------------------------------------


def build_model(arch: str, c: dict):
    """The seed's Simple CNN (``cnn``) or MLP with L2 (``mlp_l2``) for a full config, on [0, 1] float images."""
    import keras
    from keras import layers

    l2 = keras.regularizers.L2(c["l2"]) if c["l2"] > 0 else None
    stack: list = []
    if arch == "cnn":
        w = c["width"]
        for filters in (32, 64):
            stack += [layers.Conv2D(max(1, int(round(filters * w))), (3, 3), activation="relu",
                                    kernel_regularizer=l2), layers.MaxPooling2D()]
        units = c["dense_units"]
    else:
        units = c["units"]
    stack += [layers.Flatten(), layers.Dense(units, activation="relu", kernel_regularizer=l2)]
    if c["dropout"] > 0:
        stack.append(layers.Dropout(c["dropout"]))
    stack.append(layers.Dense(10, activation="softmax", dtype="float32"))
    return keras.Sequential([keras.Input((32, 32, 3)), *stack], name=arch)


def steps(n_images: int, batch_size: int) -> int:
    """Optimizer steps in one epoch (the last, partial batch counts)."""
    return -(-n_images // batch_size)


def compile_model(model, c: dict, total_steps: int):
    """Compile as cifar-tune does: the config's optimizer and schedule over ``total_steps`` optimizer steps, sparse
    categorical cross-entropy, accuracy."""
    import keras

    lr, kind = float(c["learning_rate"]), c["lr_schedule"]
    rate = lr
    if kind == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(lr, max(total_steps, 1))
    elif kind == "warmup_cosine":
        warm = int(total_steps * 0.1)
        rate = keras.optimizers.schedules.CosineDecay(0.0, max(total_steps - warm, 1), warmup_target=lr,
                                                      warmup_steps=warm)
    if c["optimizer"] == "adamw":
        opt = keras.optimizers.AdamW(learning_rate=rate, weight_decay=float(c["weight_decay"]))
        opt.exclude_from_weight_decay(var_names=list(NO_DECAY))
    else:
        opt = keras.optimizers.Adam(learning_rate=rate)
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def compare_seeds(n: int, study_seed: int = 0) -> list[int]:
    """cifar-tune compare's ``n`` fresh seeds: from FIRST_SEED up, skipping the study's own seed."""
    return [s for s in range(FIRST_SEED, FIRST_SEED + n + 1) if s != study_seed][:n]


def retrain_and_test(arch: str, config: dict, split: dict, epochs: int, seed: int) -> dict:
    """Train ``config`` from scratch on the whole subset (train + validation, as cifar-tune compare does) for
    ``epochs`` with ``seed``; return test accuracy (fraction of ``split['x_test']``) and seconds of training."""
    import keras

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    c = full_config(arch, config)
    bs = int(c["batch_size"])
    model = compile_model(build_model(arch, c), c, epochs * steps(len(split["y_full"]), bs))
    start = time.perf_counter()
    model.fit(scale(split["x_full"]), split["y_full"], batch_size=bs, epochs=epochs, verbose=0, shuffle=True)
    seconds = time.perf_counter() - start
    pred = np.asarray(model.predict(scale(split["x_test"]), batch_size=1024, verbose=0)).argmax(axis=1)
    return {"seed": seed, "accuracy": float((pred == split["y_test"]).mean()), "seconds": round(seconds, 2)}


# --- the per-epoch log -----------------------------------------------------------------------------------------


def rss_mb() -> float | None:
    """This process's resident memory in MB (Linux ``/proc/self/status`` VmRSS)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return None


def epoch_logger(path: str | os.PathLike, trial: str):
    """A Keras callback appending one JSON line per finished epoch to ``path``: wall-clock ``t`` (s since the epoch
    1970), ``trial`` (the tool's trial id), ``epoch`` (1-based, as Keras counts from ``initial_epoch``),
    ``val_loss``, ``val_accuracy``, ``pid``, ``rss_mb``. The measuring instrument every peer carries (cifar-tune
    stores the same per trial in its study): a line costs microseconds."""
    import keras

    class EpochLog(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            row = {"t": time.time(), "trial": str(trial), "epoch": epoch + 1, "pid": os.getpid(),
                   "val_loss": float(logs.get("val_loss", float("nan"))),
                   "val_accuracy": float(logs.get("val_accuracy", float("nan"))), "rss_mb": rss_mb()}
            with open(path, "a") as f:
                f.write(json.dumps(row) + "\n")

    return EpochLog()


def read_epochs(path: str | os.PathLike) -> list[dict]:
    """The rows ``epoch_logger`` wrote (empty if none)."""
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def config_from_values(arch: str, values: dict) -> dict:
    """A tool's sampled values -> the full config: an optional parameter whose switch ``use_<name>`` is off takes
    its ``off`` value (0), a conditional one that is inactive keeps the seed's value (as cifar-tune's space does)."""
    out = dict(values)
    for name, p in space(arch).items():
        if p.get("optional") and not values.get(f"use_{name}", True):
            out[name] = p.get("off", 0.0)
    return full_config(arch, out)


def anytime(trials: list[tuple[float, float]]) -> list[list[float]]:
    """The anytime curve: each trial as (end, lowest validation loss of its epochs; wall-clock s) -> the best found
    so far after each trial that lowered it, ``[[end, best], ...]`` in time order. Trial granularity, taken alike
    for every tool (a pruned or failed trial's epochs count: they were trained)."""
    out, best = [], float("inf")
    for end, loss in sorted(trials):
        if loss < best:  # NaN never compares below: a diverged trial never improves the curve
            best = loss
            out.append([end, loss])
    return out


def summarize_log(rows: list[dict], best_val_loss: float | None) -> dict:
    """From ``epoch_logger`` rows: epochs trained, each trial's end (wall-clock s of its last epoch, in order), the
    anytime curve (``anytime``), and the first epoch whose validation loss reached ``best_val_loss`` (its time
    ``t`` and ``val_accuracy``)."""
    ends: dict[str, float] = {}
    lows: dict[str, float] = {}
    for r in rows:
        ends[r["trial"]] = max(ends.get(r["trial"], 0.0), r["t"])
        lows[r["trial"]] = min(lows.get(r["trial"], float("inf")), r["val_loss"])
    first = None
    if best_val_loss is not None:
        hits = [r for r in rows if r["val_loss"] <= best_val_loss * (1 + 1e-9) + 1e-12]
        first = min(hits, key=lambda r: r["t"]) if hits else None
    return {"epochs": len(rows), "trial_ends": sorted(ends.values()), "best_time": first and first["t"],
            "best_val_accuracy_logged": first and first["val_accuracy"],
            "anytime": anytime([(ends[k], lows[k]) for k in ends])}
