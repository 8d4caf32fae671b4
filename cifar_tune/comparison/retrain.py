"""Retrain each study's best trial and the seed baseline on all training images, K seeds; compare on the test set.

The ``compare`` command's library (named ``comparison``, not ``compare``: ``cifar_tune.compare`` is the Python
API's function, and a submodule of that name would replace it on the package once imported).

For every architecture with a study: the best completed trial's config (the ``config`` the objective stored, else
rebuilt from its params with the space) and the seed's baseline config (``architectures.get(arch).baseline``) are
each trained from scratch on the full training set (train + the validation images the study held out) for the
study's number of epochs, under the same protocol and the same K seeds (seed k initialises and shuffles
both variants alike: paired runs). The seeds are ones the study never trained with (``compare_seeds``): every
trial of a study trains with the study's seed, so retraining on that seed would score the winner on the very
draw it was selected on. Nothing is validated during this retraining; every model is evaluated exactly
once on the test set, which the studies never saw.

The table (``compare_table.py``) gives mean ± sample standard deviation over the seeds of the four macro
metrics, and the tuned-minus-baseline row: mean and standard deviation of the per-seed paired differences, their
95% confidence interval and p-value, and "within noise" when the accuracy interval holds 0.

Results go to ``compare.csv`` and ``compare.md`` in the output folder, to the study (user attribute ``compare``:
plain data incl. per-seed confusion matrices, for ``cifar-tune report``; and a section of the study note that
optuna-dashboard shows), and the trained models to ``storage/models/<study>/<variant>-seed<k>.keras``.

Data: a study records the fingerprint of the data it was tuned on and, in its settings, the ``--subset`` it used.
When the data given to compare are not a subset (no ``--subset``) but the study was tuned on one, compare takes
the study's subset (same size and seed) of the given data, so a quick study gets a quick comparison; ``--subset``
overrides, and ``--full-data`` compares on every training image and the whole test set (the final verdict on a
study that was tuned on a subset to save time). Other mismatches are reported and the comparison runs on the data
given.
"""

from __future__ import annotations

import gc
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import optuna
import pandas as pd

from cifar_tune import engines, progress, runtime
from cifar_tune.choices import DEFAULT_STORAGE, MODELS_DIR, StudyAttr, TrialAttr
from cifar_tune.comparison.record import Target, jsonable, make_record, store
from cifar_tune.data import cifar10 as data
from cifar_tune.errors import UserError
from cifar_tune.models import architectures, metrics
from cifar_tune.results import Comparison
from cifar_tune.storage import database
from cifar_tune.studies import catalog as records
from cifar_tune.studies import spaces, validate
from cifar_tune.views import figures as report
from cifar_tune.views.tables import VARIANTS, aggregate, csv_frame, markdown

FIRST_SEED = 1000  # compare's seeds count up from here, skipping the study's own seed


# --- finding the studies ---------------------------------------------------------------------------------------


def recorded_source(storage_url: str, archs: list[str] | None = None) -> str | None:
    """The ``--data`` the studies were tuned on (as recorded by ``optimize``), so compare can default to it."""
    storage = database.storage_for_reading(storage_url)
    for arch, name in records.find_studies(storage).items():
        if archs is None or arch in archs:
            attrs = optuna.load_study(study_name=name, storage=storage).user_attrs
            source = (attrs.get(StudyAttr.SETTINGS) or {}).get("data")
            if source:
                return source
    return None


def _recorded_fingerprint(study: optuna.Study) -> str | None:
    m = re.match(r"data ([0-9a-f]{16})\b", str(study.user_attrs.get(StudyAttr.DATA, "")))
    return m.group(1) if m else None


