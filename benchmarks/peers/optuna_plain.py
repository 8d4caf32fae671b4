"""A plain Optuna script, written as Optuna's Keras example does it (optuna-examples ``keras/keras_integration.py``):
the data loaded once, one model per trial after ``keras.backend.clear_session()``, pruning through
``optuna_integration.KerasPruningCallback`` on the validation loss, an in-memory study (nothing on disk).

Same space as cifar-tune (define-by-run expresses all of it: the optional L2 as ``use_l2`` then its log range, the
AdamW-only ``weight_decay``), Hyperband pruning over epochs (min 1, max ``epochs``, factor 3, as cifar-tune's),
and Optuna's default ``TPESampler(seed=...)`` where cifar-tune uses multivariate, grouped TPE and enqueues the
seed's config as trial 0.
"""

from __future__ import annotations

import optuna

from . import common


def suggest(trial, arch: str) -> dict:
    """Sample ``search_spaces/<arch>.toml`` with an Optuna trial (also Ray Tune's define-by-run space); returns the
    sampled values, ``use_<name>`` switches included."""
    values: dict = {}
    for name, p in common.space(arch).items():
        when = p.get("when") or {}
        if any(common.full_config(arch, values)[k] not in (v if isinstance(v, list) else [v]) for k, v in when.items()):
            continue
        if p.get("optional"):
            values[f"use_{name}"] = trial.suggest_categorical(f"use_{name}", [False, True])
            if not values[f"use_{name}"]:
                continue
        if p["type"] == "categorical":
            values[name] = trial.suggest_categorical(name, list(p["choices"]))
        elif p["type"] == "int":
            values[name] = trial.suggest_int(name, p["low"], p["high"], step=p.get("step", 1), log=p.get("log", False))
        else:
            values[name] = trial.suggest_float(name, p["low"], p["high"], step=p.get("step"), log=p.get("log", False))
    return values


def search(budget: common.Budget, split: dict, workdir, log) -> dict:
    """Run the study; returns the best trial's config, validation loss and accuracy, the trial count and notes."""
    import keras
    from optuna_integration import KerasPruningCallback

    x, y = common.scale(split["x_train"]), split["y_train"]  # the data loaded once, as the example does
    val = (common.scale(split["x_val"]), split["y_val"])

    def objective(trial: optuna.Trial) -> float:
        keras.backend.clear_session()
        c = common.config_from_values(budget.arch, suggest(trial, budget.arch))
        keras.utils.set_random_seed(budget.seed)
        bs = int(c["batch_size"])
        model = common.compile_model(common.build_model(budget.arch, c), c,
                                     budget.epochs * common.steps(len(y), bs))
        hist = model.fit(x, y, batch_size=bs, epochs=budget.epochs, validation_data=val, verbose=0, shuffle=True,
                         callbacks=[common.epoch_logger(log, trial.number), KerasPruningCallback(trial, "val_loss")])
        trial.set_user_attr("val_accuracy", hist.history["val_accuracy"][-1])
        return hist.history["val_loss"][-1]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=budget.seed),
                                pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=budget.epochs,
                                                                      reduction_factor=3))
    study.optimize(objective, n_trials=budget.n_trials)
    best = study.best_trial
    return {"best_config": common.config_from_values(budget.arch, best.params), "best_val_loss": best.value,
            "best_val_accuracy": best.user_attrs["val_accuracy"], "trials": len(study.trials),
            "versions": {"optuna": optuna.__version__, "optuna-integration": _version("optuna-integration")},
            "notes": "TPESampler(seed) default; HyperbandPruner(1, epochs, 3); in-memory study"}


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)
