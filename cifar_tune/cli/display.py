"""The optimize command's lines as text: the header, one line per finished trial, the summary, the resume command.
Formatting only (``console.py`` prints them): nothing here decides or stores."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import optuna
from optuna.trial import TrialState

from cifar_tune import runtime
from cifar_tune.choices import DEFAULT_STORAGE, study_name
from cifar_tune.storage.database import mask_url
from cifar_tune.studies import catalog
from cifar_tune.studies.records import TrialRecord
from cifar_tune.text import count

if TYPE_CHECKING:
    from cifar_tune.studies.presets import OptimizeSettings  # loads Keras: the CLI imports this module before


def short_params(params: dict) -> str:
    """Parameters as ``k=v`` pairs, switches that are on left out (their value says it)."""
    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    return " ".join(f"{k}={fmt(v)}" for k, v in params.items() if not k.startswith("use_") or not v)


def _acc(record: TrialRecord) -> float:
    return float("nan") if record.val_accuracy is None else record.val_accuracy


def trial_line(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> str:
    """One line for a finished trial: number, state, value, validation accuracy, key params, best so far."""
    state, record = trial.state.name.lower(), TrialRecord.read(trial)
    if trial.state == TrialState.COMPLETE:
        value = f"val_loss {trial.value:.4f} val_acc {_acc(record):.4f}"
    elif trial.state == TrialState.PRUNED:
        value = f"at epoch {trial.last_step + 1}" if trial.last_step is not None else ""
    else:
        value = (record.fail_reason or "")[:80]
    best = catalog.best_trial(study)
    best_text = f"best #{best.number} {best.value:.4f}" if best is not None else "best -"
    tag = " (baseline)" if record.baseline else ""
    if record.retry_of is not None:
        tag += f" (retry of #{record.retry_of})"
    return f"trial {trial.number:>3} {state:<8} {value:<36} | {short_params(trial.params)}{tag} | {best_text}"


def taken_over_line(study: optuna.Study, trial: optuna.trial.FrozenTrial, value: float | None) -> str:
    """One line for a trial another worker declared dead (its heartbeat came late) while this worker ran it."""
    retry = next((t.number for t in study.get_trials(deepcopy=False)
                  if TrialRecord.read(t).retry_of == trial.number), None)
    again = f"retried as trial {retry}" if retry is not None else "not retried"
    result = f" (val_loss {value:.4f})" if value is not None else ""
    return (f"trial {trial.number:>3} taken over: another worker failed it as dead (no heartbeat within the grace "
            f"period) and it was {again}; this worker's result{result} is not kept, and it goes on")


def header(settings: OptimizeSettings, study: optuna.Study, created: bool, total: int | None = None,
           per_process: int | None = None, gpus: list[str] | None = None) -> str:
    """The first line of an optimize command: study, storage, budget, sampler, pruner, workers."""
    how = "new study" if created else f"resuming ({count(len(study.trials), 'trial')} stored)"
    if total is None:
        budget = count(settings.n_trials, "new trial")
    else:
        budget = f"until the study holds {count(total, 'trial')} (now {catalog.started_trials(study)})"
    workers = count(settings.jobs, "worker")
    if gpus and settings.jobs > 1:  # where they compute (runtime.devices.worker_placement: round robin)
        workers += f" on {count(len(gpus), 'GPU')} {','.join(gpus)}"
    workers += f", a fresh process every {count(per_process, 'trial')}" if per_process else ""
    return (f"Study {settings.study_name} ({settings.arch}) in {mask_url(settings.storage)}: {how}; "
            f"{budget} of {count(settings.epochs, 'epoch')}, {settings.sampler} sampler, "
            f"{settings.pruner} pruner, preset {settings.preset}, {workers}\n{limits(settings, total)}")


def limits(settings: OptimizeSettings, total: int | None = None) -> str:
    """Every limit that can end the run, in one line: the trials (new ones, or a study-wide total) and the
    timeout, if any (no trial starts after it; the ones running finish)."""
    trials = count(settings.n_trials, "new trial") if total is None else f"a study of {count(total, 'trial')}"
    if settings.timeout is None:
        return f"Ends after {trials} (no timeout; Ctrl-C stops it, finished trials are kept)."
    return (f"Ends after {trials} or at the {settings.timeout:g} s timeout, whichever comes first (no trial "
            "starts after the timeout; the running ones finish).")


def ended_line(event) -> str:
    """Which limit ended the run (a ``progress.StudyFinished``): the trials, the study-wide total, the timeout."""
    from cifar_tune import progress

    settings = event.settings
    since = datetime.now() - timedelta(seconds=event.seconds)  # Optuna stores local times without a zone
    ran = sum(1 for t in event.study.trials if t.datetime_start is not None and t.datetime_start >= since)
    if event.ended == progress.ENDED_TRIALS:
        return f"Ended: its {count(settings.n_trials, 'new trial')} ran (n_trials reached)."
    if event.ended == progress.ENDED_TOTAL:
        return f"Ended: the study holds its {count(total_of(settings), 'trial')} (total_trials reached)."
    if event.ended == progress.ENDED_TIMEOUT:
        return (f"Ended: the {settings.timeout:g} s timeout passed (no trial starts after it) with "
                f"{count(ran, 'trial')} run; give --timeout (or timeout=) more seconds, or run the command again "
                "for more.")
    return ""


def total_of(settings: OptimizeSettings) -> int | None:
    from cifar_tune.tuning.budget import total_trials

    return total_trials(settings)


def summary(study: optuna.Study) -> str:
    """Trials by state, the best trial beside the baseline trial, the best trial's cost (``catalog.cost_line``)
    and the best found per hour of training (``catalog.found_line``); a study that learned nothing: the
    library's warning says it, ``tuning.run_study``."""
    trials = study.get_trials(deepcopy=False)
    counts = catalog.counts_by_state(trials)
    shown = ", ".join(f"{counts[s]} {s}" for s in ("complete", "pruned", "fail") if s in counts)
    lines = [f"Trials: {len(trials)} ({shown})."]
    best = catalog.best_trial(study)
    if best is None:
        return lines[0] + " No trial completed yet."
    for name, t in (("baseline", catalog.baseline_trial(study)), ("best", best)):
        if t is not None:
            lines.append(f"  {name:<8} trial {t.number:>3}: val_loss {t.value:.4f} "
                         f"val_acc {_acc(TrialRecord.read(t)):.4f}  "
                         f"{short_params(t.params)}")
    cost = catalog.study_cost(study)  # what the best trial costs, and what finding it cost
    lines += [f"  cost     best {catalog.cost_line(cost)}", f"  found    {catalog.found_line(cost)}"]
    return "\n".join(lines)


def resume_command(settings: OptimizeSettings) -> str:
    """The command that resumes this study with every setting the study must keep."""
    return runtime.command_line(["cifar-tune", "optimize", "--arch", settings.arch, "--preset", settings.preset], [
        ("--storage", None if settings.storage == DEFAULT_STORAGE else mask_url(settings.storage)),
        ("--study-name", None if settings.study_name == study_name(settings.arch) else settings.study_name),
        ("--epochs", settings.epochs), ("--val-size", settings.val_size), ("--seed", settings.seed),
        ("--data", settings.data), ("--subset", settings.subset), ("--space", settings.space_path),
        ("--sampler", settings.sampler), ("--pruner", settings.pruner), ("--engine", settings.engine),
        ("--precision", settings.precision), ("--total-trials", settings.total_trials),
        ("--jobs", settings.jobs if settings.jobs > 1 else None), ("--ray", settings.ray),
        ("--workers", settings.workers), ("--jobs-per-gpu", settings.jobs_per_gpu if settings.ray else None)])
