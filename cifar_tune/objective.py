"""The Optuna objective: sample a config, train it, report validation loss every epoch, prune, record."""

from __future__ import annotations

import gc
import math
from typing import Callable

import keras
import optuna
from optuna_integration import KerasPruningCallback

from . import training
from .data import Split
from .spaces import Space


class Diverged(RuntimeError):
    """Training produced a non-finite loss: the trial fails with this as its recorded reason."""


class TrialRecorder(keras.callbacks.Callback):
    """Stores the per-epoch curves in the trial as they grow (pruned trials keep theirs) and stops divergence."""

    def __init__(self, trial: optuna.Trial):
        super().__init__()
        self.trial = trial
        self.curves: dict[str, list[float]] = {}

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.model is not None:
            self.trial.set_user_attr("params", int(self.model.count_params()))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for key, value in (logs or {}).items():
            self.curves.setdefault(key, []).append(float(value))
        self.trial.set_user_attr("curves", self.curves)
        self.trial.set_user_attr("epochs_run", epoch + 1)
        bad = [k for k, v in (logs or {}).items() if not math.isfinite(float(v))]
        if bad:
            raise Diverged(f"non-finite {', '.join(sorted(bad))} at epoch {epoch + 1}")


def resident_mb() -> float | None:
    """This process's resident memory in MB (Linux), recorded per trial so memory growth can be audited."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return None


def make_objective(space: Space, split: Split, *, epochs: int, seed: int = 0, engine: str = "auto",
                   precision: str = "float32", verbose: int = 0) -> Callable[[optuna.Trial], float]:
    """An objective for ``study.optimize``: the final epoch's validation loss (minimize).

    Every trial trains with the same seed (common random numbers: configs are compared under the same
    initialisation and shuffling noise). The test set never enters here.
    """
    engine = training.resolve_engine(engine)
    static = {"arch": space.arch, "data": split.description, "backend": keras.backend.backend(),
              "device": training.device_name(), "engine": engine, "precision": precision}

    def objective(trial: optuna.Trial) -> float:
        config = space.suggest(trial)
        for key, value in {**static, "config": config}.items():
            trial.set_user_attr(key, value)
        recorder = TrialRecorder(trial)
        callbacks = [keras.callbacks.TerminateOnNaN(), recorder, KerasPruningCallback(trial, "val_loss")]
        keras.backend.clear_session(free_memory=True)
        try:
            result = training.train(space.arch, config, split.x_train, split.y_train, split.x_val, split.y_val,
                                    epochs=epochs, seed=seed, callbacks=callbacks, verbose=verbose,
                                    engine=engine, precision=precision)
            hist = result.history
            if result.epochs_run < epochs:  # Keras's TerminateOnNaN stops fit inside an epoch
                raise Diverged(f"training stopped at epoch {result.epochs_run} of {epochs} (non-finite loss)")
            trial.set_user_attr("params", int(result.model.count_params()))
            trial.set_user_attr("seconds", round(result.seconds, 3))
            trial.set_user_attr("val_accuracy", hist["val_accuracy"][-1])
            trial.set_user_attr("engine_info", result.info)
            trial.set_user_attr("rss_mb", resident_mb())
            return hist["val_loss"][-1]
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", "interrupted by the user")
            raise
        except Exception as e:  # any failure (out of memory included) fails this trial only; the study goes on
            trial.set_user_attr("fail_reason", f"{type(e).__name__}: {e}"[:2000])
            raise
        finally:
            # Drop this trial's graph and weights before the next one: Keras keeps global state otherwise.
            keras.backend.clear_session(free_memory=True)
            gc.collect()

    return objective
