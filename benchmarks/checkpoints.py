"""What a trial's per-epoch checkpoint costs, per architecture: its size and its seconds.

    PYTHONPATH=. .venv/bin/python -m benchmarks.checkpoints [--repeats 5] [--markdown FILE]

For each architecture at its baseline config: the model and its optimizer (built, so Adam's moments exist), then
what the objective does after an epoch (``tuning/checkpoints.py``), measured apart:

* ``capture``: the state to host arrays (``engines.Resume.of``: stock fit's hook; the fast JAX engine's
  ``device_get`` of its state costs the same order on CPU, where device memory is host memory);
* ``store``: ``TrialCheckpoints.save``: the ``.npz`` written, copied into a file-system artifact store, the
  trial's pointer updated in a SQLite study, the previous checkpoint removed.

Medians of ``--repeats`` checkpoints of a running trial. The per-epoch cost is ``capture + store``; divide by the
epoch's seconds for the share of training. Run by hand; name the machine when you quote the figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from cifar_tune import runtime

runtime.choose_backend()

import keras  # noqa: E402  (after the backend is chosen)
import optuna  # noqa: E402

from cifar_tune import engines  # noqa: E402
from cifar_tune.choices import ARCH_KEYS  # noqa: E402
from cifar_tune.models import architectures  # noqa: E402
from cifar_tune.tuning.checkpoints import TrialCheckpoints  # noqa: E402


def measure(arch: str, trial: optuna.Trial, store, repeats: int) -> dict:
    config = architectures.get(arch).config({})
    model = engines.compile_model(architectures.get(arch).build(config), config, total_steps=1000)
    model.optimizer.build(model.trainable_variables)
    saved = TrialCheckpoints(trial, store, epochs=repeats + 2)
    captures, stores = [], []
    for epoch in range(1, repeats + 1):
        start = time.perf_counter()
        state = engines.Resume.of(epoch, model, model.optimizer, {"val_loss": [1.0] * epoch})
        captures.append(time.perf_counter() - start)
        saved.save(state)
        stores.append(saved.current["seconds"])
    size = saved.current["bytes"]
    saved.remove()
    keras.backend.clear_session()
    capture, write = statistics.median(captures), statistics.median(stores)
    return {"arch": arch, "params": model.count_params(), "mb": size / 1e6, "capture_s": capture, "store_s": write,
            "total_s": capture + write}


def table(rows: list[dict]) -> str:
    lines = ["| architecture | parameters | checkpoint (MB) | capture (s) | store (s) | per epoch (s) |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['arch']} | {r['params']:,} | {r['mb']:.2f} | {r['capture_s']:.4f} | {r['store_s']:.4f} | "
              f"{r['total_s']:.4f} |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--markdown", type=Path, help="also append the table here, with the machine and command")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        study = optuna.create_study(storage=f"sqlite:///{tmp}/bench.db")
        store = optuna.artifacts.FileSystemArtifactStore(tmp)
        rows = []
        for arch in ARCH_KEYS:
            trial = study.ask()
            rows.append(measure(arch, trial, store, args.repeats))
            study.tell(trial, 0.0)
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.system()}; "
               f"Keras {keras.__version__} on {keras.backend.backend()}, Optuna {optuna.__version__}")
    text = table(rows)
    print(text)  # noqa: T201 - a benchmark script's output
    if args.markdown:  # appended: one section per backend (run once with KERAS_BACKEND=jax too)
        with args.markdown.open("a") as f:
            f.write(f"## Backend: {keras.backend.backend()}\n\nMachine: {machine}  \nCommand: `PYTHONPATH=. "
                    f"KERAS_BACKEND={keras.backend.backend()} python -m benchmarks.checkpoints --repeats "
                    f"{args.repeats} --markdown {args.markdown}` (median of {args.repeats} checkpoints; baseline "
                    f"configs; artifact store and SQLite study on the local disk)\n\n{text}\n\n")

if __name__ == "__main__":
    main()
