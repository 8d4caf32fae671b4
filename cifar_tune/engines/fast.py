"""The fast engine: a device-resident training loop, one compiled program per epoch (JAX backend).

Same inputs and outputs as ``engines.train`` with ``engine="keras"`` (uint8 arrays in, ``TrainResult`` out,
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

TensorFlow backend: the closest compiled equivalent Keras offers: ``fit`` with ``steps_per_execution`` =
steps per epoch (one host round trip per epoch instead of per batch) and Keras's own ``jit_compile="auto"``
(XLA on GPU), fed uint8 images that a ``Rescaling`` layer scales inside the compiled step. The data still
stream through tf.data from host memory: not device-resident. Other backends fall back to the keras engine
with a one-line notice.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import keras
import numpy as np

from .. import architectures, names
from . import base

CACHE_DIR = names.JAX_CACHE_DIR
# traced values, not part of the program key
VALUE_PARAMS = ("learning_rate", "dropout", "l2", "optimizer", "weight_decay", "lr_schedule")
EVAL_BATCH = 1024  # validation batch (smaller validation sets use one batch of their own size)


def train(arch: str, config: dict, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
          y_val: np.ndarray, *, epochs: int, seed: int = 0, callbacks: list | None = None, verbose: int = 0,
          precision: str = "float32") -> base.TrainResult:
    """Train ``arch`` with a complete ``config`` on uint8 arrays in the backend's fastest loop (the contract of
    ``engines.train``, which completes the config)."""
    args = (arch, config, x_train, y_train, x_val, y_val)
    kwargs = dict(epochs=epochs, seed=seed, callbacks=list(callbacks or []), verbose=verbose, precision=precision)
    backend = keras.backend.backend()
    if backend == "jax":
        return _train_jax(*args, **kwargs)
    if backend == "tensorflow":
        return _train_tensorflow(*args, **kwargs)
    print(f"cifar-tune: the fast engine has no {backend} loop; using the keras engine", file=sys.stderr)
    return base.train_keras(*args, **kwargs)


def memory_share_env(n_jobs: int) -> dict[str, str]:
    """Environment variables that give each of ``n_jobs`` worker processes its share of one GPU's memory."""
    if n_jobs <= 1:
        return {}
    # JAX preallocates 75% of the GPU by default: a second process would find too little. Each worker instead
    # takes an equal slice of 90% (10% left for the CUDA contexts); the fraction caps its allocator either way.
    share = math.floor(90 / n_jobs) / 100
    return {
        "XLA_PYTHON_CLIENT_PREALLOCATE": "true",  # claim the slice up front: workers cannot starve each other
        "XLA_PYTHON_CLIENT_MEM_FRACTION": f"{share:.2f}",
        "TF_FORCE_GPU_ALLOW_GROWTH": "true",  # TensorFlow has no per-process fraction variable; grow on demand
    }


# --- JAX: the device-resident loop ---------------------------------------------------------------------------


@dataclass
class _Program:
    """Compiled programs for one model structure: the template they were traced from and the executables."""

    template: keras.Model  # private to the engine; traced with the trial's variable values, never trained itself
    optimizer: keras.optimizers.Optimizer
    inject: bool  # whether dropout / l2 enter as traced values (see _traced_hyperparameters)
    shuffle: Callable  # (key, epoch, labels) -> this epoch's batches of indices
    train_steps: Callable  # (state, x, y, batches, first, hp; k) -> state after k steps, summed loss, accuracy
    evaluate: Callable  # (weights, x, y, mask, first, hp; k) -> sums over k validation batches
    compiled: dict = field(default_factory=dict)  # (name, arg shapes, k) -> AOT-compiled executable


_PROGRAMS: dict[tuple, _Program] = {}
_DEVICE_DATA: dict = {}  # "train" / "val" -> (host x, host y, device arrays): see _device_data


