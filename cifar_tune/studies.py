"""Optuna studies: samplers, pruners, create/resume with the baseline first, workers, summaries.

Optuna owns storage, sampling, pruning, heartbeats and retries; this module only chooses their settings.

How many trials a command runs:

* ``--n-trials K`` runs K NEW trials for this command (Optuna's own ``optimize(n_trials=...)`` meaning), whatever
  other commands on other machines add to the same study meanwhile.
* Up to ``trials_per_process`` of them (and with ``--jobs 1``) run in this process. Otherwise this process
  becomes a supervisor (:func:`run_jobs`): it creates the study, starts ``--jobs`` worker processes, replaces
  each with a fresh one after ``trials_per_process`` trials (Keras's TensorFlow trainer does not give all memory
  back between trials), and watches the heartbeats. A worker that dies costs nothing: its running trial is
  failed after the grace period and retried once with the same parameters, and the rest of its share is run by
  the other workers, so the command still ends with K trials of its own.
* A study-wide target (``total_trials``, or ``CIFAR_TUNE_TOTAL_TRIALS`` in the environment) instead runs
  trials until the study holds that many, with any number of commands on any machines contributing. A trial
  counts once it started, except a dead worker's trial once its retry exists; the check and the creation of
  the trial happen under a per-study lock (a PostgreSQL advisory lock; a lock file beside a SQLite database),
  so concurrent workers never overshoot the target, and every command stays until all trials have finished
  (to fail and retry those of dead workers).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from typing import Callable

import optuna
from optuna.trial import TrialState

# Heartbeats, the retry callback and TPE's `group` are marked experimental; they are the documented way to
# do what we need, so their warnings would only be noise in every command's output.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

from . import data, spaces
from .errors import UserError
from .presets import OptimizeSettings
from .database import (BASELINE_ATTR, DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_STORAGE, RETRY_OF_ATTR, StudyLock,
                       mask_url, normalize_url, open_storage, split_password, storage_for_reading)

WORKER_ATTR = "worker"  # user attr: "host:pid" of the process that ran the trial
TOTAL_TRIALS_ENV = "CIFAR_TUNE_TOTAL_TRIALS"
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"


# --- samplers, pruners, studies ------------------------------------------------------------------------------


def make_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    """TPE (multivariate, grouped for the optional on/off parameters, constant liar for parallel workers) or random."""
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


def create_or_load(settings: OptimizeSettings, storage, space: spaces.Space, split: data.Split,
                   worker: int = 0) -> tuple[optuna.Study, bool]:
    """Create the study (enqueueing the baseline as its first trial) or load it to resume; True if created."""
    sampler = make_sampler(settings.sampler, None if settings.seed is None else settings.seed + worker)
    pruner = make_pruner(settings.pruner, settings.epochs, getattr(settings, "median_startup_trials", 3),
                         getattr(settings, "median_warmup_epochs", 1))
    try:
        # create_study without load_if_exists is atomic in the database (unique study name), so among many
        # workers starting at once exactly one creates the study and enqueues the baseline.
        study = optuna.create_study(study_name=settings.study_name, storage=storage, sampler=sampler,
                                    pruner=pruner, direction="minimize")
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=settings.study_name, storage=storage, sampler=sampler, pruner=pruner)
        created = False
        _wait_for_creator(study)
        if settings.seed is not None:
            # A seeded sampler restarted on a resumed study would replay the same first suggestions: move the
            # seed on by the trials already there (still reproducible for the same history).
            study.sampler = make_sampler(settings.sampler, settings.seed + worker + 1000 * len(study.trials))
    if created:
        # The baseline first: a worker that loads the study meanwhile waits for it (see _wait_for_creator).
        study.enqueue_trial(space.baseline_params(), user_attrs={BASELINE_ATTR: True})
        attrs = {"arch": settings.arch, "epochs": settings.epochs, "data": split.description,
                 "space": space.to_dict(), "baseline_params": space.baseline_params(),
                 "settings": {k: v for k, v in settings.to_dict().items() if k != "storage"}}
        for key, value in attrs.items():
            study.set_user_attr(key, value)
        _tell_story(study, "note")
    else:
        _check_compatible(study, settings, split)
        with StudyLock(study._storage, study._study_id):  # workers resuming at once re-enqueue it only once
            _requeue_lost_baseline(study, space)
    return study, created


def _wait_for_creator(study: optuna.Study, timeout: float = 10.0) -> None:
    """A study created a moment ago by another worker: wait until its creator stored the baseline and attrs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        trials = study.get_trials(deepcopy=False)
        young = not trials or ("settings" not in study.user_attrs
                               and all(t.state == TrialState.WAITING for t in trials))
        if not young:
            return
        time.sleep(0.2)


