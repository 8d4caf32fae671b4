"""What the optimize command prints: the header, one line per finished trial, the summary, the resume command.
Printing only: nothing here decides or stores."""

from __future__ import annotations

import logging
import sys

import optuna
from optuna.trial import TrialState

from cifar_tune import runtime
from cifar_tune.choices import DEFAULT_STORAGE, TrialAttr, study_name
from cifar_tune.storage.database import mask_url
from cifar_tune.studies import catalog as records
from cifar_tune.studies.presets import OptimizeSettings


def short_params(params: dict) -> str:
    """Parameters as ``k=v`` pairs, switches that are on left out (their value says it)."""
    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    return " ".join(f"{k}={fmt(v)}" for k, v in params.items() if not k.startswith("use_") or not v)


def trial_line(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> str:
    """One line for a finished trial: number, state, value, validation accuracy, key params, best so far."""
    state = trial.state.name.lower()
    if trial.state == TrialState.COMPLETE:
        value = (f"val_loss {trial.value:.4f} "
                 f"val_acc {trial.user_attrs.get(TrialAttr.VAL_ACCURACY, float('nan')):.4f}")
    elif trial.state == TrialState.PRUNED:
        value = f"at epoch {trial.last_step + 1}" if trial.last_step is not None else ""
    else:
        value = trial.user_attrs.get(TrialAttr.FAIL_REASON, "")[:80]
    best = records.best_trial(study)
    best_text = f"best #{best.number} {best.value:.4f}" if best is not None else "best -"
    tag = " (baseline)" if trial.user_attrs.get(TrialAttr.BASELINE) else ""
    if trial.user_attrs.get(TrialAttr.RETRY_OF) is not None:
        tag += f" (retry of #{trial.user_attrs[TrialAttr.RETRY_OF]})"
    return f"trial {trial.number:>3} {state:<8} {value:<36} | {short_params(trial.params)}{tag} | {best_text}"


def print_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """An ``optimize`` callback: the trial's line."""
    print(trial_line(study, trial), flush=True)


def taken_over_line(study: optuna.Study, trial: optuna.trial.FrozenTrial, value: float | None) -> str:
    """One line for a trial another worker declared dead (its heartbeat came late) while this worker ran it."""
    retry = next((t.number for t in study.get_trials(deepcopy=False)
                  if t.user_attrs.get(TrialAttr.RETRY_OF) == trial.number), None)
    again = f"retried as trial {retry}" if retry is not None else "not retried"
    result = f" (val_loss {value:.4f})" if value is not None else ""
    return (f"trial {trial.number:>3} taken over: another worker failed it as dead (no heartbeat within the grace "
            f"period) and it was {again}; this worker's result{result} is not kept, and it goes on")


def print_taken_over(study: optuna.Study, trial: optuna.trial.FrozenTrial, value: float | None) -> None:
    """Print ``taken_over_line`` (to standard error: the trial ended in a state this worker did not choose)."""
    print(taken_over_line(study, trial, value), file=sys.stderr, flush=True)


def header(settings: OptimizeSettings, study: optuna.Study, created: bool, total: int | None = None,
           per_process: int | None = None, gpus: list[str] | None = None) -> str:
    """The first line of an optimize command: study, storage, budget, sampler, pruner, workers."""
    how = "new study" if created else f"resuming ({len(study.trials)} trials stored)"
    if total is None:
        budget = f"{settings.n_trials} new trials"
    else:
        budget = f"until the study holds {total} trials (now {records.started_trials(study)})"
    workers = f"{settings.jobs} worker(s)"
    if gpus and settings.jobs > 1:  # where they compute (runtime.gpus.worker_placement: round robin)
        workers += f" on {len(gpus)} GPU(s) {','.join(gpus)}"
    workers += f", a fresh process every {per_process} trials" if per_process else ""
    return (f"Study {settings.study_name} ({settings.arch}) in {mask_url(settings.storage)}: {how}; "
            f"{budget} of {settings.epochs} epochs, {settings.sampler} sampler, "
            f"{settings.pruner} pruner, preset {settings.preset}, {workers}")


def summary(study: optuna.Study) -> str:
    """Trials by state, the best trial beside the baseline trial, and a warning when nothing was learned."""
    trials = study.get_trials(deepcopy=False)
    counts = records.counts_by_state(trials)
    shown = ", ".join(f"{counts[s]} {s}" for s in ("complete", "pruned", "fail") if s in counts)
    lines = [f"Trials: {len(trials)} ({shown})."]
    best = records.best_trial(study)
    if best is None:
        return lines[0] + " No trial completed yet."
    for name, t in (("baseline", records.baseline_trial(study)), ("best", best)):
        if t is not None:
            lines.append(f"  {name:<8} trial {t.number:>3}: val_loss {t.value:.4f} "
                         f"val_acc {t.user_attrs.get(TrialAttr.VAL_ACCURACY, float('nan')):.4f}  "
                         f"{short_params(t.params)}")
    warning = records.not_learned(study)
    if warning:
        lines.append(f"WARNING: {warning}.")
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
        ("--jobs", settings.jobs if settings.jobs > 1 else None)])


class _NoInterruptTraceback(logging.Filter):
    """Optuna logs a failed trial with its traceback; for Ctrl-C / SIGTERM our one line says it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):
            record.exc_info = None
        return True


def quiet_optuna() -> None:
    """Our one line per trial replaces Optuna's INFO lines; interruptions lose their traceback."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").addFilter(_NoInterruptTraceback())
    for handler in logging.getLogger("optuna").handlers:
        handler.addFilter(_NoInterruptTraceback())
