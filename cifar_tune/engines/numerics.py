"""Numerics first: before a study trusts a device, check that it computes each architecture right.

``check`` runs every architecture's forward pass and one training step in each precision, eagerly (op by op)
and compiled (``jax.jit``; ``tf.function`` on TensorFlow), on the backend's default device, and compares each
with a float32 reference computed eagerly on the CPU from the same weights and the same batch. ``require``
raises a one-line ``UserError`` for the first row that is off (a non-finite value, or an error over the
precision's tolerance). Results are cached per (backend, device, backend version, Keras version) in the user's
cache folder (``cache_path``: ``~/.cache/cifar-tune/numerics/<key>.json`` on Linux), failures included, so every
worker of a study, and every study in any working folder, does not redo them.

Why: JAX 0.11.x/0.12.x on XLA:CPU computes a compiled bf16 conv+relu+max-pool with NaN/inf values scattered
at random (issue 21): the ResNet's validation loss was NaN in bf16 with both engines, and a study would have
trained through it. ``CIFAR_TUNE_SKIP_NUMERICS=1`` skips ``verify`` (the worker's check).
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np

from cifar_tune import progress
from cifar_tune.choices import ARCH_KEYS, PRECISIONS
from cifar_tune.data import safe_files
from cifar_tune.engines import base, seeding
from cifar_tune.errors import UserError
from cifar_tune.models import architectures
from cifar_tune.runtime import devices

SKIP_ENV = "CIFAR_TUNE_SKIP_NUMERICS"  # "1": ``verify`` (the worker's check) does nothing
DIR_ENV = "CIFAR_TUNE_NUMERICS_DIR"  # the cache's folder, else the user's (cache_dir; the test suite shares one)
CHECK_VERSION = 1  # part of the cache key: a change to what is checked or to a tolerance invalidates old results
MODES = ("eager", "compiled")
WHATS = ("forward", "train step")
# Tolerances on the error (see ``Row``), per precision of the candidate. float32: a GPU may run float32
# convolutions and matmuls in TF32 (10-bit mantissa, JAX's default on Ampere and later), about 1e-3 relative
# per op; 1e-2 leaves room for that and still fails any real fault (wrong values are off by 0.1 and more).
# bf16: an 8-bit mantissa rounds every layer's activations by up to 2**-9 = 0.2%; through the ~10 layers of
# the ResNet the softmax outputs drift by ~1e-2 and gradients by a few percent; measured on this CPU (README),
# the worst bf16 row is 2-3x below 0.1.
TOLERANCE = {"float32": {"forward": 1e-2, "train step": 1e-2}, "bf16": {"forward": 5e-2, "train step": 0.5}}
COMPUTED: dict[tuple[str, str], int] = {}  # (arch, precision) -> times measured in this process (the cache skips)
_VERIFIED: set[tuple[str, str]] = set()  # what ``verify`` already passed in this process


@dataclass
class Row:
    """One comparison with the CPU float32 reference.

    ``what``: "forward" (the softmax outputs of a batch in inference mode; ``max_error`` = the largest absolute
    difference of a probability) or "train step" (training mode, BatchNorm on batch statistics; ``max_error`` =
    the larger of the loss's relative error and the largest gradient error relative to that variable's largest
    reference gradient). The step ends at the gradients, before the optimizer: Adam's first step moves each
    weight by about the learning rate times the gradient's sign, which would hide any error in the gradient's
    size, and under ``mixed_bfloat16`` it computes in float32 on float32 variables whatever the precision (and
    TensorFlow has no ``stateless_apply``). ``nonfinite``: the values that are NaN or inf (the outputs; the loss
    and gradients). ``max_error`` is taken over the entries finite on both sides (NaN when none are).
    """

    arch: str
    precision: str
    mode: str
    what: str
    max_error: float
    nonfinite: int
    tolerance: float
    seconds: float

    @property
    def ok(self) -> bool:
        return self.nonfinite == 0 and bool(self.max_error <= self.tolerance)


def backend_version() -> str:
    """``jax 0.12.0 (jaxlib 0.12.0)`` or ``tensorflow 2.21.0``: the backend that computes."""
    if keras.backend.backend() == "jax":
        import jax
        import jaxlib

        return f"jax {jax.__version__} (jaxlib {jaxlib.__version__})"
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return f"tensorflow {tf.__version__}"
    return keras.backend.backend()


def device_kind() -> str:
    """The device a candidate computes on: ``cpu`` or the accelerator's name (``NVIDIA H200``)."""
    if keras.backend.backend() == "jax":
        import jax

        device = jax.devices()[0]
        return device.platform if device.platform == "cpu" else f"{device.platform} {device.device_kind}"
    if devices.device_name() == "gpu":
        return "gpu " + (devices.nvidia_gpus() or ["GPU"])[0].split(",")[0]
    return "cpu"


