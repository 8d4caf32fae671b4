"""One typed record per stored thing: a study's metadata (``StudyRecord``), what a trial keeps
(``TrialRecord``) and what ``compare`` keeps with a study (``ComparisonRecord``).

Optuna stores them as user attributes (JSON values under string keys); each class alone knows its keys, writes
them (``write``) and reads them back (``read``, from anything with ``user_attrs``: a study, a study summary, a
live or frozen trial), after the fashion of KerasTuner's ``Stateful`` (``get_state``/``set_state``) and
Optuna's typed ``StudySummary``. Every record carries a ``version``: one stored without it is version 1 (all
cifar-tune wrote before versions existed), and one of a version this cifar-tune does not know is refused with a
``UserError`` rather than misread.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

import optuna

from cifar_tune.errors import UserError
from cifar_tune.storage import attrs

_VERSION = "record_version"  # the study's and the trial's attribute holding their record's version
_COMPARE = "compare"  # the study attribute holding compare's record (a dict; its version under "version")
_COMPARE_RUNS = "compare_runs"  # the runs of a compare under way (its resume ledger)
# The study's split description as tuning/study.py writes it: "data <fingerprint> val <n> seed <s>" (or
# "val=test" for a split that validates on the test set).
_DATA = re.compile(r"data (?P<fingerprint>[0-9a-f]{16})\b(?: val (?P<val>\d+) seed (?P<seed>-?\d+))?")


def _version_of(value: Any, current: int, what: str) -> int:
    """The record version ``value`` (absent: 1); UserError for a version this cifar-tune does not read."""
    version = 1 if value is None else value
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= current:
        raise UserError(f"{what} has record version {version!r}, which this cifar-tune does not know (it reads "
                        f"versions 1 to {current}): it was written by a newer cifar-tune; upgrade to read it")
    return version


def _where(obj: Any) -> str:
    name = getattr(obj, "study_name", None)
    number = getattr(obj, "number", None)
    return f"study {name!r}" if name else (f"trial {number}" if number is not None else "the record")


class _UserAttrs:
    """What StudyRecord and TrialRecord share: their stored form (the fields that are set, None and False being
    what an absent attribute reads as, and the version) and its writing into a study or trial."""

    def to_attrs(self) -> dict:
        """The user attributes of the fields that are set, and the version (``enqueue_trial`` takes these too)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init and f.name != "version"}
        stored = {k: v for k, v in values.items() if v is not None and v is not False}  # 0 stays (trial 0's retry)
        return {_VERSION: self.version, **stored}

    def write(self, target) -> None:
        """Store the record in ``target`` (an ``optuna.Study``, or a running ``optuna.Trial``: in one transaction,
        ``storage.attrs``)."""
        if isinstance(target, optuna.Trial):
            attrs.set_trial_user_attrs(target, self.to_attrs())
            return
        for key, value in self.to_attrs().items():
            target.set_user_attr(key, value)


@dataclass
class StudyRecord(_UserAttrs):
    """A study's metadata, written once when ``optimize`` creates the study.

    Stored: ``arch``, ``epochs``, ``data`` (the split's description: fingerprint, validation size, seed; resumes
    compare it), ``space`` (the search space as a dict: ``params``, ``path``), ``baseline_params``, ``settings``
    (the optimize settings, storage URL left out; written last, so its presence says the record is whole).
    Derived on reading (never stored, so they cannot disagree with what is): ``fingerprint`` (16 hex digits),
    ``val_size`` and ``seed`` (from ``data``; ``seed`` else from the settings), ``subset`` (training images, or
    None) and ``source`` (the ``--data`` given) from the settings.
    """

    VERSION: ClassVar[int] = 1
    arch: str | None = None
    epochs: int | None = None
    data: str | None = None
    space: dict | None = None
    baseline_params: dict | None = None
    settings: dict | None = None
    version: int = 1
    fingerprint: str | None = field(init=False, default=None)
    val_size: int | None = field(init=False, default=None)
    seed: int | None = field(init=False, default=None)
    subset: int | None = field(init=False, default=None)
    source: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        # The one place the structured data fields come from the stored strings and settings.
        settings = self.settings or {}
        m = _DATA.match(self.data) if isinstance(self.data, str) else None
        self.fingerprint = m["fingerprint"] if m else None
        self.val_size = int(m["val"]) if m and m["val"] else settings.get("val_size")
        self.seed = int(m["seed"]) if m and m["seed"] else settings.get("seed")
        self.subset = settings.get("subset")
        self.source = settings.get("data")
        if self.epochs is None:  # the epochs are stored twice (attribute and settings): read them here only
            self.epochs = settings.get("epochs")

    @classmethod
    def from_attrs(cls, attrs: dict, where: str = "the study") -> StudyRecord:
        """The record of a study's user attributes; a study another program made reads with ``arch`` None.
        Raises ``UserError`` for an unknown version."""
        def of(key: str, kind: type):
            return attrs.get(key) if isinstance(attrs.get(key), kind) else None

        return cls(arch=of("arch", str), epochs=of("epochs", int), data=of("data", str), space=of("space", dict),
                   baseline_params=of("baseline_params", dict), settings=of("settings", dict),
                   version=_version_of(attrs.get(_VERSION), cls.VERSION, where))

    @classmethod
    def read(cls, study) -> StudyRecord:
        """The record of ``study`` (a study, frozen study or study summary: anything with ``user_attrs``)."""
        return cls.from_attrs(study.user_attrs, _where(study))