def _check_compatible(study: optuna.Study, settings: OptimizeSettings, split: data.Split) -> None:
    """A resumed study must keep its arch, epochs and data: otherwise its trials are not comparable."""
    attrs = study.user_attrs
    for key, now in (("arch", settings.arch), ("epochs", settings.epochs), ("data", split.description)):
        if key in attrs and attrs[key] != now:
            raise UserError(f"study {settings.study_name!r} was run with {key} {attrs[key]!r}, this run has "
                            f"{now!r}; resume with the same settings or choose another --study-name")


def _requeue_lost_baseline(study: optuna.Study, space: spaces.Space) -> None:
    """If the baseline trial failed (e.g. Ctrl-C during trial 0) and none is pending, enqueue it once more."""
    baseline = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(BASELINE_ATTR)]
    if baseline and all(t.state == TrialState.FAIL for t in baseline):
        study.enqueue_trial(space.baseline_params(), user_attrs={BASELINE_ATTR: True})


def baseline_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The study's completed baseline trial, if any."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.user_attrs.get(BASELINE_ATTR)]
    return done[0] if done else None


def replaced_trials(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    """Numbers of dead workers' trials for which a retry exists (they do not count towards a target)."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", ())}


def started_trials(study: optuna.Study) -> int:
    """Trials that count towards a study-wide target: every trial that started (running or finished),
    except a dead worker's trial whose retry exists (the retry counts instead, once it starts)."""
    trials = study.get_trials(deepcopy=False)
    gone = replaced_trials(trials)
    return sum(1 for t in trials if t.state != TrialState.WAITING and t.number not in gone)


# --- output --------------------------------------------------------------------------------------------------


def _short_params(params: dict) -> str:
    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    return " ".join(f"{k}={fmt(v)}" for k, v in params.items() if not k.startswith("use_") or not v)


def trial_line(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> str:
    """One line for a finished trial: number, state, value, validation accuracy, key params, best so far."""
    state = trial.state.name.lower()
    if trial.state == TrialState.COMPLETE:
        value = f"val_loss {trial.value:.4f} val_acc {trial.user_attrs.get('val_accuracy', float('nan')):.4f}"
    elif trial.state == TrialState.PRUNED:
        step = trial.last_step
        value = f"at epoch {step + 1}" if step is not None else ""
    else:
        value = trial.user_attrs.get("fail_reason", "")[:80]
    try:
        best = f"best #{study.best_trial.number} {study.best_value:.4f}"
    except ValueError:
        best = "best -"
    tag = " (baseline)" if trial.user_attrs.get(BASELINE_ATTR) else ""
    if trial.user_attrs.get(RETRY_OF_ATTR) is not None:
        tag += f" (retry of #{trial.user_attrs[RETRY_OF_ATTR]})"
    return f"trial {trial.number:>3} {state:<8} {value:<36} | {_short_params(trial.params)}{tag} | {best}"


def _print_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    print(trial_line(study, trial), flush=True)


def summaries(url: str) -> list[dict]:
    """One row per study in the storage: name, arch, trials by state, best value."""
    storage = storage_for_reading(url)
    rows = []
    for s in optuna.get_all_study_summaries(storage, include_best_trial=True):
        study = optuna.load_study(study_name=s.study_name, storage=storage)
        states = [t.state for t in study.get_trials(deepcopy=False)]
        row = {"study": s.study_name, "arch": s.user_attrs.get("arch", "?"), "trials": len(states)}
        for st in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING):
            row[st.name.lower()] = states.count(st)
        row["best_val_loss"] = round(s.best_trial.value, 4) if s.best_trial else None
        row["best_val_acc"] = round(s.best_trial.user_attrs.get("val_accuracy", float("nan")), 4) if s.best_trial else None
        rows.append(row)
    return rows


# --- the story in optuna-dashboard (never allowed to fail a study) -------------------------------------------

STORY_EVERY = 20.0  # seconds between refreshes of a study's note and figures while trials finish
_story = {"last": 0.0, "warned": False}


def _tell_story(study: optuna.Study, what: str = "all") -> None:
    """Rewrite the study's dashboard note (``what="note"``) or note and figures, under the study lock."""
    try:
        from . import dashboard

        with StudyLock(study._storage, study._study_id):  # two workers writing at once would interleave chunks
            if what == "note":
                dashboard.write_study_note(study)
            else:
                dashboard.refresh_story(study)
        _story["last"] = time.monotonic()
    except Exception as e:  # the dashboard story is a view: a failure here must not stop the trials
        if not _story["warned"]:
            _story["warned"] = True
            print(f"warning: could not update the study's dashboard note/figures: {type(e).__name__}: "
                  f"{str(e).splitlines()[0][:200] if str(e) else ''}", file=sys.stderr, flush=True)


def _story_callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED) and time.monotonic() - _story["last"] >= STORY_EVERY:
        _tell_story(study)


