"""Study presets (``study/*.toml``) merged with command-line options into the settings of one optimize run."""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from . import names, resources, spaces
from .errors import UserError

DEFAULT_PRESET = "default"
# Preset keys and their types; a command-line option of the same name (dashes for underscores) overrides each.
KEYS = {"n_trials": int, "timeout": (int, float), "epochs": int, "sampler": str, "pruner": str, "val_size": int,
        "subset": int, "seed": int, "engine": str, "precision": str, "median_startup_trials": int,
        "median_warmup_epochs": int, "trials_per_process": int}
CHOICES = {"sampler": ("tpe", "random"), "pruner": ("hyperband", "median", "none"),
           "engine": ("auto", "keras", "fast"), "precision": ("float32", "bf16")}
# What each numeric setting may be, wherever it comes from (preset, command line, a worker's JSON).
RANGES = {"n_trials": (1, 10**6), "timeout": (1e-3, 1e9), "epochs": (1, 10**4), "val_size": (10, 10**7),
          "subset": (20, 10**7), "seed": (0, 2**32 - 1), "median_startup_trials": (0, 10**6),
          "median_warmup_epochs": (0, 10**4), "trials_per_process": (1, 10**6), "jobs": (1, 1024),
          "total_trials": (1, 10**6), "heartbeat_interval": (1, 10**5), "grace_period": (2, 10**6)}
OPTIONAL = {"timeout", "subset", "total_trials", "heartbeat_interval", "grace_period", "val_size"}
BUILT_IN = {"n_trials": 50, "timeout": None, "epochs": 10, "sampler": "tpe", "pruner": "hyperband",
            "val_size": None, "subset": None, "seed": 0, "engine": "auto", "precision": "float32",
            "median_startup_trials": 3, "median_warmup_epochs": 1,  # the median pruner's patience
            "trials_per_process": 10}  # a worker replaces itself with a fresh process after this many trials


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
    trials_per_process: int
    data: str | None = None
    jobs: int = 1
    heartbeat_interval: int | None = None
    grace_period: int | None = None
    verbose: bool = False
    total_trials: int | None = None  # study-wide target (see tuning/loop.py); overrides n_trials when set

    def __post_init__(self):
        for key, (low, high) in RANGES.items():
            value = getattr(self, key)
            if value is None and key in OPTIONAL:
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) \
                    or not low <= value <= high:
                raise UserError(f"{key.replace('_', '-')} must be a number in {low}..{high:g}, got {value!r}")
        for key, choices in CHOICES.items():
            if getattr(self, key) not in choices:
                raise UserError(f"{key}: {getattr(self, key)!r} is not one of {', '.join(choices)}")

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
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"preset file not found: {path}") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise UserError(f"cannot read preset {path}: {e}") from None
    per_arch = raw.pop("archs", {})
    if not isinstance(per_arch, dict) or not all(k in names.ARCH_KEYS and isinstance(v, dict)
                                                 for k, v in per_arch.items()):
        raise UserError(f"{path}: archs: expected tables [archs.<arch>] for {', '.join(names.ARCH_KEYS)}")
    for where, table in (("", raw), *((f"archs.{k}.", v) for k, v in per_arch.items())):
        for key, value in table.items():
            _check_preset_value(path, where + key, key, value)
    return {**raw, **per_arch.get(arch, {})}


def _check_preset_value(path: Path, shown: str, key: str, value) -> None:
    if key not in KEYS:
        raise UserError(f"{path}: {shown}: unknown preset key (known: {', '.join(KEYS)})")
    if isinstance(value, bool) or not isinstance(value, KEYS[key]):
        raise UserError(f"{path}: {shown}: expected {getattr(KEYS[key], '__name__', 'a number')}, got {value!r}")
    if key in CHOICES and value not in CHOICES[key]:
        raise UserError(f"{path}: {shown}: {value!r} is not one of {', '.join(CHOICES[key])}")
    if key in RANGES and not RANGES[key][0] <= value <= RANGES[key][1]:
        raise UserError(f"{path}: {shown}: must be in {RANGES[key][0]}..{RANGES[key][1]:g}, got {value!r}")


def settings_from_args(args) -> OptimizeSettings:
    """Merge built-in defaults < preset < command-line options; validate the space and storage URL."""
    from . import database

    values = {**BUILT_IN, **load_preset(args.preset or DEFAULT_PRESET, args.arch)}
    for key in KEYS:
        given = getattr(args, key, None)  # some preset keys have no command-line option
        if given is not None:
            values[key] = given
    spaces.load(args.arch, args.space)  # a bad space file fails now, before anything is stored
    storage = args.storage or names.DEFAULT_STORAGE
    database.check_url(storage)
    data = args.data
    if data and data != "keras":
        try:  # recorded with the study as an absolute path: compare reuses it from anywhere
            data = str(Path(data).expanduser().resolve())
        except (OSError, RuntimeError) as e:  # a symlink loop
            raise UserError(f"cannot use data path {data}: {e}") from None
    return OptimizeSettings(arch=args.arch, space_path=args.space, storage=storage,
                            study_name=args.study_name or names.study_name(args.arch),
                            preset=args.preset or DEFAULT_PRESET,
                            data=data, jobs=args.jobs, heartbeat_interval=args.heartbeat_interval,
                            grace_period=args.grace_period, verbose=bool(args.verbose),
                            total_trials=args.total_trials, **values)