def _train_jax(arch, config, x_train, y_train, x_val, y_val, *, epochs, seed, callbacks, verbose, precision):
    import jax

    _enable_persistent_cache()
    start = time.perf_counter()
    keras.utils.set_random_seed(seed)
    with base.precision_policy(precision):
        # The trial's model is built first, right after seeding, so its initial weights and seeds do not depend
        # on whether the program cache was warm.
        model = architectures.get(arch).build(config)
        optimizer, _ = _optimizer(model)
        inject = _values_match_config(model, config)
        key = _program_key(arch, config, precision, inject)
        reused = key in _PROGRAMS
        if not reused:
            _PROGRAMS[key] = _make_program(arch, config, int(config["batch_size"]), inject)
    program = _PROGRAMS[key]

    data_start = time.perf_counter()
    xt, yt, xv, yv, mv = _device_data(x_train, y_train, x_val, y_val)
    upload_seconds = time.perf_counter() - data_start
    steps = math.ceil(len(x_train) / int(config["batch_size"]))
    hp = {"dropout": np.float32(config.get("dropout", 0.0)), "l2": np.float32(config.get("l2", 0.0)),
          "weight_decay": np.float32(config["weight_decay"] if config["optimizer"] == "adamw" else 0.0),
          **{k: np.float32(v) for k, v in base.schedule_values(config, epochs * steps).items()}}
    state = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
             [v.value for v in optimizer.variables])
    state = jax.tree.map(jax.numpy.copy, state)  # train_steps donates (consumes) its state: keep the model's own
    shuffle_key = jax.random.key(seed)
    platform = jax.devices()[0].platform
    mode = _loop_mode(platform)
    val_batches = xv.shape[0]
    k_train, k_val = (steps, val_batches) if mode == "epoch" else (1, 1)

    compile_start = time.perf_counter()
    shuffle = _compiled(program, "shuffle", shuffle_key, np.int32(0), yt)
    batches_shape = jax.ShapeDtypeStruct((steps, int(config["batch_size"])), np.int32)
    train_steps = _compiled(program, "train_steps", state, xt, yt, batches_shape, np.int32(0), hp, k=k_train)
    evaluate = _compiled(program, "evaluate", state[0], state[1], xv, yv, mv, np.int32(0), hp, k=k_val)
    compile_seconds = time.perf_counter() - compile_start

    history: dict[str, list[float]] = {k: [] for k in ("loss", "accuracy", "val_loss", "val_accuracy")}
    model.stop_training = False
    for cb in callbacks:
        if hasattr(cb, "set_model"):
            cb.set_model(model)
        cb.on_train_begin({})
    epochs_run = 0
    for epoch in range(epochs):
        for cb in callbacks:
            cb.on_epoch_begin(epoch, {})
        batches = shuffle(shuffle_key, np.int32(epoch), yt)
        train_sums = []
        for first in range(0, steps, k_train):  # one call per epoch, or one per batch (see _loop_mode)
            state, loss_sum, acc_sum = train_steps(state, xt, yt, batches, np.int32(first), hp)
            train_sums.append((loss_sum, acc_sum))
        val_sums = [evaluate(state[0], state[1], xv, yv, mv, np.int32(first), hp)
                    for first in range(0, val_batches, k_val)]
        train_sums, val_sums = jax.device_get((train_sums, val_sums))  # the one host sync per epoch
        logs = {"loss": sum(s[0] for s in train_sums) / steps, "accuracy": sum(s[1] for s in train_sums) / steps,
                "val_loss": sum(s[0] for s in val_sums) / len(x_val) + val_sums[0][2],
                "val_accuracy": sum(s[1] for s in val_sums) / len(x_val)}
        logs = {k: float(v) for k, v in logs.items()}
        for k, v in logs.items():
            history[k].append(v)
        epochs_run += 1
        _write_back(model, state)  # arrays are rebound, not copied: callbacks see this epoch's weights (read them
        # now: the next epoch's train_steps consumes these buffers, and the last epoch's are the model's for good)
        if verbose:
            print(f"epoch {epoch + 1}/{epochs} " + " ".join(f"{k} {v:.4f}" for k, v in logs.items()))
        for cb in callbacks:
            cb.on_epoch_end(epoch, logs)  # optuna.TrialPruned raised here propagates to the objective
        if model.stop_training:  # e.g. keras.callbacks.EarlyStopping
            break
    for cb in callbacks:
        cb.on_train_end(dict(logs) if epochs_run else {})
    seconds = time.perf_counter() - start
    base.compile_model(model, config)  # like the keras engine: evaluate() works too
    info = {"backend": "jax", "device": platform, "loop": mode, "compile_seconds": round(compile_seconds, 3),
            "program_reused": reused, "upload_seconds": round(upload_seconds, 3), "steps_per_epoch": steps,
            "ragged_batch": "padded by wrap-around"}
    return base.TrainResult(model, history, seconds, epochs_run, engine="fast", precision=precision, info=info)


