"""Create or resume a study: sampler, pruner, the baseline enqueued first, and the checks a resume must pass."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

from cifar_tune import runtime
from cifar_tune.choices import ENGINES, PRUNERS, SAMPLERS
from cifar_tune.data import cifar10
from cifar_tune.errors import UserError
from cifar_tune.storage import artifacts, handle
from cifar_tune.storage.database import heartbeat_timing
from cifar_tune.storage.locks import study_lock
from cifar_tune.studies import spaces
from cifar_tune.studies.presets import OptimizeSettings
from cifar_tune.studies.records import StudyRecord, TrialRecord
from cifar_tune.tuning import dashboard_updates

# TPE's `group` and the heartbeat/retry machinery are marked experimental; they are the documented way to do
# what we need, so their warnings would only be noise in every command's output.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

CREATOR_WAIT = 10.0  # seconds a worker waits for the study's creator to store the baseline and the attributes


def make_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    """TPE (multivariate, grouped for the optional and conditional parameters, constant liar) or random, its
    draws seeded per trial (``TrialSeeded``) when ``seed`` is given."""
    if name not in SAMPLERS:
        raise UserError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}")

    def build(seed: int | None) -> optuna.samplers.BaseSampler:
        if name == "tpe":
            # constant_liar: a trial another worker is still running counts as a poor result, so parallel
            # workers do not all sample next to the same promising point. With one worker it changes nothing.
            return optuna.samplers.TPESampler(multivariate=True, group=True, constant_liar=True, seed=seed)
        return optuna.samplers.RandomSampler(seed=seed)

    return build(None) if seed is None else TrialSeeded(build, seed)


class TrialSeeded(optuna.samplers.BaseSampler):
    """A seeded Optuna sampler whose random state is drawn afresh for every trial from (seed, trial number).

    Optuna's seeded samplers are reproducible within one process, but processes that ask at the same moment
    with the same seed and the same history (commands started together on one study) draw the same sample, and
    a third of a budget was seen wasted on duplicates. The storage hands out every trial number once, so seeding
    by it makes concurrent workers draw different samples while one process with one seed stays reproducible
    (and a resumed study does not replay its first suggestions). Optuna has no such option; this wrapper only
    rebuilds the sampler in ``before_trial`` and delegates everything else.
    """

    def __init__(self, build, seed: int):
        self._build, self._seed = build, seed
        self._inner = build(seed)

    def before_trial(self, study, trial) -> None:
        state = np.random.SeedSequence([self._seed, trial.number]).generate_state(1)[0]
        self._inner = self._build(int(state))
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()


def make_pruner(name: str, epochs: int, startup_trials: int = 3, warmup_epochs: int = 1) -> optuna.pruners.BasePruner:
    """Hyperband over epochs, successive halving (Hyperband's most aggressive bracket alone), median (after
    ``startup_trials`` complete and ``warmup_epochs``), or none. Steps are epoch indexes (0 = the first epoch), so
    with ``min_resource=1`` and a reduction factor of 3 the rungs fall after epochs 2, 4, 10, ..."""
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
    if name == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_epochs)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UserError(f"unknown pruner {name!r}; choose from {', '.join(PRUNERS)}")


def prepare(settings: OptimizeSettings) -> tuple[spaces.Space, cifar10.Split]:
    """The validated space and the train/validation split (data loaded once per process)."""
    space = spaces.load(settings.arch, settings.space_path)
    ds = cifar10.load_for_run(settings.data, settings.subset, settings.seed)
    return space, cifar10.split_validation(ds, settings.val_size, settings.seed)


def storage_of(settings: OptimizeSettings) -> handle.Storage:
    """The storage of the study (``handle.resolve``), opened as ``optimize``'s: with the settings' heartbeats and
    the retry of a dead worker's trial (recorded as ``TrialRecord.retry_attrs`` says)."""
    return handle.resolve(settings.storage, handle.Tuning(settings.heartbeat_interval, settings.grace_period,
                                                          TrialRecord.retry_attrs))


def open_and_prepare(settings: OptimizeSettings, storage: handle.Storage | None = None):
    """(storage, space, split): the data are loaded and checked first, so bad data never touch the storage; an
    unusable artifact folder costs its warning before the storage is touched too (a side store, never the study).
    ``storage``: the command's (default: ``storage_of(settings)``)."""
    space, split = prepare(settings)
    return open_study_storage(settings, storage), space, split


def open_study_storage(settings: OptimizeSettings, storage: handle.Storage | None = None):
    """The study's Optuna storage (``storage.writing``: created if missing, with heartbeats and retries; ``storage``
    default: ``storage_of(settings)``), after the artifact folder's check (which creates nothing: a refused
    command leaves no folder)."""
    artifacts.artifact_store(create=False)
    return (storage or storage_of(settings)).writing()


