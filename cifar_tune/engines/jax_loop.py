"""The fast engine on JAX: a device-resident training loop, one compiled program per epoch.

Same inputs and outputs as the keras engine (a ``TrainSpec`` and uint8 arrays in, ``TrainResult`` out,
Keras callbacks called with ``loss, accuracy, val_loss, val_accuracy`` after every epoch), but on the JAX
backend the work is done by compiled XLA programs instead of Keras's per-batch ``fit`` loop:

- the data go to the device once, as uint8 (4x less than float32), and are scaled to [0, 1] there;
- ``shuffle``: each epoch's permutation is drawn on the device (from the seed and the epoch number);
- ``train_steps``: a ``jax.lax.scan`` over the epoch's batches, each step through Keras's stateless API
  (``model.stateless_call`` for the forward pass, ``optimizer.stateless_apply`` for Adam). The model's
  non-trainable state (BatchNorm statistics and the seed-generator states of Dropout / RandomFlip /
  RandomTranslation) is threaded through the scan, so augmentation and dropout draw fresh randomness every
  batch, on the device. On GPUs/TPUs the whole epoch is ONE call; on CPU it is one call per batch, because
  XLA:CPU runs convolutions inside a loop several times slower (measured; see ``_loop_mode``);
- ``evaluate``: the same over fixed-size validation batches (padded and masked, so the figures are exact
  over all validation images), in inference mode;
- after each epoch: one host sync for the four logged numbers, the callbacks, and the trained arrays bound to
  the trial's Keras model (so ``model.predict`` / ``evaluate`` work on the returned model).

Why this file exists at all: Keras's ``fit`` on JAX compiles one *step* and drives it from Python batch by
batch, slicing and copying host data every step (its ``steps_per_execution`` is a Python loop on JAX, not
a compiled one); Keras has no "compile the epoch" option. The stateless API is Keras's own, documented way
to write such a loop, so nothing of the models, the loss or Adam is re-implemented here.

Ragged last batch: PADDED BY WRAP-AROUND. An epoch has ceil(n / batch) steps; the last batch is completed
with the first images of the same permutation. Every image is seen at least once per epoch (as with ``fit``),
all batches share one shape (one compiled step), and no masking is needed (BatchNorm sees only real images).
A few images are seen twice per epoch; ``fit`` instead runs a smaller last batch.

Compile once, reuse (the program cache, ``_PROGRAMS``): programs are keyed by what changes their shapes or
structure: architecture, every config value except ``learning_rate``, ``dropout`` and ``l2`` (so width,
units, batch size, flip, translate are part of the key), whether dropout / L2 are on at all, and precision;
each program is then compiled per array shape (data sizes). These three enter the programs as traced VALUES:
- ``learning_rate``: Adam keeps it in a variable, so it is part of the optimizer state we pass in;
- ``dropout`` and ``l2``: Keras bakes them in as Python floats (``Dropout.rate``, ``L2.l2``), and Keras's
  ``Dropout.call`` even branches on ``rate > 0`` in Python, so a traced rate cannot simply be assigned. The
  engine therefore traces a private *template* model in which, during tracing only, every Dropout layer
  calls ``_dropout`` below with the traced rate and every L2 regularizer holds the traced factor
  (``_traced_hyperparameters``). The trial's own model is never altered: it supplies the initial variable
  values and receives the trained ones.
So two trials that differ only in learning rate, dropout rate or L2 strength run the same compiled programs
(no retrace, no recompile); a different width, unit count, batch size, augmentation setting, precision or
data size compiles anew. Within one process the programs stay in ``_PROGRAMS`` (ahead-of-time compiled, so
the compile time is measured apart: ``info["compile_seconds"]``). Across processes (``--jobs N``, reruns,
``compare``), JAX's persistent compilation cache under ``storage/jax_cache`` turns the compilation of an
identical program into a disk read (JAX's defaults apply: programs that compiled in under a second are not
written; ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` changes that). Keras's model building (weight
initialization) and the Python tracing of a new structure are not cached. The caches are per process and
not thread-safe (tracing briefly alters the template): run trials in parallel as processes (``--jobs``).

Precision: ``bf16`` builds the model under Keras's ``mixed_bfloat16`` policy: float32 master weights and
Adam state, bfloat16 compute; the softmax output is cast to float32 before the loss. bfloat16 has float32's
exponent range, so no loss scaling is needed.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np

from cifar_tune import choices, progress
from cifar_tune.engines import base, optimizers, seeding
from cifar_tune.engines.jax_program import (
    Program,
    compiled,
    make_program,
    optimizer_for,
    program_key,
    values_match_config,
)
from cifar_tune.models import architectures

CACHE_DIR = choices.JAX_CACHE_DIR
EVAL_BATCH = 1024  # validation batch (smaller validation sets use one batch of their own size)


_PROGRAMS: dict[tuple, Program] = {}
_DEVICE_DATA: dict = {}  # "train" / "val" -> (host x, host y, device arrays): see _device_data


@dataclass
class _Run:
    """One training run's device state: the data, the compiled programs and the traced hyperparameters."""

    state: tuple  # (trainable, non-trainable, optimizer variables): consumed and replaced by every step
    data: tuple  # device arrays: train x, y; validation x, y, mask
    hp: dict  # the traced hyperparameter values
    shuffle_key: object
    shuffle: Callable
    train_steps: Callable
    evaluate: Callable
    steps: int  # training steps in an epoch
    k: tuple[int, int]  # steps per call: training, validation (whole epoch, or 1 on CPU)
    info: dict