def _enable_persistent_cache() -> None:
    """Point JAX's persistent compilation cache at storage/jax_cache unless the user chose a directory."""
    import jax

    if not jax.config.jax_compilation_cache_dir:
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(CACHE_DIR.resolve()))


def _program_key(arch: str, config: dict, precision: str, inject: bool) -> tuple:
    """What decides a compiled program: the structure-changing config values (all of them without injection)."""
    if not inject:
        return arch, precision, tuple(sorted(config.items()))
    structure = tuple(sorted((k, v) for k, v in config.items() if k not in VALUE_PARAMS))
    return arch, precision, structure, config.get("dropout", 0) > 0, config.get("l2", 0) > 0


def _layers(model: keras.Model) -> list:
    """Every layer of ``model``, nested models flattened."""
    out = []
    for layer in model.layers:
        out.extend(_layers(layer) if hasattr(layer, "layers") else [layer])
    return out


def _l2_regularizers(model: keras.Model) -> list:
    return [v.regularizer for v in model.trainable_variables if isinstance(v.regularizer, keras.regularizers.L2)]


def _values_match_config(model: keras.Model, config: dict) -> bool:
    """True when every Dropout rate and L2 factor of ``model`` is the config's: then they can be injected."""
    rates = {layer.rate for layer in _layers(model) if isinstance(layer, keras.layers.Dropout)}
    factors = {float(r.l2) for r in _l2_regularizers(model)}
    return rates <= {config.get("dropout")} and all(math.isclose(f, config.get("l2", 0)) for f in factors)


def _dropout(layer: keras.layers.Dropout, rate):
    """Dropout with a traced ``rate`` (Keras's ``Dropout.call`` needs a Python float); same math as Keras's."""
    def call(inputs, training=False):
        if not training:
            return inputs
        keep = 1.0 - keras.ops.cast(rate, "float32")
        shape = keras.ops.shape(inputs)
        if layer.noise_shape is not None:
            shape = tuple(d if d is not None else shape[i] for i, d in enumerate(layer.noise_shape))
        mask = keras.random.uniform(shape, seed=layer.seed_generator) < keep  # Bernoulli(keep), as Keras draws
        return keras.ops.where(mask, inputs / keras.ops.cast(keep, inputs.dtype), keras.ops.zeros_like(inputs))
    return call


@contextlib.contextmanager
def _traced_hyperparameters(model: keras.Model, hp: dict, inject: bool):
    """While tracing, make ``model``'s Dropout layers and L2 regularizers read the traced values in ``hp``."""
    if not inject:
        yield
        return
    dropouts = [layer for layer in _layers(model) if isinstance(layer, keras.layers.Dropout)]
    regularizers = _l2_regularizers(model)
    saved = [r.l2 for r in regularizers]
    for layer in dropouts:
        layer.call = _dropout(layer, hp["dropout"])  # an instance attribute shadows Dropout.call
    for r in regularizers:
        r.l2 = hp["l2"]
    try:
        yield
    finally:
        for layer in dropouts:
            del layer.call
        for r, value in zip(regularizers, saved):
            r.l2 = value


def _optimizer(model: keras.Model) -> tuple[keras.optimizers.Optimizer, base.Schedule]:
    """AdamW over a ``Schedule`` for every trial: Adam is AdamW with weight decay 0 (the update is identical)
    and a constant rate is a schedule without warm-up or decay, so one program serves all (values traced)."""
    schedule = base.Schedule(1e-3, 1)
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=0.0)
    optimizer.exclude_from_weight_decay(var_names=base.NO_DECAY)
    optimizer.build(model.trainable_variables)
    return optimizer, schedule


