"""Retrain each study's best trial and the seed baseline on all training images, K seeds; compare on the test set.

The ``compare`` command's library (named ``comparison``, not ``compare``: ``cifar_tune.compare`` is the Python
API's function, and a submodule of that name would replace it on the package once imported). Which studies,
trials, seeds and data are compared is ``targets``'; what is stored of a comparison, ``record``'s.

For every architecture with a study: the best completed trial's config (the ``config`` the objective stored, else
rebuilt from its params with the space) and the seed's baseline config (``models.configs.BASELINES[arch]``) are
each trained from scratch on the full training set (train + the validation images the study held out) for the
study's number of epochs, under the same protocol and the same K seeds (seed k initialises and shuffles
both variants alike: paired runs). The seeds are ones the study never trained with (``compare_seeds``): every
trial of a study trains with the study's seed, so retraining on that seed would score the winner on the very
draw it was selected on. Nothing is validated during this retraining; every model is evaluated exactly
once on the test set, which the studies never saw.

The table (``views/tables.py``) gives mean ± sample standard deviation over the seeds of the four macro
metrics, and the tuned-minus-baseline row: mean and standard deviation of the per-seed paired differences, their
95% confidence interval and p-value, and "within noise" when the accuracy interval holds 0.

Results go to ``compare.csv`` and ``compare.md`` in the output folder, to the study (user attribute ``compare``:
plain data incl. per-seed confusion matrices, for ``cifar-tune report``; and a section of the study note that
optuna-dashboard shows), and the trained models to ``storage/models/<study>/<variant>-seed<k>.keras``.

Data: the study's own, or its subset of the data given (``targets`` says which).

The settings and the checks (studies, data, architectures) load no Keras: a refusal costs no Keras import;
``run`` loads it (``runtime.import_keras``) when the training starts.
"""

from __future__ import annotations

import gc
import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
import pandas as pd

from cifar_tune import choices, progress, runtime
from cifar_tune.choices import COMPARE_VARIANTS, DATA_ENV, DEFAULT_STORAGE
from cifar_tune.comparison.persist import jsonable, make_record, store
from cifar_tune.comparison.statistics import aggregate
from cifar_tune.comparison.targets import Target, compare_seeds, recorded_source, select_targets
from cifar_tune.data import cifar10, safe_files
from cifar_tune.errors import NotLearnedWarning, UserError
from cifar_tune.models import metrics
from cifar_tune.results import Comparison
from cifar_tune.storage import database, handle
from cifar_tune.storage.urls import url_or_default
from cifar_tune.studies import catalog, validate
from cifar_tune.studies.records import ComparisonRecord
from cifar_tune.text import count
from cifar_tune.views import figures
from cifar_tune.views.tables import csv_frame, markdown

if TYPE_CHECKING:
    from cifar_tune import engines


@dataclass(frozen=True)
class CompareSettings:
    """Everything one ``compare`` run needs, with the command line's defaults, checked as the command line checks
    them when made (``UserError``, ``errors.InvalidValue`` for a bad value; the storage URL and the output folder
    are checked, nothing is read from a storage or written).

    ``archs``: architecture keys (None: every architecture with a study); ``seeds``: seeds per architecture;
    ``epochs`` (None: each study's); ``storage``: an Optuna storage URL; ``out_dir`` (None: a new folder under
    ``storage/reports/``); ``engine``, ``precision`` (``choices.ENGINES``, ``choices.PRECISIONS``); ``verbose``
    (0 or 1: Keras's progress bar); ``full_data``: compare on every image even where a study was tuned on a
    subset; ``data`` (None: what the studies were tuned on) and ``subset`` (training images): the data source.
    """

    archs: tuple[str, ...] | None = None
    seeds: int = choices.DEFAULT_COMPARE_SEEDS
    epochs: int | None = None
    storage: str = DEFAULT_STORAGE
    out_dir: str | Path | None = None
    engine: str = choices.DEFAULT_ENGINE
    precision: str = choices.DEFAULT_PRECISION
    verbose: int = 0
    full_data: bool = False
    data: str | None = None
    subset: int | None = None

    def __post_init__(self):
        validate.check_record(self)  # each field as the settings model declares it
        database.check_url(self.storage, writes="compare")  # compare stores its results in the studies
        if self.full_data and self.subset:
            raise UserError("--full-data compares on every image; it does not go with --subset")
        figures.check_out_dir(self.out_dir)  # before the storage is read or anything trains