@dataclass
class TrialRecord(_UserAttrs):
    """What a trial keeps: set by the tuning loop (``worker``; ``node`` on a Ray cluster), the objective
    (``config``, ``arch``, ``data``, ``backend``, ``device``, ``engine``, ``precision``, ``gpu`` on a worker placed
    on one GPU; per epoch
    ``curves`` {name: [float per epoch]}, ``epochs_run`` and ``seconds_per_epoch`` (wall seconds of the epochs
    this trial trained, validation included, over their number: what an epoch of this config costs, pruned trials
    too); at the end ``params`` (count), ``seconds``,
    ``val_accuracy`` (final epoch), ``engine_info``, ``rss_mb``; or ``fail_reason``), the baseline's enqueueing
    (``baseline``) and the retry of a dead worker's trial (``retry_of``: the dead trial's number). Preemption
    (``tuning/checkpoints.py``): ``checkpoint``, the trial's latest checkpoint ({``artifact_id``: the artifact
    store's id, None once removed; ``epoch``: epochs done; ``bytes``; ``seconds`` it took; ``total_seconds``
    and ``count``: all the trial wrote}), and on a retry that resumed one, ``resumed_from_epoch`` (epochs it
    did not train again) and ``resumed_from_trial`` (whose checkpoint). Fields not stored read as None
    (``baseline``: False), except ``seconds_per_epoch``, which a record written before it existed derives from
    ``seconds`` over the epochs trained (None for a pruned trial of such a record: it stored no seconds).
    ``training_seconds()``: what the trial's training cost in all."""

    VERSION: ClassVar[int] = 1
    baseline: bool = False
    retry_of: int | None = None
    worker: str | None = None
    config: dict | None = None
    arch: str | None = None
    data: str | None = None
    backend: str | None = None
    device: str | None = None
    engine: str | None = None
    precision: str | None = None
    curves: dict[str, list[float]] | None = None
    epochs_run: int | None = None
    seconds_per_epoch: float | None = None  # added without a version change: older cifar-tunes ignore it
    val_accuracy: float | None = None
    params: int | None = None
    seconds: float | None = None
    engine_info: dict | None = None
    rss_mb: float | None = None
    fail_reason: str | None = None
    gpu: str | None = None  # the CUDA_VISIBLE_DEVICES entry of a worker placed on one GPU (runtime.devices)
    node: str | None = None  # the Ray node id of a worker Ray placed (tuning/ray_backend.py); gpu is that node's
    checkpoint: dict | None = None  # the latest epoch checkpoint: artifact id, epoch, bytes, seconds (checkpoints.py)
    resumed_from_epoch: int | None = None  # a retry that resumed: the epochs its dead predecessor had finished
    resumed_from_trial: int | None = None
    version: int = 1

    def __post_init__(self) -> None:
        trained = self.epochs_trained()
        if self.seconds_per_epoch is None and self.seconds is not None and trained:  # a record older than the field
            self.seconds_per_epoch = round(self.seconds / trained, 4)

    def epochs_trained(self) -> int | None:
        """Epochs this trial trained itself: the epochs run (else the curves' length) less those a resumed
        checkpoint had done; None when nothing says."""
        run = self.epochs_run
        if run is None and self.curves:
            run = max((len(v) for v in self.curves.values() if isinstance(v, list)), default=None)
        return None if run is None else max(run - (self.resumed_from_epoch or 0), 0)

    def training_seconds(self) -> float | None:
        """Seconds this trial spent training (``seconds_per_epoch`` × ``epochs_trained()``), or None when
        unknown."""
        trained = self.epochs_trained()
        return None if self.seconds_per_epoch is None or trained is None else self.seconds_per_epoch * trained

    @classmethod
    def update(cls, trial, **fields) -> None:
        """Store exactly ``fields`` (names of this record's fields) in the running ``trial``, None values too, in
        one transaction: the objective's writes as a trial goes (the curves every epoch). Raises TypeError for an
        unknown name."""
        known = {f.name for f in dataclasses.fields(cls)} - {"version"}
        if set(fields) - known:
            raise TypeError(f"not fields of a trial record: {sorted(set(fields) - known)}")
        attrs.set_trial_user_attrs(trial, fields)  # one transaction for them all

    @classmethod
    def from_attrs(cls, attrs: dict, where: str = "the trial") -> TrialRecord:
        """The record of a trial's user attributes (unknown keys are left out). Raises ``UserError`` for an
        unknown version."""
        names = {f.name for f in dataclasses.fields(cls)} - {"version"}
        values = {k: v for k, v in attrs.items() if k in names}
        values["baseline"] = bool(values.get("baseline"))
        return cls(**values, version=_version_of(attrs.get(_VERSION), cls.VERSION, where))

    @classmethod
    def read(cls, trial) -> TrialRecord:
        """The record of ``trial`` (an ``optuna.Trial`` or ``FrozenTrial``)."""
        return cls.from_attrs(trial.user_attrs, _where(trial))

    @classmethod
    def retry_attrs(cls, trial) -> dict:
        """The user attributes the retry of the dead worker's ``trial`` starts with: its baseline flag and
        ``retry_of`` (none of its partial curves or results)."""
        return cls(baseline=cls.read(trial).baseline, retry_of=trial.number).to_attrs()


