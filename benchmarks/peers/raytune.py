"""Ray Tune, written as its docs show: a function trainable given the data through ``tune.with_parameters`` (the
object store), ``OptunaSearch`` with a define-by-run space, ``ASHAScheduler`` on ``training_iteration`` (= epochs)
and Ray's Keras callback reporting every epoch (``TuneReportCheckpointCallback``, its checkpoint kept for the
end of training instead of every epoch: the benchmark retrains the best config anyway).

Fairness: a local cluster, ``ray.init(num_cpus=2)``, each trial asks for both CPUs and ``max_concurrent_trials=1``,
so trials run one at a time on the same two cores as every other tool. Space: all of cifar-tune's (OptunaSearch
takes the same define-by-run function as the plain Optuna script). Pruning: ASHA with ``grace_period=1``,
``max_t=epochs``, ``reduction_factor=3``, the asynchronous counterpart of the others' Hyperband.
"""

from __future__ import annotations

import functools
import os

from . import common


def _trainable(config: dict, split: dict, budget_json: str, log: str) -> None:
    """One trial in a Ray worker: build, compile and fit with per-epoch reports (ASHA stops it between epochs)."""
    import keras
    from ray import tune
    from ray.tune.integration.keras import TuneReportCheckpointCallback

    budget = common.Budget.from_json(budget_json)
    keras.backend.clear_session()  # a worker process may be reused for the next trial
    c = common.config_from_values(budget.arch, config)
    keras.utils.set_random_seed(budget.seed)
    bs = int(c["batch_size"])
    model = common.compile_model(common.build_model(budget.arch, c), c,
                                 budget.epochs * common.steps(len(split["y_train"]), bs))
    report = TuneReportCheckpointCallback(metrics=["val_loss", "val_accuracy"], checkpoint_on="train_end")
    model.fit(common.scale(split["x_train"]), split["y_train"], batch_size=bs, epochs=budget.epochs, verbose=0,
              validation_data=(common.scale(split["x_val"]), split["y_val"]), shuffle=True,
              callbacks=[common.epoch_logger(log, tune.get_context().get_trial_id()), report])


def define_by_run(trial, arch: str) -> None:
    """OptunaSearch's space: the plain Optuna script's ``suggest`` (module level: Ray pickles the searcher)."""
    from .optuna_plain import suggest

    suggest(trial, arch)


def search(budget: common.Budget, split: dict, workdir, log) -> dict:
    """Run the study on a local 2-CPU Ray cluster; returns the best result's config, its last validation loss and
    accuracy, the trial count and notes. ``$RAY_TMPDIR`` (set by the runner) holds Ray's session files."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    try:
        trainable = tune.with_parameters(_trainable, split={k: v for k, v in split.items() if k != "description"},
                                         budget_json=budget.to_json(), log=str(os.path.abspath(log)))
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 2}),
            tune_config=tune.TuneConfig(
                num_samples=budget.n_trials, max_concurrent_trials=1,
                search_alg=OptunaSearch(space=functools.partial(define_by_run, arch=budget.arch), metric="val_loss",
                                        mode="min", seed=budget.seed),
                scheduler=ASHAScheduler(metric="val_loss", mode="min", max_t=budget.epochs, grace_period=1,
                                        reduction_factor=3)),
            run_config=tune.RunConfig(storage_path=str(os.path.abspath(workdir)), name=f"ray-{budget.arch}",
                                      verbose=0))
        results = tuner.fit()
        best = results.get_best_result(metric="val_loss", mode="min", scope="last")
        return {"best_config": common.config_from_values(budget.arch, best.config),
                "best_val_loss": float(best.metrics["val_loss"]),
                "best_val_accuracy": float(best.metrics["val_accuracy"]), "trials": len(results),
                "versions": {"ray": ray.__version__},
                "notes": f"OptunaSearch(define-by-run, seed) + ASHAScheduler(max_t={budget.epochs}, grace_period=1, "
                         "reduction_factor=3); 2 CPUs per trial, one trial at a time"}
    finally:
        ray.shutdown()
