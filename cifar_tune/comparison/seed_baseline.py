"""The seed notebook's fixed comparison: each architecture at its seed config, one run, the macro-metric table.

``run`` trains every requested architecture (``BaselineSettings``) with the seed's config (Adam 1e-3, batch
32, 10 epochs unless told otherwise), evaluates it on the test set and writes ``metrics.csv``, ``metrics.md``,
``history.csv`` and a self-contained ``report.html`` (learning curves, metric bars) into one output folder.

The settings and the data (``BaselineSettings``, ``load_data``) load no Keras: a refusal costs no Keras import;
``run`` loads it (``runtime.import_keras``) when the training starts.

The ``baseline`` command's library (named ``seed_baseline``: ``cifar_tune.baseline`` is the Python API's
function, and a submodule of that name would replace it on the package once imported).
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from cifar_tune import choices, runtime
from cifar_tune.data import cifar10, safe_files
from cifar_tune.errors import UserError
from cifar_tune.models import metrics
from cifar_tune.progress import epoch_callback, info
from cifar_tune.results import BaselineResult
from cifar_tune.runtime import devices
from cifar_tune.studies import validate
from cifar_tune.text import count
from cifar_tune.views import figures

if TYPE_CHECKING:
    from cifar_tune import engines
    from cifar_tune.models import architectures

PROTOCOLS = {  # choices.PROTOCOLS, described
    "seed": "seed (as the notebook did: train on all training images, validation = the test set, which the "
            "final metrics also use)",
    "holdout": "holdout (validation = a stratified, seeded split carved from the training images; the test set "
               "is untouched until the final metrics)",
}
TABLE_COLUMNS = ("Model", *metrics.COLUMNS)
KEPT = "kept-runs.json"  # in the output folder: the architectures an interrupted baseline finished (see run)


@dataclass(frozen=True)
class BaselineSettings:
    """Everything one ``baseline`` run needs, with the command line's defaults, checked as the command line checks
    them when made (``UserError``, ``errors.InvalidValue`` for a bad value).

    ``archs``: architecture keys (default: all five); ``epochs``; ``batch_size`` (images); ``protocol``
    (``choices.PROTOCOLS``); ``val_size`` (holdout validation images; None: a tenth of the training images, at
    most 5,000); ``out_dir`` (None: a new folder under ``storage/reports/``); ``seed``; ``verbose`` (0 or 1:
    Keras's progress bar); ``engine``, ``precision`` (``choices.ENGINES``, ``choices.PRECISIONS``); ``data`` and
    ``subset``: the data source and training-image count the data came from (``load_data``, the resume line).
    """

    archs: tuple[str, ...] = choices.ARCH_KEYS
    epochs: int = choices.DEFAULT_EPOCHS
    batch_size: int = choices.DEFAULT_BATCH_SIZE
    protocol: str = choices.DEFAULT_PROTOCOL
    val_size: int | None = None
    out_dir: str | Path | None = None
    seed: int = choices.DEFAULT_SEED
    verbose: int = 0
    engine: str = choices.DEFAULT_ENGINE
    precision: str = choices.DEFAULT_PRECISION
    data: str | None = None
    subset: int | None = None

    def __post_init__(self):
        validate.check_record(self)  # each field as the settings model declares it
        if self.val_size is not None and self.protocol != "holdout":
            raise UserError("--val-size applies to --protocol holdout (the seed protocol validates on the test set)")
        validate.check_val_size(self.val_size, self.subset, "--val-size", "--subset")
        figures.check_out_dir(self.out_dir)  # a path that cannot be the output folder: refused before the data load


def make_settings(archs: list[str] | tuple[str, ...] | None = None, *, out: str | os.PathLike | None = None,
                  data: str | os.PathLike | None = None, verbose: bool = False, **keywords) -> BaselineSettings:
    """``BaselineSettings`` from the ``baseline`` command's settings by their names (``settings.COMMANDS``), as the
    command line and the Python API (``cifar_tune.baseline``) both give them: ``archs`` None is all five, ``out``
    the output folder, ``verbose`` a flag; the rest as the fields. Raises ``UserError``."""
    return BaselineSettings(archs=choices.ARCH_KEYS if archs is None else archs,
                            out_dir=None if out is None else os.fspath(out),
                            data=None if data is None else os.fspath(data), verbose=int(verbose), **keywords)


def protocol_split(ds: cifar10.Dataset, protocol: str, val_size: int | None = None, seed: int = 0) -> cifar10.Split:
    """The training/validation arrays of ``protocol`` (``seed``: validate on test; ``holdout``: split of train)."""
    if protocol == "seed":
        return cifar10.test_as_validation(ds)
    if protocol == "holdout":
        return cifar10.split_validation(ds, val_size, seed)
    raise UserError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")


def load_data(settings: BaselineSettings) -> cifar10.Dataset:
    """The data of a ``baseline`` run (``cifar10.load_for_run`` of ``settings.data`` and ``settings.subset``), once
    the settings were checked as the command line checks them (a split only for ``holdout``, one that fits the
    subset). Raises ``DataError``."""
    return cifar10.load_for_run(settings.data, settings.subset, settings.seed)


def run(ds: cifar10.Dataset, settings: BaselineSettings, progress: dict | None = None) -> BaselineResult:
    """Train each of ``settings.archs`` at its seed config on ``ds``, evaluate on test; write the table and report;
    return them (the table, the per-epoch histories, the folder: see ``results.BaselineResult``).

    Each finished architecture is also kept in ``kept-runs.json`` in the output folder, under what determines
    it (epochs, batch size, protocol, split, seed, data, engine, precision): the same command with ``--out``
    that folder, after Ctrl-C or SIGTERM, reuses them and trains the rest; the file goes once the outputs are
    written. ``progress`` (if given) learns the folder (``out``) and the architectures finished (``done``)."""
    runtime.import_keras()  # training starts here: Keras loads now, once the settings and the data passed
    from cifar_tune import engines
    from cifar_tune.models import architectures

    s = settings
    specs = [architectures.get(a) for a in s.archs]
    split = protocol_split(ds, s.protocol, s.val_size, s.seed)
    out = figures.make_out_dir(s.out_dir, "baseline")

    fingerprint = ds.fingerprint()
    engines.report_device(s.engine, s.precision)
    info(f"Protocol: {PROTOCOLS[s.protocol]}")
    info(f"Data: {ds.source} [{fingerprint}]: train {len(split.y_train):,}, validation {len(split.y_val):,}, test "
         f"{len(ds.y_test):,}")
    rows, histories, runs = [], {}, []
    progress = {} if progress is None else progress
    progress.update(out=out, done=[])
    ledger = {"key": {"epochs": s.epochs, "batch_size": s.batch_size, "protocol": s.protocol,
                      "val": len(split.y_val), "seed": s.seed, "data": fingerprint,
                      "engine": runtime.resolve_engine(s.engine), "precision": s.precision}, "archs": {}}
    kept = _read_kept(out / KEPT, ledger["key"])
    # Ctrl-C / SIGTERM (the CLI's run_stoppable) only record themselves in here: training stops at the next batch,
    # and a finished architecture is kept before the command stops.
    with runtime.signals_deferred():
        for arch in specs:
            info(f"\n== {arch.label} ({arch.key}): {count(s.epochs, 'epoch')}, batch {s.batch_size}")
            if arch.key in kept:
                row, history, run_ = kept[arch.key]["row"], kept[arch.key]["history"], kept[arch.key]["run"]
                note = ", kept from the interrupted baseline"
            else:
                spec = engines.TrainSpec(arch.key, {"batch_size": s.batch_size}, s.epochs, s.seed, s.engine,
                                         s.precision, s.verbose)
                row, history, run_ = _train_one(arch, spec, ds, split)
                note = ""
            ledger["archs"][arch.key] = {"row": row, "history": history, "run": run_}
            _write_kept(out / KEPT, ledger)
            progress["done"].append(arch.key)
            rows.append(row)
            histories[arch.label] = history
            runs.append(run_)
            info(f"[{arch.key}] test accuracy {row['Accuracy']:.4f}, macro F1 {row['F1 Score']:.4f} "
                 f"({run_['seconds']:.0f}s training{note})")
            runtime.raise_if_stopping()  # a signal during the test: stop now, this architecture is kept
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    _write_outputs(table, histories, runs, out, ds=ds, split=split, settings=s, fingerprint=fingerprint)
    return BaselineResult(table=table, histories=histories, out=out)


def _train_one(arch: architectures.Architecture, spec: engines.TrainSpec, ds: cifar10.Dataset,
               split: cifar10.Split) -> tuple[dict, dict, dict]:
    """Train one architecture at its seed config and test it: (its table row, its history, what the run was)."""
    import keras

    from cifar_tune import engines

    # An Epoch event per epoch (the CLI prints a line for each unless verbose: then Keras's progress bar, which
    # ends each epoch with metrics, says it).
    callbacks = [epoch_callback(arch.key, spec.epochs), runtime.stop_callback()]
    result = engines.train(spec, split.x_train, split.y_train, split.x_val, split.y_val, callbacks=callbacks)
    y_pred = engines.predict_classes(result.model, ds.x_test)
    row = {"Model": arch.label, **metrics.macro_row(ds.y_test, y_pred)}
    history = {k: [float(v) for v in vs] for k, vs in result.history.items()}
    run_ = {"key": arch.key, "label": arch.label, "params": result.model.count_params(),
            "seconds": result.seconds, "engine": result.engine, "epochs_run": result.epochs_run}
    del result
    keras.backend.clear_session()
    return row, history, run_


def _write_outputs(table: pd.DataFrame, histories: dict, runs: list[dict], out: Path, *, ds: cifar10.Dataset,
                   split: cifar10.Split, settings: BaselineSettings, fingerprint: str) -> None:
    """metrics.csv, metrics.md, history.csv and report.html into ``out``; then the ledger goes."""
    s = settings
    facts = {"Protocol": PROTOCOLS[s.protocol], "Data": f"{ds.source} (fingerprint {fingerprint})",
             "Images": f"train {len(split.y_train):,} / validation {len(split.y_val):,} / test {len(ds.y_test):,}",
             "Epochs": s.epochs, "Batch size": s.batch_size, "Seed": s.seed,
             "Engine / precision": f"{runs[0]['engine']} / {s.precision}", **_machine()}
    try:
        figures.write_tables(table, out)
        with safe_files.replaced_whole(out / "history.csv") as tmp:  # each file whole or absent
            _history_frame(histories, runs).to_csv(tmp, index=False)
        write_report(table, histories, runs, facts, out / "report.html")
    except OSError as e:  # a full disk or a share gone: a write says neither the errno's file nor the folder
        info(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))  # the results, still
        raise OSError(e.errno, e.strerror, str(e.filename or out)) from None
    (out / KEPT).unlink(missing_ok=True)  # done: the same command trains afresh


def _read_kept(path: Path, key: dict) -> dict:
    """The architectures an interrupted baseline kept in ``path`` under the same ``key`` (else none)."""
    try:
        ledger = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return ledger.get("archs", {}) if isinstance(ledger, dict) and ledger.get("key") == key else {}


def _write_kept(path: Path, ledger: dict) -> None:
    """Rewrite the ledger whole (a new file renamed over the old: never half a file)."""
    safe_files.write_text_whole(path, json.dumps(ledger))


def resume_command(settings: BaselineSettings, out: Path) -> str:
    """The ``baseline`` command that continues an interrupted one in its output folder ``out``."""
    s = settings
    return runtime.command_line(
        ["cifar-tune", "baseline", "--archs", ",".join(s.archs), "--epochs", str(s.epochs), "--batch-size",
         str(s.batch_size), "--protocol", s.protocol, "--seed", str(s.seed), "--out", str(out)],
        [("--val-size", s.val_size), ("--data", s.data), ("--subset", s.subset),
         ("--engine", None if s.engine == choices.DEFAULT_ENGINE else s.engine),
         ("--precision", None if s.precision == choices.DEFAULT_PRECISION else s.precision)])


def _history_frame(histories: dict[str, dict], runs: list[dict]) -> pd.DataFrame:
    frames = []
    for r in runs:
        h = pd.DataFrame(histories[r["label"]])
        h.insert(0, "epoch", range(1, len(h) + 1))
        h.insert(0, "arch", r["key"])
        frames.append(h)
    return pd.concat(frames, ignore_index=True)


def _machine() -> dict[str, str]:
    import keras

    return {"Machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, computing on "
                       f"{devices.device_name()}",
            "Software": f"Keras {keras.__version__} ({keras.backend.backend()} backend), Python "
                        f"{platform.python_version()}"}


def write_report(table: pd.DataFrame, histories: dict[str, dict], runs: list[dict], settings: dict,
                 path: Path) -> Path:
    """The baseline's self-contained HTML report: settings, the table, metric bars and learning curves."""
    timing = pd.DataFrame([{"Model": r["label"], "Key": r["key"], "Parameters": f"{r['params']:,}",
                            "Epochs": r["epochs_run"], "Training seconds": f"{r['seconds']:.1f}"} for r in runs])
    intro = (figures.facts_html(settings) + "<h2>Test metrics (macro averages, scikit-learn)</h2>"
             + figures.table_html(table) + "<h2>Runs</h2>" + timing.to_html(index=False, border=0))
    shown = [("Test metrics per model", figures.metric_bars_figure(table)),
             ("Learning curves (train vs validation)", figures.learning_curves_figure(histories))]
    return figures.write_html(shown, path, title="cifar-tune: the seed's baseline comparison", intro_html=intro)