@contextlib.contextmanager
def _traced_optimizer(optimizer: keras.optimizers.Optimizer, schedule: base.Schedule, hp: dict):
    """While tracing, the template optimizer's schedule and weight decay read the traced values in ``hp``."""
    saved = dict(vars(schedule)), optimizer.weight_decay
    for key in ("learning_rate", "total_steps", "warmup_steps", "cosine"):
        setattr(schedule, key, hp[key])
    optimizer.weight_decay = hp["weight_decay"]
    try:
        yield
    finally:
        vars(schedule).update(saved[0])
        optimizer.weight_decay = saved[1]


def _make_program(arch: str, config: dict, batch_size: int, inject: bool) -> _Program:
    """Build the template model and the jitted functions for one structure (compiled later, per shape)."""
    import jax
    import jax.numpy as jnp

    template = architectures.get(arch).build(config)
    optimizer, schedule = _optimizer(template)

    def scaled(x):
        return x.astype("float32") / 255.0

    def loss_and_state(trainable, non_trainable, x, y):
        y_pred, non_trainable, extra_losses = template.stateless_call(
            trainable, non_trainable, scaled(x), training=True, return_losses=True)
        y_pred = y_pred.astype("float32")  # bf16 softmax -> float32 loss
        loss = jnp.mean(keras.losses.sparse_categorical_crossentropy(y, y_pred))
        loss = loss + sum(extra_losses)  # L2 penalties, as fit adds them
        accuracy = jnp.mean(jnp.argmax(y_pred, axis=-1) == y)
        return loss, (non_trainable, accuracy)

    grad_fn = jax.value_and_grad(loss_and_state, has_aux=True)

    def shuffle(key, epoch, y):
        """This epoch's batches of image indices, (steps, batch_size), drawn on the device."""
        n = y.shape[0]
        steps = -(-n // batch_size)
        perm = jax.random.permutation(jax.random.fold_in(key, epoch), n)
        return perm[jnp.arange(steps * batch_size) % n].reshape(steps, batch_size)  # wrap-around padding

    def train_steps(state, x, y, batches, first, hp, *, k):
        """Run ``k`` training steps from batch ``first``: -> new state, summed loss and accuracy."""
        def step(state, idx):
            trainable, non_trainable, opt_vars = state
            (loss, (non_trainable, accuracy)), grads = grad_fn(trainable, non_trainable, x[idx], y[idx])
            trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
            return (trainable, non_trainable, opt_vars), (loss, accuracy)

        with _traced_hyperparameters(template, hp, inject), _traced_optimizer(optimizer, schedule, hp):
            state, (losses, accuracies) = _loop(step, state, jax.lax.dynamic_slice_in_dim(batches, first, k))
        return state, jnp.sum(losses), jnp.sum(accuracies)  # equal batches: fit's epoch mean = sum / steps

    def evaluate(trainable, non_trainable, x, y, mask, first, hp, *, k):
        """Evaluate ``k`` validation batches from ``first``: -> summed cross-entropy, summed hits, L2 penalty."""
        def step(_, batch):
            xb, yb, mb = batch
            y_pred, _, extra_losses = template.stateless_call(
                trainable, non_trainable, scaled(xb), training=False, return_losses=True)
            y_pred = y_pred.astype("float32")
            ce = keras.losses.sparse_categorical_crossentropy(yb, y_pred)
            correct = (jnp.argmax(y_pred, axis=-1) == yb).astype("float32")
            penalty = jnp.float32(0) + sum(extra_losses)  # fit's val_loss includes the L2 penalty too
            return None, (jnp.sum(ce * mb), jnp.sum(correct * mb), penalty)

        with _traced_hyperparameters(template, hp, inject):
            chunk = tuple(jax.lax.dynamic_slice_in_dim(a, first, k) for a in (x, y, mask))
            _, (ce, correct, penalty) = _loop(step, None, chunk)
        return jnp.sum(ce), jnp.sum(correct), penalty[0]

    # donate_argnums: the old state's buffers are reused for the new one (as Keras's own trainer does); without
    # it every step allocates fresh weights and Adam moments, which on CPU doubled the MLPs' step time.
    return _Program(template, optimizer, inject, jax.jit(shuffle),
                    jax.jit(train_steps, static_argnames="k", donate_argnums=0),
                    jax.jit(evaluate, static_argnames="k"))


def _loop(body, carry, xs):
    """``jax.lax.scan(body, carry, xs)``, except that a single step is traced without a loop (see _loop_mode)."""
    import jax

    if jax.tree.leaves(xs)[0].shape[0] == 1:
        carry, out = body(carry, jax.tree.map(lambda a: a[0], xs))
        return carry, jax.tree.map(lambda a: a[None], out)
    return jax.lax.scan(body, carry, xs)


def _loop_mode(platform: str) -> str:
    """'epoch' (one compiled call per epoch) or 'step' (one per batch); $CIFAR_TUNE_FAST_LOOP overrides.

    'step' on CPU because XLA:CPU runs the convolutions inside a loop (``lax.scan``) several times slower than
    at top level: measured on a 2-core CPU (JAX 0.10.2), 8 steps of the cnn at batch 32 took 3.6-4.9 s as one
    scan and 0.6 s as 8 calls of a jitted step. On CPU a per-batch dispatch (about a millisecond at most) is
    small against the compute, so little is lost; on accelerators the whole epoch is one program.
    """
    mode = os.environ.get("CIFAR_TUNE_FAST_LOOP", "auto")
    if mode not in ("auto", "epoch", "step"):
        raise ValueError(f"CIFAR_TUNE_FAST_LOOP must be auto, epoch or step, not {mode!r}")
    if mode == "auto":
        mode = "step" if platform == "cpu" else "epoch"
    return mode


def _compiled(program: _Program, name: str, *args, **static) -> Callable:
    """The AOT-compiled executable of ``program.name`` for these argument shapes (compiled on first use)."""
    import jax

    leaves, structure = jax.tree.flatten(args)
    signature = (name, str(structure), tuple((tuple(a.shape), str(a.dtype)) for a in leaves),
                 tuple(sorted(static.items())))
    if signature not in program.compiled:
        program.compiled[signature] = getattr(program, name).lower(*args, **static).compile()
    return program.compiled[signature]


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
        for variable, value in zip(variables, values):
            variable.assign(value)


# --- TensorFlow: Keras's own compiled loop -------------------------------------------------------------------


def _train_tensorflow(arch, config, x_train, y_train, x_val, y_val, *, epochs, seed, callbacks, verbose,
                      precision):
    keras.utils.set_random_seed(seed)
    with base.precision_policy(precision):
        model = architectures.get(arch).build(config)
        # uint8 in, scaled inside the compiled step: a quarter of the host-to-device traffic of float32 pixels.
        # The returned model is the inner one, which takes [0, 1] floats like the keras engine's.
        wrapper = keras.Sequential([keras.Input(architectures.INPUT_SHAPE, dtype="uint8"),
                                    keras.layers.Rescaling(1 / 255.0, dtype="float32"), model])
        batch_size = int(config["batch_size"])
        steps = math.ceil(len(x_train) / batch_size)
        wrapper.compile(optimizer=base.make_optimizer(config, epochs * steps),
                        loss="sparse_categorical_crossentropy", metrics=["accuracy"], steps_per_execution=steps)
        start = time.perf_counter()
        hist = wrapper.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, validation_data=(x_val, y_val),
                           callbacks=callbacks, verbose=verbose, shuffle=True)
        seconds = time.perf_counter() - start
    base.compile_model(model, config)
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    info = {"backend": "tensorflow", "device": base.device_name(), "steps_per_execution": steps,
            "ragged_batch": "smaller last batch (fit)"}
    return base.TrainResult(model, history, seconds, len(history.get("loss", [])), engine="fast",
                            precision=precision, info=info)
