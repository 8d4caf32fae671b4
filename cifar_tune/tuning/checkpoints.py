"""Trials that survive preemption: each trial's training state is checkpointed into Optuna's artifact store after
every epoch, and the retry of a dead worker's trial resumes from the last checkpoint instead of epoch 0.

How it fits what exists (no scheduler of our own): Optuna's heartbeat fails a dead worker's trial and enqueues
its retry with the same parameters (``storage/database.py``); the retry's record names the dead trial
(``TrialRecord.retry_of``, Optuna's system attr ``failed_trial`` for a retry made without our record). Here:

* **When**: at the end of every epoch but the last (the state after the last epoch is the trial's result, which
  the tell stores). Not every N seconds inside an epoch: both engines resume only at epoch boundaries (the
  epoch's shuffle is keyed by the epoch, and mid-epoch state would need the batch position and the partial
  metrics too); on this 2-core CPU the longest epoch of the five architectures on all 45,000 training images
  is a few minutes, which bounds the work a preemption loses. (``benchmarks/checkpoints.md`` has the costs.)
* **What**: ``engines.Resume`` (weights, BatchNorm statistics, seed-generator states, optimizer variables, the
  epochs done and the curves so far) as one ``.npz`` artifact, written through the store's own
  ``write``/``remove`` and read with ``optuna.artifacts.download_artifact``. The trial's record points at its
  latest checkpoint (``TrialRecord.checkpoint``: artifact id, epoch, bytes, seconds the checkpoint took); the
  previous one is removed once the pointer moved, so a trial holds one checkpoint at a time and a worker killed
  mid-write leaves the last whole one in place. Not ``optuna.artifacts.upload_artifact``: it lists the file in the
  trial's system attrs, which cannot be removed from a finished trial, so every removed checkpoint would stay
  listed on the dashboard as a dead link (and Optuna's ``get_all_artifact_meta`` fails on the dashboard's way of
  un-listing one).
* **Resume**: the retry takes the latest checkpoint of the nearest trial up its chain of retries that has one
  (``resume``), the engine restores it, and only then (``resumed``, from the first callback) the retry records
  ``resumed_from_epoch``/``resumed_from_trial``, continues the curves record, and its training reports only the
  remaining epochs to the pruner. The earlier epochs' validation losses are copied into the retry's
  intermediate values first (``trial.report``, no pruning check), so its curve in Optuna is whole: pruners and
  the dashboard compare trials epoch by epoch, and a retry without its first epochs would look like a
  different curve.
* **Removal**: when a trial ends in this process (complete, pruned, failed, interrupted), its checkpoint and
  those of the trials it resumed are removed; none is kept, the best trial's neither (``compare`` retrains the
  best configuration from scratch, and a checkpoint is for survival, not a result). A trial another worker took
  over keeps its checkpoint: its retry may be resuming from it.

The artifact folder must be shared by every machine of a study (``$CIFAR_TUNE_ARTIFACTS``). A checkpoint is a
side store and never costs a trial: a retry whose checkpoint cannot be read, lies outside its epochs, holds
curves that do not match its epoch, or does not fit the model and optimizer (an older layout, another model:
the engine refuses it before training, ``errors.CheckpointMismatch``) says so in one warning and starts at
epoch 0, before anything of the checkpoint reached the trial; a checkpoint that cannot be written (a full
disk) is one warning per trial, the trial goes on without it, and nothing of it stays in the folder (the
store writes whole files only, ``storage/artifacts.py``).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
import uuid
from pathlib import Path

import optuna

from cifar_tune import engines, progress
from cifar_tune.choices import ARTIFACTS_ENV
from cifar_tune.errors import TakenOver
from cifar_tune.studies.records import TrialRecord

MAX_CHAIN = 10  # retries of retries followed at most (Optuna retries a dead trial once; a chain is short)


class TrialCheckpoints:
    """One running trial's checkpoints in ``store`` (an Optuna artifact store, or None: checkpointing off).

    ``resume()`` -> the state to continue from (or None), ``save(state)`` is the engines' per-epoch hook,
    ``remove()`` drops the checkpoints once the trial ended here. ``epochs``: the trial's epochs (the state after
    the last one is not checkpointed)."""

    def __init__(self, trial: optuna.Trial, store, epochs: int):
        self.trial, self.store, self.epochs = trial, store, epochs
        self.current: dict | None = None  # this trial's checkpoint pointer (TrialRecord.checkpoint)
        self.spent, self.count = 0.0, 0  # seconds this trial's checkpoints took so far, and how many it wrote
        self.pending: tuple[int, engines.Resume] | None = None  # (trial number, state) resume() chose
        self.unsaved = 0  # checkpoints this trial could not write (the first one warns)

    @property
    def enabled(self) -> bool:
        return self.store is not None

    def save(self, state: engines.Resume) -> None:
        """Store ``state`` as the trial's latest checkpoint and remove the previous one. A write that fails (a full
        disk, the folder gone) is a warning, the first of the trial only: the trial goes on, its previous
        checkpoint stays the latest, and nothing of the failed one stays. Raises ``TakenOver`` when another
        worker ended the trial meanwhile (nothing of this checkpoint stays)."""
        if state.epoch >= self.epochs:
            return
        start = time.perf_counter()
        artifact_id = f"checkpoint-{uuid.uuid4()}.npz"
        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "state.npz"
                state.save(path)
                size = path.stat().st_size
                with open(path, "rb") as f:
                    self.store.write(artifact_id, f)  # whole or absent (storage.artifacts.WholeFileArtifactStore)
        except Exception as e:  # noqa: BLE001 - a side store: never worth the trial
            self._unsaved(state.epoch, e)
            return
        seconds = time.perf_counter() - start
        pointer = {"artifact_id": artifact_id, "epoch": state.epoch, "bytes": size, "seconds": round(seconds, 4),
                   "total_seconds": round(self.spent + seconds, 4), "count": self.count + 1}
        try:
            TrialRecord.update(self.trial, checkpoint=pointer)
        except optuna.exceptions.UpdateFinishedTrialError:
            self._drop(artifact_id)
            raise TakenOver(f"trial {self.trial.number} was ended by another worker") from None
        except BaseException:  # the storage failed: a checkpoint nothing points at must not stay
            self._drop(artifact_id)
            raise
        previous, self.current = self.current, pointer
        self.spent, self.count = self.spent + seconds, self.count + 1
        if previous:
            self._drop(previous["artifact_id"])

    def resume(self) -> engines.Resume | None:
        """The latest checkpoint up this trial's chain of retries (None: start at epoch 0), checked as far as it
        can be without the model: readable, its epoch inside the trial's, its curves as long as its epoch. A
        checkpoint that fails a check costs one warning and None. Nothing reaches the trial yet: ``resumed`` once
        the engine restored it, ``refuse`` when the engine could not."""
        if not self.enabled:
            return None
        for ancestor in self._ancestors():
            pointer = TrialRecord.read(ancestor).checkpoint
            if not pointer or not pointer.get("artifact_id"):
                continue
            state = self._load(ancestor.number, pointer["artifact_id"])
            problem = None if state is None else _problem(state, self.epochs)
            if problem:
                self._warn(ancestor.number, problem)
            if state is None or problem:
                return None
            self.pending = (ancestor.number, state)
            return state
        return None

    def resumed(self) -> None:
        """The engine restored the state ``resume`` returned (the first callback of its training calls this):
        record where the trial resumed and copy the earlier epochs' validation losses into its intermediate
        values. Does nothing when ``resume`` returned None."""
        if self.pending is None:
            return
        number, state = self.pending
        self.pending = None
        TrialRecord.update(self.trial, resumed_from_epoch=state.epoch, resumed_from_trial=number)
        for step, value in enumerate(state.history["val_loss"]):
            self.trial.report(value, step)  # as KerasPruningCallback reports them (step = epoch index)
        progress.info(f"trial {self.trial.number:>3} resumes trial {number} from its checkpoint after "
                      f"epoch {state.epoch}")

    def refuse(self, error: Exception) -> None:
        """The engine refused the state ``resume`` returned (``errors.CheckpointMismatch``): one warning; the
        trial trains from epoch 0."""
        if self.pending is not None:
            self._warn(self.pending[0], str(error))
            self.pending = None

    def _warn(self, number: int, problem: str) -> None:
        progress.warn(f"warning: trial {self.trial.number}: the checkpoint of trial {number} cannot be used "
                      f"({problem}); starting at epoch 0")

    def _unsaved(self, epoch: int, error: Exception) -> None:
        self.unsaved += 1
        if self.unsaved == 1:
            kept = f"a retry resumes after epoch {self.current['epoch']}" if self.current else "a retry starts afresh"
            progress.warn(f"warning: trial {self.trial.number}: its checkpoint after epoch {epoch} was not stored "
                          f"in ${ARTIFACTS_ENV} ({type(error).__name__}: {error}); the trial goes on without it "
                          f"({kept})")

    def remove(self) -> None:
        """Remove the checkpoints of this trial and of the trials it retried (the trial ended here)."""
        if not self.enabled:
            return
        ids = {p["artifact_id"] for p in [self.current] + [TrialRecord.read(t).checkpoint for t in self._ancestors()]
               if p and p.get("artifact_id")}
        for artifact_id in ids:
            self._drop(artifact_id)
        if self.current:
            stats = {k: v for k, v in self.current.items() if k != "artifact_id"}
            self.current = None
            with contextlib.suppress(Exception):  # cleanup must not hide how the trial ended (a finally runs it)
                TrialRecord.update(self.trial, checkpoint={**stats, "artifact_id": None})

    def _ancestors(self) -> list[optuna.trial.FrozenTrial]:
        """The trials this one retries, nearest first (its own retry_of, that trial's, ...); the study's trials
        are read only for a retry."""
        parent = _parent(self.trial)
        if parent is None:
            return []
        trials = {t.number: t for t in self.trial.study.get_trials(deepcopy=False)}
        chain: list[optuna.trial.FrozenTrial] = []
        while (current := trials.get(parent)) is not None and len(chain) < MAX_CHAIN:
            chain.append(current)
            parent = _parent(current)
        return chain

    def _load(self, number: int, artifact_id: str) -> engines.Resume | None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "state.npz"
            try:
                optuna.artifacts.download_artifact(artifact_store=self.store, file_path=str(path),
                                                   artifact_id=artifact_id)
                return engines.Resume.load(path)
            except Exception as e:  # missing (folder not shared), damaged: the retry starts afresh
                progress.warn(f"warning: trial {self.trial.number}: the checkpoint of trial {number} cannot be read "
                              f"({type(e).__name__}: {e}); starting at epoch 0 (is ${ARTIFACTS_ENV} shared by all "
                              "workers?)")
                return None

    def _drop(self, artifact_id: str) -> None:
        try:
            self.store.remove(artifact_id)
        except Exception:  # noqa: BLE001 - gone already (another worker's cleanup), or the folder went away
            pass


def _parent(trial) -> int | None:
    """The number of the trial ``trial`` retries: our record's ``retry_of`` (the tuning loop's retries carry it),
    else Optuna's ``failed_trial`` (a frozen trial's system attrs; a running ``optuna.Trial`` shows none)."""
    parent = TrialRecord.read(trial).retry_of
    parent = getattr(trial, "system_attrs", {}).get("failed_trial") if parent is None else parent
    return parent if isinstance(parent, int) else None


def _problem(state: engines.Resume, epochs: int) -> str | None:
    """Why ``state`` cannot start a trial of ``epochs`` epochs, in words, checked without the model (the engine
    checks that its arrays fit), or None."""
    if not 0 < state.epoch < epochs:
        return f"it is after epoch {state.epoch}, outside this trial's {epochs}"
    lengths = {k: len(v) for k, v in state.history.items()}
    if "val_loss" not in lengths or set(lengths.values()) != {state.epoch}:
        return f"its curves do not match its {state.epoch} epochs (an older layout?)"
    return None
