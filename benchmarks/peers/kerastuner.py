"""KerasTuner 1.4, written as its guides show: a ``HyperModel`` whose ``build`` samples the space and compiles, whose
``fit`` takes the sampled batch size ("Tune model training" guide), and ``tuner.search`` with validation data, then
``results_summary`` and ``get_best_hyperparameters``.

Space: all of cifar-tune's is expressible: ``hp.Float`` (step or ``sampling="log"``), ``hp.Choice``, the optional
L2 as ``hp.Boolean("use_l2")`` with the log range in ``conditional_scope``, AdamW's ``weight_decay`` in
``conditional_scope("optimizer", ["adamw"])``. What differs is the budget: ``Hyperband`` takes no trial count,
only ``max_epochs``, ``factor`` and ``hyperband_iterations`` (one iteration at 5 epochs and factor 3 is 10 trials,
31 epochs, promoted trials resuming from their checkpoint), so the iterations are chosen to come closest to the
trial budget; ``BayesianOptimization`` has no pruning at all (every trial trains all epochs) and starts with
``max(3 * dimensions, 3)`` random points by default, more than a 12-trial budget: at that budget it is random search.
"""

from __future__ import annotations

import math

from . import common


def hyperband_trials(max_epochs: int, factor: int = 3) -> int:
    """Trials in one KerasTuner Hyperband iteration (``HyperbandOracle``'s bracket sizes, 1.4.x)."""
    brackets, e = 0, float(max_epochs)
    while e >= 1:
        e, brackets = e / factor, brackets + 1
    end0 = math.ceil(1 + math.log(max_epochs, factor))
    return sum(math.ceil(end0 / (b + 1) * factor ** (b - r)) for b in range(brackets) for r in range(b + 1))


def _hp(hp, name: str, p: dict):
    if p["type"] == "categorical":
        return hp.Choice(name, list(p["choices"]))
    if p["type"] == "int":
        return hp.Int(name, p["low"], p["high"], step=p.get("step"), sampling="log" if p.get("log") else "linear")
    if p.get("log"):
        return hp.Float(name, p["low"], p["high"], sampling="log")
    return hp.Float(name, p["low"], p["high"], step=p.get("step"))


def make_hypermodel(budget: common.Budget, n_train: int, log):
    """The HyperModel: build samples the space (seeded as every cifar-tune trial is) and compiles; fit passes the
    sampled batch size and this trial's epoch logger."""
    import keras
    import keras_tuner

    class HyperModel(keras_tuner.HyperModel):
        trials = 0

        def build(self, hp):
            values = {}
            for name, p in common.space(budget.arch).items():
                when = dict(p.get("when") or {})
                scope = [hp.conditional_scope(k, v if isinstance(v, list) else [v]) for k, v in when.items()]
                with scope[0] if scope else _null():
                    if p.get("optional"):
                        values[f"use_{name}"] = hp.Boolean(f"use_{name}")
                        with hp.conditional_scope(f"use_{name}", [True]):
                            values[name] = _hp(hp, name, p)  # None while the switch is off
                    else:
                        values[name] = _hp(hp, name, p)
            c = common.config_from_values(budget.arch, {k: v for k, v in values.items() if v is not None})
            keras.utils.set_random_seed(budget.seed)
            total = budget.epochs * common.steps(n_train, int(c["batch_size"]))  # the schedule spans max epochs
            return common.compile_model(common.build_model(budget.arch, c), c, total)

        def fit(self, hp, model, *args, **kwargs):
            HyperModel.trials += 1
            kwargs["callbacks"] = [*kwargs.get("callbacks", []), common.epoch_logger(log, HyperModel.trials)]
            return model.fit(*args, batch_size=hp.get("batch_size"), **kwargs)

    return HyperModel()


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def search(kind: str, budget: common.Budget, split: dict, workdir, log) -> dict:
    """Run KerasTuner's ``hyperband`` or ``bayes`` tuner; returns the best trial's config, validation loss (KerasTuner's
    score: the best epoch's), its accuracy (from the epoch log), the trial count and notes."""
    import keras_tuner

    x, y = common.scale(split["x_train"]), split["y_train"]
    val = (common.scale(split["x_val"]), split["y_val"])
    hm = make_hypermodel(budget, len(y), log)
    where = dict(directory=str(workdir), project_name=f"kt-{kind}-{budget.arch}", overwrite=True, seed=budget.seed)
    if kind == "hyperband":
        iterations = max(1, round(budget.n_trials / hyperband_trials(budget.epochs)))
        tuner = keras_tuner.Hyperband(hm, objective="val_loss", max_epochs=budget.epochs, factor=3,
                                      hyperband_iterations=iterations, **where)
        tuner.search(x, y, validation_data=val, verbose=0)
        notes = f"Hyperband(max_epochs={budget.epochs}, factor=3, hyperband_iterations={iterations})"
    else:
        tuner = keras_tuner.BayesianOptimization(hm, objective="val_loss", max_trials=budget.n_trials, **where)
        tuner.search(x, y, validation_data=val, epochs=budget.epochs, verbose=0)
        notes = f"BayesianOptimization(max_trials={budget.n_trials}), no pruning"
    tuner.results_summary(num_trials=3)
    best_hp = tuner.get_best_hyperparameters(1)[0]
    best = tuner.oracle.get_best_trials(1)[0]
    values = {k: v for k, v in best_hp.values.items() if not k.startswith("tuner/")}
    return {"best_config": common.config_from_values(budget.arch, values), "best_val_loss": float(best.score),
            "best_val_accuracy": None, "trials": len(tuner.oracle.trials),
            "versions": {"keras-tuner": keras_tuner.__version__}, "notes": notes}
