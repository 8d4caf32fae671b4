"""Training throughput: stock ``fit`` (engine keras) against the fast engine, per architecture and batch size.

    KERAS_BACKEND=jax python benchmarks/throughput.py                      # both engines on JAX
    python benchmarks/throughput.py --engines keras                        # stock fit on TensorFlow
    KERAS_BACKEND=jax python benchmarks/throughput.py --archs cnn,resnet --images 50000 --epochs 3 --bf16

For every architecture: batch 32 and batch 512 in float32 (plus batch 512 in bf16 with ``--bf16``, the
default on a GPU), each engine trained for 1 + ``--epochs`` epochs; the first epoch is a warm-up, the others
are timed (seconds per epoch, validation of ``--val`` images included, as ``fit`` does it). Every measurement
also records its last validation accuracy (``val_accuracy``, a fraction) and ``finite`` (every loss finite).
Compilation is reported apart: the fast engine's ahead-of-time compile seconds, and stock fit's first-epoch overhead
(first epoch minus a timed one; it traces and compiles inside its first epoch). A warm
``storage/jax_cache`` (JAX's persistent compilation cache, used by the fast engine) shortens compile seconds
on a rerun. Note: engine keras on the JAX backend is stock ``fit`` on JAX; on TensorFlow the fast engine is
``fit`` with ``steps_per_execution`` (see cifar_tune/engines/fast.py). Data are random uint8 images unless
``--data`` names a CIFAR-10 source. The table is printed and saved as JSON (``--json``); the JSON is rewritten
after every measurement with ``"complete": false`` until the last, so a run cut short keeps its rows.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from cifar_tune import engines  # noqa: E402
from cifar_tune.data import cifar10
from cifar_tune.models import architectures
from cifar_tune.runtime import devices

BATCHES = (32, 512)


class EpochTimer(keras.callbacks.Callback):
    """Wall-clock seconds of every epoch, as seen by callbacks (validation included)."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def machine() -> dict:
    """The machine and software the figures come from."""
    info = {"backend": keras.backend.backend(), "device": devices.device_name(), "cpu": platform.processor()
            or platform.machine(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "keras": keras.__version__, "load_average_1m": round(os.getloadavg()[0], 2)}
    if info["backend"] == "jax":
        import jax

        info.update(jax=jax.__version__, device_kind=jax.devices()[0].device_kind)
    elif info["backend"] == "tensorflow":
        import tensorflow as tf

        info.update(tensorflow=tf.__version__)
    return info


def measure(arch: str, batch: int, precision: str, engine: str, arrays, epochs: int) -> dict:
    """Train once with ``engine`` and return its per-epoch timing."""
    x, y, xv, yv = arrays
    timer = EpochTimer()
    spec = engines.TrainSpec(arch, {"batch_size": batch}, epochs=1 + epochs, engine=engine, precision=precision)
    result = engines.train(spec, x, y, xv, yv, callbacks=[timer])
    timed = timer.seconds[1:]
    per_epoch = float(np.mean(timed))
    out = {"seconds_per_epoch": per_epoch, "images_per_second": len(x) / per_epoch,
           "first_epoch_seconds": timer.seconds[0], "epoch_seconds": timer.seconds,
           "final_val_accuracy": result.history["val_accuracy"][-1],
           "val_accuracy": result.history["val_accuracy"][-1], "finite": finite(result.history)}
    if engine == "fast" and "compile_seconds" in result.info:
        out["compile_seconds"] = result.info["compile_seconds"]
    else:  # stock fit compiles inside its first epoch
        out["compile_seconds"] = max(0.0, timer.seconds[0] - per_epoch)
    out["info"] = result.info
    return out


def finite(history: dict[str, list[float]]) -> bool:
    """Whether every recorded training and validation loss is a finite number (no NaN or inf: the numerics held)."""
    losses = history.get("loss", []) + history.get("val_loss", [])
    return bool(losses) and all(math.isfinite(v) for v in losses)


def main(argv: list[str] | None = None) -> int:
    device = devices.device_name()
    on_gpu = device == "gpu"
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", default=",".join(architectures.ARCHITECTURES), help="comma-separated (default: all)")
    p.add_argument("--engines", default="keras,fast", help="comma-separated: keras, fast (default: both)")
    p.add_argument("--images", type=int, default=50_000 if on_gpu else 2_000,
                   help="training images per epoch (default: 50,000 on GPU, 2,000 on CPU)")
    p.add_argument("--val", type=int, default=None, help="validation images (default: images / 50, at least 100)")
    p.add_argument("--epochs", type=int, default=3 if on_gpu else 1, help="timed epochs after one warm-up epoch")
    p.add_argument("--batches", default=",".join(map(str, BATCHES)), help="comma-separated batch sizes")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=on_gpu,
                   help="also batch 512 in mixed bfloat16 (default: on a GPU)")
    p.add_argument("--data", default=None, help="a CIFAR-10 source (see cifar_tune.data.load) instead of random data")
    p.add_argument("--json", default=None, help="where to save the JSON (default: storage/benchmarks/...)")
    a = p.parse_args(argv)
    archs = [s for s in a.archs.split(",") if s]
    chosen = [s for s in a.engines.split(",") if s]
    batches = [int(s) for s in a.batches.split(",") if s]
    for arch in archs:
        architectures.get(arch)
    n_val = a.val or max(100, a.images // 50)
    arrays = _arrays(a.data, a.images, n_val)
    settings = [(b, "float32") for b in batches] + ([(max(batches), "bf16")] if a.bf16 else [])
    backend = keras.backend.backend()
    out_path = Path(a.json or f"storage/benchmarks/throughput-{backend}-{device}.json")

    start_machine = machine()
    print(f"{backend} on {device}: {a.images} training + {n_val} validation images, "
          f"{a.epochs} timed epoch(s) after 1 warm-up; load average {start_machine['load_average_1m']}", flush=True)
    rows: list[dict] = []
    result = {"machine": start_machine, "images": a.images, "val_images": n_val, "timed_epochs": a.epochs,
              "data": a.data or "random uint8", "command": " ".join(sys.argv), "rows": rows, "complete": False}
    for arch in archs:
        for batch, precision in settings:
            row = {"arch": arch, "batch": batch, "precision": precision}
            rows.append(row)
            for engine in chosen:
                row[engine] = measure(arch, batch, precision, engine, arrays, a.epochs)
                print(f"  {arch} batch {batch} {precision} {engine}: "
                      f"{row[engine]['seconds_per_epoch']:.3f} s/epoch", flush=True)
                save(out_path, result)  # after every measurement: a run cut short keeps what it measured
            if "keras" in row and "fast" in row:
                row["speedup"] = row["keras"]["seconds_per_epoch"] / row["fast"]["seconds_per_epoch"]
    table = format_table(rows, chosen)
    print(table)
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    result.update(load_average_1m_at_end=round(os.getloadavg()[0], 2), table=table, complete=True)
    save(out_path, result)
    print(f"saved {out_path}")
    return 0


def save(path: Path, result: dict) -> None:
    """Write the JSON whole or not at all (a temporary file renamed over it): a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(result, indent=2, default=str))
    os.replace(partial, path)


def _arrays(source: str | None, n: int, n_val: int):
    if source:
        ds = cifar10.load(source)
        return ds.x_train[:n], ds.y_train[:n], ds.x_test[:n_val], ds.y_test[:n_val]
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n).astype(np.uint8),
            rng.integers(0, 256, (n_val, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n_val).astype(np.uint8))


def format_table(rows: list[dict], engines: list[str]) -> str:
    """A Markdown table: seconds per epoch, images per second, speedup and compile seconds per engine."""
    head = ["arch", "batch", "precision"]
    for e in engines:
        head += [f"{e} s/epoch", f"{e} img/s"]
    head += ["speedup"] if len(engines) == 2 else []
    head += [f"{e} compile s" for e in engines]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["arch"], str(r["batch"]), r["precision"]]
        for e in engines:
            cells += [f"{r[e]['seconds_per_epoch']:.3f}", f"{r[e]['images_per_second']:,.0f}"]
        if len(engines) == 2:
            cells.append(f"{r['speedup']:.2f}x" if "speedup" in r else "")
        cells += [f"{r[e]['compile_seconds']:.1f}" for e in engines]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
