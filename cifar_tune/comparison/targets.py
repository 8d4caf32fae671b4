"""What ``compare`` compares: for each architecture asked, its study, the best trial and the baseline trial,
the tuned and baseline configs, the epochs, the seeds the study never trained with, and the data to compare on.

Data: a study records the fingerprint of the data it was tuned on and, in its settings, the ``--subset`` it used.
When the data given to compare are not a subset (no ``--subset``) but the study was tuned on one, compare takes
the study's subset (same size and seed) of the given data, so a quick study gets a quick comparison; ``--subset``
overrides, and ``--full-data`` compares on every training image and the whole test set (the final verdict on a
study that was tuned on a subset to save time). Other mismatches are reported and the comparison runs on the data
given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import optuna

from cifar_tune.choices import ARCH_LABELS, MODELS_DIR
from cifar_tune.data import cifar10
from cifar_tune.errors import UserError
from cifar_tune.models import configs
from cifar_tune.storage import handle
from cifar_tune.storage.naming import storage_tag
from cifar_tune.studies import catalog, presets, spaces
from cifar_tune.studies.records import StudyRecord, TrialRecord

FIRST_SEED = 1000  # compare's seeds count up from here, skipping the study's own seed


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
    ds: cifar10.Dataset
    notes: list[str] = field(default_factory=list)
    warning: str | None = None  # catalog.not_learned's (also in ``notes``, as the record keeps it)
    models: Path = MODELS_DIR  # where its retrained models go: the storage's own folder (``models_dir``)

    @property
    def label(self) -> str:
        return ARCH_LABELS[self.arch]


def models_dir(storage_url: str) -> Path:
    """Where compare saves the models it retrains for a storage's studies: ``storage/models/`` for the default
    storage, ``storage/models/<storage tag>/`` for another (``naming.storage_tag``), so that studies of the same
    name in two storages never overwrite each other's models."""
    tag = storage_tag(storage_url)
    return MODELS_DIR if tag is None else MODELS_DIR / tag


def recorded_source(storage: handle.Storage | str, archs: list[str] | None = None) -> str | None:
    """The ``--data`` the studies were tuned on (as recorded by ``optimize``), so compare can default to it."""
    storage = handle.resolve(storage).reading()
    for arch, name in catalog.find_studies(storage).items():
        if archs is None or arch in archs:
            source = StudyRecord.read(optuna.load_study(study_name=name, storage=storage)).source
            if source:
                return source
    return None


def compare_seeds(study: optuna.Study, k: int) -> list[int]:
    """``k`` seeds the study never trained with: from FIRST_SEED up, skipping the seed its trials used."""
    used = StudyRecord.read(study).seed
    return [s for s in range(FIRST_SEED, FIRST_SEED + k + 1) if s != used][:k]


def dataset_for_study(ds: cifar10.Dataset, study: optuna.Study,
                      full_data: bool = False) -> tuple[cifar10.Dataset, list[str]]:
    """The data to compare ``study`` on: ``ds``, or the study's recorded subset of it (see the module doc)."""
    record = StudyRecord.read(study)
    recorded = record.fingerprint
    if recorded is None or ds.fingerprint() == recorded:
        return ds, []
    n, seed = record.subset, int(record.seed or 0)
    if full_data and n:
        return ds, [f"the study was tuned on a subset of {int(n):,} training images; comparing on all "
                    f"{len(ds.y_train):,} and {len(ds.y_test):,} test images (--full-data)"]
    if n and "(subset " not in ds.source:  # the user gave no --subset: follow the study
        try:
            sub = cifar10.subset(ds, int(n), seed)
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
    config = TrialRecord.read(trial).config
    if isinstance(config, dict):
        return configs.complete(arch, config)
    space_path = (StudyRecord.read(study).space or {}).get("path")
    space = spaces.load(arch, space_path if space_path and Path(space_path).is_file() else None)
    return space.config_from_params(trial.params)


def select_targets(ds: cifar10.Dataset, storage: handle.Storage | str, archs: list[str] | None, epochs: int | None,
                   full_data: bool = False) -> tuple[list[Target], list[str]]:
    """The architectures to compare and the skip messages; UserError when nothing is left to compare."""
    storage = handle.resolve(storage)
    opened = storage.reading()
    found = catalog.find_studies(opened)
    where = storage.shown
    if not found:
        raise UserError(f"no studies in {where} (run `cifar-tune optimize --arch ...` first)")
    skipped, targets = [], []
    for arch in list(dict.fromkeys(archs or found)):
        configs.baseline(arch)  # UserError for an unknown key
        if arch not in found:
            skipped.append(f"skipping {arch}: no study for it in {where}")
            continue
        study = optuna.load_study(study_name=found[arch], storage=opened)
        best = catalog.best_trial(study)
        if best is None:
            skipped.append(f"skipping {arch}: study {found[arch]} has no completed trial yet")
            continue
        target_ds, notes = dataset_for_study(ds, study, full_data)
        warning = catalog.not_learned(study)
        if warning:
            notes.append(f"WARNING: {warning}")
        targets.append(Target(arch, study, best, catalog.baseline_trial(study), _tuned_config(arch, study, best),
                              configs.complete(arch), epochs or _study_epochs(study), target_ds, notes, warning,
                              models_dir(storage.url)))
    if not targets:
        raise UserError(f"nothing to compare in {where}: " + "; ".join(skipped))
    return targets, skipped


def _study_epochs(study: optuna.Study) -> int:
    """The epochs the study trained each trial for (its record's); the built-in preset's for a record without."""
    epochs = StudyRecord.read(study).epochs
    return int(epochs if epochs is not None else presets.BUILT_IN["epochs"])
