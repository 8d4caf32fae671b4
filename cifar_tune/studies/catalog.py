"""Queries on what Optuna stored: the baseline trial, the best trial (or none), retries, counts by state,
whether a study has learned anything, and what ``compare`` stored. Read-only; plain Optuna objects in, plain
data out."""

from __future__ import annotations

import re

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