def _trial_objective(objective: Callable[[optuna.Trial], float]) -> Callable[[optuna.Trial], float]:
    """The objective, plus: which worker ran the trial, and its learning-curve figure as a trial artifact."""
    from . import dashboard

    store = dashboard.artifact_store()

    def run(trial: optuna.Trial) -> float:
        trial.set_user_attr(WORKER_ATTR, WORKER_ID)
        try:
            return objective(trial)
        finally:  # the trial is still running here (Optuna tells the result after we return): artifacts attach
            dashboard.attach_trial_curves(trial, store)

    return run


# --- the optimize command ------------------------------------------------------------------------------------


def prepare(settings: OptimizeSettings) -> tuple[spaces.Space, data.Split]:
    """The validated space and the train/validation split (data loaded once per process)."""
    space = spaces.load(settings.arch, settings.space_path)
    ds = data.load_for_run(settings.data, settings.subset, settings.seed)
    return space, data.split_validation(ds, settings.val_size, settings.seed)


def total_trials(settings: OptimizeSettings) -> int | None:
    """The study-wide target of this run (``settings.total_trials`` or $CIFAR_TUNE_TOTAL_TRIALS), if any."""
    value = getattr(settings, "total_trials", None)
    if value is None and os.environ.get(TOTAL_TRIALS_ENV):
        raw = os.environ[TOTAL_TRIALS_ENV]
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value < 1:
            raise UserError(f"{TOTAL_TRIALS_ENV}={raw!r}: expected a positive integer")
    return value


def _open_and_prepare(settings: OptimizeSettings, **storage_kwargs):
    # A server URL is checked first (a wrong password fails in a second, before the data load); a SQLite file
    # only after the data loaded, so that bad data never leaves an empty database behind.
    server = not normalize_url(settings.storage).startswith("sqlite")
    storage = open_storage(settings.storage, **storage_kwargs) if server else None
    space, split = prepare(settings)
    return storage or open_storage(settings.storage, **storage_kwargs), space, split


def _poll_seconds(storage) -> float:
    return max(0.5, min(float(getattr(storage, "heartbeat_interval", None) or DEFAULT_HEARTBEAT_INTERVAL), 5.0))


