"""``cifar-tune doctor``: the facts a bug report needs, as plain text pairs (what the CLI prints)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path

from cifar_tune import engines
from cifar_tune.choices import DATA_ENV, KERAS_DATA
from cifar_tune.data import cifar10
from cifar_tune.errors import UserError
from cifar_tune.runtime import devices
from cifar_tune.storage import handle
from cifar_tune.text import count

PACKAGES = ("cifar-tune", "keras", "tensorflow", "jax", "jaxlib", "optuna", "optuna-dashboard", "sqlalchemy",
            "scikit-learn", "numpy")


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def data_fact(source: str | None) -> str:
    """Which source a training command would read, and whether it can be read (the download is not tried)."""
    source = source or os.environ.get(DATA_ENV)
    if not source or source == KERAS_DATA:
        cached = Path.home() / ".keras" / "datasets" / "cifar-10-batches-py"
        state = "cached, readable" if cached.is_dir() else "not cached: the first run downloads about 170 MB"
        return f"the official download through Keras ({state}); --data PATH or ${DATA_ENV} for local data"
    try:
        ds = cifar10.load(source)
    except UserError as e:
        return f"{source}: NOT READABLE: {e}"
    return f"{ds.source}: readable, {len(ds.y_train):,} training and {len(ds.y_test):,} test images"


def storage_fact(storage: handle.Storage) -> str:
    """The storage URL (password masked) and whether it holds studies."""
    try:
        opened = storage.reading()
    except UserError as e:
        return f"{storage.shown}: {e}"
    import optuna

    return f"{storage.shown}: {count(len(optuna.get_all_study_summaries(opened)), 'study', 'studies')}"


def facts(storage: handle.Storage | str | None, source: str | None) -> dict[str, str]:
    """Backend, device, engine, GPUs, versions, data source and storage (a ``handle.Storage``, a URL, or None:
    the default)."""
    out = {"training": engines.describe(),
           "backend rule": "KERAS_BACKEND or ~/.keras/keras.json if set, else jax when a CUDA-enabled JAX sees a "
                           "GPU, else tensorflow" + (" (KERAS_BACKEND is set)" if os.environ.get("KERAS_BACKEND")
                                                     else ""),
           "nvidia-smi": ", ".join(devices.nvidia_gpus()) or "no GPU listed",
           "jax cuda": devices.cuda_match(devices.jax_cuda_builds(), devices.driver_cuda_version()),
           "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, Python "
                      f"{platform.python_version()}",
           "versions": ", ".join(f"{p} {_version(p)}" for p in PACKAGES),
           "data": data_fact(source),
           "storage": storage_fact(handle.resolve(storage))}
    return out


def check_numerics() -> int:
    """``doctor --check``: print the numerics table of every architecture in float32 and bf16 (eager and
    compiled, against the CPU float32 reference; cached per device and version), then raise ``UserError`` (one
    line: architecture, precision, backend version, what works instead) for the first row that is off."""
    from cifar_tune.engines import numerics

    rows = numerics.check()
    print(f"\nnumerics ({numerics.backend_version()}, {numerics.device_kind()}; cache {numerics.cache_path()}):")
    print(numerics.table(rows), flush=True)
    numerics.require(rows)
    print("numerics: every architecture computes right in every precision on this device")
    return 0
