"""The settings model: every setting of every command declared once, as plain data (stdlib only, no Keras).

``SETTINGS`` holds each setting's type, default, range or choices, whether a study preset may set it and its help
text; ``COMMANDS`` names each command's settings in the order ``--help`` lists them. From these two tables come
the command line's options (``cli.commands.build_parser``), the checks of every settings record
(``validate.check_record``: ``OptimizeSettings``, ``BaselineSettings``, ``CompareSettings``, a worker's JSON),
the preset keys and built-in defaults (``presets.KEYS``, ``presets.BUILT_IN``), and the numeric ranges
(``validate.RANGES``); ``tests/test_settings_model.py`` fails when the Python API's keywords drift from them.

Adding a setting: one ``Setting`` here, its name in ``COMMANDS``, the field of the command's settings record and,
for ``baseline``/``compare``, the keyword of its Python API function (the test names what is missing).

A plain table rather than pydantic or attrs: the driver builds settings without loading more than it must
(``python -X importtime``: this module ~1 ms over ``choices``; pydantic's ``BaseModel`` ~80 ms, attrs ~20 ms), and
the checks must keep their one-line messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from cifar_tune import choices


@dataclass(frozen=True)
class Setting:
    """One setting: ``name`` (the keyword; the flag is ``--`` and the name with dashes), ``type`` (``int``,
    ``float``, ``str``, ``bool``: a flag without value, ``Path``: a folder, ``list``: comma-separated
    architectures), ``default`` (what applies when nothing gives it; ``defaults`` overrides it per command),
    ``range`` (low, high: both inclusive) or ``choices``, ``preset`` (a key of ``study/*.toml``), ``flag``
    (False: a keyword of the Python API only), ``help`` (a text, or one per command), ``metavar``, ``required``
    (the command cannot run without it)."""

    name: str
    type: type
    help: str | Mapping[str, str]
    default: object = None
    range: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None
    preset: bool = False
    flag: bool = True
    defaults: Mapping[str, object] = field(default_factory=dict)
    metavar: str | None = None
    required: bool = False

    def default_in(self, command: str):
        """The default of this setting in ``command``."""
        return self.defaults.get(command, self.default)

    def help_in(self, command: str) -> str:
        """The flag's help text in ``command`` (``run``'s study flags: ``optimize``'s texts unless it has its own)."""
        if isinstance(self.help, str):
            return self.help
        return self.help.get(command) or self.help[HELP_AS[command]]


_DATA_HELP = ("CIFAR-10 source: .npz, cifar-10-python.tar.gz or cifar-10-batches-py/ (default: $CIFAR_TUNE_DATA, "
              "else the official download via Keras)")
_OUT_HELP = "output folder (default: a new folder under storage/reports/)"

# The preset keys first (presets.KEYS keeps this order), then optimize's other keywords (presets.EXTRA), then the
# other commands' settings.
_ALL = (
    Setting("n_trials", int, {"optimize": "new trials this command runs (all workers together)",
                              "run": "trials per study (a study-wide total; default: the preset's)"},
            50, range=(1, 10**6), preset=True),
    Setting("timeout", float, {"optimize": "stop starting new trials after this many seconds",
                               "run": "seconds the studies may start trials in, shared among the architectures in "
                                      "turn (compare and report are not limited)"},
            range=(1e-3, 1e9), preset=True),
    Setting("epochs", int, {
        "optimize": "epochs each trial trains at most (pruning may stop it sooner; default: the preset's, 10 in "
                    "default)",
        "baseline": f"epochs each model trains (default {choices.DEFAULT_EPOCHS}, the notebook's)",
        "compare": "default: the study's epochs"},
        choices.DEFAULT_EPOCHS, range=(1, 10**4), preset=True, defaults={"compare": None}),
    Setting("sampler", str, "Optuna sampler: tpe (multivariate TPE) or random (default: the preset's)",
            choices.DEFAULT_SAMPLER, choices=choices.SAMPLERS, preset=True),
    Setting("pruner", str, "Optuna pruner on the validation loss after each epoch (default: the preset's)",
            choices.DEFAULT_PRUNER, choices=choices.PRUNERS, preset=True),
    Setting("val_size", int, {
        "optimize": "validation images carved from train (default: a tenth of them, at most 5,000)",
        "baseline": "holdout validation images (default: a tenth of the training images, at most 5,000)"},
        range=(10, 10**7), preset=True),  # None: data.default_val_size of the training images
    Setting("subset", int, "use a stratified subset of N training images (the test set is scaled alike, N/5)",
            range=(20, 10**7), preset=True),
    Setting("seed", int, {"optimize": "the trials' seed, 0 .. 4294967295 (default 0)", "baseline": "0 .. 4294967295"},
            choices.DEFAULT_SEED, range=(0, 2**32 - 1), preset=True),
    # 'auto' stays as given here and is resolved where training runs (runtime.resolve_engine, the one resolver):
    # it depends on the backend and device of the process that trains (a worker, a
    # Ray node), and the resume lines print the engine as the user gave it
    Setting("engine", str, "training engine: keras (stock fit), fast (compiled device loop), auto (fast on an "
            "accelerator, else keras)", choices.DEFAULT_ENGINE, choices=choices.ENGINES, preset=True),
    Setting("precision", str, "compute precision", choices.DEFAULT_PRECISION, choices=choices.PRECISIONS,
            preset=True),
    # the median pruner's patience (no flag: a keyword of the Python API or a preset key)
    Setting("median_startup_trials", int, "trials the median pruner lets finish before it prunes", 3,
            range=(0, 10**6), preset=True, flag=False),
    Setting("median_warmup_epochs", int, "epochs of each trial the median pruner never prunes", 1,
            range=(0, 10**4), preset=True, flag=False),
    # None: no count; the memory ceiling below replaces a worker (tuning/executors.py)
    Setting("trials_per_process", int, "a worker replaces itself with a fresh process after this many trials "
            "(default: no count; --worker-memory bounds a worker)", range=(1, 10**6), preset=True),
    # None: the runner's resident memory after its first trial plus executors.DEFAULT_HEADROOM_MB
    Setting("worker_memory", int, "resident memory ceiling of a trial runner in MB: a runner past it after a trial "
            "hands its remaining trials to a fresh worker process (default: its size after its first trial plus "
            "2048; Keras's TensorFlow trainer keeps some memory per trial)", range=(64, 10**7), preset=True,
            metavar="MB"),
    Setting("space", str, "search-space TOML (default: search_spaces/<arch>.toml)"),
    Setting("storage", str, f"Optuna storage URL (default {choices.DEFAULT_STORAGE}; postgresql+psycopg://... to "
            "share)"),  # None: choices.DEFAULT_STORAGE, where the storage is opened
    Setting("study_name", str, "default: cifar10-<arch>"),
    Setting("data", str, {"optimize": _DATA_HELP, "baseline": _DATA_HELP, "compare": _DATA_HELP,
                          "doctor": "the data source to check (default: $CIFAR_TUNE_DATA, else the download)"}),
    # None: one per visible GPU times jobs_per_gpu, 1 without GPUs (presets.make_settings: runtime.gpus)
    Setting("jobs", int, "worker processes on this machine (default: one per visible GPU, 1 without GPUs); they are "
            "placed round robin over the GPUs (CUDA_VISIBLE_DEVICES)", range=(1, 1024)),
    Setting("executor", str, "where the trials run: inline (in this process), processes (--jobs worker processes), "
            "auto (inline for one worker without a GPU, else processes; --ray: Ray tasks)", "auto",
            choices=("auto", "inline", "processes")),
    Setting("jobs_per_gpu", int, "workers sharing each GPU, each with that share of its memory (default 1; with "
            "--jobs: as many as the GPUs get)", range=(1, 64)),
    Setting("heartbeat_interval", int, "seconds between a running trial's heartbeats (RDB storage)",
            range=(1, 10**5)),
    Setting("grace_period", int, "seconds without heartbeat after which a trial counts as dead and is retried once",
            range=(2, 10**6)),
    Setting("verbose", bool, "show Keras epoch progress", False),
    Setting("total_trials", int, "instead of --n-trials: run until the study holds this many trials, whoever runs "
            "them (for many machines sharing one study)", range=(1, 10**6)),
    Setting("ray", str, "run the workers as tasks on a Ray cluster, placed by Ray: auto (the cluster this machine "
            "belongs to), HOST:6379, ray://HOST:10001 (Ray Client) or local (start Ray here); needs cifar-tune[ray] "
            "on every node and a PostgreSQL storage whose password the nodes hold ($PGPASSWORD or ~/.pgpass)",
            metavar="ADDRESS"),
    Setting("workers", int, "with --ray: workers on the cluster (default: --jobs-per-gpu per GPU of the cluster, "
            "one per node without GPUs)", range=(1, 1024)),
    # --- not keywords of presets.make_settings ---
    Setting("arch", str, "the architecture to tune (cifar-tune archs)", choices=choices.ARCH_KEYS, required=True),
    Setting("preset", str, "study preset: a name in study/ (default, quick, seed) or a TOML path"),
    Setting("archs", list, {"baseline": "comma-separated (default: all)", "run": "comma-separated (default: all)",
                            "compare": "comma-separated (default: every arch with a study)"},
            list(choices.ARCH_KEYS), defaults={"compare": None}),
    Setting("seeds", int, {"run": "compare's seeds per architecture (1..100)",
                           "compare": "seeds per architecture (1..100)"},
            choices.DEFAULT_COMPARE_SEEDS, range=(1, 100)),
    Setting("out", Path, {"baseline": _OUT_HELP, "compare": _OUT_HELP,
                          "run": "folder for the compare tables and the report (default: under storage/reports/)",
                          "report": "output folder or .html path (default: storage/reports/)"}),
    Setting("batch_size", int, f"training batch size (default {choices.DEFAULT_BATCH_SIZE}, the notebook's)",
            choices.DEFAULT_BATCH_SIZE, range=(1, 65536)),
    Setting("protocol", str, "seed: validate on the test set as the notebook did; holdout: on a split of train",
            choices.DEFAULT_PROTOCOL, choices=choices.PROTOCOLS),
    Setting("full_data", bool, "retrain on every training image and test on all test images, also where a study "
            "was tuned on a --subset (the final verdict)", False),
    Setting("check", bool, "also check every architecture's numerics in float32 and bf16 against a CPU float32 "
            "reference (seconds per architecture; cached per device and version)", False),
    Setting("host", str, "address to listen on (default 127.0.0.1: this machine only)", "127.0.0.1"),
    Setting("port", int, "port to listen on (default 8080)", 8080, range=(1, 65535)),
)
SETTINGS: Mapping[str, Setting] = MappingProxyType({s.name: s for s in _ALL})

_TRAINING = ("engine", "precision", "verbose")
_STUDY = ("preset", "epochs", "val_size", "storage", "sampler", "pruner", "seed", "jobs", "executor", "jobs_per_gpu",
          "ray", "workers", "trials_per_process", "worker_memory", "heartbeat_interval", "grace_period", "data",
          "subset", *_TRAINING, "median_startup_trials", "median_warmup_epochs")
# Each command's settings, in the order of its --help.
COMMANDS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "archs": (),
    "baseline": ("archs", "epochs", "batch_size", "protocol", "val_size", "out", "seed", "data", "subset",
                 *_TRAINING),
    "optimize": ("arch", "space", "n_trials", "total_trials", "timeout", "study_name", *_STUDY),
    "run": ("archs", "n_trials", "timeout", "seeds", "out", *_STUDY),
    "doctor": ("storage", "data", "check"),
    "studies": ("storage",),
    "compare": ("archs", "seeds", "epochs", "storage", "out", "data", "subset", "full_data", *_TRAINING),
    "report": ("storage", "out"),
    "dashboard": ("storage", "host", "port"),
})
# The commands whose study settings are merged (presets.merge): there a setting not given is None, not its default.
STUDY_COMMANDS = ("optimize", "run")
HELP_AS = {"run": "optimize"}  # a command whose texts are another's where it gives none of its own
# A record's field named otherwise than its setting (OptimizeSettings.space_path, the records' out_dir).
FIELD_NAMES = MappingProxyType({"space_path": "space", "out_dir": "out"})


def settings_of(command: str) -> tuple[Setting, ...]:
    """``command``'s settings, in the order of its --help."""
    return tuple(SETTINGS[name] for name in COMMANDS[command])


def preset_keys() -> tuple[str, ...]:
    """The keys a study preset may set, in order."""
    return tuple(s.name for s in _ALL if s.preset)


def study_keywords() -> tuple[str, ...]:
    """``presets.make_settings``'s keywords besides ``arch``, ``preset`` and the preset keys, in order."""
    return tuple(s.name for s in _ALL if not s.preset and s.name in COMMANDS["optimize"]
                 and s.name not in ("arch", "preset"))


def flag_default(setting: Setting, command: str):
    """The value an absent flag gives ``command``: its default, or None (False for a flag without value) where the
    preset's or the built-in value applies later (``STUDY_COMMANDS``' study settings)."""
    if command in STUDY_COMMANDS and (setting.preset or setting.name in (*study_keywords(), "preset")):
        return False if setting.type is bool else None
    return setting.default_in(command)