def create_or_load(settings: OptimizeSettings, storage, space: spaces.Space,
                   split: cifar10.Split) -> tuple[optuna.Study, bool]:
    """Create the study (enqueueing the baseline as its first trial) or load it to resume; True if created.

    Raises ``UserError``, storing nothing, when the study of that name was not made by cifar-tune or does not
    minimize, or when this command's settings differ from those the study was created with (``_check_resume``).
    """
    sampler = make_sampler(settings.sampler, settings.seed)
    pruner = make_pruner(settings.pruner, settings.epochs, settings.median_startup_trials,
                         settings.median_warmup_epochs)
    try:
        # create_study without load_if_exists is atomic in the database (unique study name), so among many
        # workers starting at once exactly one creates the study and enqueues the baseline.
        study = optuna.create_study(study_name=settings.study_name, storage=storage, sampler=sampler,
                                    pruner=pruner, direction="minimize")
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=settings.study_name, storage=storage, sampler=sampler, pruner=pruner)
        _wait_for_creator(study)
        _check_ours(study, settings.study_name)
        _check_resume(study, settings, space, split)
        with study_lock(study):  # workers resuming at once re-enqueue it only once
            requeue_lost_baseline(study, space.baseline_params())
        return study, False
    # The baseline first: a worker that loads the study meanwhile waits for it (see _wait_for_creator).
    study.enqueue_trial(space.baseline_params(), user_attrs=TrialRecord(baseline=True).to_attrs())
    StudyRecord(arch=settings.arch, epochs=settings.epochs, data=split.description, space=space.to_dict(),
                baseline_params=space.baseline_params(),
                settings={k: v for k, v in settings.to_dict().items() if k != "storage"}).write(study)
    dashboard_updates.tell(study, "note")
    return study, True