def make_settings(archs: list[str] | tuple[str, ...] | None = None, *, storage: str | None = None,
                  out: str | os.PathLike | None = None, data: str | os.PathLike | None = None, verbose: bool = False,
                  **keywords) -> CompareSettings:
    """``CompareSettings`` from the ``compare`` command's settings by their names (``settings.COMMANDS``), as the
    command line and the Python API (``cifar_tune.compare``) both give them: ``storage`` None is the default
    database, ``out`` the output folder, ``data`` None is ``$CIFAR_TUNE_DATA``, else what the studies were tuned
    on (``targets.recorded_source``), ``verbose`` a flag; the rest as the fields. Raises ``UserError``."""
    return CompareSettings(archs=archs, storage=url_or_default(storage),
                           out_dir=None if out is None else os.fspath(out),
                           data=os.fspath(data) if data is not None else os.environ.get(DATA_ENV) or None,
                           verbose=int(verbose), **keywords)


# --- training and evaluating -----------------------------------------------------------------------------------


def _model_path(target: Target, variant: str, seed: int) -> Path:
    """The model file of one retraining: in the storage's models folder (``targets.models_dir``), by study."""
    safe = re.sub(r"[^\w.-]+", "_", target.study.study_name)
    return target.models / safe / f"{variant}-seed{seed}.keras"


