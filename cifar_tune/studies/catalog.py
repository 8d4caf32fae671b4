"""Queries on what Optuna stored: the baseline trial, the best trial (or none), retries, counts by state,
whether a study has learned anything, what the best trial cost and the best found per hour of training, and
what ``compare`` stored. Read-only; plain Optuna objects in, plain
data out."""

from __future__ import annotations

import re
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from cifar_tune.choices import ARCH_KEYS, study_name
from cifar_tune.errors import UserError
from cifar_tune.storage.database import mask_url
from cifar_tune.studies.records import StudyRecord, TrialRecord

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
CHANCE_ACCURACY = 0.1  # ten balanced classes
LEARNED_MARGIN = 0.05  # a best trial within 5 points of chance has learned nothing worth crowning


def baseline_trial(study: optuna.Study) -> FrozenTrial | None:
    """The study's completed baseline trial, if any."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return next((t for t in done if TrialRecord.read(t).baseline), None)


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The study's best completed trial, or None while no trial has completed."""
    try:
        return study.best_trial
    except ValueError:
        return None


def replaced_trials(trials: list[FrozenTrial]) -> set[int]:
    """Numbers of dead workers' trials for which a retry exists (they do not count towards a target)."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", ())}


def started_trials(study: optuna.Study) -> int:
    """Trials that count towards a study-wide target: every trial that started (running or finished),
    except a dead worker's trial whose retry exists (the retry counts instead, once it starts)."""
    trials = study.get_trials(deepcopy=False)
    gone = replaced_trials(trials)
    return sum(1 for t in trials if t.state != TrialState.WAITING and t.number not in gone)