def cache_dir() -> Path:
    """The cache's folder: ``$CIFAR_TUNE_NUMERICS_DIR``, else ``numerics`` in the user's cache folder
    (platformdirs: ``$XDG_CACHE_HOME`` or ``~/.cache/cifar-tune`` on Linux, ``~/Library/Caches/cifar-tune`` on
    macOS), never the working folder: a study in a new folder finds the check done, and a refused command leaves
    nothing behind."""
    import platformdirs

    return Path(os.environ.get(DIR_ENV) or platformdirs.user_cache_path("cifar-tune") / "numerics")


def cache_path() -> Path:
    """``<cache_dir>/<key>.json``: one file per backend, device (and machine type: a home folder may be shared by
    machines), backend version and Keras version."""
    import platform

    key = (f"{backend_version()}-{device_kind()} {platform.machine()}-keras {keras.__version__}"
           f"-v{CHECK_VERSION}")
    return cache_dir() / (re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("_") + ".json")


# --- the computations, per backend ---------------------------------------------------------------------------


def _loss(model: keras.Model, trainable, non_trainable, x, y):
    """The training loss (cross-entropy of the float32 softmax plus the L2 penalties, as ``fit`` computes it)."""
    probs, _, penalties = model.stateless_call(trainable, non_trainable, x, training=True, return_losses=True)
    probs = keras.ops.cast(probs, "float32")
    return keras.ops.mean(keras.losses.sparse_categorical_crossentropy(y, probs)) + sum(penalties)


def _functions(model: keras.Model, compiled: bool):
    """(forward, train_step) for the backend: forward(trainable, non_trainable, x) -> probabilities;
    train_step(trainable, non_trainable, x, y) -> (loss, gradients)."""

    def forward(trainable, non_trainable, x):
        return model.stateless_call(trainable, non_trainable, x, training=False)[0]

    if keras.backend.backend() == "jax":
        import jax

        def train_step(trainable, non_trainable, x, y):
            return jax.value_and_grad(lambda t: _loss(model, t, non_trainable, x, y))(trainable)

        return (jax.jit(forward), jax.jit(train_step)) if compiled else (forward, train_step)
    if keras.backend.backend() != "tensorflow":
        raise UserError(f"the numerics check runs on the jax and tensorflow backends, not {keras.backend.backend()}")
    import tensorflow as tf

    def tf_train_step(trainable, non_trainable, x, y):
        with tf.GradientTape() as tape:
            tape.watch(trainable)
            loss = _loss(model, trainable, non_trainable, x, y)
        return loss, tape.gradient(loss, trainable)

    if not compiled:
        return forward, tf_train_step
    xla = devices.device_name() == "gpu"  # Keras's own rule for jit_compile="auto": XLA on an accelerator only
    return tf.function(forward, jit_compile=xla), tf.function(tf_train_step, jit_compile=xla)


def _on_cpu():
    """A context in which the backend computes on the CPU (the reference's device)."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.default_device(jax.devices("cpu")[0])
    import tensorflow as tf

    return tf.device("/CPU:0")


def _numpy(values) -> list[np.ndarray]:
    return [np.asarray(keras.ops.convert_to_numpy(v), dtype="float32") for v in values]


def _run(model, state: dict, x, y, compiled: bool) -> tuple[dict, float]:
    """Forward outputs and a training step's loss and gradients (numpy), and the seconds (compiling included)."""
    tensors = {k: [keras.ops.convert_to_tensor(a) for a in arrays] for k, arrays in state.items()}
    forward, train_step = _functions(model, compiled)
    logger = None
    if keras.backend.backend() == "tensorflow":
        # each check traces new functions, as it must: TF's warning that they retrace is noise in doctor's output
        import tensorflow as tf

        logger = tf.get_logger()
        level = logger.level
        logger.setLevel("ERROR")
    try:
        start = time.perf_counter()
        probs = forward(tensors["trainable"], tensors["non_trainable"], keras.ops.convert_to_tensor(x))
        loss, grads = train_step(tensors["trainable"], tensors["non_trainable"], keras.ops.convert_to_tensor(x),
                                 keras.ops.convert_to_tensor(y))
        out = {"probs": _numpy([probs])[0], "loss": _numpy([loss])[0], "grads": _numpy(grads)}
    finally:
        if logger is not None:
            logger.setLevel(level)
    return out, time.perf_counter() - start