@dataclass
class ComparisonRecord:
    """What ``compare`` keeps with a study (one JSON dict under the study's ``compare`` attribute).

    ``date`` (ISO 8601), ``arch``, ``label``, ``seeds``, ``epochs``, ``best_trial`` and ``baseline_trial``
    (numbers), ``tuned_config``/``baseline_config``, ``data`` (source) and ``data_fingerprint``,
    ``train_images``/``test_images`` (counts), ``engine``, ``precision``, ``out_dir``, ``notes``; ``table``: per
    variant (baseline, tuned, the difference) {metric: {mean, std[, low, high, p]}} and the difference's
    ``verdict``; ``runs``: per variant one {seed, metric..., seconds} per seed; ``confusion``: per variant one
    10x10 matrix (lists) per seed; ``models``: per variant the model files.
    """

    VERSION: ClassVar[int] = 1
    ATTRIBUTE: ClassVar[str] = _COMPARE  # the attribute's name, as messages show it to people
    date: str | None = None
    arch: str | None = None
    label: str | None = None
    seeds: list[int] = field(default_factory=list)
    epochs: int | None = None
    best_trial: int | None = None
    baseline_trial: int | None = None
    tuned_config: dict = field(default_factory=dict)
    baseline_config: dict = field(default_factory=dict)
    data: str | None = None
    data_fingerprint: str | None = None
    train_images: int | None = None
    test_images: int | None = None
    engine: str | None = None
    precision: str | None = None
    out_dir: str | None = None
    notes: list[str] = field(default_factory=list)
    table: list[dict] = field(default_factory=list)
    runs: dict[str, list[dict]] = field(default_factory=dict)
    confusion: dict[str, list] = field(default_factory=dict)
    models: dict[str, list[str]] = field(default_factory=dict)
    version: int = 1

    def to_attrs(self) -> dict:
        """The record as the plain dict stored (and handed to the Python API: ``results.Comparison.records``)."""
        return dataclasses.asdict(self)

    def write(self, study) -> None:
        """Store the record in ``study`` and drop the ledger of the runs under way: the next compare starts
        afresh."""
        study.set_user_attr(_COMPARE, self.to_attrs())
        study.set_user_attr(_COMPARE_RUNS, {})

    @classmethod
    def from_attrs(cls, record: dict, where: str = "the comparison") -> ComparisonRecord:
        """The record of a stored dict (unknown keys left out). Raises ``UserError`` for an unknown version."""
        names = {f.name for f in dataclasses.fields(cls)} - {"version"}
        return cls(**{k: v for k, v in record.items() if k in names},
                   version=_version_of(record.get("version"), cls.VERSION, where))

    @classmethod
    def read(cls, study) -> ComparisonRecord | None:
        """The comparison stored with ``study`` (anything with ``user_attrs``), or None when compare has not run."""
        record = study.user_attrs.get(_COMPARE)
        return cls.from_attrs(record, f"the comparison of {_where(study)}") if isinstance(record, dict) else None

    # The ledger of a compare under way (comparison/retrain.py says why): run name -> {"key": ..., "run": ...}.

    @staticmethod
    def kept_runs(study) -> dict:
        """The runs a compare of ``study`` finished and has not yet recorded."""
        runs = study.user_attrs.get(_COMPARE_RUNS)
        return runs if isinstance(runs, dict) else {}

    @staticmethod
    def keep_runs(study, runs: dict) -> None:
        """Store the ledger ``runs`` (plain JSON data) in ``study``."""
        study.set_user_attr(_COMPARE_RUNS, runs)
