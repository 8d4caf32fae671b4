"""The package's shared vocabulary, each defined once as a plain constant: the choice lists a setting may take
(architectures, engines, precisions, samplers, pruners, optimizers, learning-rate schedules, baseline protocols)
and their defaults, the default numbers that the command line, the Python API and the presets all restate
(epochs, batch size, seeds), default places, environment variables, and the study note's sections (the keys of
what studies and trials store are ``studies.records``').

Plain constants only (no imports of the package): any module may import this one.
"""

from __future__ import annotations

from pathlib import Path

# The seed notebook's five classifiers, in its order (architectures.py builds them under these keys), and the
# labels its table gives them.
ARCH_LABELS = {"mlp_bn": "MLP with BatchNorm", "mlp_l2": "MLP with L2", "cnn": "Simple CNN",
               "cnn_da": "CNN with DA and Dropout", "resnet": "ResNet"}
ARCH_KEYS = tuple(ARCH_LABELS)

# --- choice lists and their defaults -------------------------------------------------------------------------
ENGINES = ("auto", "keras", "fast")  # keras: stock fit; fast: the compiled device loop; auto: fast on a GPU
DEFAULT_ENGINE = "auto"
PRECISIONS = ("float32", "bf16")  # bf16: Keras's mixed_bfloat16 policy (float32 weights)
DEFAULT_PRECISION = "float32"
SAMPLERS = ("tpe", "random")
DEFAULT_SAMPLER = "tpe"
PRUNERS = ("hyperband", "successive-halving", "median", "none")
DEFAULT_PRUNER = "hyperband"
OPTIMIZERS = ("adam", "adamw")  # the config key "optimizer" (the seed: adam)
SCHEDULES = ("constant", "cosine", "warmup_cosine")  # the config key "lr_schedule" (the seed: constant)
PROTOCOLS = ("seed", "holdout")  # baseline: validate on the test set (as the notebook did) or on a split of train
DEFAULT_PROTOCOL = "seed"
FAST_LOOPS = ("auto", "epoch", "step")  # $CIFAR_TUNE_FAST_LOOP: the JAX engine's calls per epoch
KERAS_DATA = "keras"  # the data source that means Keras's official download

# --- default numbers ---------------------------------------------------------------------------------------------
DEFAULT_EPOCHS = 10  # the seed notebook's
DEFAULT_BATCH_SIZE = 32  # the seed notebook's
DEFAULT_SEED = 0  # the trials' and the baseline's seed
DEFAULT_COMPARE_SEEDS = 3  # compare's seeds per architecture

# --- places (relative to the working directory, like the default database) -----------------------------------
STORAGE_DIR = Path("storage")
DEFAULT_STORAGE = f"sqlite:///{STORAGE_DIR}/cifar_tune.db"
REPORTS_DIR = STORAGE_DIR / "reports"
MODELS_DIR = STORAGE_DIR / "models"
ARTIFACTS_DIR = STORAGE_DIR / "artifacts"
JAX_CACHE_DIR = STORAGE_DIR / "jax_cache"

# --- environment variables -----------------------------------------------------------------------------------
DATA_ENV = "CIFAR_TUNE_DATA"  # the data source when --data is not given
ARTIFACTS_ENV = "CIFAR_TUNE_ARTIFACTS"  # the artifact store's folder (shared by many machines)
TOTAL_TRIALS_ENV = "CIFAR_TUNE_TOTAL_TRIALS"  # a study-wide trial target (optimize --total-trials)
SQLITE_TIMEOUT_ENV = "CIFAR_TUNE_SQLITE_TIMEOUT"  # seconds a SQLite writer waits for another's lock
NATIVE_LOGS_ENV = "CIFAR_TUNE_NATIVE_LOGS"  # set: TensorFlow's native start-up logs are not silenced
FAST_LOOP_ENV = "CIFAR_TUNE_FAST_LOOP"  # one of FAST_LOOPS


def study_name(arch: str) -> str:
    """The default study name of an architecture."""
    return f"cifar10-{arch}"


# --- the study note optuna-dashboard shows: sections and who owns them ---------------------------------------
NOTE_TAG = "(cifar-tune optimize)"  # ends the heading of the section the tuning loop rewrites
COMPARE_HEADING = "## Tuned vs baseline on the test set (cifar-tune compare)"  # the section compare writes
COMPARE_VARIANTS = ("baseline", "tuned")  # the rows of compare's table, then the paired difference:
COMPARE_DIFF = "tuned - baseline"
FIGURE_CURVES = "best-vs-baseline"
FIGURE_TRIALS = "val-loss-of-every-trial"
