"""Retrain each study's best trial and the seed baseline on all training images, K seeds; compare on the test set.

For every architecture with a study: the best completed trial's config (the ``config`` the objective stored, else
rebuilt from its params with the space) and the seed's baseline config (``architectures.get(arch).baseline``) are
each trained from scratch on the full training set (train + the validation images the study held out) for the
study's number of epochs, under the same protocol and the same seeds 0..K-1 (seed k initialises and shuffles
both variants alike: paired runs). Nothing is validated during this retraining; every model is evaluated exactly
once on the test set, which the studies never saw.

The table gives mean ± sample standard deviation (ddof 1) over the seeds of the four macro metrics, and the
tuned-minus-baseline row: mean and standard deviation of the per-seed paired differences.

Results go to ``compare.csv`` and ``compare.md`` in the output folder, to the study (user attribute ``compare``:
plain data incl. per-seed confusion matrices, for ``cifar-tune report``; and a section of the study note that
optuna-dashboard shows), and the trained models to ``storage/models/<study>/<variant>-seed<k>.keras``.

Data: a study records the fingerprint of the data it was tuned on and, in its settings, the ``--subset`` it used.
When the data given to compare are not a subset (no ``--subset``) but the study was tuned on one, compare takes
the study's subset (same size and seed) of the given data; ``--subset`` overrides. Other mismatches are reported
and the comparison runs on the data given.
"""

from __future__ import annotations

import gc
import math
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from . import architectures, data, database, metrics, report, spaces, studies
from .errors import UserError

VARIANTS = ("baseline", "tuned")
DIFF = "tuned - baseline"
COMPARE_ATTR = "compare"
MODELS_DIR = Path("storage") / "models"
NOTE_HEADING = "## Tuned vs baseline on the test set (cifar-tune compare)"


@dataclass
class Target:
    """One architecture to compare: its study, the best trial and the two configs, and the data to use."""

    arch: str
    study: optuna.Study
    best: optuna.trial.FrozenTrial
    baseline_trial: optuna.trial.FrozenTrial | None
    tuned_config: dict
    baseline_config: dict
    epochs: int
    ds: data.Dataset
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return architectures.get(self.arch).label


# --- finding the studies ---------------------------------------------------------------------------------------


def _study_arch(summary: optuna.study.StudySummary) -> str | None:
    arch = summary.user_attrs.get("arch")
    if arch in architectures.ARCHITECTURES:
        return arch
    m = re.fullmatch(r"cifar10-(\w+)", summary.study_name)
    return m.group(1) if m and m.group(1) in architectures.ARCHITECTURES else None


def find_studies(storage: optuna.storages.BaseStorage) -> dict[str, str]:
    """Architecture -> study name, for every architecture with a study (``cifar10-<arch>`` preferred)."""
    by_arch: dict[str, list[str]] = {}
    for s in sorted(optuna.get_all_study_summaries(storage, include_best_trial=False), key=lambda s: s._study_id):
        arch = _study_arch(s)
        if arch:
            by_arch.setdefault(arch, []).append(s.study_name)
    # The default name wins; otherwise the most recently created study of that architecture.
    return {arch: (f"cifar10-{arch}" if f"cifar10-{arch}" in names else names[-1])
            for arch, names in sorted(by_arch.items(), key=lambda kv: architectures.ARCH_KEYS.index(kv[0]))}


def recorded_source(storage_url: str, archs: list[str] | None = None) -> str | None:
    """The ``--data`` the studies were tuned on (as recorded by ``optimize``), so compare can default to it."""
    storage = database.storage_for_reading(storage_url)
    for arch, name in find_studies(storage).items():
        if archs is None or arch in archs:
            source = (optuna.load_study(study_name=name, storage=storage).user_attrs.get("settings") or {}).get("data")
            if source:
                return source
    return None


def _recorded_fingerprint(study: optuna.Study) -> str | None:
    m = re.match(r"data ([0-9a-f]{16})\b", str(study.user_attrs.get("data", "")))
    return m.group(1) if m else None


def dataset_for_study(ds: data.Dataset, study: optuna.Study) -> tuple[data.Dataset, list[str]]:
    """The data to compare ``study`` on: ``ds``, or the study's recorded subset of it (see the module doc)."""
    recorded = _recorded_fingerprint(study)
    if recorded is None or ds.fingerprint() == recorded:
        return ds, []
    settings = study.user_attrs.get("settings") or {}
    n, seed = settings.get("subset"), int(settings.get("seed") or 0)
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
    config = trial.user_attrs.get("config")
    if isinstance(config, dict):
        return architectures.get(arch).config(config)
    space_path = (study.user_attrs.get("space") or {}).get("path")
    space = spaces.load(arch, space_path if space_path and Path(space_path).is_file() else None)
    return space.config_from_params(trial.params)


