"""Every name the modules share, defined once: architecture keys, default places, environment variables, and the
study note's sections (the keys of what studies and trials store are ``studies.records``').

Plain constants only (no imports of the package): any module may import this one.
"""

from __future__ import annotations

from pathlib import Path

# The seed notebook's five classifiers, in its order (architectures.py builds them under these keys), and the
# labels its table gives them.
ARCH_LABELS = {"mlp_bn": "MLP with BatchNorm", "mlp_l2": "MLP with L2", "cnn": "Simple CNN",
               "cnn_da": "CNN with DA and Dropout", "resnet": "ResNet"}
ARCH_KEYS = tuple(ARCH_LABELS)

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