def run_worker(settings: OptimizeSettings, n_trials: int | None) -> optuna.Study:
    """Run trials of the study in this process; returns the study.

    Without a study-wide target: ``n_trials`` new trials (or until the timeout). With one (see the module
    docstring): until the study holds that many trials, at most ``n_trials`` of them here when this process is
    one of a supervisor's workers (``settings.worker`` > 0).
    """
    from .objective import make_objective

    storage, space, split = _open_and_prepare(settings, heartbeat_interval=settings.heartbeat_interval,
                                              grace_period=settings.grace_period)
    study, created = create_or_load(settings, storage, space, split, settings.worker)
    total = total_trials(settings)
    if settings.worker == 0:
        _print_header(settings, study, created, total)
    objective = _trial_objective(make_objective(space, split, epochs=settings.epochs, seed=settings.seed,
                                                engine=settings.engine, precision=settings.precision,
                                                verbose=int(settings.verbose)))
    callbacks = [_print_trial, _story_callback]
    try:
        if total is None:
            study.optimize(objective, n_trials=n_trials, timeout=settings.timeout, callbacks=callbacks,
                           catch=(Exception,), gc_after_trial=True)
        else:
            supervised = settings.worker > 0
            run_until_total(study, objective, total, max_trials=n_trials if supervised else None,
                            stay=not supervised, timeout=settings.timeout, poll=_poll_seconds(storage),
                            callbacks=callbacks)
    finally:
        _tell_story(study)
    return study


def run_until_total(study: optuna.Study, objective: Callable[[optuna.Trial], float], total: int, *,
                    max_trials: int | None = None, stay: bool = True, timeout: float | None = None,
                    poll: float = 5.0, callbacks=()) -> int:
    """Start trials while the study holds fewer than ``total`` (at most ``max_trials`` here); returns how many.

    With ``stay``, wait until every trial has finished: a trial whose worker died is failed (after the grace
    period) by a worker still here and retried by one, so the study ends with ``total`` trials although a
    worker was lost. (A supervisor's workers do not stay: the supervisor watches for them.)
    """
    lock = StudyLock(study._storage, study._study_id)

    def released_first(trial: optuna.Trial) -> float:
        lock.release()  # the trial exists now: other workers may count it and start theirs
        return objective(trial)

    start, ran = time.monotonic(), 0
    while (timeout is None or time.monotonic() - start < timeout) and (max_trials is None or ran < max_trials):
        lock.acquire()
        try:
            optuna.storages.fail_stale_trials(study)  # a dead worker's trial becomes a waiting retry first
            if started_trials(study) < total:
                study.optimize(released_first, n_trials=1, callbacks=list(callbacks), catch=(Exception,),
                               gc_after_trial=True)
                ran += 1
                continue
            running = _live_trials(study)
        finally:
            lock.release()
        if not (stay and running):
            break
        time.sleep(poll)
    return ran


