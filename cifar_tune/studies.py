"""Optuna studies: storage URLs, samplers and pruners, create/resume with the baseline first, workers, summaries.

Optuna owns storage, sampling, pruning, heartbeats and retries; this module only chooses their settings.
``--n-trials`` counts the NEW trials one ``optimize`` command runs (Optuna's own ``optimize(n_trials=...)``
meaning); with ``--jobs N`` they are divided among the N workers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

# Heartbeats, the retry callback and TPE's `group` are marked experimental; they are the documented way to
# do what we need, so their warnings would only be noise in every command's output.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

from . import data, spaces
from .errors import UserError
from .presets import OptimizeSettings

DEFAULT_STORAGE = "sqlite:///storage/cifar_tune.db"
DEFAULT_HEARTBEAT_INTERVAL = 30  # seconds; trials take minutes, so a beat every 30 s costs nothing
DEFAULT_GRACE_PERIOD = 120  # four missed beats: a trial silent this long belongs to a dead worker
BASELINE_ATTR = "baseline"


# --- storage -------------------------------------------------------------------------------------------------


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***, safe to print or log."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable storage URL>"


def check_url(url: str) -> None:
    """Refuse a storage URL SQLAlchemy cannot parse or whose database driver is missing, without connecting."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        u = make_url(url)
        u.get_dialect()
    except ArgumentError:
        raise UserError(f"invalid storage URL {mask_url(url)!r}: expected e.g. {DEFAULT_STORAGE} or "
                        "postgresql+psycopg://user:password@host/db") from None
    except (NoSuchModuleError, ImportError) as e:
        hint = " (install cifar-tune[postgres])" if url.startswith("postgres") else ""
        raise UserError(f"storage URL {mask_url(url)}: database driver not available{hint}: {e}") from None


def _engine_kwargs(url: str) -> dict:
    if url.startswith("sqlite"):
        # Several local processes may write at once: wait for the lock instead of failing at once.
        return {"connect_args": {"timeout": 60}}
    # One worker runs one trial at a time: a small pool suffices; pre-ping survives server restarts and idle drops.
    return {"pool_pre_ping": True, "pool_size": 2, "max_overflow": 2}


def _heartbeat_kwargs(interval: int | None, grace: int | None) -> dict:
    """Heartbeat settings, and retry-once of a dead worker's trial (Optuna's callback, renamed in 4.9)."""
    kwargs = {"heartbeat_interval": interval or DEFAULT_HEARTBEAT_INTERVAL,
              "grace_period": grace or DEFAULT_GRACE_PERIOD}
    if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):
        kwargs["heartbeat_stale_trial_callback"] = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
    else:  # pragma: no cover - Optuna < 4.9
        kwargs["failed_trial_callback"] = optuna.storages.RetryFailedTrialCallback(max_retry=1)
    return kwargs


def open_storage(url: str, *, heartbeat_interval: int | None = None, grace_period: int | None = None,
                 with_heartbeat: bool = True) -> optuna.storages.RDBStorage:
    """Open (and for SQLite create) the storage; any trial run through it beats a heartbeat."""
    check_url(url)
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    kwargs = _heartbeat_kwargs(heartbeat_interval, grace_period) if with_heartbeat else {}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url), **kwargs)
    except Exception as e:
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0][:300]
        raise UserError(f"cannot open storage {mask_url(url)}: {reason}") from None


def storage_for_reading(url: str) -> optuna.storages.RDBStorage:
    """Open an existing storage without creating a SQLite file that is not there."""
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:" and not Path(url[len("sqlite:///"):]).exists():
        raise UserError(f"no storage at {url} (run `cifar-tune optimize` first, or pass --storage)")
    return open_storage(url, with_heartbeat=False)


# --- samplers, pruners, studies ------------------------------------------------------------------------------


def make_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    """TPE (multivariate, grouped for the optional on/off parameters) or random."""
    if name == "tpe":
        return optuna.samplers.TPESampler(multivariate=True, group=True, seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise UserError(f"unknown sampler {name!r}")


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    """Hyperband over epochs, median (after a warm-up epoch), or none."""
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UserError(f"unknown pruner {name!r}")


def create_or_load(settings: OptimizeSettings, storage, space: spaces.Space, split: data.Split,
                   worker: int = 0) -> tuple[optuna.Study, bool]:
    """Create the study (enqueueing the baseline as its first trial) or load it to resume; True if created."""
    sampler = make_sampler(settings.sampler, None if settings.seed is None else settings.seed + worker)
    pruner = make_pruner(settings.pruner, settings.epochs)
    try:
        # create_study without load_if_exists is atomic in the database (unique study name), so among many
        # workers starting at once exactly one creates the study and enqueues the baseline.
        study = optuna.create_study(study_name=settings.study_name, storage=storage, sampler=sampler,
                                    pruner=pruner, direction="minimize")
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=settings.study_name, storage=storage, sampler=sampler, pruner=pruner)
        created = False
        if settings.seed is not None:
            # A seeded sampler restarted on a resumed study would replay the same first suggestions: move the
            # seed on by the trials already there (still reproducible for the same history).
            study.sampler = make_sampler(settings.sampler, settings.seed + worker + 1000 * len(study.trials))
    if created:
        attrs = {"arch": settings.arch, "epochs": settings.epochs, "data": split.description,
                 "space": space.to_dict(), "baseline_params": space.baseline_params(),
                 "settings": {k: v for k, v in settings.to_dict().items() if k != "storage"}}
        for key, value in attrs.items():
            study.set_user_attr(key, value)
        study.enqueue_trial(space.baseline_params(), user_attrs={BASELINE_ATTR: True})
    else:
        _check_compatible(study, settings, split)
        _requeue_lost_baseline(study, space)
    return study, created


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