def _build(arch: str, precision: str, seed: int) -> keras.Model:
    """The architecture at its seed config in ``precision``, without dropout (see ``measure``)."""
    spec = architectures.get(arch)
    config = {"dropout": 0.0} if "dropout" in spec.baseline else {}
    seeding.set_random_seed(seed)
    with base.precision_policy(precision):
        return spec.build(config)


# --- comparing -----------------------------------------------------------------------------------------------


def _max_error(candidate: np.ndarray, reference: np.ndarray, scale: float = 1.0) -> float:
    both = np.isfinite(candidate) & np.isfinite(reference)
    if not both.any():
        return float("nan")
    return float(np.max(np.abs(candidate[both] - reference[both])) / max(scale, 1e-30))


def _gradient_error(grads: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """||g - g_ref|| / ||g_ref|| over all variables' gradients as one vector (finite entries only)."""
    g, r = np.concatenate([a.ravel() for a in grads]), np.concatenate([a.ravel() for a in reference])
    both = np.isfinite(g) & np.isfinite(r)
    if not both.any():
        return float("nan")
    return float(np.linalg.norm(g[both] - r[both]) / max(float(np.linalg.norm(r[both])), 1e-30))


def _nonfinite(*arrays: np.ndarray) -> int:
    return int(sum(np.size(a) - np.count_nonzero(np.isfinite(a)) for a in arrays))


def compare(arch: str, precision: str, mode: str, candidate: dict, reference: dict, seconds: float) -> list[Row]:
    """The two rows (forward, train step) of one candidate run against the reference run (see ``Row``)."""
    forward = Row(arch, precision, mode, "forward", _max_error(candidate["probs"], reference["probs"]),
                  _nonfinite(candidate["probs"]), TOLERANCE[precision]["forward"], round(seconds, 3))
    loss_error = _max_error(candidate["loss"], reference["loss"], float(abs(reference["loss"])))
    step = Row(arch, precision, mode, "train step", max(loss_error, _gradient_error(candidate["grads"],
                                                                                    reference["grads"])),
               _nonfinite(candidate["loss"], *candidate["grads"]), TOLERANCE[precision]["train step"],
               round(seconds, 3))
    return [forward, step]


def measure(arch: str, precision: str, batch: int = 32, seed: int = 0) -> list[Row]:
    """Compute the four rows of one architecture in one precision (eager and compiled; forward and train step).

    The batch: ``batch`` uniform random images in [0, 1] (the scaled pixels a model sees) and random labels,
    drawn from ``seed``. Dropout is set to 0 for the check: on TensorFlow the mask's random draw depends on the
    dtype (a bf16 uniform rounds otherwise than a float32 one), so reference and candidate would drop different
    units; dropout itself is one multiply. Augmentation is off at the seed's config.
    """
    rng = np.random.default_rng(seed)
    x = rng.random((batch, *architectures.IMAGE_SHAPE), dtype=np.float32)
    y = rng.integers(0, architectures.NUM_CLASSES, batch).astype("int32")
    model = _build(arch, "float32", seed)
    state = {"trainable": [np.asarray(v.numpy(), dtype="float32") for v in model.trainable_variables],
             "non_trainable": [np.asarray(v.numpy()) for v in model.non_trainable_variables]}
    with _on_cpu():
        reference, ref_seconds = _run(model, state, x, y, compiled=False)
    candidate_model = model if precision == "float32" else _build(arch, precision, seed)
    rows = []
    for mode in MODES:
        if precision == "float32" and mode == "eager" and device_kind() == "cpu":
            candidate, seconds = reference, ref_seconds  # the very same computation: not run twice
        else:
            candidate, seconds = _run(candidate_model, state, x, y, compiled=mode == "compiled")
        rows += compare(arch, precision, mode, candidate, reference, seconds)
    COMPUTED[(arch, precision)] = COMPUTED.get((arch, precision), 0) + 1
    return rows


# --- the cache, the check and its verdict --------------------------------------------------------------------


def _read_cache(path) -> dict:
    try:
        data = json.loads(open(path, encoding="utf-8").read())
    except (OSError, ValueError):
        return {}  # none yet, or damaged (a crash mid-write cannot do it: writes replace the file whole)
    return data if isinstance(data, dict) else {}


def _write_cache(path, entries: dict) -> None:
    """Merge ``entries`` into the file and replace it whole (another worker's entries written meanwhile stay,
    but for a race in the same instant, which only costs that worker's entry a recomputation later). A cache:
    a write that fails (a full disk) is a warning, and the file stays as it was."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        merged = {**_read_cache(path), **entries}
        safe_files.write_text_whole(path, json.dumps(merged, indent=1))
    except OSError as e:
        progress.warn(f"warning: the numerics check's cache {path} was not written ({e.strerror or e}): the check "
                      "runs again next time")


def check(archs=ARCH_KEYS, precisions=PRECISIONS, batch: int = 32, seed: int = 0, *,
          cache: bool = True) -> list[Row]:
    """The rows of every architecture in ``archs`` and precision in ``precisions`` (4 each: eager and compiled,
    forward and train step), from the cache file (``cache_path()``) where it holds them, else measured (seconds
    per architecture on a CPU) and cached, failures included. Nothing is raised for a failing row: ``require``.

    Raises ``UserError`` for an unknown architecture or precision.
    """
    for precision in precisions:
        if precision not in PRECISIONS:
            raise UserError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    path = cache_path()
    stored = _read_cache(path) if cache else {}
    rows, new = [], {}
    for arch in archs:
        architectures.get(arch)
        for precision in precisions:
            key = f"{arch}/{precision}/batch {batch}/seed {seed}"
            try:
                found = [Row(**r) for r in stored[key]]
            except (KeyError, TypeError):
                found = measure(arch, precision, batch, seed)
                new[key] = [asdict(r) for r in found]
            rows += found
    if cache and new:
        _write_cache(path, new)
    return rows


def advice(row: Row, rows: list[Row]) -> str:
    """What works instead of the failing ``row``, judged from the other rows checked with it."""
    if keras.backend.backend() == "jax" and row.precision == "bf16" and re.match(r"jax 0\.1[1-9]", backend_version()):
        return "use --precision float32, or jax 0.10.2, which computes it right (pip install 'jax[cpu]==0.10.2')"
    if row.precision == "bf16" and all(r.ok for r in rows if r.arch == row.arch and r.precision == "float32"):
        return "use --precision float32"
    other = "tensorflow" if keras.backend.backend() == "jax" else "jax"
    return f"try another backend (KERAS_BACKEND={other}) or another device"


def require(rows: list[Row]) -> None:
    """Raise ``UserError`` (one line) for the first row that is not ok; return quietly when all are."""
    for row in rows:
        if row.ok:
            continue
        what = (f"{row.nonfinite} non-finite values" if row.nonfinite else
                f"max error {row.max_error:.3g} > {row.tolerance:g}")
        raise UserError(f"numerics check failed: {row.arch} in {row.precision}, {row.mode} {row.what}: {what} "
                        f"against the CPU float32 reference ({backend_version()}, keras {keras.__version__}, "
                        f"{device_kind()}); {advice(row, rows)}")


def verify(arch: str, precision: str) -> None:
    """The check a worker runs before its first trial: ``arch`` in ``precision`` (and float32, for the advice),
    once per process and cached per machine; skipped when ``$CIFAR_TUNE_SKIP_NUMERICS`` is 1.

    Raises ``UserError`` (one line) when the device computes it wrongly.
    """
    if os.environ.get(SKIP_ENV) == "1" or (arch, precision) in _VERIFIED:
        return
    rows = check([arch], sorted({precision, "float32"}))
    require([r for r in rows if r.precision == precision])
    _VERIFIED.add((arch, precision))


def table(rows: list[Row]) -> str:
    """The rows as a plain-text table (what ``cifar-tune doctor --check`` prints)."""
    lines = [f"{'architecture':<12} {'precision':<9} {'mode':<8} {'what':<10} {'max error':>10} {'non-finite':>10} "
             f"{'tolerance':>9} {'seconds':>7}  ok"]
    for r in rows:
        lines.append(f"{r.arch:<12} {r.precision:<9} {r.mode:<8} {r.what:<10} {r.max_error:>10.2e} "
                     f"{r.nonfinite:>10} {r.tolerance:>9g} {r.seconds:>7.2f}  {'yes' if r.ok else 'NO'}")
    return "\n".join(lines)