def dataset_for_study(ds: data.Dataset, study: optuna.Study,
                      full_data: bool = False) -> tuple[data.Dataset, list[str]]:
    """The data to compare ``study`` on: ``ds``, or the study's recorded subset of it (see the module doc)."""
    recorded = _recorded_fingerprint(study)
    if recorded is None or ds.fingerprint() == recorded:
        return ds, []
    settings = study.user_attrs.get(StudyAttr.SETTINGS) or {}
    n, seed = settings.get("subset"), int(settings.get("seed") or 0)
    if full_data and n:
        return ds, [f"the study was tuned on a subset of {int(n):,} training images; comparing on all "
                    f"{len(ds.y_train):,} and {len(ds.y_test):,} test images (--full-data)"]
    if n and "(subset " not in ds.source:  # the user gave no --subset: follow the study
        try:
            sub = data.subset(ds, int(n), seed)
        except UserError:
            sub = None
        if sub is not None:
            note = f"using the study's subset of {n:,} training images (seed {seed}); pass --subset to override"
            if sub.fingerprint() != recorded:
                note += (f"; note: these data differ from the study's (fingerprint {sub.fingerprint()} vs "
                         f"{recorded}: another source or subset)")
            return sub, [note]
    return ds, [f"note: the data differ from those the study was tuned on (fingerprint {ds.fingerprint()} vs "
                f"{recorded}); comparing on {ds.source}"]