# --- the optimize command ------------------------------------------------------------------------------------


def prepare(settings: OptimizeSettings) -> tuple[spaces.Space, data.Split]:
    """The validated space and the train/validation split (data loaded once per process)."""
    space = spaces.load(settings.arch, settings.space_path)
    ds = data.load_for_run(settings.data, settings.subset, settings.seed)
    return space, data.split_validation(ds, settings.val_size, settings.seed)


def run_worker(settings: OptimizeSettings, n_trials: int | None) -> optuna.Study:
    """Run trials of the study in this process until ``n_trials`` or the timeout; returns the study."""
    from .objective import make_objective

    space, split = prepare(settings)
    storage = open_storage(settings.storage, heartbeat_interval=settings.heartbeat_interval,
                           grace_period=settings.grace_period)
    study, created = create_or_load(settings, storage, space, split, settings.worker)
    if settings.worker == 0:
        _print_header(settings, study, created)
    objective = make_objective(space, split, epochs=settings.epochs, seed=settings.seed, engine=settings.engine,
                               precision=settings.precision, verbose=int(settings.verbose))
    study.optimize(objective, n_trials=n_trials, timeout=settings.timeout, callbacks=[_print_trial],
                   catch=(Exception,), gc_after_trial=True)
    return study


def _print_header(settings: OptimizeSettings, study: optuna.Study, created: bool) -> None:
    how = "new study" if created else f"resuming ({len(study.trials)} trials stored)"
    print(f"Study {settings.study_name} ({settings.arch}) in {mask_url(settings.storage)}: {how}; "
          f"{settings.n_trials} new trials of {settings.epochs} epochs, {settings.sampler} sampler, "
          f"{settings.pruner} pruner, preset {settings.preset}, {settings.jobs} worker(s)", flush=True)


def _worker_command(settings: OptimizeSettings, n_trials: int, worker: int) -> list[str]:
    cmd = [sys.executable, "-m", "cifar_tune", "optimize", "--arch", settings.arch, "--storage", settings.storage,
           "--study-name", settings.study_name, "--preset", settings.preset, "--n-trials", str(n_trials),
           "--epochs", str(settings.epochs), "--sampler", settings.sampler, "--pruner", settings.pruner,
           "--val-size", str(settings.val_size), "--seed", str(settings.seed), "--worker", str(worker),
           "--engine", settings.engine, "--precision", settings.precision]
    for flag, value in (("--space", settings.space_path), ("--data", settings.data), ("--subset", settings.subset),
                        ("--timeout", settings.timeout), ("--heartbeat-interval", settings.heartbeat_interval),
                        ("--grace-period", settings.grace_period)):
        if value is not None:
            cmd += [flag, str(value)]
    return cmd + (["--verbose"] if settings.verbose else [])


def run_jobs(settings: OptimizeSettings) -> int:
    """Start ``settings.jobs`` worker processes on this machine sharing the study; wait for all."""
    space, split = prepare(settings)
    storage = open_storage(settings.storage, with_heartbeat=False)
    study, created = create_or_load(settings, storage, space, split)  # study and baseline exist before workers
    _print_header(settings, study, created)
    shares = [settings.n_trials // settings.jobs + (i < settings.n_trials % settings.jobs) for i in range(settings.jobs)]
    env = dict(os.environ)
    try:
        from . import fast_engine

        env.update(fast_engine.memory_share_env(settings.jobs))
    except ImportError:
        pass
    procs = [subprocess.Popen(_worker_command(settings, n, i), env=env) for i, n in enumerate(shares) if n > 0]
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:  # the workers got the same SIGINT from the terminal; give them time to store their state
            p.wait(timeout=60)
        raise
    return max(codes, default=0)


def _resume_command(settings: OptimizeSettings) -> str:
    parts = ["cifar-tune optimize", f"--arch {settings.arch}", f"--preset {settings.preset}"]
    if settings.storage != DEFAULT_STORAGE:
        parts.append(f"--storage '{mask_url(settings.storage)}'")
    if settings.study_name != f"cifar10-{settings.arch}":
        parts.append(f"--study-name {settings.study_name}")
    for flag, value in (("--data", settings.data), ("--subset", settings.subset), ("--space", settings.space_path)):
        if value is not None:
            parts.append(f"{flag} {value}")
    return " ".join(parts)


def optimize_cli(settings: OptimizeSettings) -> int:
    """The ``optimize`` command: run the study, print a line per trial and the best trial beside the baseline."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our one line per trial replaces Optuna's INFO lines
    start = time.perf_counter()
    try:
        if settings.jobs > 1:
            code = run_jobs(settings)
            if code:
                return code
        else:
            run_worker(settings, settings.n_trials)
    except KeyboardInterrupt:
        print(f"\nInterrupted: the running trial is marked failed; finished trials are stored.\n"
              f"Resume with: {_resume_command(settings)}", file=sys.stderr)
        return 130
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
