"""Create or resume a study: sampler, pruner, the baseline enqueued first, and the checks a resume must pass."""

from __future__ import annotations

import time
import warnings

import optuna
from optuna.trial import TrialState

from .. import data, spaces
from ..database import open_storage, study_lock
from ..errors import UserError
from ..names import StudyAttr, TrialAttr
from ..presets import OptimizeSettings
from . import story

# TPE's `group` and the heartbeat/retry machinery are marked experimental; they are the documented way to do
# what we need, so their warnings would only be noise in every command's output.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

CREATOR_WAIT = 10.0  # seconds a worker waits for the study's creator to store the baseline and the attributes


def make_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    """TPE (multivariate, grouped for the optional and conditional parameters, constant liar) or random."""
    if name == "tpe":
        # constant_liar: a trial another worker is still running counts as a poor result, so parallel workers
        # do not all sample next to the same promising point. With one worker it changes nothing.
        return optuna.samplers.TPESampler(multivariate=True, group=True, constant_liar=True, seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise UserError(f"unknown sampler {name!r}")


def make_pruner(name: str, epochs: int, startup_trials: int = 3, warmup_epochs: int = 1) -> optuna.pruners.BasePruner:
    """Hyperband over epochs, median (after ``startup_trials`` complete and ``warmup_epochs``), or none."""
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_epochs)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UserError(f"unknown pruner {name!r}")


def prepare(settings: OptimizeSettings) -> tuple[spaces.Space, data.Split]:
    """The validated space and the train/validation split (data loaded once per process)."""
    space = spaces.load(settings.arch, settings.space_path)
    ds = data.load_for_run(settings.data, settings.subset, settings.seed)
    return space, data.split_validation(ds, settings.val_size, settings.seed)


def open_and_prepare(settings: OptimizeSettings):
    """(storage, space, split): the data are loaded and checked first, so bad data never touch the storage."""
    space, split = prepare(settings)
    storage = open_storage(settings.storage, heartbeat_interval=settings.heartbeat_interval,
                           grace_period=settings.grace_period)
    return storage, space, split


def create_or_load(settings: OptimizeSettings, storage, space: spaces.Space, split: data.Split,
                   worker: int = 0) -> tuple[optuna.Study, bool]:
    """Create the study (enqueueing the baseline as its first trial) or load it to resume; True if created."""
    sampler = make_sampler(settings.sampler, None if settings.seed is None else settings.seed + worker)
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
        _check_compatible(study, settings, split)
        # A seeded sampler restarted on a resumed study would replay the same first suggestions: move the seed on
        # by the trials already there (still reproducible for the same history; kept within numpy's range).
        study.sampler = make_sampler(settings.sampler, (settings.seed + worker + 1000 * len(study.trials)) % 2**32)
        with study_lock(study):  # workers resuming at once re-enqueue it only once
            _requeue_lost_baseline(study, space)
        return study, False
    # The baseline first: a worker that loads the study meanwhile waits for it (see _wait_for_creator).
    study.enqueue_trial(space.baseline_params(), user_attrs={TrialAttr.BASELINE: True})
    attrs = {StudyAttr.ARCH: settings.arch, StudyAttr.EPOCHS: settings.epochs, StudyAttr.DATA: split.description,
             StudyAttr.SPACE: space.to_dict(), StudyAttr.BASELINE_PARAMS: space.baseline_params(),
             StudyAttr.SETTINGS: {k: v for k, v in settings.to_dict().items() if k != "storage"}}
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    story.tell(study, "note")
    return study, True


def _wait_for_creator(study: optuna.Study, timeout: float = CREATOR_WAIT) -> None:
    """A study created a moment ago by another worker: wait until its creator stored the baseline and attrs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        trials = study.get_trials(deepcopy=False)
        young = not trials or (StudyAttr.SETTINGS not in study.user_attrs
                               and all(t.state == TrialState.WAITING for t in trials))
        if not young:
            return
        time.sleep(0.2)


def _check_compatible(study: optuna.Study, settings: OptimizeSettings, split: data.Split) -> None:
    """A resumed study must keep its arch, epochs and data: otherwise its trials are not comparable."""
    attrs = study.user_attrs
    for key, now in ((StudyAttr.ARCH, settings.arch), (StudyAttr.EPOCHS, settings.epochs),
                     (StudyAttr.DATA, split.description)):
        if key in attrs and attrs[key] != now:
            raise UserError(f"study {settings.study_name!r} was run with {key} {attrs[key]!r}, this run has "
                            f"{now!r}; resume with the same settings or choose another --study-name")


def _requeue_lost_baseline(study: optuna.Study, space: spaces.Space) -> None:
    """If the baseline trial failed (e.g. Ctrl-C during trial 0) and none is pending, enqueue it once more."""
    baseline = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(TrialAttr.BASELINE)]
    if baseline and all(t.state == TrialState.FAIL for t in baseline):
        study.enqueue_trial(space.baseline_params(), user_attrs={TrialAttr.BASELINE: True})
