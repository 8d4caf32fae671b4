"""The Python API (``import cifar_tune as ct``): each command of the CLI as a function that takes keywords with the
CLI's defaults (or a settings object) and returns a result object; the CLI is a thin layer over the same library
functions (``tuning.run_study``, ``seed_baseline.run``, ``retrain.compare_studies``, ``pipeline.run_job``), each
given a settings object (``OptimizeSettings``, ``BaselineSettings``, ``CompareSettings``) made from the keywords.

Every function raises the library's exceptions (``cifar_tune.UserError`` and its subclasses, one line each) and
never exits; after Ctrl-C or SIGTERM it raises KeyboardInterrupt (``errors.Terminated`` for SIGTERM) once the
running trial was failed and what finished was kept, as the CLI does. Results are returned, never printed.

Progress: the library reports it to ``cifar_tune.progress``'s current reporter. A function here that trains,
called with no reporter installed (a notebook, a script), installs ``progress.TqdmReporter`` for the call:
``tqdm.auto`` progress bars of the trials and of each training, from its first batch (a widget in Jupyter with
the ``notebook`` extra's ipywidgets, text on standard error elsewhere; nothing on standard output), every warning
the CLI would print as a Python warning (``ct.CifarTuneWarning``; ``ct.NotLearnedWarning`` for a study whose best
trial learned nothing worth crowning), and every event logged under the logger ``cifar_tune``
(``progress.enable_default_handler()`` shows its lines). A reporter the
caller installed (``with cifar_tune.progress.reporting(my_reporter): ...``, any callable taking an event) is used
instead. Keras loads only where training starts in this process (``runtime.import_keras``: the backend is chosen
and TensorFlow's native logs are silenced first): not on ``import cifar_tune``, not to build or check settings
(a refusal costs no Keras import), and never in a process that only supervises worker processes or drives a Ray
cluster (the settings, spaces, presets, records and baseline configs are plain data).

Threads: the functions that train (``optimize``, ``baseline``, ``compare``, ``run``) may be called from several
threads at once; they train one at a time (``runtime.one_training_at_a_time``): a second call waits until the
first has finished, then runs as it would alone. Waiting was chosen over refusing the second call because what a
training relies on belongs to the process, not the thread (Keras's seeds, precision policy and sessions, the
signal handlers, the progress reporter), so overlapping trainings would spoil each other's trials, while one
after the other both callers get their results. Parallel trials: ``jobs=N`` (worker processes) or ``ray``.
Standard error is never left silenced: the quiet import is counted across threads (``quiet_native_stderr``).
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

from cifar_tune import choices, progress, runtime
from cifar_tune.choices import ARCH_KEYS
from cifar_tune.errors import NotLearnedWarning, UserError
from cifar_tune.studies import validate

if TYPE_CHECKING:
    import optuna

    from cifar_tune.results import BaselineResult, Comparison, JobResult, Studies
    from cifar_tune.studies.presets import OptimizeSettings

__all__ = ["baseline", "compare", "load", "make_settings", "optimize", "run"]


def _archs(archs: list[str] | tuple[str, ...] | None, default: list[str] | None) -> list[str] | None:
    return default if archs is None else validate.check_unique_list("archs", archs, ARCH_KEYS)


def _progress_bars():
    """The progress reporter of a call: the caller's, else tqdm's bars (see the module docstring)."""
    return progress.reporting_unless_installed(progress.TqdmReporter)


@contextlib.contextmanager
def _one_at_a_time(call: str):
    """Around a call that trains: the process's one training (``runtime.one_training_at_a_time``: a call from
    another thread waits), Ctrl-C and SIGTERM as the CLI handles them, and the progress bars."""
    with runtime.one_training_at_a_time(call), runtime.stops_on_signals(), _progress_bars():
        yield


def optimize(settings: OptimizeSettings | None = None, /, **keywords) -> optuna.Study:
    """Run (or resume) one architecture's Optuna study, as ``cifar-tune optimize``; returns the ``optuna.Study``
    read back from the storage (every trial in it, this call's and earlier ones).

    Either an ``OptimizeSettings`` (``cifar_tune.make_settings(...)``) or the CLI's options as keywords, merged as
    the CLI merges them (built-in defaults < the preset < the keywords; ``presets.make_settings``): ``arch``
    (required), ``preset`` (``"default"``, ``"quick"``, ``"seed"`` or a TOML path), ``n_trials`` (new trials of
    this call) or ``total_trials`` (a study-wide target), ``epochs``, ``timeout`` (seconds in which trials may
    start), ``storage`` (Optuna storage URL, default ``sqlite:///storage/cifar_tune.db``), ``study_name``
    (default ``cifar10-<arch>``), ``data`` (a CIFAR-10 source, default ``$CIFAR_TUNE_DATA`` else the download),
    ``subset`` and ``val_size`` (images), ``seed``, ``sampler`` (``tpe``, ``random``), ``pruner`` (``hyperband``,
    ``successive-halving``, ``median``, ``none``), ``engine`` (``auto``, ``keras``, ``fast``), ``precision``
    (``float32``, ``bf16``), ``jobs`` (worker processes), ``ray`` (a Ray cluster's address: its tasks are the
    workers) and ``workers`` (how many), ``space`` (a search-space TOML), ``verbose``, and the rest of
    ``presets.KEYS``.

    Each trial's value is its final validation loss (minimised); its validation accuracy is the trial's user
    attribute ``val_accuracy``. Raises ``UserError`` for a bad keyword or value, data, space or storage (before
    anything is stored), ``WorkersStopped`` when worker processes stopped, KeyboardInterrupt after Ctrl-C.
    """
    from cifar_tune import tuning
    from cifar_tune.studies import presets

    if settings is None:
        if "arch" not in keywords:
            raise UserError("optimize needs arch=<one of " + ", ".join(ARCH_KEYS) + ">")
        settings = presets.make_settings(keywords.pop("arch"), **keywords)
    elif keywords:
        raise UserError("give optimize an OptimizeSettings or keywords, not both")
    elif not isinstance(settings, presets.OptimizeSettings):
        raise UserError(f"optimize takes an OptimizeSettings, got {type(settings).__name__}")
    with _one_at_a_time("optimize"):
        return tuning.run_study(settings)


def baseline(archs: list[str] | None = None, *, data: str | os.PathLike | None = None, subset: int | None = None,
             epochs: int = choices.DEFAULT_EPOCHS, batch_size: int = choices.DEFAULT_BATCH_SIZE,
             protocol: str = choices.DEFAULT_PROTOCOL, val_size: int | None = None,
             out: str | os.PathLike | None = None, seed: int = choices.DEFAULT_SEED,
             engine: str = choices.DEFAULT_ENGINE, precision: str = choices.DEFAULT_PRECISION,
             verbose: bool = False) -> BaselineResult:
    """The seed notebook's fixed-baseline comparison, as ``cifar-tune baseline``: each architecture (default: all
    five) trained once at the seed's config (Adam 1e-3, batch ``batch_size``, ``epochs`` epochs) and tested.

    ``protocol``: ``"seed"`` validates on the test set as the notebook did; ``"holdout"`` on ``val_size`` images
    carved from the training images. ``data``: a CIFAR-10 source (default ``$CIFAR_TUNE_DATA``, else the
    download); ``subset``: a stratified subset of that many training images (the test set scaled alike, N/5).
    ``out``: the output folder (default: a new one under ``storage/reports/``); an interrupted call's finished
    architectures are kept there and reused by the same call with that ``out``.

    Returns a ``BaselineResult``: ``table`` (Model, Accuracy, Precision, Recall, F1 Score: scikit-learn's accuracy
    and macro averages on the test set), ``histories`` (per model, per epoch), ``out``. Raises ``UserError``
    (``DataError`` for the data) before anything is trained or written, KeyboardInterrupt after Ctrl-C.
    """
    from cifar_tune.comparison import seed_baseline

    settings = seed_baseline.make_settings(  # as the CLI's baseline makes them
        archs, epochs=epochs, batch_size=batch_size, protocol=protocol, val_size=val_size, out=out, seed=seed,
        verbose=verbose, engine=engine, precision=precision, data=data, subset=subset)
    with runtime.one_training_at_a_time("baseline"):
        ds = seed_baseline.load_data(settings)
        with runtime.stops_on_signals(), _progress_bars():
            return seed_baseline.run(ds, settings)


def compare(archs: list[str] | None = None, *, seeds: int = choices.DEFAULT_COMPARE_SEEDS,
            storage: str | None = None, data: str | os.PathLike | None = None, subset: int | None = None,
            epochs: int | None = None, full_data: bool = False, out: str | os.PathLike | None = None,
            engine: str = choices.DEFAULT_ENGINE, precision: str = choices.DEFAULT_PRECISION,
            verbose: bool = False) -> Comparison:
    """Tuned against baseline on the test set, as ``cifar-tune compare``: for each architecture with a study in
    ``storage`` (default: all of them), its best trial and the seed baseline, each retrained from scratch on all
    training images (the study's split joined again) on ``seeds`` seeds the study never trained with (1000 up),
    for the study's epochs (or ``epochs``), and evaluated once on the test set; stored with the study.

    ``data`` defaults to ``$CIFAR_TUNE_DATA``, else the data the studies were tuned on, and a study tuned on a
    subset is compared on the same subset unless ``full_data`` (or an explicit ``subset``).

    Returns a ``Comparison``: ``per_seed`` and ``table`` (scikit-learn macro averages on the test set, mean ±
    sample std over the seeds, and the paired tuned - baseline difference with its 95% interval, Student's t),
    ``display`` (the table as the CLI prints it), ``out``, ``figures()``. Raises ``UserError`` (no studies, bad
    data or arguments) before anything is trained, KeyboardInterrupt after Ctrl-C (finished trainings are kept
    in the studies and reused by the same call).
    """
    from cifar_tune.comparison import retrain

    settings = retrain.make_settings(  # as the CLI's compare makes them
        archs, seeds=seeds, epochs=epochs, storage=storage, out=out, engine=engine, precision=precision,
        verbose=verbose, full_data=full_data, data=data, subset=subset)
    with _one_at_a_time("compare"):
        return retrain.compare_studies(settings)


def run(archs: list[str] | None = None, *, preset: str = "default", seeds: int = choices.DEFAULT_COMPARE_SEEDS,
        timeout: float | None = None, out: str | os.PathLike | None = None, **study_keywords) -> JobResult:
    """The whole job, as ``cifar-tune run``: a study per architecture (default: all five) of the ``preset``'s size
    (``n_trials`` as a study-wide total: a rerun continues, a complete study runs nothing), then ``compare`` on
    ``seeds`` seeds where a comparison is missing or out of date, then the study report.

    ``timeout`` (seconds) is shared by the studies in turn (compare and the report are not limited) and bounds each
    study as ``optimize``'s ``timeout``. ``study_keywords``: ``optimize``'s keywords except ``space``,
    ``study_name`` and ``total_trials`` (a job runs each architecture's default study). ``out``: the folder for
    compare's tables and the report (default: under ``storage/reports/``).

    Returns a ``JobResult`` (the studies, the stored comparisons' ``table``, this call's ``comparison``, the
    ``report`` path, ``not_compared``: architectures without a completed trial, and why). Raises ``UserError``,
    ``WorkersStopped``, KeyboardInterrupt after Ctrl-C (finished trials and trainings kept).
    """
    from cifar_tune import pipeline
    from cifar_tune.studies import presets

    if timeout is not None:
        study_keywords["timeout"] = timeout  # as the CLI's --timeout: each study's bound too
    plan = presets.make_plan(_archs(archs, list(ARCH_KEYS)), preset=preset, **study_keywords)
    with _one_at_a_time("run"):
        return pipeline.run_job(plan, seeds=seeds, timeout=timeout, out_dir=None if out is None else os.fspath(out))


def load(storage: str | None = None) -> Studies:
    """A storage's studies and stored comparisons (``cifar-tune studies``), read without writing anything: no
    SQLite file is created, no table added (``database.storage_for_reading``); Keras is not loaded.

    Returns ``Studies``: ``studies`` (architecture -> ``optuna.Study``; calling a Study's writing methods would
    write), ``table`` (the stored comparisons aggregated as ``Comparison.table``), ``records``, ``warnings``
    (each also issued as a ``NotLearnedWarning``), ``figures()``. Raises ``UserError`` for a missing, damaged or
    non-Optuna storage.
    """
    import optuna

    from cifar_tune.results import Studies
    from cifar_tune.storage import handle
    from cifar_tune.studies import catalog
    from cifar_tune.studies.records import ComparisonRecord
    from cifar_tune.views import tables

    storage = handle.resolve(storage if storage is None else validate.check_nonempty("storage", storage))
    opened = storage.reading()
    try:
        studies = {arch: optuna.load_study(study_name=name, storage=opened)
                   for arch, name in catalog.find_studies(opened).items()}
        stored = {s.study_name: rec.to_attrs() for s in studies.values()
                  if (rec := ComparisonRecord.read(s)) is not None}
        table, warnings = tables.stored_table(storage, list(studies))
    except Exception as e:  # a storage that fails while it is read: the one-line error the CLI prints too
        err = storage.failure(e)
        if err is None:
            raise
        raise err from None
    with _progress_bars():  # what `cifar-tune studies` warns about: a NotLearnedWarning each
        for warning in warnings:
            progress.warn(warning, NotLearnedWarning)
    return Studies(storage=storage.shown, studies=studies, table=table, records=stored,
                   warnings=tuple(warnings))


def make_settings(arch: str, *, preset: str | None = None, **given) -> OptimizeSettings:
    """``presets.make_settings``: the settings ``optimize`` would build from these keywords (validated, nothing
    stored), for ``optimize(settings)`` or to inspect. Raises ``UserError``."""
    from cifar_tune.studies import presets

    return presets.make_settings(arch, preset=preset, **given)