def select_targets(ds: data.Dataset, storage_url: str, archs: list[str] | None,
                   epochs: int | None) -> tuple[list[Target], list[str]]:
    """The architectures to compare and the skip messages; UserError when nothing is left to compare."""
    storage = database.storage_for_reading(storage_url)
    found = find_studies(storage)
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
        try:
            best = study.best_trial
        except ValueError:
            skipped.append(f"skipping {arch}: study {found[arch]} has no completed trial yet")
            continue
        target_ds, notes = dataset_for_study(ds, study)
        targets.append(Target(arch, study, best, studies.baseline_trial(study), _tuned_config(arch, study, best),
                              architectures.get(arch).config(), epochs or int(study.user_attrs.get("epochs", 10)),
                              target_ds, notes))
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

    from . import training

    keras.backend.clear_session(free_memory=True)
    ds = target.ds
    result = training.train(target.arch, config, ds.x_train, ds.y_train, epochs=target.epochs, seed=seed,
                            verbose=verbose, engine=engine, precision=precision)
    y_pred = training.predict_classes(result.model, ds.x_test)  # the one look at the test set
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


# --- tables ----------------------------------------------------------------------------------------------------


def aggregate(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Per architecture: baseline and tuned means and standard deviations, and the paired tuned - baseline row."""
    rows = []
    for arch, group in per_seed.groupby("arch", sort=False):
        label = group["Model"].iloc[0]
        by_variant = {v: group[group["Variant"] == v].sort_values("Seed").set_index("Seed") for v in VARIANTS}
        diffs = by_variant["tuned"][list(metrics.COLUMNS)] - by_variant["baseline"][list(metrics.COLUMNS)]
        for variant, frame in (*by_variant.items(), (DIFF, diffs)):
            row = {"arch": arch, "Model": label, "Variant": variant, "Seeds": len(frame)}
            for m in metrics.COLUMNS:
                values = frame[m].astype(float)
                row[m] = float(values.mean())
                row[f"{m} std"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
            rows.append(row)
    return pd.DataFrame(rows)


def _pm(mean: float, std: float, signed: bool) -> str:
    head = f"{mean:+.4f}" if signed else f"{mean:.4f}"
    return f"{head} ± {std:.4f}" if not math.isnan(std) else f"{head} ± n/a"


def display_table(agg: pd.DataFrame) -> pd.DataFrame:
    """The table as people read it: Model, Variant and each metric as ``mean ± std``."""
    rows = []
    for _, r in agg.iterrows():
        row = {"Model": r["Model"], "Variant": r["Variant"]}
        for m in metrics.COLUMNS:
            row[m] = _pm(r[m], r[f"{m} std"], signed=r["Variant"] == DIFF)
        rows.append(row)
    return pd.DataFrame(rows, columns=["Model", "Variant", *metrics.COLUMNS])


def csv_frame(per_seed: pd.DataFrame, agg: pd.DataFrame) -> pd.DataFrame:
    """compare.csv: one row per architecture, variant and seed, then the aggregates (Seed ``mean`` / ``std``)."""
    cols = ["arch", "Model", "Variant", "Seed", *metrics.COLUMNS, "Trial", "Epochs", "Seconds", "Model file"]
    seeds = per_seed.assign(Seed=per_seed["Seed"].astype(str))[cols]
    agg_rows = []
    for _, r in agg.iterrows():
        for stat, suffix in (("mean", ""), ("std", " std")):
            agg_rows.append({"arch": r["arch"], "Model": r["Model"], "Variant": r["Variant"], "Seed": stat,
                             **{m: r[f"{m}{suffix}"] for m in metrics.COLUMNS}})
    frame = pd.concat([seeds, pd.DataFrame(agg_rows, columns=cols)], ignore_index=True)
    return frame.astype({"Trial": "Int64", "Epochs": "Int64"})


def _markdown(per_seed: pd.DataFrame, agg: pd.DataFrame, facts: dict) -> str:
    lines = ["# Tuned vs baseline on the test set", ""]
    lines += [f"- **{k}**: {v}" for k, v in facts.items()]
    lines += ["", "Macro averages (scikit-learn), mean ± standard deviation over seeds; the difference row is the "
              "mean ± std of the per-seed paired differences.", "",
              display_table(agg).to_markdown(index=False), "", "## Per seed", "",
              per_seed[["Model", "Variant", "Seed", *metrics.COLUMNS, "Trial", "Seconds"]]
              .to_markdown(index=False, floatfmt=".4f"), ""]
    return "\n".join(lines)


# --- storing with the study ------------------------------------------------------------------------------------


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(float(value)) else float(value)
    return value


def note_section(target: Target, agg: pd.DataFrame, record: dict) -> str:
    """The Markdown section compare writes into the study note (optuna-dashboard shows it)."""
    table = display_table(agg[agg["arch"] == target.arch]).drop(columns=["Model"]).to_markdown(index=False)
    params = ", ".join(f"`{k}={v:.4g}`" if isinstance(v, float) else f"`{k}={v}`"
                       for k, v in target.best.params.items())
    return "\n".join([
        NOTE_HEADING, "",
        f"{record['date']}: best trial #{target.best.number} and the seed baseline, each retrained from scratch on "
        f"all {record['train_images']:,} training images for {record['epochs']} epochs with seeds "
        f"{', '.join(map(str, record['seeds']))}, then evaluated once on {record['test_images']:,} test images.", "",
        table, "",
        f"Best trial params: {params}", "",
        f"Data: {record['data']}. Models: `{Path(record['models']['tuned'][0]).parent}/`. "
        f"Output: `{record['out_dir']}`.", ""])


def store(target: Target, record: dict, agg: pd.DataFrame) -> None:
    """Put the compare results into the study: the ``compare`` user attribute and a section of the study note.

    The note is ``dashboard``'s (its own section, the user's text, and this section under NOTE_HEADING); it is
    rewritten under the study's lock, as optimize workers do. A note that cannot be written costs a warning, not
    the results: those are in the attribute and the files already.
    """
    import contextlib

    target.study.set_user_attr(COMPARE_ATTR, _jsonable(record))
    try:
        from . import dashboard

        lock = getattr(studies, "StudyLock", None)
        with lock(target.study._storage, target.study._study_id) if lock else contextlib.nullcontext():
            dashboard.write_study_note(target.study, compare_table_markdown=note_section(target, agg, record))
    except Exception as e:
        print(f"cifar-tune: warning: the study note of {target.study.study_name} was not updated "
              f"({type(e).__name__}: {str(e)[:200]}); the results are in its '{COMPARE_ATTR}' attribute",
              file=sys.stderr, flush=True)


# --- the command -----------------------------------------------------------------------------------------------


def _record(t: Target, runs: dict[str, list[dict]], agg: pd.DataFrame, *, date: str, seeds: int, precision: str,
            out: Path) -> dict:
    """What the study keeps of one comparison (plain data; read back by ``cifar-tune report``)."""
    return {
        "date": date, "arch": t.arch, "label": t.label, "seeds": list(range(seeds)), "epochs": t.epochs,
        "best_trial": t.best.number,
        "baseline_trial": t.baseline_trial.number if t.baseline_trial else None,
        "tuned_config": t.tuned_config, "baseline_config": t.baseline_config,
        "data": t.ds.source, "data_fingerprint": t.ds.fingerprint(), "train_images": len(t.ds.y_train),
        "test_images": len(t.ds.y_test), "engine": runs["baseline"][0]["engine"], "precision": precision,
        "out_dir": str(out),
        "table": [{"Variant": r["Variant"], **{m: {"mean": r[m], "std": r[f"{m} std"]} for m in metrics.COLUMNS}}
                  for _, r in agg.iterrows()],
        "runs": {v: [{"seed": k, **r["metrics"], "seconds": r["seconds"]} for k, r in enumerate(runs[v])]
                 for v in VARIANTS},
        "confusion": {v: [r["confusion"] for r in runs[v]] for v in VARIANTS},
        "models": {v: [r["model"] for r in runs[v]] for v in VARIANTS},
    }


def per_seed_engine(records: dict[str, dict[str, list[dict]]]) -> str:
    """The engine(s) that trained the runs (normally one)."""
    return ", ".join(sorted({r["engine"] for runs in records.values() for v in runs.values() for r in v}))


def run(ds: data.Dataset, *, archs: list[str] | None = None, seeds: int = 3, epochs: int | None = None,
        storage: str = database.DEFAULT_STORAGE, out_dir: str | Path | None = None, engine: str = "auto",
        precision: str = "float32", verbose: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, Path]:
    """Retrain best and baseline per arch for ``seeds`` seeds, test each once; return (per seed, aggregate, folder)."""
    if seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {seeds}")
    targets, skipped = select_targets(ds, storage, archs, epochs)  # every user error before anything is written
    for message in skipped:
        print(f"cifar-tune: {message}", file=sys.stderr, flush=True)
    out = report.make_out_dir(out_dir, "compare")
    rows, records = [], {}
    start_all = time.perf_counter()
    date = datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
    for t in targets:
        same = t.tuned_config == t.baseline_config
        print(f"\n== {t.label} ({t.arch}), study {t.study.study_name}: best trial #{t.best.number} vs the baseline; "
              f"{t.epochs} epochs on {len(t.ds.y_train):,} training images, {seeds} seed(s), test "
              f"{len(t.ds.y_test):,} images" + (" (the best trial IS the baseline: trained once per seed)" if same
                                                 else ""), flush=True)
        for note in t.notes:
            print(f"[{t.arch}] {note}", flush=True)
        runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
        for seed in range(seeds):
            for variant, config in (("baseline", t.baseline_config), ("tuned", t.tuned_config)):
                if variant == "tuned" and same:
                    run_ = {**runs["baseline"][-1],
                            "model": _copy_model(runs["baseline"][-1]["model"], t.study.study_name, "tuned", seed)}
                else:
                    run_ = _train_and_test(t, variant, config, seed, engine=engine, precision=precision,
                                           verbose=verbose)
                runs[variant].append(run_)
                m = run_["metrics"]
                print(f"[{t.arch}] {variant:<8} seed {seed}: test accuracy {m['Accuracy']:.4f}, macro F1 "
                      f"{m['F1 Score']:.4f} ({run_['seconds']:.1f} s training)", flush=True)
                trial = t.best.number if variant == "tuned" else (t.baseline_trial.number if t.baseline_trial
                                                                  else None)
                rows.append({"arch": t.arch, "Model": t.label, "Variant": variant, "Seed": seed, **m,
                             "Trial": trial, "Epochs": t.epochs, "Seconds": run_["seconds"],
                             "Model file": run_["model"]})
        records[t.arch] = runs
        mine = aggregate(pd.DataFrame([r for r in rows if r["arch"] == t.arch]))
        store(t, _record(t, runs, mine, date=date, seeds=seeds, precision=precision, out=out), mine)

    per_seed = pd.DataFrame(rows)
    agg = aggregate(per_seed)
    facts = {"Date": date, "Storage": database.mask_url(storage), "Seeds": ", ".join(map(str, range(seeds))),
             "Engine / precision": f"{per_seed_engine(records)} / {precision}",
             "Wall time": f"{time.perf_counter() - start_all:.0f} s"}
    for t in targets:
        facts[t.label] = (f"study {t.study.study_name}, best trial #{t.best.number}, {t.epochs} epochs, "
                          f"data {t.ds.source} [{t.ds.fingerprint()}]: train {len(t.ds.y_train):,} / "
                          f"test {len(t.ds.y_test):,}")
    csv_frame(per_seed, agg).to_csv(out / "compare.csv", index=False)
    (out / "compare.md").write_text(_markdown(per_seed, agg, facts), encoding="utf-8")
    return per_seed, agg, out


def run_cli(ds: data.Dataset, *, archs: list[str] | None, seeds: int, epochs: int | None, storage: str,
            out_dir: str | None, engine: str, precision: str, verbose: int) -> int:
    """The ``compare`` command: run, print the table, say where everything went."""
    import logging

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Every retrained model is a new model: TensorFlow warns about "retracing" predict for each one. Expected here.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    start = time.perf_counter()
    per_seed, agg, out = run(ds, archs=archs, seeds=seeds, epochs=epochs, storage=storage, out_dir=out_dir,
                             engine=engine, precision=precision, verbose=verbose)
    print(f"\nTest-set macro metrics, mean ± std over {seeds} seed(s); '{DIFF}' = paired per-seed differences:")
    print(display_table(agg).to_markdown(index=False, tablefmt="simple", disable_numparse=True))
    models = sorted({str(Path(p).parent) for p in per_seed["Model file"]})
    print(f"\nDone in {time.perf_counter() - start:.0f} s. Wrote {out}/compare.csv and compare.md; models in "
          f"{', '.join(models)}; results stored with the studies (user attribute '{COMPARE_ATTR}' and the study "
          f"note).\nNext: cifar-tune report --storage '{database.mask_url(storage)}'")
    return 0