def _wait_for_creator(study: optuna.Study, timeout: float = CREATOR_WAIT) -> None:
    """A study created a moment ago by another worker: wait until its creator stored the baseline and attrs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        trials = study.get_trials(deepcopy=False)
        young = not trials or (StudyRecord.read(study).settings is None  # the record's last attribute
                               and all(t.state == TrialState.WAITING for t in trials))
        if not young:
            return
        time.sleep(0.2)


def _check_ours(study: optuna.Study, name: str) -> None:
    """Refuse a study of that name that another program made (no cifar-tune record) or that does not minimize
    one objective: its trials would be joined silently, no baseline queued, and the worst trial crowned best."""
    if len(study.directions) != 1 or study.direction != optuna.study.StudyDirection.MINIMIZE:
        shown = ", ".join(d.name.lower() for d in study.directions)
        raise UserError(f"study {name!r} in this storage is a {shown} study; cifar-tune's studies minimize the "
                        "validation loss: choose another --study-name")
    if StudyRecord.read(study).arch is None:
        raise UserError(f"study {name!r} in this storage was not created by cifar-tune (it has no cifar-tune "
                        "record): choose another --study-name")


# What a study keeps for life: a resume (or another worker) with any of these changed would mix trials that are
# not comparable. The data are compared by their description (fingerprint, validation size, seed), not by path:
# machines sharing a study keep the same data in different places.
RESUME_KEEPS = ("arch", "preset", "epochs", "subset", "data", "space", "engine", "precision", "pruner", "heartbeat")


def study_record(settings: OptimizeSettings, space: spaces.Space, split: cifar10.Split) -> dict:
    """The values of ``RESUME_KEEPS`` for this command, as the study stores them (JSON types)."""
    now = {"arch": settings.arch, "preset": preset_name(settings.preset), "epochs": settings.epochs,
           "data": split.description, "subset": settings.subset, "space": space.to_dict()["params"],
           "engine": runtime.resolve_engine(settings.engine), "precision": settings.precision,
           "pruner": settings.pruner, "heartbeat": _heartbeat_text(settings.heartbeat_interval, settings.grace_period)}
    return json.loads(json.dumps(now))


def preset_name(preset: str) -> str:
    """A preset as a study keeps it: its name (``quick``; ``./mine.toml``, ``/abs/mine.toml`` -> ``mine``), so the
    same preset given by another path (another machine's checkout) matches; its values are compared apart."""
    return Path(preset).stem if preset.endswith(".toml") else preset


def _heartbeat_text(interval: int | None, grace: int | None) -> str:
    beat, grace = heartbeat_timing(interval, grace)
    return f"{beat} s beat, {grace} s grace"


def stored_record(study: optuna.Study) -> dict:
    """The values of ``RESUME_KEEPS`` the study was created with (those an older cifar-tune did not store are
    left out, and not checked)."""
    record = StudyRecord.read(study)
    settings = record.settings or {}
    stored = {"arch": record.arch, "epochs": record.epochs, "data": record.data,
              "space": record.space.get("params") if record.space else None,
              **{k: settings[k] for k in ("preset", "subset", "engine", "precision", "pruner") if k in settings}}
    if stored.get("engine") in ENGINES:
        stored["engine"] = runtime.resolve_engine(stored["engine"])
    if isinstance(stored.get("preset"), str):
        stored["preset"] = preset_name(stored["preset"])
    if "grace_period" in settings:
        stored["heartbeat"] = _heartbeat_text(settings.get("heartbeat_interval"), settings["grace_period"])
        settings = {**settings, "heartbeat": True}  # checked below
    return {k: v for k, v in stored.items() if v is not None or k in settings}


def _check_resume(study: optuna.Study, settings: OptimizeSettings, space: spaces.Space, split: cifar10.Split) -> None:
    """Refuse, in one line, a command whose ``RESUME_KEEPS`` differ from the study's: say what changed and what
    to do. Runs before any trial is asked for, so nothing is stored."""
    now, then = study_record(settings, space, split), stored_record(study)
    for key in RESUME_KEEPS:
        if key in then and then[key] != now[key]:
            change = _space_change(then[key], now[key]) if key == "space" else \
                f"{key} {then[key]!r} in the study, {now[key]!r} now"
            raise UserError(f"study {settings.study_name!r} was created with other settings ({change}); resume it "
                            "with the settings it was created with, or start a new study (optimize --study-name "
                            "NAME, or another --storage)")


def _space_change(then: dict, now: dict) -> str:
    """The first difference between two stored spaces, in words: which parameter, which field, before and now."""
    for name in sorted(set(then) | set(now)):
        if name not in now:
            return f"search space: {name} is no longer searched"
        if name not in then:
            return f"search space: {name} is searched now"
        for field in sorted(set(then[name]) | set(now[name])):
            if then[name].get(field) != now[name].get(field):
                return f"search space: {name}.{field} {then[name].get(field)!r} in the study, " \
                       f"{now[name].get(field)!r} now"
    return "search space"


# Failures that say nothing of the baseline's configuration, so the study still owes its baseline: a stop, and
# the side-store failures of older versions (a checkpoint that did not fit, a full disk under the artifacts)
# which failed the trial then; today a side store costs a warning, never the trial.
LOST_BASELINE_REASONS = (runtime.INTERRUPTED, runtime.TERMINATED, "ValueError: the checkpoint does not fit",
                         "ValueError: cannot resume at epoch", "OSError: [Errno 28]")
MAX_DEAD_BASELINES = 4  # baseline trials whose worker died (2 requeues' worth): a config that kills its worker


def baseline_owed(study: optuna.Study) -> bool:
    """Whether the study owes its baseline trial: it has one, none is complete, pruned, running or waiting, and
    the last one was lost rather than failed by itself. Lost: stopped (Ctrl-C, SIGTERM), a side-store failure of
    an older version (``LOST_BASELINE_REASONS``), or a dead worker's retry (Optuna retries a dead trial once;
    the dead retry is lost for good) while fewer than ``MAX_DEAD_BASELINES`` baseline trials died so. A baseline
    that failed by itself (diverged, say) would fail again: it is not owed."""
    baseline = [t for t in study.get_trials(deepcopy=False) if TrialRecord.read(t).baseline]
    if not baseline or any(t.state != TrialState.FAIL for t in baseline):
        return False
    last = TrialRecord.read(baseline[-1])
    if last.fail_reason is not None:
        return last.fail_reason.startswith(LOST_BASELINE_REASONS)
    # No reason: failed by a heartbeat (its worker died). A first death is retried by whoever failed it (the
    # retry callback, right after the failure), so only a dead retry is lost.
    retry = last.retry_of is not None or "failed_trial" in baseline[-1].system_attrs
    dead = sum(TrialRecord.read(t).fail_reason is None for t in baseline)
    return retry and dead < MAX_DEAD_BASELINES


def requeue_lost_baseline(study: optuna.Study, params: dict | None = None) -> bool:
    """Enqueue the baseline trial once more, as it was queued the first time (its parameters, the baseline
    flag), when the study owes it (``baseline_owed``); True if it did. ``params``: the baseline's parameters
    (default: those the study's record keeps). Call it under the study lock (``storage.locks.study_lock``), so
    workers doing it at once enqueue it once."""
    if not baseline_owed(study):
        return False
    params = params or StudyRecord.read(study).baseline_params
    if not params:  # a study without its record's parameters: nothing to queue it with
        return False
    study.enqueue_trial(params, user_attrs=TrialRecord(baseline=True).to_attrs())
    return True