def _live_trials(study: optuna.Study, workers: set[str] | None = None) -> list[optuna.trial.FrozenTrial]:
    """Running trials started by cifar-tune workers (all of them beat a heartbeat), optionally only ``workers``'."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if WORKER_ATTR in t.user_attrs and (workers is None or t.user_attrs[WORKER_ATTR] in workers)]


def _print_header(settings: OptimizeSettings, study: optuna.Study, created: bool, total: int | None = None,
                  per_process: int | None = None) -> None:
    how = "new study" if created else f"resuming ({len(study.trials)} trials stored)"
    if total is None:
        budget = f"{settings.n_trials} new trials"
    else:
        budget = f"until the study holds {total} trials (now {started_trials(study)})"
    workers = f"{settings.jobs} worker(s)" + (f", a fresh process every {per_process} trials" if per_process else "")
    print(f"Study {settings.study_name} ({settings.arch}) in {mask_url(settings.storage)}: {how}; "
          f"{budget} of {settings.epochs} epochs, {settings.sampler} sampler, "
          f"{settings.pruner} pruner, preset {settings.preset}, {workers}", flush=True)


def _worker_command(settings: OptimizeSettings, storage_url: str, worker: int, n_trials: int,
                    timeout: float | None) -> list[str]:
    cmd = [sys.executable, "-m", "cifar_tune", "optimize", "--arch", settings.arch, "--storage", storage_url,
           "--study-name", settings.study_name, "--preset", settings.preset, "--n-trials", str(n_trials),
           "--epochs", str(settings.epochs), "--sampler", settings.sampler, "--pruner", settings.pruner,
           "--val-size", str(settings.val_size), "--seed", str(settings.seed), "--worker", str(worker),
           "--engine", settings.engine, "--precision", settings.precision]
    for flag, value in (("--space", settings.space_path), ("--data", settings.data), ("--subset", settings.subset),
                        ("--timeout", timeout), ("--heartbeat-interval", settings.heartbeat_interval),
                        ("--grace-period", settings.grace_period)):
        if value is not None:
            cmd += [flag, str(value)]
    return cmd + (["--verbose"] if settings.verbose else [])


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def _needs_supervisor(settings: OptimizeSettings) -> bool:
    """Whether this command runs its trials in worker processes (``--jobs``, or more trials than one process
    should run: Keras's TensorFlow trainer does not give all memory back between trials)."""
    if settings.worker:
        return False
    if settings.jobs > 1:
        return True
    per_process = getattr(settings, "trials_per_process", None)
    if not per_process:
        return False
    total = total_trials(settings)
    if total is None:
        return settings.n_trials > per_process
    try:
        study = optuna.load_study(study_name=settings.study_name, storage=storage_for_reading(settings.storage))
        return total - started_trials(study) > per_process
    except (UserError, KeyError):  # no storage or no study yet
        return total > per_process


def run_jobs(settings: OptimizeSettings) -> int:
    """Supervise worker processes on this machine: ``settings.jobs`` at a time, each running at most
    ``trials_per_process`` trials before a fresh one replaces it, until this command's trials are done.

    This process trains nothing. It creates the study, hands out trials, and watches the heartbeats: the trial
    of a worker that died is failed after the grace period and retried once (same parameters) by a worker, and
    the dead worker's share is run by others, so the command still ends with the requested count.
    """
    storage, space, split = _open_and_prepare(settings, heartbeat_interval=settings.heartbeat_interval,
                                              grace_period=settings.grace_period)
    study, created = create_or_load(settings, storage, space, split)  # study and baseline exist before workers
    del split  # the workers load their own copy
    total = total_trials(settings)
    recycle = getattr(settings, "trials_per_process", None)
    per_process = recycle or max(settings.n_trials, total or 0, 1)
    _print_header(settings, study, created, total, recycle)
    url, password = split_password(settings.storage)
    env = dict(os.environ)
    if total is not None:
        env[TOTAL_TRIALS_ENV] = str(total)
    if password is not None:
        env["PGPASSWORD"] = password  # libpq reads it; the password stays out of the workers' command lines
    try:
        from . import fast_engine

        env.update(fast_engine.memory_share_env(settings.jobs))
    except (ImportError, AttributeError):
        pass

    host = socket.gethostname()
    children: dict[int, tuple[subprocess.Popen, int, str]] = {}  # slot -> (process, trials asked, worker id)
    mine: set[str] = set()
    poll, start = _poll_seconds(storage), time.monotonic()
    failures, stop_code, deaths = 0, 0, []

    def ran_by(trials, wid: str) -> int:
        return sum(1 for t in trials if t.user_attrs.get(WORKER_ATTR) == wid)

    def left(trials) -> int:
        """Trials still to hand out: the budget less those started (but not replaced) and those promised."""
        gone = replaced_trials(trials)
        promised = sum(max(0, n - ran_by(trials, wid)) for _, n, wid in children.values())
        if total is not None:
            return total - sum(1 for t in trials if t.state != TrialState.WAITING and t.number not in gone) - promised
        done = sum(1 for t in trials if t.user_attrs.get(WORKER_ATTR) in mine and t.number not in gone)
        return settings.n_trials - done - promised

    try:
        while True:
            trials = study.get_trials(deepcopy=False)
            for slot, (proc, n, wid) in list(children.items()):
                code = proc.poll()
                if code is None:
                    continue
                del children[slot]
                if code != 0:
                    deaths.append(f"worker {slot} (pid {proc.pid}) {_describe_exit(code)}")
                    print(deaths[-1], file=sys.stderr, flush=True)
                if code in (2, 130):  # a user error every worker would repeat, or Ctrl-C
                    stop_code = code
                failures = failures + 1 if code != 0 or ran_by(trials, wid) == 0 else 0
                if failures >= 3 and not stop_code:
                    print("three workers in a row ended without a trial; giving up", file=sys.stderr, flush=True)
                    stop_code = code or 1
            optuna.storages.fail_stale_trials(study)  # the watchdog: dead workers' trials become retries
            trials = study.get_trials(deepcopy=False)
            remaining = None if settings.timeout is None else settings.timeout - (time.monotonic() - start)
            if not stop_code and (remaining is None or remaining > 0):
                budget = left(trials)
                free = [slot for slot in range(1, settings.jobs + 1) if slot not in children]
                for i, slot in enumerate(free):
                    if budget <= 0:
                        break
                    n = min(per_process, -(-budget // (len(free) - i)))  # an even share of what is left
                    proc = subprocess.Popen(_worker_command(settings, url, slot, n, remaining), env=env)
                    wid = f"{host}:{proc.pid}"
                    children[slot] = (proc, n, wid)
                    mine.add(wid)
                    budget -= n
            if not children:
                out_of_time = remaining is not None and remaining <= 0
                waiting = _live_trials(study, None if total is not None else mine)
                if stop_code or out_of_time or (left(trials) <= 0 and not waiting):
                    break
            time.sleep(poll)
    except KeyboardInterrupt:
        for proc, _, _ in children.values():  # they got the same SIGINT from the terminal: let them store state
            proc.wait(timeout=60)
        raise
    _tell_story(study)
    if stop_code == 130:
        raise KeyboardInterrupt
    if deaths and not stop_code:
        print("the other workers ran the lost trials: the command ran all its trials", file=sys.stderr,
              flush=True)
    return stop_code


def _resume_command(settings: OptimizeSettings) -> str:
    parts = ["cifar-tune optimize", f"--arch {settings.arch}", f"--preset {settings.preset}"]
    if settings.storage != DEFAULT_STORAGE:
        parts.append(f"--storage '{mask_url(settings.storage)}'")
    if settings.study_name != f"cifar10-{settings.arch}":
        parts.append(f"--study-name {settings.study_name}")
    for flag, value in (("--data", settings.data), ("--subset", settings.subset), ("--space", settings.space_path),
                        ("--jobs", settings.jobs if settings.jobs > 1 else None)):
        if value is not None:
            parts.append(f"{flag} {value}")
    return " ".join(parts)


def optimize_cli(settings: OptimizeSettings) -> int:
    """The ``optimize`` command: run the study, print a line per trial and the best trial beside the baseline."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our one line per trial replaces Optuna's INFO lines
    start = time.perf_counter()
    try:
        if _needs_supervisor(settings):
            code = run_jobs(settings)
            if code:
                return code
        else:
            run_worker(settings, settings.n_trials)
    except KeyboardInterrupt:
        if not settings.worker:
            print(f"\nInterrupted: the running trial is marked failed; finished trials are stored.\n"
                  f"Resume with: {_resume_command(settings)}", file=sys.stderr)
        return 130
    if settings.worker:  # one of a supervisor's workers: the supervisor prints the summary
        return 0
    storage = storage_for_reading(settings.storage)
    study = optuna.load_study(study_name=settings.study_name, storage=storage)
    print(f"\nDone in {time.perf_counter() - start:.0f} s. {summary_text(study)}")
    print(f"Inspect: cifar-tune dashboard --storage '{mask_url(settings.storage)}'   "
          f"(or: optuna-dashboard '{mask_url(settings.storage)}')")
    return 0


def summary_text(study: optuna.Study) -> str:
    """Trials by state, and the best trial beside the baseline trial."""
    states = [t.state for t in study.get_trials(deepcopy=False)]
    counts = ", ".join(f"{states.count(s)} {s.name.lower()}" for s in
                       (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) if states.count(s))
    lines = [f"Trials: {len(states)} ({counts})."]
    base = baseline_trial(study)
    try:
        best = study.best_trial
    except ValueError:
        return lines[0] + " No trial completed yet."
    for name, t in (("baseline", base), ("best", best)):
        if t is not None:
            lines.append(f"  {name:<8} trial {t.number:>3}: val_loss {t.value:.4f} "
                         f"val_acc {t.user_attrs.get('val_accuracy', float('nan')):.4f}  {_short_params(t.params)}")
    return "\n".join(lines)
