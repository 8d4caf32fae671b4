"""The plain Optuna script that ``benchmarks/overhead.py`` measures cifar-tune against: written as Optuna's Keras
example (and ``benchmarks/peers/optuna_plain.py``) is, the data loaded once, one model per trial after
``keras.backend.clear_session()``, an in-memory study, ``KerasPruningCallback`` (a no-op under ``NopPruner``).

The training itself is cifar-tune's, so both do the same work: the split of ``cifar_tune.data.cifar10``
(``--subset``, a tenth carved out for validation, ``--seed``), the seed config of ``--arch`` built by
``cifar_tune.models.architectures``, compiled by ``cifar_tune.engines.optimizers`` and seeded with
``cifar_tune.engines.seeding`` before every trial, as cifar-tune's stock-fit engine does; what differs is everything
around ``fit``.

    python benchmarks/overhead_plain.py --arch mlp_l2 --trials 6 --epochs 2 --subset 5000 --data cifar10.npz \
        --out trials.json

Writes ``--out`` (JSON): ``pid``, ``backend``, ``data`` (cifar-tune's split description, to check the split),
``config`` (what every trial trained), and per trial ``number``, ``start``/``complete`` (Optuna's datetimes, s since
the epoch), ``seconds`` (wall s of ``fit``), ``fit_cpu_s`` (this process's CPU s during ``fit``, all threads),
``rss_mb`` (resident MB after the trial's ``fit``, where cifar-tune records its ``rss_mb``) and ``value`` (final
validation loss).
"""

from __future__ import annotations

import argparse
import json
import os
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", required=True)
    p.add_argument("--trials", type=int, required=True)
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--subset", type=int, required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args()

    import keras
    import optuna
    from optuna_integration import KerasPruningCallback

    from cifar_tune.data import cifar10
    from cifar_tune.engines.optimizers import compile_model, steps_per_epoch
    from cifar_tune.engines.seeding import set_random_seed
    from cifar_tune.models import architectures
    from cifar_tune.tuning.budget import resident_mb  # the figure cifar-tune records per trial, read the same way

    split = cifar10.split_validation(cifar10.load_for_run(args.data, args.subset, args.seed), None, args.seed)
    x, y = split.x_train.astype("float32") / 255.0, split.y_train  # the data scaled once, as the example does
    val = (split.x_val.astype("float32") / 255.0, split.y_val)
    arch = architectures.get(args.arch)
    config = arch.config({})  # every hyperparameter at the seed's value
    batch = int(config["batch_size"])
    rows: list[dict] = []

    def objective(trial: optuna.Trial) -> float:
        keras.backend.clear_session()
        set_random_seed(args.seed)
        model = compile_model(arch.build(config), config, args.epochs * steps_per_epoch(len(y), batch))
        wall, cpu = time.perf_counter(), time.process_time()
        hist = model.fit(x, y, batch_size=batch, epochs=args.epochs, validation_data=val, verbose=0, shuffle=True,
                         callbacks=[KerasPruningCallback(trial, "val_loss")])
        rows.append({"number": trial.number, "seconds": time.perf_counter() - wall,
                     "fit_cpu_s": time.process_time() - cpu, "rss_mb": resident_mb()})
        return hist.history["val_loss"][-1]

    def finished(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        rows[-1].update(start=trial.datetime_start.timestamp(), complete=trial.datetime_complete.timestamp(),
                        value=trial.value)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=args.seed),
                                pruner=optuna.pruners.NopPruner())
    study.optimize(objective, n_trials=args.trials, callbacks=[finished])
    with open(args.out, "w") as f:
        json.dump({"pid": os.getpid(), "backend": keras.backend.backend(), "data": split.description,
                   "config": config, "trials": rows}, f)


if __name__ == "__main__":
    main()
