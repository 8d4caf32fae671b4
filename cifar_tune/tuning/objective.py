"""The Optuna objective: sample a config, train it, report validation loss every epoch, prune, record."""

from __future__ import annotations

import dataclasses
import gc
import math
import time
from collections.abc import Callable

import keras
import optuna
from optuna_integration import KerasPruningCallback

from cifar_tune import engines, progress, runtime
from cifar_tune.data.cifar10 import Split
from cifar_tune.errors import CheckpointMismatch, Diverged, TakenOver, TrialFailed, UserError
from cifar_tune.runtime import devices
from cifar_tune.storage.artifacts import artifact_store
from cifar_tune.studies.records import TrialRecord
from cifar_tune.studies.spaces import Space
from cifar_tune.tuning import checkpoints
from cifar_tune.tuning.budget import resident_mb


class TrialRecorder(keras.callbacks.Callback):
    """Stores the per-epoch curves and the seconds per epoch in the trial as they grow (pruned trials keep
    theirs), stops a diverged training (at the batch with stock fit, at the epoch with the fast engine, which
    calls epoch callbacks only), and stops training a trial that another worker has ended meanwhile (``TakenOver``)."""

    def __init__(self, trial: optuna.Trial, curves: dict[str, list[float]] | None = None,
                 begin: Callable[[], None] | None = None):
        super().__init__()
        self.trial, self.begin = trial, begin  # begin: called first when training begins (the state is restored)
        self.curves: dict[str, list[float]] = {k: list(v) for k, v in (curves or {}).items()}  # a resume's so far
        self.epoch = 0
        self.started, self.trained, self.train_seconds = 0.0, 0, 0.0  # epochs trained here and their seconds

    def _set(self, **fields) -> None:
        try:
            TrialRecord.update(self.trial, **fields)
        except optuna.exceptions.UpdateFinishedTrialError:  # Optuna refuses writes to a finished trial
            raise TakenOver(f"trial {self.trial.number} was ended by another worker") from None

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.begin is not None:
            self.begin()
        if self.model is not None:
            self._set(params=int(self.model.count_params()))

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch, self.started = epoch, time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        runtime.raise_if_stopping()  # Ctrl-C or SIGTERM during training (see runtime.stop_on_signals)
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise Diverged(self.epoch + 1, "loss", float(loss))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for key, value in (logs or {}).items():
            self.curves.setdefault(key, []).append(float(value))
        self.trained, self.train_seconds = self.trained + 1, self.train_seconds + time.perf_counter() - self.started
        self._set(curves=self.curves, epochs_run=epoch + 1,
                  seconds_per_epoch=round(self.train_seconds / self.trained, 4))
        runtime.raise_if_stopping()
        bad = sorted((k, float(v)) for k, v in (logs or {}).items() if not math.isfinite(float(v)))
        if bad:
            raise Diverged(epoch + 1, *next(((k, v) for k, v in bad if k == "loss"), bad[0]))


def _freeze_what_lasts() -> None:
    """Once per process, before its first trial: collect, then move every object alive now (the imports, the data,
    the study: about 470,000 objects once TensorFlow, Optuna, plotly and SQLAlchemy have loaded) out of reach of
    later full collections (Python's ``gc.freeze``). Each trial's ``clear_session()`` runs a full collection: 0.28 to
    0.38 s over those objects, a few milliseconds after the freeze (measured on this 2-core CPU, 2026-12-06).
    Frozen objects are still freed when their last reference goes; only a cycle among them would stay, so this
    is done once: a later call's leftovers in a process that goes on stay collectable."""
    if gc.get_freeze_count() == 0:
        gc.collect()
        gc.freeze()


def make_objective(space: Space, split: Split, template: engines.TrainSpec) -> Callable[[optuna.Trial], float]:
    """An objective for ``study.optimize``: the final epoch's validation loss (minimize).

    Each trial trains ``template`` (architecture ``space.arch``: epochs, seed, engine, precision, verbosity) with
    its config replaced by the one the trial samples from ``space``. Every trial trains with the same seed
    (common random numbers: configs are compared under the same initialisation and shuffling noise). The test
    set never enters here.

    Every epoch but the last is checkpointed into the artifact store, and a retry of a dead worker's trial
    resumes from its last checkpoint (``checkpoints.py``); a trial that ends here removes its checkpoints.
    """
    template = dataclasses.replace(template, engine=runtime.resolve_engine(template.engine))
    static = dict(arch=space.arch, data=split.description, backend=keras.backend.backend(),
                  device=devices.device_name(), engine=template.engine, precision=template.precision,
                  gpu=devices.gpu_of_this_process())
    store = artifact_store()  # None (after one warning) when its folder cannot be used: no checkpoints then
    keras.backend.clear_session(free_memory=False)  # the first trial starts clean too (the numerics check built)
    _freeze_what_lasts()

    def train(trial: optuna.Trial, config: dict, saved: checkpoints.TrialCheckpoints,
              resume: engines.Resume | None) -> engines.TrainResult:
        recorder = TrialRecorder(trial, resume.history if resume else None, begin=saved.resumed)
        callbacks = [progress.epoch_callback(f"trial {trial.number}", template.epochs), recorder,
                     KerasPruningCallback(trial, "val_loss")]
        return engines.train(dataclasses.replace(template, config=config), split.x_train, split.y_train,
                             split.x_val, split.y_val, callbacks=callbacks, resume=resume,
                             checkpoint=saved.save if saved.enabled else None)

    def objective(trial: optuna.Trial) -> float:
        config = space.suggest(trial)
        TrialRecord(**static, config=config).write(trial)
        saved = checkpoints.TrialCheckpoints(trial, store, template.epochs)
        resume = saved.resume()
        try:
            runtime.raise_if_stopping()  # a signal that arrived between trials
            with runtime.signals_deferred():
                try:
                    result = train(trial, config, saved, resume)
                except CheckpointMismatch as e:  # refused before anything trained or reached the trial
                    if resume is None:
                        raise
                    saved.refuse(e)  # one warning: a side store never costs the trial
                    keras.backend.clear_session(free_memory=False)  # the refused model's layers, no collection
                    result = train(trial, config, saved, None)
            hist = result.history
            TrialRecord.update(trial, params=int(result.model.count_params()), seconds=round(result.seconds, 3),
                               val_accuracy=hist["val_accuracy"][-1], engine_info=result.info, rss_mb=resident_mb())
            return hist["val_loss"][-1]
        except optuna.exceptions.UpdateFinishedTrialError:  # TakenOver too: its retry may resume the checkpoint
            saved.store = None
            raise
        except (optuna.TrialPruned, UserError):
            raise
        except Diverged as e:  # expected in a search: the one-line reason, no traceback
            TrialRecord.update(trial, fail_reason=str(e))
            raise TrialFailed(str(e)) from None
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (errors.Terminated says so)
            TrialRecord.update(trial, fail_reason=str(e) or "interrupted by the user")
            raise
        except Exception as e:  # any other failure (out of memory included) fails this trial only ...
            if runtime.stopping():  # ... unless it is a signal that TensorFlow turned into another error
                TrialRecord.update(trial, fail_reason=runtime.stopping())
                raise KeyboardInterrupt(runtime.stopping()) from e
            TrialRecord.update(trial, fail_reason=f"{type(e).__name__}: {e}"[:2000])
            raise TrialFailed(f"{type(e).__name__}: {e}") from e
        finally:
            saved.remove()  # ended here (a trial taken over disabled it above)
            keras.backend.clear_session()  # once per trial, as a plain script (benchmarks/outside_fit.py)

    return objective