def retried_trials(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Trials that retry a dead worker's trial."""
    return [t for t in trials if TrialRecord.read(t).retry_of is not None]


def counts_by_state(trials: list[FrozenTrial]) -> dict[str, int]:
    """{'complete': n, 'pruned': n, ...} for the states present, in Optuna's order."""
    states = [t.state for t in trials]
    return {s.name.lower(): states.count(s) for s in TrialState if states.count(s)}


def live_trials(study: optuna.Study, workers: set[str] | None = None) -> list[FrozenTrial]:
    """Running trials started by cifar-tune workers (all of them beat a heartbeat), optionally only ``workers``'."""
    running = [(t, TrialRecord.read(t).worker) for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    return [t for t, worker in running if worker is not None and (workers is None or worker in workers)]


def study_arch(study) -> str | None:
    """The architecture ``study`` (a study or a study summary) tunes: its record's ``arch``, else its default name
    ``cifar10-<arch>``."""
    name, arch = study.study_name, StudyRecord.read(study).arch
    if arch in ARCH_KEYS:
        return arch
    m = re.fullmatch(r"cifar10-(\w+)", name)
    return m.group(1) if m and m.group(1) in ARCH_KEYS else None


def foreign_reason(study) -> str | None:
    """Why ``study`` (a study or a study summary) is not one cifar-tune can read as its own, or None: it is one
    objective minimized (the validation loss) of an architecture (``study_arch``). Another program's study, a
    multi-objective or maximizing one has no single best trial to crown or compare."""
    directions = study.directions
    if len(directions) != 1:
        return f"multi-objective ({', '.join(d.name.lower() for d in directions)})"
    if directions[0] != optuna.study.StudyDirection.MINIMIZE:
        return "maximizes its objective"
    if study_arch(study) is None:
        return "not created by cifar-tune (no cifar-tune record)"
    return None


def split_studies(storage: optuna.storages.BaseStorage) -> tuple[list, dict[str, str]]:
    """The storage's study summaries cifar-tune reads as its own, and the foreign ones: name -> why
    (``foreign_reason``), which every reading command lists as foreign and skips."""
    ours, foreign = [], {}
    for s in optuna.get_all_study_summaries(storage, include_best_trial=False):
        why = foreign_reason(s)
        if why is None:
            ours.append(s)
        else:
            foreign[s.study_name] = why
    return ours, foreign


def foreign_line(foreign: dict[str, str]) -> str:
    """The foreign studies in one line (empty when there is none)."""
    if not foreign:
        return ""
    return (f"skipped {len(foreign)} foreign stud{'ies' if len(foreign) > 1 else 'y'}: "
            + "; ".join(f"{name} ({why})" for name, why in foreign.items()))


def not_learned(study: optuna.Study) -> str | None:
    """Why the study's best trial should not be trusted as a winner (None when it looks sound).

    Two signs that the budget was too small to learn: the best trial is within a few points of chance (a model
    predicting the uniform distribution scores loss ln 10 = 2.303 and accuracy .10), or it has a lower loss
    but a lower accuracy than the baseline trial (the loss ranks near-chance models by calibration, not skill).
    """
    best = best_trial(study)
    if best is None:
        return None
    acc = TrialRecord.read(best).val_accuracy
    base = baseline_trial(study)
    base_acc = TrialRecord.read(base).val_accuracy if base is not None else None
    hint = "the budget (epochs, training images) is likely too small for this architecture to learn"
    if acc is not None and acc < CHANCE_ACCURACY + LEARNED_MARGIN:
        return (f"not learned: the best trial #{best.number} reaches validation accuracy {acc:.3f}, within "
                f"{LEARNED_MARGIN:.2f} of chance ({CHANCE_ACCURACY:.2f}); {hint}")
    if base is not None and best.number != base.number and acc is not None and base_acc is not None \
            and acc < base_acc:
        return (f"not learned: the best trial #{best.number} has a lower validation loss but a lower accuracy "
                f"({acc:.3f}) than the baseline #{base.number} ({base_acc:.3f}); {hint}")
    return None


def find_studies(storage: optuna.storages.BaseStorage) -> dict[str, str]:
    """Architecture -> study name, for every architecture with a study cifar-tune created (``cifar10-<arch>``
    preferred). A study of that name that another program made (no ``arch`` record) or that does not minimize is
    not one: compare, run and report never crown its trials or write into it."""
    by_arch: dict[str, list[str]] = {}
    for s in sorted(optuna.get_all_study_summaries(storage, include_best_trial=False), key=lambda s: s._study_id):
        arch = StudyRecord.read(s).arch
        if arch in ARCH_KEYS and s.directions == [optuna.study.StudyDirection.MINIMIZE]:
            by_arch.setdefault(arch, []).append(s.study_name)
    # The default name wins; otherwise the most recently created study of that architecture.
    return {arch: (study_name(arch) if study_name(arch) in found else found[-1])
            for arch, found in sorted(by_arch.items(), key=lambda kv: ARCH_KEYS.index(kv[0]))}


def check_studies(storage: optuna.storages.BaseStorage, storage_url: str, archs: list[str] | None) -> None:
    """Refuse at once (before any data is loaded) a storage without a study of the asked architectures. Raises
    ``UserError``."""
    found = find_studies(storage)
    if not found or (archs and not set(archs) & set(found)):
        raise UserError(f"no studies{' of ' + ', '.join(archs) if archs else ''} in "
                        f"{mask_url(storage_url)} (run `cifar-tune optimize --arch ...` first)")


# --- what the search cost -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cost:
    """What the best trial costs and what the search spent to find it (``study_cost``). Seconds are training
    seconds (``TrialRecord.training_seconds``); any field may be None where the records do not say."""

    best: int  # the best trial's number
    baseline: int | None  # the baseline trial's (completed), if any
    value: float  # its value (the validation loss)
    seconds_per_epoch: float | None
    params: int | None
    vs_baseline: float | None  # the best trial's seconds per epoch over the baseline trial's (1.0: the baseline)
    params_vs_baseline: float | None
    found_after: float | None  # training seconds of the finished trials up to the best one's end, itself included
    total: float  # training seconds of every finished trial
    history: list[tuple[float, float]]  # (training seconds so far, best value so far) after each finished trial


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _trial_seconds(t: FrozenTrial) -> float:
    """A finished trial's training seconds; where its record does not say (a pruned trial stored before
    ``seconds_per_epoch`` existed, or a trial that failed before an epoch ended), its wall time in Optuna."""
    seconds = TrialRecord.read(t).training_seconds()
    if seconds is None and t.duration is not None:
        seconds = t.duration.total_seconds()
    return seconds or 0.0


def best_by_training_time(study: optuna.Study) -> list[tuple[float, float]]:
    """The best value found against the training time spent: one (cumulative training seconds, best value so
    far) per finished trial (complete, pruned or failed) once a trial has completed, in the order they finished.
    Every finished trial's training counts, whatever its state: a search pays for its pruned and failed trials
    too. Empty before a trial completes. Minimizing studies only (cifar-tune's)."""
    finished = [t for t in study.get_trials(deepcopy=False, states=FINISHED) if t.datetime_complete is not None]
    spent, best, points = 0.0, None, []
    for t in sorted(finished, key=lambda t: (t.datetime_complete, t.number)):
        spent += _trial_seconds(t)
        if t.state == TrialState.COMPLETE and t.value is not None and (best is None or t.value < best):
            best = t.value
        if best is not None:
            points.append((spent, best))
    return points


def study_cost(study: optuna.Study) -> Cost | None:
    """The best trial's cost (seconds per epoch, parameters, and both over the baseline trial's) and the training
    seconds spent until it was found, of all spent; None while no trial has completed."""
    best = best_trial(study)
    if best is None:
        return None
    rec, base = TrialRecord.read(best), baseline_trial(study)
    base_rec = TrialRecord.read(base) if base is not None else None
    history = best_by_training_time(study)
    found = next((spent for spent, value in history if value <= best.value), None)
    return Cost(best=best.number, baseline=None if base is None else base.number, value=best.value,
                seconds_per_epoch=rec.seconds_per_epoch, params=rec.params,
                vs_baseline=_ratio(rec.seconds_per_epoch, base_rec and base_rec.seconds_per_epoch),
                params_vs_baseline=_ratio(rec.params, base_rec and base_rec.params),
                found_after=found, total=history[-1][0] if history else 0.0, history=history)


def hours(seconds: float) -> str:
    """Training time as people read it: ``0.42 h`` from a tenth of an hour, else ``2.2 min``, under a minute
    ``12.3 s``."""
    if seconds >= 360:
        return f"{seconds / 3600:.2f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


def cost_line(cost: Cost) -> str:
    """The best trial's cost in one line: ``trial 7: 0.84 s per epoch, 1,234,567 parameters (2.3x the baseline's
    time per epoch, 1.8x its parameters)``."""
    per_epoch = "? s" if cost.seconds_per_epoch is None else f"{cost.seconds_per_epoch:.3g} s"
    params = "? parameters" if cost.params is None else f"{cost.params:,} parameters"
    def times(x: float) -> str:
        return f"{x:.1f}x" if x >= 0.95 else f"{x:.2f}x"

    against = []
    if cost.best == cost.baseline:
        against.append("the baseline itself")
    elif cost.vs_baseline is not None:
        against.append(f"{times(cost.vs_baseline)} the baseline's time per epoch")
    if cost.params_vs_baseline is not None and cost.best != cost.baseline:
        against.append(f"{times(cost.params_vs_baseline)} its parameters")
    return f"trial {cost.best}: {per_epoch} per epoch, {params}" + (f" ({', '.join(against)})" if against else "")


def found_line(cost: Cost) -> str:
    """The best found per hour spent in one line: ``best val_loss 1.2340 after 0.42 h of training (of 1.10
    h)``."""
    after = "?" if cost.found_after is None else hours(cost.found_after)
    return f"best val_loss {cost.value:.4f} after {after} of training (of {hours(cost.total)})"
