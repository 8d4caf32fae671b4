"""The fast engine's compiled programs on JAX: one per model structure, traced from a private template model.

Learning rate, schedule, weight decay, dropout rate and L2 factor enter the programs as traced values, so trials
that differ only in them reuse one compiled program (see ``jax_loop.py``'s docstring for the whole story).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import keras

from cifar_tune.engines import optimizers
from cifar_tune.models import architectures

# traced values, not part of the program key
VALUE_PARAMS = ("learning_rate", "dropout", "l2", "optimizer", "weight_decay", "lr_schedule")
# shapes, not part of the program key either: a Program's executables are compiled per argument shape
# (``compiled``), so a new batch size compiles the training step and the shuffle again, never evaluation
SHAPE_PARAMS = ("batch_size",)


@dataclass
class Program:
    """Compiled programs for one model structure: the template they were traced from and the executables."""

    template: keras.Model  # private to the engine; traced with the trial's variable values, never trained itself
    optimizer: keras.optimizers.Optimizer
    inject: bool  # whether dropout / l2 enter as traced values (see _traced_hyperparameters)
    shuffle: Callable  # (key, epoch, labels) -> this epoch's batches of indices
    train_steps: Callable  # (state, x, y, batches, first, hp; k) -> state after k steps, summed loss, accuracy
    evaluate: Callable  # (weights, x, y, mask, first, hp; k) -> sums over k validation batches
    compiled: dict = field(default_factory=dict)  # (name, arg shapes, k) -> AOT-compiled executable

def program_key(arch: str, config: dict, precision: str, inject: bool) -> tuple:
    """What decides a program: the structure-changing config values (all but the batch size without injection:
    the values are then constants of the program)."""
    if not inject:
        return arch, precision, tuple(sorted((k, v) for k, v in config.items() if k not in SHAPE_PARAMS))
    structure = tuple(sorted((k, v) for k, v in config.items() if k not in VALUE_PARAMS + SHAPE_PARAMS))
    return arch, precision, structure, config.get("dropout", 0) > 0, config.get("l2", 0) > 0


def _layers(model: keras.Model) -> list:
    """Every layer of ``model``, nested models flattened."""
    out = []
    for layer in model.layers:
        out.extend(_layers(layer) if hasattr(layer, "layers") else [layer])
    return out


def _l2_regularizers(model: keras.Model) -> list:
    return [v.regularizer for v in model.trainable_variables if isinstance(v.regularizer, keras.regularizers.L2)]


def values_match_config(model: keras.Model, config: dict) -> bool:
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
        for r, value in zip(regularizers, saved, strict=True):
            r.l2 = value


def optimizer_for(model: keras.Model) -> tuple[keras.optimizers.Optimizer, optimizers.Schedule]:
    """AdamW over a ``Schedule`` for every trial: Adam is AdamW with weight decay 0 (the update is identical)
    and a constant rate is a schedule without warm-up or decay, so one program serves all (values traced)."""
    schedule = optimizers.Schedule(1e-3, 1)
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=0.0)
    optimizer.exclude_from_weight_decay(var_names=optimizers.NO_DECAY)
    optimizer.build(model.trainable_variables)
    return optimizer, schedule


@contextlib.contextmanager
def _traced_optimizer(optimizer: keras.optimizers.Optimizer, schedule: optimizers.Schedule, hp: dict):
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


def make_program(arch: str, config: dict, inject: bool) -> Program:
    """Build the template model and the jitted functions for one structure (compiled later, per shape and batch
    size: ``compiled``)."""
    import jax
    import jax.numpy as jnp

    template = architectures.get(arch).build(config)
    optimizer, schedule = optimizer_for(template)

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

    def shuffle(key, epoch, y, *, batch_size):
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
    return Program(template, optimizer, inject, jax.jit(shuffle, static_argnames="batch_size"),
                    jax.jit(train_steps, static_argnames="k", donate_argnums=0),
                    jax.jit(evaluate, static_argnames="k"))


def _loop(body, carry, xs):
    """``jax.lax.scan(body, carry, xs)``, except that a single step is traced without a loop (see _loop_mode)."""
    import jax

    if jax.tree.leaves(xs)[0].shape[0] == 1:
        carry, out = body(carry, jax.tree.map(lambda a: a[0], xs))
        return carry, jax.tree.map(lambda a: a[None], out)
    return jax.lax.scan(body, carry, xs)

def compiled(program: Program, name: str, *args, **static) -> Callable:
    """The AOT-compiled executable of ``program.name`` for these argument shapes (compiled on first use)."""
    import jax

    leaves, structure = jax.tree.flatten(args)
    signature = (name, str(structure), tuple((tuple(a.shape), str(a.dtype)) for a in leaves),
                 tuple(sorted(static.items())))
    if signature not in program.compiled:
        program.compiled[signature] = getattr(program, name).lower(*args, **static).compile()
    return program.compiled[signature]