def _setup(program: Program, model, optimizer, config: dict, arrays: tuple, *, epochs: int, seed: int) -> _Run:
    """Upload the data, draw the initial state from the trial's model and compile the programs for its shapes."""
    import jax

    x_train, y_train, x_val, y_val = arrays
    data_start = time.perf_counter()
    xt, yt, xv, yv, mv = _device_data(x_train, y_train, x_val, y_val)
    upload_seconds = time.perf_counter() - data_start
    batch = int(config["batch_size"])
    steps = math.ceil(len(x_train) / batch)
    hp = {"dropout": np.float32(config.get("dropout", 0.0)), "l2": np.float32(config.get("l2", 0.0)),
          "weight_decay": np.float32(config["weight_decay"] if config["optimizer"] == "adamw" else 0.0),
          **{k: np.float32(v) for k, v in optimizers.schedule_values(config, epochs * steps).items()}}
    state = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
             [v.value for v in optimizer.variables])
    state = jax.tree.map(jax.numpy.copy, state)  # train_steps donates (consumes) its state: keep the model's own
    platform = jax.devices()[0].platform
    mode = _loop_mode(platform)
    k = (steps, xv.shape[0]) if mode == "epoch" else (1, 1)
    shuffle_key = jax.random.key(seed)
    compile_start, known = time.perf_counter(), set(program.compiled)
    shuffle = compiled(program, "shuffle", shuffle_key, np.int32(0), yt, batch_size=batch)
    batches_shape = jax.ShapeDtypeStruct((steps, batch), np.int32)
    train_steps = compiled(program, "train_steps", state, xt, yt, batches_shape, np.int32(0), hp, k=k[0])
    evaluate = compiled(program, "evaluate", state[0], state[1], xv, yv, mv, np.int32(0), hp, k=k[1])
    info = {"backend": "jax", "device": platform, "loop": mode,
            # what this run compiled (reused executables cost nothing), the seconds it took
            "compiled": sorted(sig[0] for sig in set(program.compiled) - known),
            "compile_seconds": round(time.perf_counter() - compile_start, 3),
            "upload_seconds": round(upload_seconds, 3), "steps_per_epoch": steps,
            "ragged_batch": "padded by wrap-around"}
    return _Run(state, (xt, yt, xv, yv, mv), hp, shuffle_key, shuffle, train_steps, evaluate, steps, k, info)