def _train_and_test(target: Target, variant: str, spec: engines.TrainSpec) -> dict:
    import keras

    from cifar_tune import engines

    keras.backend.clear_session(free_memory=True)
    ds = target.ds
    epochs = progress.epoch_callback(f"{target.arch} {variant} seed {spec.seed}", spec.epochs)
    result = engines.train(spec, ds.x_train, ds.y_train, callbacks=[epochs, runtime.stop_callback()])
    y_pred = engines.predict_classes(result.model, ds.x_test)  # the one look at the test set
    path = _model_path(target, variant, spec.seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with safe_files.replaced_whole(path) as tmp:  # whole or absent (a full disk); the suffix stays .keras
        result.model.save(tmp)
    run = {"metrics": metrics.macro_row(ds.y_test, y_pred),
           "confusion": metrics.confusion(ds.y_test, y_pred).astype(int).tolist(),
           "seconds": round(result.seconds, 3), "engine": result.engine, "model": str(path),
           "train_loss": result.history.get("loss", [float("nan")])[-1],
           "train_accuracy": result.history.get("accuracy", [float("nan")])[-1]}
    del result
    keras.backend.clear_session(free_memory=True)
    gc.collect()
    return run


def _copy_model(src: str, target: Target, variant: str, seed: int) -> str:
    import shutil

    dst = _model_path(target, variant, seed)
    shutil.copyfile(src, dst)
    return str(dst)


# --- the command -----------------------------------------------------------------------------------------------


# A comparison at the seed's budget trains for hours on a CPU, and compare stores its record only at the end. So
# each finished run is also kept in the study (``ComparisonRecord.keep_runs``) under what determines it (config, seed,
# epochs, data, engine, precision); a compare that is interrupted and started again reuses the runs that match
# and trains the rest. Optuna keeps trials, not these runs, so this small ledger is ours. It is dropped once the
# record is stored: a finished compare run again trains afresh.


def _kept_run(t: Target, name: str, key: dict) -> dict | None:
    kept = ComparisonRecord.kept_runs(t.study).get(name)
    if kept and kept["key"] == key and Path(kept["run"]["model"]).exists():
        return kept["run"]
    return None


def _keep_run(t: Target, name: str, key: dict, run: dict) -> None:
    runs = ComparisonRecord.kept_runs(t.study)
    runs[name] = {"key": key, "run": jsonable(run)}
    ComparisonRecord.keep_runs(t.study, runs)


def compare_target(t: Target, seeds: list[int], settings: CompareSettings) -> tuple[list[dict], dict[str, list[dict]]]:
    """Train and test baseline and tuned on each seed (the tuned run is copied when it is the baseline; runs kept
    from an interrupted compare of the same target are reused)."""
    from cifar_tune import engines

    same = t.tuned_config == t.baseline_config
    progress.info(f"\n== {t.label} ({t.arch}), study {t.study.study_name}: best trial #{t.best.number} vs the "
                  f"baseline; {count(t.epochs, 'epoch')} on {len(t.ds.y_train):,} training images, seeds "
                  f"{', '.join(map(str, seeds))}, test {len(t.ds.y_test):,} images"
                  + (" (the best trial IS the baseline: trained once per seed)" if same else ""))
    for note in t.notes:
        if t.warning and t.warning in note:  # a warning (the CLI: standard error; the API: NotLearnedWarning)
            progress.warn(f"{t.study.study_name}: {t.warning}", NotLearnedWarning)
        else:
            progress.info(f"[{t.arch}] {note}")
    rows, runs = [], {v: [] for v in COMPARE_VARIANTS}
    # what, besides config and seed, decides a run (the ledger's key; the data's hash is taken once, not per run)
    fixed = {"epochs": t.epochs, "data": t.ds.fingerprint(), "engine": runtime.resolve_engine(settings.engine),
             "precision": settings.precision}
    for seed in seeds:
        for variant, config in (("baseline", t.baseline_config), ("tuned", t.tuned_config)):
            name, key, kept = f"{variant} seed {seed}", jsonable({"config": config, "seed": seed, **fixed}), ""
            if variant == "tuned" and same:
                run_ = {**runs["baseline"][-1],
                        "model": _copy_model(runs["baseline"][-1]["model"], t, "tuned", seed)}
            elif run_ := _kept_run(t, name, key):
                kept = ", kept from the interrupted compare"
            else:
                spec = engines.TrainSpec(t.arch, config, t.epochs, seed, settings.engine, settings.precision,
                                         settings.verbose)
                run_ = _train_and_test(t, variant, spec)
                _keep_run(t, name, key, run_)
                runtime.raise_if_stopping()  # a signal during the test or the save: stop now, this run is kept
            runs[variant].append(run_)
            m = run_["metrics"]
            progress.info(f"[{t.arch}] {variant:<8} seed {seed}: test accuracy {m['Accuracy']:.4f}, macro F1 "
                          f"{m['F1 Score']:.4f} ({run_['seconds']:.1f} s training{kept})")
            trial = t.best.number if variant == "tuned" else (t.baseline_trial.number if t.baseline_trial else None)
            rows.append({"arch": t.arch, "Model": t.label, "Variant": variant, "Seed": seed, **m, "Trial": trial,
                         "Epochs": t.epochs, "Seconds": run_["seconds"], "Model file": run_["model"],
                         "Engine": run_["engine"]})
    return rows, runs


def run(ds: cifar10.Dataset, settings: CompareSettings,
        storage: handle.Storage | None = None) -> tuple[pd.DataFrame, pd.DataFrame, Path, dict[str, dict]]:
    """Retrain best and baseline per arch for ``settings.seeds`` seeds on ``ds``, test each once; return (per seed,
    aggregate, folder, the records stored by study name: see ``results.Comparison``). ``settings.full_data``:
    compare on ``ds`` itself even where a study was tuned on a subset (see the module doc). ``storage``: the
    command's (default: ``settings.storage``'s)."""
    s, storage = settings, handle.resolve(storage or settings.storage)
    # every user error before anything is written
    targets, skipped = select_targets(ds, storage, s.archs and list(s.archs), s.epochs, s.full_data)
    for message in skipped:
        progress.warn(f"cifar-tune: {message}")
    runtime.import_keras()  # training starts here: Keras loads now, once the studies and the data passed
    from cifar_tune import engines

    out = figures.make_out_dir(s.out_dir, "compare")
    engines.report_device(s.engine, s.precision)
    rows, stored, start_all = [], {}, time.perf_counter()
    date = datetime.now(UTC).astimezone().isoformat(timespec="seconds")
    facts = {"Date": date, "Storage": storage.shown}
    # Ctrl-C / SIGTERM (the CLI's run_stoppable) only record themselves in here: training stops at the next batch,
    # a finished run is kept in the ledger first, and a target's record is stored whole or not at all. Raised at
    # an arbitrary point instead, the KeyboardInterrupt was swallowed by a TensorFlow weakref callback.
    with runtime.signals_deferred():
        for t in targets:
            used = compare_seeds(t.study, s.seeds)
            mine, runs = compare_target(t, used, s)
            rows += mine
            agg = aggregate(pd.DataFrame(mine))
            record = make_record(t, runs, agg, date=date, seeds=used, precision=s.precision, out=out)
            store(t, record, agg)
            stored[t.study.study_name] = record.to_attrs()
            facts[t.label] = (f"study {t.study.study_name}, best trial #{t.best.number}, "
                              f"{count(t.epochs, 'epoch')}, seeds {', '.join(map(str, used))}, data {t.ds.source} "
                              f"[{t.ds.fingerprint()}]: train {len(t.ds.y_train):,} / test {len(t.ds.y_test):,}")
    per_seed = pd.DataFrame(rows)
    agg = aggregate(per_seed)
    facts.update({"Engine / precision": f"{', '.join(sorted(set(per_seed['Engine'])))} / {s.precision}",
                  "Wall time": f"{time.perf_counter() - start_all:.0f} s"})
    with safe_files.replaced_whole(out / "compare.csv") as tmp:  # each file whole or absent
        csv_frame(per_seed, agg).to_csv(tmp, index=False)
    safe_files.write_text_whole(out / "compare.md", markdown(per_seed, agg, facts))
    return per_seed, agg, out, stored


def resume_command(settings: CompareSettings) -> str:
    """The ``compare`` command that continues an interrupted one: the same options (the ledger's key must match)."""
    s = settings
    return runtime.command_line(["cifar-tune", "compare", "--seeds", str(s.seeds)], [
        ("--storage", None if s.storage == DEFAULT_STORAGE else database.mask_url(s.storage)),
        ("--archs", ",".join(s.archs) if s.archs else None), ("--epochs", s.epochs), ("--data", s.data),
        ("--subset", s.subset), ("--out", s.out_dir),
        ("--engine", None if s.engine == choices.DEFAULT_ENGINE else s.engine),
        ("--precision", None if s.precision == choices.DEFAULT_PRECISION else s.precision),
        ("--full-data", s.full_data), ("--verbose", bool(s.verbose))])


def compare_studies(settings: CompareSettings, storage: handle.Storage | None = None) -> Comparison:
    """Check the studies, load the data (``settings.data``, default: what the studies were tuned on;
    ``settings.subset`` training images), retrain and test (``run``); the Python API's ``cifar_tune.compare`` and
    the ``compare`` command. Raises ``UserError`` (no studies, bad data) before anything is trained or written
    (the settings were checked when they were made). ``storage``: the command's (default:
    ``settings.storage``'s), opened once."""
    import logging

    s = settings
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Every retrained model is a new model: TensorFlow warns about "retracing" predict for each one. Expected here.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    start = time.perf_counter()
    archs = s.archs and list(s.archs)
    storage = handle.resolve(storage or s.storage)
    catalog.check_studies(storage.reading(writes="compare"), s.storage, archs)
    ds = cifar10.load_for_run(s.data or recorded_source(storage, archs), s.subset)
    per_seed, agg, out, stored = run(ds, s, storage)
    return Comparison(per_seed=per_seed, table=agg, out=out, records=stored, seeds=s.seeds,
                      seconds=time.perf_counter() - start, storage=storage.shown)
