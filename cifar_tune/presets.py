"""Study presets (``study/*.toml``) merged with command-line options into the settings of one optimize run."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from . import resources, spaces
from .errors import UserError

DEFAULT_PRESET = "default"
# Preset keys and their types; a command-line option of the same name (dashes for underscores) overrides each.
KEYS = {"n_trials": int, "timeout": (int, float), "epochs": int, "sampler": str, "pruner": str, "val_size": int,
        "subset": int, "seed": int, "engine": str, "precision": str, "median_startup_trials": int,
        "median_warmup_epochs": int, "trials_per_process": int}
CHOICES = {"sampler": ("tpe", "random"), "pruner": ("hyperband", "median", "none"),
           "engine": ("auto", "keras", "fast"), "precision": ("float32", "bf16")}
BUILT_IN = {"n_trials": 50, "timeout": None, "epochs": 10, "sampler": "tpe", "pruner": "hyperband",
            "val_size": 5000, "subset": None, "seed": 0, "engine": "auto", "precision": "float32",
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
    val_size: int
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
    total_trials: int | None = None  # study-wide target (see studies.py); overrides n_trials when set
    worker: int = 0  # index among --jobs workers: offsets the sampler's seed so workers explore differently

    def to_dict(self) -> dict:
        """Plain-dict form."""
        return asdict(self)


def load_preset(name_or_path: str) -> dict:
    """A preset's values: a built-in name (``default``, ``quick``, ``seed``) or a path to a TOML file."""
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
    for key, value in raw.items():
        if key not in KEYS:
            raise UserError(f"{path}: {key}: unknown preset key (known: {', '.join(KEYS)})")
        if isinstance(value, bool) or not isinstance(value, KEYS[key]):
            raise UserError(f"{path}: {key}: expected {getattr(KEYS[key], '__name__', 'a number')}, got {value!r}")
        if key in CHOICES and value not in CHOICES[key]:
            raise UserError(f"{path}: {key}: {value!r} is not one of {', '.join(CHOICES[key])}")
    return raw


def settings_from_args(args) -> OptimizeSettings:
    """Merge built-in defaults < preset < command-line options; validate the space and storage URL."""
    from . import database

    values = {**BUILT_IN, **load_preset(args.preset or DEFAULT_PRESET)}
    for key in KEYS:
        given = getattr(args, key, None)
        if given is not None:
            values[key] = given
    spaces.load(args.arch, args.space)  # a bad space file fails now, before anything is stored
    storage = args.storage or database.DEFAULT_STORAGE
    database.check_url(storage)
    data = args.data
    if data and data != "keras":
        data = str(Path(data).expanduser().resolve())  # recorded with the study: compare reuses it from anywhere
    return OptimizeSettings(arch=args.arch, space_path=args.space, storage=storage,
                            study_name=args.study_name or f"cifar10-{args.arch}", preset=args.preset or DEFAULT_PRESET,
                            data=data, jobs=args.jobs, heartbeat_interval=args.heartbeat_interval,
                            grace_period=args.grace_period, verbose=bool(args.verbose),
                            worker=getattr(args, "worker", 0), total_trials=getattr(args, "total_trials", None),
                            **values)