def _epoch(run: _Run, epoch: int, n_val: int) -> dict[str, float]:
    """Train one epoch and validate: -> Keras-style logs (one host sync)."""
    import jax

    xt, yt, xv, yv, mv = run.data
    batches = run.shuffle(run.shuffle_key, np.int32(epoch), yt)
    train_sums = []
    for first in range(0, run.steps, run.k[0]):  # one call per epoch, or one per batch (see _loop_mode)
        run.state, loss_sum, acc_sum = run.train_steps(run.state, xt, yt, batches, np.int32(first), run.hp)
        train_sums.append((loss_sum, acc_sum))
    val_sums = [run.evaluate(run.state[0], run.state[1], xv, yv, mv, np.int32(first), run.hp)
                for first in range(0, xv.shape[0], run.k[1])]
    train_sums, val_sums = jax.device_get((train_sums, val_sums))  # the one host sync per epoch
    logs = {"loss": sum(s[0] for s in train_sums) / run.steps,
            "accuracy": sum(s[1] for s in train_sums) / run.steps,
            "val_loss": sum(s[0] for s in val_sums) / n_val + val_sums[0][2],
            "val_accuracy": sum(s[1] for s in val_sums) / n_val}
    return {k: float(v) for k, v in logs.items()}


def train(spec: base.TrainSpec, x_train, y_train, x_val, y_val, callbacks: list, resume: base.Resume | None = None,
          checkpoint=None) -> base.TrainResult:
    """Train ``spec`` in the device-resident loop (``engines.train``'s contract). A resumed run restores the
    trial's model and optimizer before their values become the device state, and goes on at epoch
    ``resume.epoch`` with the same (seed, epoch) shuffle keys, so it repeats the uninterrupted run."""
    arch, config, epochs, precision = spec.arch, spec.config, spec.epochs, spec.precision
    _enable_persistent_cache()
    start = time.perf_counter()
    seeding.set_random_seed(spec.seed)
    with base.precision_policy(precision):
        # The trial's model is built first, right after seeding, so its initial weights and seeds do not depend
        # on whether the program cache was warm.
        model = architectures.get(arch).build(config)
        optimizer, _ = optimizer_for(model)
        if resume is not None:
            resume.restore(model, optimizer)
        inject = values_match_config(model, config)
        key = program_key(arch, config, precision, inject)
        reused = key in _PROGRAMS
        if not reused:
            _PROGRAMS[key] = make_program(arch, config, inject)
    run = _setup(_PROGRAMS[key], model, optimizer, config, (x_train, y_train, x_val, y_val), epochs=epochs,
                 seed=spec.seed)
    history: dict[str, list[float]] = {k: list((resume.history if resume else {}).get(k, []))
                                       for k in ("loss", "accuracy", "val_loss", "val_accuracy")}
    model.stop_training = False
    for cb in callbacks:
        if hasattr(cb, "set_model"):
            cb.set_model(model)
        cb.on_train_begin({})
    logs: dict[str, float] = {}
    for epoch in range(resume.epoch if resume else 0, epochs):
        for cb in callbacks:
            cb.on_epoch_begin(epoch, {})
        logs = _epoch(run, epoch, len(x_val))
        for k, v in logs.items():
            history[k].append(v)
        _write_back(model, run.state)  # arrays are rebound, not copied: callbacks see this epoch's weights (read
        # them now: the next epoch's train_steps consumes these buffers; the last epoch's are the model's for good)
        if spec.verbose:
            progress.info(f"epoch {epoch + 1}/{epochs} " + " ".join(f"{k} {v:.4f}" for k, v in logs.items()))
        for cb in callbacks:
            cb.on_epoch_end(epoch, logs)  # optuna.TrialPruned raised here propagates to the objective
        if model.stop_training:  # e.g. keras.callbacks.EarlyStopping
            break
        if checkpoint is not None:
            checkpoint(_state_after(epoch + 1, run.state, history))
    for cb in callbacks:
        cb.on_train_end(dict(logs))
    optimizers.compile_model(model, config)  # like the keras engine: evaluate() works too
    return base.TrainResult(model, history, time.perf_counter() - start, len(history["loss"]), engine="fast",
                            precision=precision, info={**run.info, "program_reused": reused})


