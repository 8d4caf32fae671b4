"""Study presets (``study/*.toml``) merged with command-line options into the settings of one optimize run."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

from cifar_tune import choices
from cifar_tune.data import safe_files
from cifar_tune.errors import UserError
from cifar_tune.studies import resources, settings, spaces, validate
from cifar_tune.studies.settings import SETTINGS
from cifar_tune.studies.validate import RANGES  # noqa: F401  (re-exported: presets.RANGES was its first home)

DEFAULT_PRESET = "default"
# Derived from the settings model (settings.py), where each setting is declared once. The preset keys and their
# types; a command-line option of the same name (dashes for underscores) overrides each.
KEYS = {k: (int, float) if SETTINGS[k].type is float else SETTINGS[k].type for k in settings.preset_keys()}
CHOICES = {k: SETTINGS[k].choices for k in KEYS if SETTINGS[k].choices is not None}
BUILT_IN = {k: SETTINGS[k].default for k in KEYS}
# The settings besides the preset keys, each with the command line's default: what a flag or a keyword sets.
EXTRA = {k: settings.flag_default(SETTINGS[k], "optimize") for k in settings.study_keywords()}


@dataclass(frozen=True)
class OptimizeSettings:
    """Everything one ``cifar-tune optimize`` run needs, validated, as plain data."""

    arch: str
    space_path: str | None
    storage: str
    study_name: str
    preset: str
    n_trials: int
    timeout: float | None
    epochs: int
    sampler: str
    pruner: str
    val_size: int | None  # None: data.default_val_size of the training images
    subset: int | None
    seed: int
    engine: str
    precision: str
    median_startup_trials: int
    median_warmup_epochs: int
    trials_per_process: int | None
    worker_memory: int | None = None  # MB; None: after the first trial plus executors.DEFAULT_HEADROOM_MB
    data: str | None = None
    jobs: int = 1
    executor: str = "auto"  # inline, processes or auto (tuning/executors.py); Ray with ``ray``
    jobs_per_gpu: int | None = None  # workers sharing one GPU (runtime.devices)
    heartbeat_interval: int | None = None
    grace_period: int | None = None
    verbose: bool = False
    total_trials: int | None = None  # study-wide target (see tuning/loop.py); overrides n_trials when set
    ray: str | None = None  # a Ray cluster's address (auto, host:port, ray://host:10001): workers are Ray tasks
    workers: int | None = None  # Ray workers (None: jobs_per_gpu per GPU of the cluster; tuning/ray_backend.py)

    def __post_init__(self):
        """The same checks as the command line's (the settings model), for the Python API and a worker's JSON."""
        validate.check_record(self)
        validate.check_val_size(self.val_size, self.subset)
        validate.check_pruner(self.to_dict())

    def to_dict(self) -> dict:
        """Plain-dict form (JSON-able; ``OptimizeSettings(**d)`` rebuilds it)."""
        return asdict(self)


def load_preset(name_or_path: str, arch: str | None = None) -> dict:
    """A preset's values for ``arch``: a built-in name (``default``, ``quick``, ``seed``) or a path to a TOML file.

    A table ``[archs.<arch>]`` in the preset overrides its values for that architecture alone (``quick`` gives
    the MLPs more images than the ResNet, say).
    """
    path = Path(name_or_path)
    if not (path.suffix == ".toml" or path.exists()):
        path = resources.path("study", f"{name_or_path}.toml")
        if not path.is_file():
            raise UserError(f"unknown preset {name_or_path!r}; built-in: {', '.join(resources.names('study'))}, "
                            "or give a path to a .toml file")
    text = safe_files.read_text(path, "preset file")  # no FIFO, device or huge file
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"cannot read preset {path}: {e}") from None
    per_arch = raw.pop("archs", {})
    if not isinstance(per_arch, dict) or not all(k in choices.ARCH_KEYS and isinstance(v, dict)
                                                 for k, v in per_arch.items()):
        raise UserError(f"{path}: archs: expected tables [archs.<arch>] for {', '.join(choices.ARCH_KEYS)}")
    for where, table in (("", raw), *((f"archs.{k}.", v) for k, v in per_arch.items())):
        for key, value in table.items():
            _check_preset_value(path, where + key, key, value)
    return {**raw, **per_arch.get(arch, {})}


def _check_preset_value(path: Path, shown: str, key: str, value) -> None:
    if key not in KEYS:
        raise UserError(f"{path}: {shown}: unknown preset key (known: {', '.join(KEYS)})")
    validate.check_setting(key, value, shown=f"{path}: {shown}:")


def merge(preset: dict, flags: dict, preset_name: str) -> dict:
    """Built-in defaults < the preset's values < the command line's ``flags``, checked as a whole.

    A preset's ``val_size`` belongs to its ``subset``: when the command line gives ``--subset`` but not
    ``--val-size``, the preset's ``val_size`` is dropped and the default split applies to the user's subset (a
    tenth of it, at most 5,000: ``data.default_val_size``), so ``--preset quick --subset 2000`` validates on 200
    images instead of failing on the preset's 2,000. A split that still does not fit its subset is refused in one
    line naming the flag or preset key each number came from, and so is a pruner setting that cannot act within
    the study's epochs (``validate.check_pruner``).
    """
    if "subset" in flags and "val_size" not in flags:
        preset = {k: v for k, v in preset.items() if k != "val_size"}
    values = {**BUILT_IN, **preset, **flags}

    def origin(key: str) -> str:
        return f"--{validate.label(key)}" if key in flags else f"{key} of preset {preset_name}"

    validate.check_val_size(values["val_size"], values["subset"], origin("val_size"), origin("subset"))

    def source(key: str) -> str:  # the median settings have no flag: a keyword of the Python API sets them
        if key in flags:
            return f"keyword {key}" if key in validate.MEDIAN_SETTINGS else f"--{validate.label(key)}"
        return f"preset {preset_name}" if key in preset else "built-in default"

    validate.check_pruner(values, {*flags, *preset}, source)
    return values


def make_settings(arch: str, *, preset: str | None = None, **given) -> OptimizeSettings:
    """The settings of one optimize run: built-in defaults < the preset's values < ``given``; the one path the
    command line (``cli.commands.optimize_settings``) and the Python API (``cifar_tune.optimize``, ``run``) build
    them by.

    ``given``: the preset keys (``KEYS``: ``n_trials``, ``timeout`` in seconds, ``epochs``, ``sampler``, ``pruner``,
    ``val_size`` and ``subset`` in images, ``seed``, ``engine``, ``precision``, ...) and ``EXTRA`` (``space``: a
    search-space TOML path, ``storage``: an Optuna storage URL, ``study_name``, ``data``: a CIFAR-10 source,
    ``jobs`` (default: one per visible GPU, times ``jobs_per_gpu``; 1 without GPUs), ``jobs_per_gpu``,
    ``heartbeat_interval`` and ``grace_period`` in seconds, ``verbose``, ``total_trials``, ``ray``: a Ray cluster's
    address whose workers run the trials, ``workers``: how many, with ``ray``); a value of
    None is not given (the default applies), as an absent flag. Validates the merge, the preset, the space file
    and the storage URL, and stores nothing. Raises ``UserError`` (``errors.InvalidValue`` for a bad value)."""
    from cifar_tune.runtime import devices
    from cifar_tune.storage import database
    from cifar_tune.storage.urls import url_or_default

    unknown = sorted(set(given) - set(KEYS) - set(EXTRA))
    if unknown:
        raise UserError(f"unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; known: "
                        f"arch, preset, {', '.join([*KEYS, *EXTRA])}")
    validate.check_setting("arch", arch)
    given = {key: value for key, value in given.items() if value is not None}  # None: not given
    for key, value in given.items():  # the checks a flag's type gets, before the preset is merged
        validate.check_setting(key, value)
    flags = {key: value for key, value in given.items() if key in KEYS}
    extra = {**EXTRA, **{key: value for key, value in given.items() if key in EXTRA}}
    preset_name = DEFAULT_PRESET if preset is None else preset
    values = merge(load_preset(validate.check_setting("preset", preset_name), arch), flags, preset_name)
    spaces.load(arch, extra["space"])  # a bad space file fails now, before anything is stored
    storage = validate.check_nonempty("storage", url_or_default(extra["storage"]))
    database.check_url(storage, writes="optimize")
    check_ray(extra, storage)
    data = extra["data"]
    if data and data != choices.KERAS_DATA:
        try:  # recorded with the study as an absolute path: compare reuses it from anywhere
            data = str(Path(data).expanduser().resolve())
        except (OSError, RuntimeError) as e:  # a symlink loop
            raise UserError(f"cannot use data path {data}: {e}") from None
    study = choices.study_name(arch) if extra["study_name"] is None else extra["study_name"]
    return OptimizeSettings(arch=arch, space_path=extra["space"], storage=storage, study_name=study,
                            preset=preset_name, data=data, jobs_per_gpu=extra["jobs_per_gpu"],
                            jobs=1 if extra["ray"] else devices.default_jobs(extra["jobs"], extra["jobs_per_gpu"],
                                                                             devices.visible_gpus()),
                            heartbeat_interval=extra["heartbeat_interval"], grace_period=extra["grace_period"],
                            verbose=bool(extra["verbose"]), total_trials=extra["total_trials"], ray=extra["ray"],
                            workers=extra["workers"], executor=extra["executor"] or "auto", **values)


def check_ray(extra: dict, storage: str) -> None:
    """A Ray cluster's workers (``ray``, ``workers``) need each other: ``--workers`` without ``--ray`` and
    ``--jobs`` or ``--executor`` with it (this machine's processes) are refused, as ``--executor inline`` with
    ``--jobs`` over 1, and so is a SQLite file, which one machine holds
    (the workers run on every node). Raises ``UserError``."""
    if extra["executor"] == "inline" and (extra["jobs"] or 1) > 1:
        raise UserError("--executor inline trains in this process, one trial at a time: drop --jobs, or use "
                        "--executor processes")
    if extra["ray"] is None:
        if extra["workers"] is not None:
            raise UserError("--workers counts a Ray cluster's workers: give --ray ADDRESS too (one machine: --jobs)")
        return
    if extra["executor"] not in (None, "auto"):
        raise UserError("--executor chooses where trials run on this machine; with --ray, Ray places them")
    if extra["jobs"] is not None:
        raise UserError("--jobs places worker processes on this machine; with --ray, Ray places them: give "
                        "--workers")
    if storage.startswith("sqlite"):
        raise UserError("--ray runs workers on every node of the cluster: the storage must be a database server "
                        "they all reach (postgresql+psycopg://user@host/db), not a SQLite file")


NOT_IN_A_JOB = ("space", "study_name", "total_trials")  # a job has one study per architecture, of its preset's size


def make_plan(archs: list[str], *, preset: str | None = None, **given) -> list[OptimizeSettings]:
    """The settings of each architecture's study in a job (``cifar-tune run``, ``cifar_tune.run``): ``make_settings``
    for each of ``archs`` with the same ``preset`` (and its ``[archs.<arch>]`` table) and ``given``. Raises
    ``UserError`` for a setting a job does not take (``NOT_IN_A_JOB``) or any that ``make_settings`` refuses."""
    refused = [key for key in NOT_IN_A_JOB if given.get(key) is not None]
    if refused:
        raise UserError(f"a job runs one study per architecture with its default name, space and size: "
                        f"{', '.join(refused)} cannot be given (use optimize for one study)")
    archs = validate.check_setting("archs", archs)
    return [make_settings(arch, preset=preset, **given) for arch in archs]