def _tuned_config(arch: str, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict:
    config = trial.user_attrs.get(TrialAttr.CONFIG)
    if isinstance(config, dict):
        return architectures.get(arch).config(config)
    space_path = (study.user_attrs.get(StudyAttr.SPACE) or {}).get("path")
    space = spaces.load(arch, space_path if space_path and Path(space_path).is_file() else None)
    return space.config_from_params(trial.params)


def select_targets(ds: data.Dataset, storage_url: str, archs: list[str] | None, epochs: int | None,
                   full_data: bool = False) -> tuple[list[Target], list[str]]:
    """The architectures to compare and the skip messages; UserError when nothing is left to compare."""
    storage = database.storage_for_reading(storage_url)
    found = records.find_studies(storage)
    where = database.mask_url(storage_url)
    if not found:
        raise UserError(f"no studies in {where} (run `cifar-tune optimize --arch ...` first)")
    skipped, targets = [], []
    for arch in list(dict.fromkeys(archs or found)):
        architectures.get(arch)
        if arch not in found:
            skipped.append(f"skipping {arch}: no study for it in {where}")
            continue
        study = optuna.load_study(study_name=found[arch], storage=storage)
        best = records.best_trial(study)
        if best is None:
            skipped.append(f"skipping {arch}: study {found[arch]} has no completed trial yet")
            continue
        target_ds, notes = dataset_for_study(ds, study, full_data)
        warning = records.not_learned(study)
        if warning:
            notes.append(f"WARNING: {warning}")
        targets.append(Target(arch, study, best, records.baseline_trial(study), _tuned_config(arch, study, best),
                              architectures.get(arch).config(),
                              epochs or int(study.user_attrs.get(StudyAttr.EPOCHS, 10)), target_ds, notes))
    if not targets:
        raise UserError(f"nothing to compare in {where}: " + "; ".join(skipped))
    return targets, skipped


# --- training and evaluating -----------------------------------------------------------------------------------


def _model_path(study_name: str, variant: str, seed: int) -> Path:
    safe = re.sub(r"[^\w.-]+", "_", study_name)
    return MODELS_DIR / safe / f"{variant}-seed{seed}.keras"


def _train_and_test(target: Target, variant: str, config: dict, seed: int, *, engine: str, precision: str,
                    verbose: int) -> dict:
    import keras

    keras.backend.clear_session(free_memory=True)
    ds = target.ds
    result = engines.train(target.arch, config, ds.x_train, ds.y_train, epochs=target.epochs, seed=seed,
                            callbacks=[progress.epoch_callback(f"{target.arch} {variant} seed {seed}", target.epochs),
                                       runtime.stop_callback()], verbose=verbose, engine=engine, precision=precision)
    y_pred = engines.predict_classes(result.model, ds.x_test)  # the one look at the test set
    path = _model_path(target.study.study_name, variant, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    result.model.save(path)
    run = {"metrics": metrics.macro_row(ds.y_test, y_pred),
           "confusion": metrics.confusion(ds.y_test, y_pred).astype(int).tolist(),
           "seconds": round(result.seconds, 3), "engine": result.engine, "model": str(path),
           "train_loss": result.history.get("loss", [float("nan")])[-1],
           "train_accuracy": result.history.get("accuracy", [float("nan")])[-1]}
    del result
    keras.backend.clear_session(free_memory=True)
    gc.collect()
    return run


def _copy_model(src: str, study_name: str, variant: str, seed: int) -> str:
    import shutil

    dst = _model_path(study_name, variant, seed)
    shutil.copyfile(src, dst)
    return str(dst)


# --- the command -----------------------------------------------------------------------------------------------


def compare_seeds(study: optuna.Study, k: int) -> list[int]:
    """``k`` seeds the study never trained with: from FIRST_SEED up, skipping the seed its trials used."""
    used = (study.user_attrs.get(StudyAttr.SETTINGS) or {}).get("seed", 0)
    return [s for s in range(FIRST_SEED, FIRST_SEED + k + 1) if s != used][:k]


# A comparison at the seed's budget trains for hours on a CPU, and compare stores its record only at the end. So
# each finished run is also kept in the study (StudyAttr.COMPARE_RUNS) under what determines it (config, seed,
# epochs, data, engine, precision); a compare that is interrupted and started again reuses the runs that match
# and trains the rest. Optuna keeps trials, not these runs, so this small ledger is ours. It is dropped once the
# record is stored: a finished compare run again trains afresh.


def _kept_run(t: Target, name: str, key: dict) -> dict | None:
    kept = (t.study.user_attrs.get(StudyAttr.COMPARE_RUNS) or {}).get(name)
    if kept and kept["key"] == key and Path(kept["run"]["model"]).exists():
        return kept["run"]
    return None


def _keep_run(t: Target, name: str, key: dict, run: dict) -> None:
    runs = t.study.user_attrs.get(StudyAttr.COMPARE_RUNS) or {}
    runs[name] = {"key": key, "run": jsonable(run)}
    t.study.set_user_attr(StudyAttr.COMPARE_RUNS, runs)


def compare_target(t: Target, seeds: list[int], *, engine: str, precision: str,
                   verbose: int) -> tuple[list[dict], dict[str, list[dict]]]:
    """Train and test baseline and tuned on each seed (the tuned run is copied when it is the baseline; runs kept
    from an interrupted compare of the same target are reused)."""
    same = t.tuned_config == t.baseline_config
    progress.info(f"\n== {t.label} ({t.arch}), study {t.study.study_name}: best trial #{t.best.number} vs the "
                  f"baseline; {t.epochs} epochs on {len(t.ds.y_train):,} training images, seeds "
                  f"{', '.join(map(str, seeds))}, test {len(t.ds.y_test):,} images"
                  + (" (the best trial IS the baseline: trained once per seed)" if same else ""))
    for note in t.notes:
        progress.info(f"[{t.arch}] {note}")
    rows, runs = [], {v: [] for v in VARIANTS}
    # what, besides config and seed, decides a run (the ledger's key; the data's hash is taken once, not per run)
    fixed = {"epochs": t.epochs, "data": t.ds.fingerprint(), "engine": engines.resolve_engine(engine),
             "precision": precision}
    for seed in seeds:
        for variant, config in (("baseline", t.baseline_config), ("tuned", t.tuned_config)):
            name, key, kept = f"{variant} seed {seed}", jsonable({"config": config, "seed": seed, **fixed}), ""
            if variant == "tuned" and same:
                run_ = {**runs["baseline"][-1],
                        "model": _copy_model(runs["baseline"][-1]["model"], t.study.study_name, "tuned", seed)}
            elif run_ := _kept_run(t, name, key):
                kept = ", kept from the interrupted compare"
            else:
                run_ = _train_and_test(t, variant, config, seed, engine=engine, precision=precision, verbose=verbose)
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


def run(ds: data.Dataset, *, archs: list[str] | None = None, seeds: int = 3, epochs: int | None = None,
        storage: str = DEFAULT_STORAGE, out_dir: str | Path | None = None, engine: str = "auto",
        precision: str = "float32", verbose: int = 0,
        full_data: bool = False) -> tuple[pd.DataFrame, pd.DataFrame, Path, dict[str, dict]]:
    """Retrain best and baseline per arch for ``seeds`` seeds, test each once; return (per seed, aggregate, folder,
    the records stored by study name: see ``results.Comparison``). ``full_data``: compare on ``ds`` itself even
    where a study was tuned on a subset (see the module doc)."""
    validate.check_args(archs=archs, seeds=seeds, epochs=epochs, storage=storage)
    # every user error before anything is written
    targets, skipped = select_targets(ds, storage, archs, epochs, full_data)
    for message in skipped:
        progress.warn(f"cifar-tune: {message}")
    out = report.make_out_dir(out_dir, "compare")
    progress.info(engines.describe(engine, precision))
    rows, stored, start_all = [], {}, time.perf_counter()
    date = datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
    facts = {"Date": date, "Storage": database.mask_url(storage)}
    # Ctrl-C / SIGTERM (the CLI's run_stoppable) only record themselves in here: training stops at the next batch,
    # a finished run is kept in the ledger first, and a target's record is stored whole or not at all. Raised at
    # an arbitrary point instead, the KeyboardInterrupt was swallowed by a TensorFlow weakref callback.
    with runtime.signals_deferred():
        for t in targets:
            used = compare_seeds(t.study, seeds)
            mine, runs = compare_target(t, used, engine=engine, precision=precision, verbose=verbose)
            rows += mine
            agg = aggregate(pd.DataFrame(mine))
            stored[t.study.study_name] = jsonable(make_record(t, runs, agg, date=date, seeds=used,
                                                              precision=precision, out=out))
            store(t, stored[t.study.study_name], agg)
            facts[t.label] = (f"study {t.study.study_name}, best trial #{t.best.number}, {t.epochs} epochs, seeds "
                              f"{', '.join(map(str, used))}, data {t.ds.source} [{t.ds.fingerprint()}]: train "
                              f"{len(t.ds.y_train):,} / test {len(t.ds.y_test):,}")
    per_seed = pd.DataFrame(rows)
    agg = aggregate(per_seed)
    facts.update({"Engine / precision": f"{', '.join(sorted(set(per_seed['Engine'])))} / {precision}",
                  "Wall time": f"{time.perf_counter() - start_all:.0f} s"})
    csv_frame(per_seed, agg).to_csv(out / "compare.csv", index=False)
    (out / "compare.md").write_text(markdown(per_seed, agg, facts), encoding="utf-8")
    return per_seed, agg, out, stored


def resume_command(source: str | None, subset: int | None, *, archs: list[str] | None, seeds: int,
                   epochs: int | None, storage: str, out_dir: str | None, engine: str, precision: str, verbose: int,
                   full_data: bool = False) -> str:
    """The ``compare`` command that continues an interrupted one: the same options (the ledger's key must match)."""
    return runtime.command_line(["cifar-tune", "compare", "--seeds", str(seeds)], [
        ("--storage", None if storage == DEFAULT_STORAGE else database.mask_url(storage)),
        ("--archs", ",".join(archs) if archs else None), ("--epochs", epochs), ("--data", source),
        ("--subset", subset), ("--out", out_dir), ("--engine", None if engine == "auto" else engine),
        ("--precision", None if precision == "float32" else precision), ("--full-data", full_data),
        ("--verbose", bool(verbose))])


def compare_studies(source: str | None, subset: int | None, *, archs: list[str] | None, seeds: int,
                    epochs: int | None, storage: str, out_dir: str | None, engine: str, precision: str,
                    verbose: int, full_data: bool = False) -> Comparison:
    """Check the studies, load the data (``source``, default: what the studies were tuned on; ``subset`` training
    images), retrain and test (``run``); the Python API's ``cifar_tune.compare`` and the ``compare`` command.
    Raises ``UserError`` (bad arguments, no studies, bad data) before anything is trained or written."""
    import logging

    validate.check_args(archs=archs, seeds=seeds, epochs=epochs, subset=subset, storage=storage)  # as the CLI does
    validate.check_choice("engine", engine, engines.ENGINES)
    validate.check_choice("precision", precision, engines.PRECISIONS)
    if full_data and subset:
        raise UserError("--full-data compares on every image; it does not go with --subset")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Every retrained model is a new model: TensorFlow warns about "retracing" predict for each one. Expected here.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    start = time.perf_counter()
    records.check_studies(database.storage_for_reading(storage), storage, archs)
    ds = data.load_for_run(source or recorded_source(storage, archs), subset)
    per_seed, agg, out, stored = run(ds, archs=archs, seeds=seeds, epochs=epochs, storage=storage, out_dir=out_dir,
                                     engine=engine, precision=precision, verbose=verbose, full_data=full_data)
    return Comparison(per_seed=per_seed, table=agg, out=out, records=stored, seeds=seeds,
                      seconds=time.perf_counter() - start, storage=database.mask_url(storage))