def _state_after(epoch: int, state, history: dict) -> base.Resume:
    """The run's state as host arrays (copied now: the next epoch's step consumes the device buffers)."""
    import jax

    trainable, non_trainable, opt_vars = jax.device_get(state)
    return base.Resume(epoch, [np.array(a) for a in (*trainable, *non_trainable)], [np.array(a) for a in opt_vars],
                       {k: list(v) for k, v in history.items()})


def _enable_persistent_cache() -> None:
    """Point JAX's persistent compilation cache at storage/jax_cache unless the user chose a directory, and keep
    every program in it: JAX skips programs that compile in under a second by default, yet a study's many small
    ones add up in every new worker process ($JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS still wins)."""
    import jax

    if not jax.config.jax_compilation_cache_dir:
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(CACHE_DIR.resolve()))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def _loop_mode(platform: str) -> str:
    """'epoch' (one compiled call per epoch) or 'step' (one per batch); $CIFAR_TUNE_FAST_LOOP overrides.

    'step' on CPU because XLA:CPU runs the convolutions inside a loop (``lax.scan``) several times slower than
    at top level: measured on a 2-core CPU (JAX 0.10.2), 8 steps of the cnn at batch 32 took 3.6-4.9 s as one
    scan and 0.6 s as 8 calls of a jitted step. On CPU a per-batch dispatch (about a millisecond at most) is
    small against the compute, so little is lost; on accelerators the whole epoch is one program.
    """
    mode = os.environ.get(choices.FAST_LOOP_ENV, choices.FAST_LOOPS[0])
    if mode not in choices.FAST_LOOPS:
        raise ValueError(f"{choices.FAST_LOOP_ENV} must be one of {', '.join(choices.FAST_LOOPS)}, not {mode!r}")
    if mode == "auto":
        mode = "step" if platform == "cpu" else "epoch"
    return mode


def _device_data(x_train, y_train, x_val, y_val):
    """Device copies: uint8 images, int32 labels; validation padded to whole batches, with a 0/1 mask.

    Kept in two one-slot caches keyed by the identity of the host arrays, so the trials of one study upload
    the training set once (callers must not modify an array in place between trials).
    """
    return _upload("train", x_train, y_train, _train_arrays) + _upload("val", x_val, y_val, _val_arrays)


def _upload(slot: str, x, y, prepare) -> tuple:
    import jax

    cached = _DEVICE_DATA.get(slot)
    if cached is None or cached[0] is not x or cached[1] is not y:
        cached = (x, y, jax.block_until_ready(tuple(jax.device_put(a) for a in prepare(x, y))))
        _DEVICE_DATA[slot] = cached
    return cached[2]


def _train_arrays(x, y):
    return np.asarray(x, np.uint8), np.asarray(y, np.int32)


def _val_arrays(x, y):
    n = len(x)
    batch = min(EVAL_BATCH, n)
    n_batches = -(-n // batch)
    pad = n_batches * batch - n
    xv = np.concatenate([np.asarray(x, np.uint8), np.zeros((pad, *x.shape[1:]), np.uint8)])
    yv = np.concatenate([np.asarray(y, np.int32), np.zeros(pad, np.int32)])
    mask = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    return (xv.reshape(n_batches, batch, *x.shape[1:]), yv.reshape(n_batches, batch),
            mask.reshape(n_batches, batch))


def _write_back(model: keras.Model, state) -> None:
    """Point the model's Keras variables at the trained arrays (JAX arrays are immutable: nothing is copied)."""
    trainable, non_trainable, _ = state
    for variables, values in ((model.trainable_variables, trainable), (model.non_trainable_variables, non_trainable)):
        for variable, value in zip(variables, values, strict=True):
            variable.assign(value)
